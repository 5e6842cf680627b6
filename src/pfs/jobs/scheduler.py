"""The claim loop: runs of the job DAG, recorded by `Jobs.submit`, driven one at a time.

A run is a row in the metadata store, claimed by one node and kept alive by a heartbeat;
a run whose driver died (pfs killed) is claimed again and resumed: finished jobs keep
their outputs, the interrupted one starts over (cheaply, being incremental). Jobs within
a run go in DAG order, each executed by a `JobExecution`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable

from ..errors import PfsError
from ..repository.repo import Repository
from ..storage.meta import JobState, RunState, RunStore
from .execution import JobExecution
from .inputs import InputRules, input_of
from .runtime import Runtimes
from .spec import load_spec

log = logging.getLogger("pfs.jobs")

STALE = 30.0  # a run whose heartbeat is older than this is taken over (PFS_JOB_STALE_SECONDS)


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
    ) -> None:
        self.repos = repos
        self.runtimes = runtimes
        self.rules = rules
        self.node = uuid.uuid4().hex
        self.stale = stale
        self.heartbeat = min(5.0, stale / 4)  # several beats fit in the window before a takeover
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._current: JobExecution | None = None  # the job being run, for close() to interrupt
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
            current = self._current
        if current is not None:
            current.interrupt()
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
            for jr in store.job_runs(cid):
                name = jr.job
                if jr.state.has_output and jr.output_tree:
                    outputs[name] = jr.output_tree
                    continue
                if jr.state in (JobState.FAILED, JobState.SKIPPED):
                    failed.add(name)
                    continue
                spec = load_spec(name, jr.spec)
                if self._stop.is_set():
                    raise _Interrupted()
                if spec.upstream in failed:
                    store.update_job_run(
                        cid, name, state=JobState.SKIPPED, finished=time.time(), error=f"job {spec.upstream!r} failed"
                    )
                    failed.add(name)
                    continue
                try:
                    # A stored spec is checked again: the operator may have withdrawn the process
                    # runtime or lowered a limit. Its runtime may fail to connect.
                    runtime = self.runtimes.get(self.runtimes.check(spec))
                    source = input_of(spec, self.rules)
                    job = JobExecution(repo, store, spec, cid, root, outputs, runtime, source, self._stop)
                    with self._cur_lock:
                        self._current = job
                    outputs[name] = job.execute()
                except PfsError as exc:
                    if self._stop.is_set():
                        raise _Interrupted() from exc
                    failed.add(name)
                    store.update_job_run(cid, name, state=JobState.FAILED, finished=time.time(), error=exc.message)
                except Exception as exc:
                    if self._stop.is_set():
                        raise _Interrupted() from exc
                    log.exception("job %s on %s", name, cid)
                    failed.add(name)
                    store.update_job_run(
                        cid, name, state=JobState.FAILED, finished=time.time(), error=f"internal error: {exc}"
                    )
                finally:
                    with self._cur_lock:
                        self._current = None
            state = RunState.FAILED if failed else RunState.SUCCEEDED
            error = f"failed: {', '.join(sorted(failed))}" if failed else None
            store.update_run(cid, state=state, finished=time.time(), error=error)
        except _Interrupted:
            log.warning("run %s interrupted by shutdown; queued to resume", cid[:12])
            for jr in store.job_runs(cid):
                if jr.state == JobState.RUNNING:
                    store.update_job_run(cid, jr.job, state=JobState.PENDING, log=None)
            store.update_run(cid, state=RunState.QUEUED, owner=None)
        finally:
            stop_beat.set()


class _Interrupted(Exception):
    """pfs is shutting down: the run is left to resume, not recorded as failed."""
