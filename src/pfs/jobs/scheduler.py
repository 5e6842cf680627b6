"""Runs the job DAG on a commit and versions each job's output.

A run is a row in the metadata store, claimed by one node and kept alive by a heartbeat;
a run whose driver died (pfs killed) is claimed again and resumed: finished jobs keep
their outputs, the interrupted one starts over (cheaply, being incremental).

Write order for a job's output, as for commits: output objects durable, then the output
tree, then the job's row records the tree and `succeeded`. A failed job records no output
tree, so nothing it produced is ever readable as a result.

A map job maps every file even when some fail: each failed file is recorded (job_failures)
with its reason, and the job fails at the end listing them, recording what did map as a
`partial_tree` that only the next run reads. That run starts from the newest run with the
same key, maps what changed since and the files that failed there, and reuses the rest.
With `skip_failed` the job succeeds without its failed files. A job whose first
SYSTEMIC_FAILURES newly mapped files all failed with none mapped, or whose workers cannot
start, is broken as a whole: it stops at once, records no tree, and the next run starts
from the last run that did.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..errors import BadRequest, Conflict, FileNotFound, JobError, PfsError
from ..repo import Repository
from ..trees import Entry
from .runtime import Runtime, Worker, WorkerSpec, make_runtime
from .s3input import check_allowed, parse_allowed
from .spec import JobSpec, check_dag, load_spec

log = logging.getLogger("pfs.jobs")

STALE = 30.0  # a run whose heartbeat is older than this is taken over (PFS_JOB_STALE_SECONDS)
REDUCE_OUTPUT = "output"  # the single file a reduce job writes
LOG_LIMIT = 64 << 10
ERROR_BODY = 1024  # bytes of a worker's error response kept in the message
S3_APPLY_BATCH = 10_000  # synthetic-tree changes applied at once (S3 listings)
OUTPUT_BATCH = 2_000  # map outputs folded into the output tree at once
RUNTIMES = ("docker", "swarm", "process")
SYSTEMIC_FAILURES = 20  # newly mapped files that all failed, none mapped: the job is broken, not its files
FAILURE_BATCH = 200  # failed files written to the metadata store at once (memory stays bounded)
FAILURES_SHOWN = 20  # failed files listed in a run's status and job log (all are stored)
REASON_LIMIT = 500  # characters of a failed file's reason kept
PROCESS_REFUSED = (
    "this server does not run jobs as host processes: the process runtime is no sandbox (a job "
    "would run with pfs's own rights), so only the operator enables it, when starting pfs "
    "(PFS_JOB_RUNTIME=process); give the job an image to run in a container"
)


def _trim(text: str, limit: int = ERROR_BODY) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass
class _Progress:
    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self) -> None:
        with self.lock:
            self.done += 1


class _LogTail:
    """The newest `limit` characters of a job's log entries (dead workers' logs, failed
    starts): a job whose files keep killing workers must not grow memory without end."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.entries: deque[str] = deque()
        self.size = 0
        self.lock = threading.Lock()

    def append(self, entry: str) -> None:
        with self.lock:
            self.entries.append(entry)
            self.size += len(entry) + 1
            while self.size > self.limit and len(self.entries) > 1:
                self.size -= len(self.entries.popleft()) + 1

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.entries)[-self.limit :]


class _Failures:
    """A map job's failed files: counted, and written to the metadata store FAILURE_BATCH at
    a time, so memory does not grow with their number. `fresh` counts files that had not
    failed in the run this one builds on: they alone tell a broken job from bad files."""

    def __init__(self, meta: Any, commit: str, job: str) -> None:
        self.meta = meta
        self.commit = commit
        self.job = job
        self.count = 0
        self.fresh = 0
        self.last = ""
        self.pending: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add(self, path: str, reason: str, fresh: bool) -> None:
        reason = _trim(" ".join(reason.split()), REASON_LIMIT)  # one line: listings show one per file
        with self.lock:
            self.count += 1
            self.fresh += fresh
            self.last = f"{path}: {reason}"
            self.pending.append((path, reason))
            if len(self.pending) < FAILURE_BATCH:
                return
            batch, self.pending = self.pending, []
        self.meta.add_job_failures(self.commit, self.job, batch)

    def flush(self) -> None:
        with self.lock:
            batch, self.pending = self.pending, []
        self.meta.add_job_failures(self.commit, self.job, batch)


