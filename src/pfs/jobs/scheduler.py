"""The claim loop: runs of the job DAG, recorded by `Jobs.submit`, driven one at a time.

A run is a row in the metadata store, claimed by one node and kept alive by a heartbeat;
a run whose driver died (pfs killed) is claimed again and resumed: finished jobs keep
their outputs, interrupted ones start over (cheaply, being incremental). Jobs within a
run go in DAG order, each executed by a `JobExecution`; a job starts as soon as its
upstream is done, beside the others that can (up to `jobs_at_once`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from .. import metrics
from ..errors import PfsError
from ..repository.repo import Repository
from ..storage import collect
from ..storage.meta import JobState, RunState, RunStore
from .execution import JobExecution
from .inputs import InputRules, input_of
from .runtime import Runtimes
from .spec import JobSpec, load_spec

log = logging.getLogger("pfs.jobs")

STALE = 30.0  # a run whose heartbeat is older than this is taken over (PFS_JOB_STALE_SECONDS)
JOBS_AT_ONCE = 4  # jobs of one run executing together, at most (PFS_JOBS_AT_ONCE)


class Scheduler:
    """One per server process: a background thread claims queued runs (and, in a cluster,
    runs whose driver went quiet for `stale` seconds) and drives them. `takeover`: the
    store is this process's alone (embedded), so every running run at start is an orphan."""

    def __init__(
        self,
        repos: Callable[[], Iterable[Repository]],
        runtimes: Runtimes,
        rules: InputRules,
        takeover: bool = True,
        stale: float = STALE,
        jobs_at_once: int = JOBS_AT_ONCE,
    ) -> None:
        self.repos = repos
        self.runtimes = runtimes
        self.rules = rules
        self.node = uuid.uuid4().hex
        self.stale = stale
        self.jobs_at_once = max(1, jobs_at_once)
        self.heartbeat = min(5.0, stale / 4)  # several beats fit in the window before a takeover
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._current: set[JobExecution] = set()  # the jobs being run, for close() to interrupt
        self._cur_lock = threading.Lock()
        # Embedded: nobody else can be driving a run at start, so every running run is an
        # orphan of a killed process. A cluster waits for the heartbeat to go stale.
        self._takeover = takeover
        self._next = 0  # the repository the next claim starts from

    # ---- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self.runtimes.reap()
        self._thread = threading.Thread(target=self._loop, name="pfs-scheduler", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """A run was queued: look now rather than at the next poll."""
        self._wake.set()

    def close(self) -> None:
        """Stop at once: the job under way is interrupted (its workers stopped) and its run
        queued again, so the next start, or another node, resumes it."""
        self._stop.set()
        self._wake.set()
        with self._cur_lock:
            current = list(self._current)
        for job in current:
            job.interrupt()
        self.runtimes.stop_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.runtimes.close()

    # ---- the loop ----------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            claimed = self._claim()
            if claimed is None:
                self._takeover = False  # orphans are taken; from now on only queued runs
                self._wake.wait(2.0)
                self._wake.clear()
                continue
            repo, cid = claimed
            try:
                self._drive(repo, cid)
            except Exception as exc:
                log.exception("run %s of repository %s failed", cid, repo.name)
                with contextlib.suppress(Exception):  # its repository may be gone
                    repo.meta.update_run(
                        cid, state=RunState.FAILED, finished=time.time(), error=f"internal error: {exc}"
                    )

    def _claim(self) -> tuple[Repository, str] | None:
        """A run to drive, from the first repository that has one (taken in turn: a busy
        repository does not starve the others, since each loop starts after the last)."""
        stale = time.time() + 1 if self._takeover else time.time() - self.stale
        try:
            repos = list(self.repos())
        except Exception:  # a transient database error must not kill the scheduler
            log.exception("listing repositories failed")
            return None
        if not repos:
            return None
        start = self._next % len(repos)
        for i in range(len(repos)):
            repo = repos[(start + i) % len(repos)]
            try:
                cid = repo.meta.claim_run(self.node, stale)
            except Exception:
                log.exception("claiming a run of repository %s failed", repo.name)
                continue
            if cid is not None:
                self._next = start + i + 1
                return repo, cid
        return None

    def _drive(self, repo: Repository, cid: str) -> None:
        """Run the jobs of the run on commit `cid` that have not finished, heartbeating."""
        store: RunStore = repo.meta
        stop_beat = threading.Event()

        def beat() -> None:
            while not stop_beat.wait(self.heartbeat):
                try:
                    store.update_run(cid, heartbeat=time.time())
                except Exception:
                    log.exception("heartbeat of run %s failed", cid)

        beater = threading.Thread(target=beat, name=f"pfs-heartbeat-{cid[:8]}", daemon=True)
        beater.start()
        try:
            root = repo.get_commit(cid).tree
            outputs: dict[str, str] = {}
            failed: set[str] = set()
            todo: dict[str, JobSpec] = {}  # in DAG order, as job_runs lists them
            for jr in store.job_runs(cid):
                if jr.state.has_output and jr.output_tree:
                    outputs[jr.job] = jr.output_tree
                elif jr.state in (JobState.FAILED, JobState.SKIPPED):
                    failed.add(jr.job)
                else:
                    todo[jr.job] = load_spec(jr.job, jr.spec)
            # Jobs whose upstream is done start at once, up to `jobs_at_once` together: a
            # job waiting on a slow pull or a long map holds up only the jobs reading it.
            with ThreadPoolExecutor(self.jobs_at_once, thread_name_prefix=f"pfs-run-{cid[:8]}") as pool:
                running: dict[Future[str | None], str] = {}
                while todo or running:
                    for name, spec in list(todo.items()):
                        if self._stop.is_set() or len(running) >= self.jobs_at_once:
                            break
                        if spec.upstream in failed:
                            del todo[name]
                            store.update_job_run(
                                cid, name, state=JobState.SKIPPED, finished=time.time(),
                                error=f"job {spec.upstream!r} failed",
                            )  # fmt: skip
                            failed.add(name)
                            metrics.JOBS.labels("skipped").inc()
                        elif spec.upstream is None or spec.upstream in outputs:
                            del todo[name]
                            running[pool.submit(self._job, repo, cid, root, spec, dict(outputs))] = name
                    if not running:
                        break  # stopping, or jobs whose upstream is not in the run (see below)
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        name = running.pop(fut)
                        out = fut.result()
                        if out is None:
                            failed.add(name)
                        else:
                            outputs[name] = out
            if self._stop.is_set():
                raise _Interrupted()
            for name, spec in todo.items():  # only if the recorded run is damaged
                store.update_job_run(
                    cid, name, state=JobState.FAILED, finished=time.time(),
                    error=f"job {spec.upstream!r}, which it reads, is not in this run",
                )  # fmt: skip
                failed.add(name)
            state = RunState.FAILED if failed else RunState.SUCCEEDED
            error = f"failed: {', '.join(sorted(failed))}" if failed else None
            store.update_run(cid, state=state, finished=time.time(), error=error)
            metrics.JOB_RUNS.labels(state.value).inc()
        except _Interrupted:
            log.warning("run %s interrupted by shutdown; queued to resume", cid[:12])
            for jr in store.job_runs(cid):
                if jr.state == JobState.RUNNING:
                    store.update_job_run(cid, jr.job, state=JobState.PENDING, log=None)
            store.update_run(cid, state=RunState.QUEUED, owner=None)
        finally:
            stop_beat.set()

    def _job(self, repo: Repository, cid: str, root: str, spec: JobSpec, outputs: dict[str, str]) -> str | None:
        """Execute one job of the run: its output tree, or None once it is recorded as
        failed. Raises _Interrupted when pfs is stopping (the run is queued again)."""
        store: RunStore = repo.meta
        name = spec.name
        job: JobExecution | None = None
        try:
            # A stored spec is checked again: the operator may have withdrawn the process
            # runtime or lowered a limit. Its runtime may fail to connect.
            runtime = self.runtimes.get(self.runtimes.check(spec))
            source = input_of(spec, self.rules)
            job = JobExecution(repo, store, spec, cid, root, outputs, runtime, source, self._stop)
            with self._cur_lock:
                self._current.add(job)
            if self._stop.is_set():  # close() came before the job was listed: it was not interrupted
                raise _Interrupted()
            metrics.JOBS_RUNNING.inc()
            try:
                with collect.FLIGHT.op():  # a GC keeps what this job writes until it is recorded
                    out = job.execute()
            finally:
                metrics.JOBS_RUNNING.dec()
            return out
        except _Interrupted:
            raise
        except PfsError as exc:
            if self._stop.is_set():
                raise _Interrupted() from exc
            store.update_job_run(cid, name, state=JobState.FAILED, finished=time.time(), error=exc.message)
            metrics.JOBS.labels("failed").inc()
        except Exception as exc:
            if self._stop.is_set():
                raise _Interrupted() from exc
            log.exception("job %s on %s", name, cid)
            store.update_job_run(cid, name, state=JobState.FAILED, finished=time.time(), error=f"internal error: {exc}")
            metrics.JOBS.labels("failed").inc()
        finally:
            if job is not None:
                with self._cur_lock:
                    self._current.discard(job)
        return None


class _Interrupted(Exception):
    """pfs is shutting down: the run is left to resume, not recorded as failed."""