class Scheduler:
    """One per server process. `submit` records a run; a background thread executes
    queued runs one at a time (jobs within a run in DAG order, files of a map job in
    parallel across workers)."""

    def __init__(
        self,
        repo: Repository,
        instance: str,
        state_dir: str,
        default_runtime: str | None = None,
        takeover: bool = True,
        stale: float = STALE,
        s3_inputs: Sequence[str] = (),
        own_bucket: str | None = None,
    ) -> None:
        """`default_runtime`: the operator's choice (None: docker); "process" alone lets
        jobs run as host processes. `s3_inputs`: the `bucket` or `bucket/prefix` entries
        that s3:// inputs may read; `own_bucket`: pfs's object bucket, never an input."""
        if default_runtime not in (None, *RUNTIMES):
            raise BadRequest(f"job runtime must be one of {', '.join(RUNTIMES)}, not {default_runtime!r}")
        self.repo = repo
        self.meta = repo.meta
        self.instance = instance
        self.state_dir = state_dir
        self.default_runtime = default_runtime or "docker"
        self.s3_allowed = parse_allowed(s3_inputs)
        self.own_bucket = own_bucket
        if own_bucket is not None and any(b == own_bucket for b, _ in self.s3_allowed):
            log.warning("PFS_JOB_S3_INPUTS lists bucket %r, which holds pfs's own objects: ignored", own_bucket)
        self.node = uuid.uuid4().hex
        self.stale = stale
        self.heartbeat = min(5.0, stale / 4)  # several beats fit in the window before a takeover
        self._runtimes: dict[str, Runtime] = {}
        self._rt_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._current: _JobRun | None = None  # the job being run, for close() to interrupt
        self._cur_lock = threading.Lock()
        # Embedded: nobody else can be driving a run at start, so every running run is an
        # orphan of a killed process. A cluster waits for the heartbeat to go stale.
        self._takeover = takeover

    # ---- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        for name in ("process", "docker", "swarm"):
            if name in ("docker", "swarm") and self.default_runtime != name:
                continue
            try:
                n = self.runtime(name).reap()
            except PfsError as exc:
                log.warning("could not reap %s workers: %s", name, exc)
                continue
            if n:
                log.warning("removed %d %s worker(s) left by an earlier pfs process", n, name)
        self._thread = threading.Thread(target=self._loop, name="pfs-scheduler", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop at once: the job under way is interrupted (its workers stopped) and its run
        queued again, so the next start, or another node, resumes it."""
        self._stop.set()
        self._wake.set()
        with self._cur_lock:
            current = self._current
        if current is not None:
            current.interrupt()
        with self._rt_lock:
            runtimes = list(self._runtimes.values())
        for rt in runtimes:  # workers still starting too: their readiness wait then ends
            try:
                rt.stop_all()
            except Exception:
                log.exception("stopping %s workers", rt.name)
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._rt_lock:
            for rt in self._runtimes.values():
                rt.close()
            self._runtimes.clear()

    def default_runtime_name(self) -> str:
        return self.default_runtime

    def check_runtime(self, spec: JobSpec) -> str:
        """The runtime a spec runs in; a 400 for the process runtime unless the operator
        chose it: a spec must never get to run code on the host."""
        name = spec.runtime or self.default_runtime
        if name == "process" and self.default_runtime != "process":
            raise BadRequest(PROCESS_REFUSED)
        return name

    def check_s3(self, url: str) -> None:
        """A 400 unless the operator allows jobs to read `url` (checked before any S3 request)."""
        check_allowed(url, self.s3_allowed, self.own_bucket)

    def check_spec(self, spec: JobSpec, branch: str = "master") -> None:
        """Everything a spec needs from this server before it is stored, each a clear 4xx
        (503 when the Docker Engine does not answer): its runtime, its input, its image."""
        name = self.check_runtime(spec)
        if spec.is_s3:
            self.check_s3(spec.input)
        check_input_exists(self.repo, spec, branch)
        if spec.image is not None and name == "docker":
            self.runtime(name).image_id(spec.image)  # 400 if not built here

    def runtime(self, name: str | None) -> Runtime:
        name = name or self.default_runtime
        with self._rt_lock:
            rt = self._runtimes.get(name)
            if rt is None:
                rt = self._runtimes[name] = make_runtime(name, self.instance, self.state_dir)
            return rt

    # ---- specs -------------------------------------------------------------------
    def specs(self) -> list[JobSpec]:
        return [load_spec(name, text) for name, text, _ in self.meta.list_jobs()]

    def submit(self, commit: str, branch: str) -> list[str]:
        """Record a run of every job on `commit`; returns the jobs in the order they run."""
        order = check_dag(self.specs())
        self.meta.create_run(commit, branch, [(s.name, s.dumps()) for s in order])
        self._wake.set()
        return [s.name for s in order]

    # ---- the loop ----------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            stale = time.time() + 1 if self._takeover else time.time() - self.stale
            try:
                cid = self.meta.claim_run(self.node, stale)
            except Exception:  # a transient database error must not kill the scheduler
                log.exception("claiming a run failed")
                cid = None
            if cid is None:
                self._takeover = False  # orphans are taken; from now on only queued runs
                self._wake.wait(2.0)
                self._wake.clear()
                continue
            try:
                self._execute(cid)
            except Exception as exc:
                log.exception("run %s failed", cid)
                self.meta.update_run(cid, state="failed", finished=time.time(), error=f"internal error: {exc}")

    def _execute(self, cid: str) -> None:
        stop_beat = threading.Event()

        def beat() -> None:
            while not stop_beat.wait(self.heartbeat):
                try:
                    self.meta.update_run(cid, heartbeat=time.time())
                except Exception:
                    log.exception("heartbeat of run %s failed", cid)

        beater = threading.Thread(target=beat, name=f"pfs-heartbeat-{cid[:8]}", daemon=True)
        beater.start()
        try:
            commit = self.repo.commit(cid)
            outputs: dict[str, str] = {}
            failed: set[str] = set()
            for jr in self.meta.job_runs(cid):
                name = jr["job"]
                if jr["state"] in ("succeeded", "reused"):
                    outputs[name] = jr["output_tree"]
                    continue
                if jr["state"] in ("failed", "skipped"):
                    failed.add(name)
                    continue
                spec = load_spec(name, jr["spec"])
                if self._stop.is_set():
                    raise _Interrupted()
                if spec.upstream in failed:
                    self.meta.update_job_run(
                        cid, name, state="skipped", finished=time.time(), error=f"job {spec.upstream!r} failed"
                    )
                    failed.add(name)
                    continue
                try:
                    job = _JobRun(self, spec, cid, commit.tree, outputs)  # its runtime may fail to connect
                    with self._cur_lock:
                        self._current = job
                    outputs[name] = job.execute()
                except PfsError as exc:
                    if self._stop.is_set():
                        raise _Interrupted() from exc
                    failed.add(name)
                    self.meta.update_job_run(cid, name, state="failed", finished=time.time(), error=exc.message)
                except Exception as exc:
                    if self._stop.is_set():
                        raise _Interrupted() from exc
                    log.exception("job %s on %s", name, cid)
                    failed.add(name)
                    self.meta.update_job_run(
                        cid, name, state="failed", finished=time.time(), error=f"internal error: {exc}"
                    )
                finally:
                    with self._cur_lock:
                        self._current = None
            state = "failed" if failed else "succeeded"
            error = f"failed: {', '.join(sorted(failed))}" if failed else None
            self.meta.update_run(cid, state=state, finished=time.time(), error=error)
        except _Interrupted:
            log.warning("run %s interrupted by shutdown; queued to resume", cid[:12])
            for jr in self.meta.job_runs(cid):
                if jr["state"] == "running":
                    self.meta.update_job_run(cid, jr["job"], state="pending", log=None)
            self.meta.update_run(cid, state="queued", owner=None)
        finally:
            stop_beat.set()


class _Interrupted(Exception):
    """pfs is shutting down: the run is left to resume, not recorded as failed."""


class _GaveUp(JobError):
    """No more worker starts allowed for this job."""


class _WorkerSlot:
    """One worker (container or process) shared by a few request threads; replaced when
    it dies or hangs. Every worker it ever started is stopped at the end."""

    def __init__(self, job: _JobRun, index: int) -> None:
        self.job = job
        self.index = index
        self.worker: Worker | None = None
        self.lock = threading.Lock()
        self.all: list[Worker] = []

    def get(self) -> Worker:
        with self.lock:
            # No liveness check here: it would cost a Docker API call per request. A dead
            # worker shows as a connection error, and `discard` replaces it then.
            if self.worker is not None:
                return self.worker
            self.worker = self.job.start_worker()
            self.all.append(self.worker)
            return self.worker

    def discard(self, worker: Worker) -> None:
        """A worker that timed out or broke a connection is not trusted with more work."""
        with self.lock:
            if self.worker is worker:
                self.job.note_dead(worker)
                worker.stop()
                self.worker = None

    def stop(self) -> None:
        with self.lock:
            for w in self.all:
                try:
                    w.stop()
                except Exception:
                    log.exception("stopping a worker failed")


class _Outputs:
    """A map job's output tree, built as results come in: changes are folded into the tree
    every OUTPUT_BATCH paths, so memory stays bounded however many files a job maps. The
    folded trees are referenced by nothing until the job's row records the last one, after
    every worker thread flushed its objects, so the write order holds."""

    def __init__(self, job: _JobRun, base: str | None) -> None:
        self.job = job
        self.root = base
        self.pending: dict[str, Entry | None] = {}
        self.lock = threading.Lock()  # guards pending
        self.fold_lock = threading.Lock()  # one fold at a time, in order

    def add(self, path: str, entry: Entry | None) -> None:
        with self.lock:
            self.pending[path] = entry

    def fold(self, force: bool = False) -> str:
        with self.fold_lock:
            with self.lock:
                if not force and len(self.pending) < OUTPUT_BATCH:
                    return self.root or self.job.trees.empty_tree
                changes, self.pending = self.pending, {}
            if changes or self.root is None:
                with self.job.repo.objects.batch() as b:
                    self.root = self.job.trees.apply(self.root, changes, b)
            assert self.root is not None
            return self.root


class _JobRun:
    def __init__(self, sched: Scheduler, spec: JobSpec, cid: str, root: str, outputs: dict[str, str]) -> None:
        self.sched = sched
        self.repo = sched.repo
        self.trees = sched.repo.trees
        self.meta = sched.meta
        self.spec = spec
        self.cid = cid
        self.root = root
        self.outputs = outputs
        # A stored spec is checked again: the operator may have withdrawn the process runtime.
        self.runtime = sched.runtime(sched.check_runtime(spec))
        self.abort = threading.Event()
        self.error: PfsError | None = None
        self.err_lock = threading.Lock()
        self.failed_starts = 0  # in a row: a start that works resets it
        self.last_start_error = ""
        self.start_lock = threading.Lock()
        self.logs = _LogTail(LOG_LIMIT)
        self.progress = _Progress()
        self.failures = _Failures(self.meta, cid, spec.name)
        self._reused = 0  # files of the input whose output the base run already had (set by _map)
        self.slots: list[_WorkerSlot] = []

    def interrupt(self) -> None:
        """Abort and stop every worker now, so requests in flight fail at once."""
        self.abort.set()
        for slot in list(self.slots):
            for worker in list(slot.all):  # not under slot.lock: a start may hold it for long
                try:
                    worker.stop()
                except Exception:
                    log.exception("stopping a worker failed")

    # ---- bookkeeping -------------------------------------------------------------
    def update(self, **fields: Any) -> None:
        self.meta.update_job_run(self.cid, self.spec.name, **fields)

    def fail(self, exc: PfsError) -> None:
        """Stop the whole job: something no file is to blame for (no worker starts, pfs's
        own storage fails, or every file fails)."""
        with self.err_lock:
            if self.error is None:
                self.error = exc
        self.abort.set()

    def file_failed(self, path: str, reason: str, fresh: bool, out: _Outputs) -> None:
        """One file exhausted its attempts: record it and go on with the others."""
        out.add(path, None)  # an output of an older version of the file must not stand for it
        self.failures.add(path, reason, fresh)
        if self.failures.fresh >= SYSTEMIC_FAILURES and self.progress.done == 0:
            self.fail(
                JobError(
                    f"stopped after the first {self.failures.fresh} files all failed and none mapped: the job "
                    f"itself looks broken (image, command or worker), not its input; last: {self.failures.last}"
                )
            )

    def start_worker(self) -> Worker:
        with self.start_lock:
            if self.abort.is_set() or self.sched._stop.is_set():
                raise _GaveUp("job aborted")
            cap = self.spec.parallelism + self.spec.retries
            if self.failed_starts >= cap:
                last = f"; last start error: {self.last_start_error}" if self.last_start_error else ""
                raise _GaveUp(f"gave up after {self.failed_starts} worker starts failed in a row{last}")
        s = self.spec
        try:
            worker = self.runtime.start(
                WorkerSpec(
                    job=s.name,
                    run=self.cid,
                    image=s.image,
                    command=s.command,
                    env=dict(s.env),
                    memory=s.memory,
                    cpus=s.cpus,
                    pids=s.pids,
                    start_timeout=s.start_timeout,
                )
            )
        except JobError as exc:
            with self.start_lock:
                self.failed_starts += 1
                self.last_start_error = exc.message
            with self.err_lock:
                self.logs.append(f"--- worker failed to start\n{exc.message}")
            raise
        with self.start_lock:
            self.failed_starts = 0
        return worker

    def note_dead(self, worker: Worker) -> None:
        reason = worker.exit_reason()
        text = worker.logs(LOG_LIMIT // 4)
        with self.err_lock:
            self.logs.append(f"--- worker {worker.url} ({reason or 'replaced'})\n{text}")

    # ---- inputs ------------------------------------------------------------------
    def input_tree(self) -> str:
        """The tree of this job's input files: a directory of the commit, an upstream
        job's output, or a synthetic tree of an S3 listing (entries fingerprint objects)."""
        spec = self.spec
        if spec.upstream is not None:
            return self.outputs[spec.upstream]
        if spec.is_s3:
            self.sched.check_s3(spec.input)  # the operator may have withdrawn it since the spec was stored
            return self._s3_tree()
        if spec.input == "":
            return self.root
        entry = self.trees.lookup(self.root, spec.input)
        if entry is None:
            return self.trees.empty_tree  # no input yet: nothing to do, an empty output
        if not entry.is_dir:
            raise JobError(f"input {spec.input!r} is a file, not a directory")
        return entry.hash

    def _s3_tree(self) -> str:
        import blake3

        src = self._s3_source()
        root = self.trees.empty_tree
        changes: dict[str, Entry | None] = {}
        with self.repo.objects.batch() as b:
            for path, fingerprint, size in src.files():
                digest = blake3.blake3(f"s3:{fingerprint}:{size}".encode()).hexdigest()
                changes[path] = Entry("file", digest, size, chunks=())
                if len(changes) >= S3_APPLY_BATCH:
                    root = self.trees.apply(root, changes, b)
                    changes = {}
            if changes:
                root = self.trees.apply(root, changes, b)
        return root

    def _s3_source(self) -> Any:
        from .s3input import S3Config, S3Source

        self.sched.check_s3(self.spec.input)
        return S3Source(self.spec.input, S3Config.from_env())

    def opener(self) -> Callable[[str, Entry], Iterator[bytes]]:
        if self.spec.is_s3:
            src = self._s3_source()
            # size: an object replaced since the listing is refused, not sent short or long
            return lambda path, entry: src.open(path, size=entry.size)  # type: ignore[no-any-return,unused-ignore]
        return lambda _path, entry: self.trees.read(entry)

    # ---- the job -----------------------------------------------------------------
    def execute(self) -> str:
        spec = self.spec
        image_id = self.runtime.image_id(spec.image)
        key = spec.key(image_id)
        self.meta.clear_job_failures(self.cid, spec.name)  # a resumed run starts over
        self.update(
            state="running",
            started=time.time(),
            spec_key=key,
            done=0,
            total=0,
            reused=0,
            failed=0,
            error=None,
            output_tree=None,
            partial_tree=None,
        )
        inp = self.input_tree()
        self.update(input_tree=inp)
        prev = self.meta.job_run_base(spec.name, key)
        if (
            prev is not None
            and prev["input_tree"] == inp
            and prev["output_tree"]
            and prev["state"] in ("succeeded", "reused")
            and not prev["failed"]
        ):
            n = prev["total"] or 0
            self.update(state="reused", finished=time.time(), output_tree=prev["output_tree"], total=n, reused=n)
            return str(prev["output_tree"])
        try:
            out = self._map(inp, prev) if spec.type == "map" else self._reduce(inp)
        finally:
            self.failures.flush()  # a job stopped early shows the files that failed so far too
            self.update(log=self.logs.text() or None, done=self.progress.done, failed=self.failures.count)
        failed = self.failures.count
        done = self.progress.done
        if failed and not (spec.skip_failed and done + self._reused > 0):
            # Every file was tried: what mapped is kept for the next run, never readable.
            self.update(partial_tree=out, done=done, failed=failed)
            raise JobError(self._failure_summary(failed, done))
        self.update(state="succeeded", finished=time.time(), output_tree=out, done=done, failed=failed)
        return out

    def _failure_summary(self, failed: int, done: int) -> str:
        first = self.meta.job_failures(self.cid, self.spec.name, 3)
        shown = "; ".join(f"{p}: {_trim(r, 200)}" for p, r in first)
        more = f"; and {failed - len(first)} more" if failed > len(first) else ""
        why = " (skip_failed does not apply when every file failed)" if self.spec.skip_failed else ""
        return f"{failed} of {failed + done} files failed{why}: {shown}{more} (all in `pfs job log`)"

    def _refailed(self, prev: dict[str, Any], inp: str) -> Iterator[tuple[str, Entry | None, Entry | None]]:
        """The files that failed in `prev` and are unchanged since: they are mapped again.
        Changed or deleted ones are left to the diff, which yields them itself."""
        for path, _ in self.meta.iter_job_failures(prev["commit"], self.spec.name):
            new = self.trees.lookup(inp, path)
            if new is None or new.is_dir:
                continue
            if self.trees.lookup(prev["input_tree"], path) == new:
                yield path, None, new

    def _map(self, inp: str, prev: dict[str, Any] | None) -> str:
        base: str | None = None
        if prev is not None and prev["input_tree"]:
            base = prev["output_tree"] or prev["partial_tree"]  # incremental: map only what changed since then

        def changes() -> Iterator[tuple[str, Entry | None, Entry | None, bool]]:
            """(path, old, new, fresh): fresh is False for a file that failed in `prev`."""
            if base is None or prev is None:
                yield from ((p, None, e, True) for p, e in self.trees.walk(inp))
                return
            yield from ((p, a, b, True) for p, a, b in self.trees.diff(prev["input_tree"], inp))
            if prev["failed"]:
                yield from ((p, a, b, False) for p, a, b in self._refailed(prev, inp))

        total = sum(1 for _ in self.trees.walk(inp))
        to_map = sum(1 for _, _, new, _ in changes() if new is not None)
        self._reused = total - to_map
        self.update(total=total, reused=self._reused)
        out = _Outputs(self, base)
        opener = self.opener()
        slots = self.slots = [_WorkerSlot(self, i) for i in range(self.spec.parallelism)]
        nthreads = self.spec.parallelism * self.spec.inflight
        work: queue.Queue[tuple[str, Entry, bool] | None] = queue.Queue(maxsize=nthreads * 2)

        # A client per thread: one shared client's pool lock is contended by every request.
        clients = [_job_client(self.spec.timeout, 1) for _ in range(nthreads)]

        def thread_main(slot: _WorkerSlot, client: httpx.Client) -> None:
            batch = self.repo.objects.batch()
            try:
                while True:
                    item = work.get()
                    if item is None:
                        break
                    if self.abort.is_set():
                        continue  # drain the queue so the feeder never blocks
                    path, entry, fresh = item
                    try:
                        result = self._call(
                            client,
                            slot,
                            "/map/" + urllib.parse.quote(path),
                            entry.size,
                            lambda p=path, e=entry: opener(p, e),  # type: ignore[misc]
                            batch,
                        )
                    except _GaveUp as exc:
                        self.fail(exc)
                        continue
                    except _FileFailed as exc:
                        if not self.abort.is_set():
                            self.file_failed(path, exc.reason, fresh, out)
                        continue
                    except PfsError as exc:  # pfs's own storage, or the engine: no file's fault
                        self.fail(exc if isinstance(exc, JobError) else JobError(f"map of {path!r}: {exc.message}"))
                        continue
                    out.add(path, result)
                    self.progress.add()
                if not self.abort.is_set():
                    batch.flush()
            except PfsError as exc:
                self.fail(exc)
            except Exception as exc:
                log.exception("map thread")
                self.fail(JobError(f"internal error in map: {exc}"))
            finally:
                if self.abort.is_set():
                    batch.abort()

        threads = [
            threading.Thread(
                target=thread_main, args=(slots[i % len(slots)], clients[i]), daemon=True, name=f"pfs-map-{i}"
            )
            for i in range(nthreads)
        ]
        for t in threads:
            t.start()
        last = [time.monotonic()]

        def report() -> None:
            if time.monotonic() - last[0] > 1.0:
                self.update(done=self.progress.done, failed=self.failures.count)
                last[0] = time.monotonic()
            if not self.abort.is_set():
                out.fold()

        def put(item: tuple[str, Entry, bool] | None) -> bool:
            while True:
                report()
                try:
                    work.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    if (item is not None and self.abort.is_set()) or not any(t.is_alive() for t in threads):
                        return False

        try:
            for path, _, new, fresh in changes():
                if self.abort.is_set():
                    break
                if new is None:
                    out.add(path, None)
                elif not put((path, new, fresh)):
                    break
        finally:
            for _ in threads:
                put(None)
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)
                    report()
            for client in clients:
                client.close()
            self._stop_slots(slots)
        if self.error is not None:
            raise self.error
        return out.fold(force=True)

    def _stop_slots(self, slots: list[_WorkerSlot]) -> None:
        """Stop every worker, in parallel (a container takes ~0.1 s to remove), keeping the
        last worker of each slot's log."""
        last = [slot.worker for slot in slots]
        if len(slots) == 1:
            slots[0].stop()
        else:
            with ThreadPoolExecutor(min(len(slots), 16), thread_name_prefix="pfs-stop") as ex:
                list(ex.map(_WorkerSlot.stop, slots))
        for w in last:
            if w is not None:  # stopped workers keep their log
                self.logs.append(f"--- worker {w.url}\n{w.logs(LOG_LIMIT // 4)}")

    def _reduce(self, inp: str) -> str:
        size = sum(e.size for _, e in self.trees.walk(inp))
        opener = self.opener()

        def body() -> Iterator[bytes]:
            for path, entry in self.trees.walk(inp):
                yield from opener(path, entry)

        self.update(total=1)
        slot = _WorkerSlot(self, 0)
        self.slots = [slot]
        try:
            with _job_client(self.spec.timeout, 1) as client, self.repo.objects.batch() as b:
                entry = self._call(client, slot, "/reduce", size, body, b)
                b.flush()
                tree = self.trees.apply(None, {REDUCE_OUTPUT: entry}, b)
        finally:
            self._stop_slots([slot])
        self.progress.add()
        return tree

    def _call(
        self,
        client: httpx.Client,
        slot: _WorkerSlot,
        route: str,
        size: int,
        body: Callable[[], Iterator[bytes]],
        batch: Any,
    ) -> Entry:
        """POST one input to a worker and store the response as a file, with retries (the
        input is reopened for each attempt). pfs always sends Content-Length, so a job
        server need not handle chunked bodies. Raises _FileFailed when the input is to
        blame (attempts exhausted, or it changed since it was listed)."""
        attempts = self.spec.retries + 1
        last = ""
        attempt = 0  # attempts that count against this input
        tries = 0  # all of them, for the backoff and a bound on those that do not count
        while attempt < attempts and tries < 2 * attempts + self.spec.parallelism:
            if self.abort.is_set():
                raise JobError("job aborted")
            if tries:
                time.sleep(min(0.2 * 2**tries, 5.0))
            tries += 1
            try:
                worker = slot.get()
            except _GaveUp:
                raise
            except JobError as exc:
                # A worker that would not start is not this input's fault: not counted
                # (failed starts in a row are capped, see start_worker).
                last = exc.message
                continue
            attempt += 1
            writer = self.repo.writer(batch)
            try:
                with client.stream(
                    "POST", worker.url + route, content=body(), headers={"content-length": str(size)}
                ) as resp:
                    if resp.status_code // 100 != 2:
                        writer.abort()
                        text = b"".join(resp.iter_bytes())[:ERROR_BODY].decode(errors="replace")
                        last = f"HTTP {resp.status_code}: {_trim(text)}"
                        continue
                    for piece in resp.iter_bytes():
                        writer.write(piece)
                    return writer.finish()
            except httpx.HTTPError as exc:
                writer.abort()
                reason = None if isinstance(exc, httpx.TimeoutException) else _settle(worker)
                if reason:
                    last = f"worker {reason}"
                    if isinstance(exc, httpx.ConnectError):
                        # It died before this request reached it (another input killed it):
                        # not this input's fault, so the attempt is not counted.
                        attempt -= 1
                elif isinstance(exc, httpx.TimeoutException):
                    last = f"no answer within {self.spec.timeout:g} s"
                else:
                    last = f"{type(exc).__name__}: {exc or 'connection lost'}"
                slot.discard(worker)
            except (Conflict, FileNotFound) as exc:  # an S3 object replaced or deleted since the listing
                writer.abort()
                raise _FileFailed(route, f"reading the input failed: {exc.message}") from None
            except BaseException:
                writer.abort()
                raise
        if attempt == 0:
            raise _FileFailed(route, f"no worker could take it: {last}")
        raise _FileFailed(route, f"failed after {attempt} attempt(s): {last}")


class _FileFailed(JobError):
    """One input could not be mapped: recorded, and the job goes on with the others."""

    def __init__(self, route: str, reason: str) -> None:
        super().__init__(f"{route} {reason}")
        self.reason = reason


_TLS: Any = None  # one TLS context for all job clients: making one costs ~10 ms, and workers speak plain HTTP


def _job_client(timeout: float, connections: int) -> httpx.Client:
    """Plain HTTP to workers on loopback: no proxies from the environment. TCP_NODELAY,
    because a request goes out as headers then body: with Nagle's algorithm and the
    worker's delayed ACKs, each small request would wait ~40 ms."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=10.0),
        transport=httpx.HTTPTransport(
            verify=_tls(),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        ),
        trust_env=False,
    )


def _tls() -> Any:
    global _TLS
    if _TLS is None:
        import ssl

        _TLS = ssl.create_default_context()
    return _TLS


def _settle(worker: Worker, wait: float = 1.0) -> str | None:
    """Why a worker broke a connection, if it died: give the runtime a moment to see it."""
    deadline = time.monotonic() + wait
    while True:
        reason = worker.exit_reason()
        if reason or time.monotonic() >= deadline:
            return reason
        time.sleep(0.05)


def check_input_exists(repo: Repository, spec: JobSpec, branch: str = "master") -> None:
    """A spec's input must exist when it is stored (a 400 otherwise)."""
    if spec.upstream is not None:
        return  # checked by the DAG
    if spec.is_s3:
        from .s3input import S3Config, S3Source

        S3Source(spec.input, S3Config.from_env()).check()
        return
    if spec.input == "":
        return
    entry = repo.view(branch=branch).lookup(spec.input)
    if entry is None:
        raise BadRequest(f"input {spec.input!r} does not exist on branch {branch!r}")
    if not entry.is_dir:
        raise BadRequest(f"input {spec.input!r} is a file; a job's input is a directory")
