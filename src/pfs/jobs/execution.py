"""One job of a run: its workers, its input files sent to them, its output versioned.

Write order for a job's output, as for commits: output objects durable, then the output
tree, then the job's row records the tree and `succeeded`. A failed job records no output
tree, so nothing it produced is ever readable as a result.

A map job maps every file even when some fail: each failed file is recorded (a `Failure`)
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
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from .. import metrics
from ..errors import Conflict, FileNotFound, JobError, PfsError
from ..repository.repo import Repository
from ..storage import collect
from ..storage.meta import Failure, JobRun, JobState, RunStore
from ..storage.trees import Entry
from .inputs import Input
from .runtime import Runtime, Worker, WorkerSpec
from .spec import JobSpec

log = logging.getLogger("pfs.jobs")

REDUCE_OUTPUT = "output"  # the single file a reduce job writes
LOG_LIMIT = 64 << 10
ERROR_BODY = 1024  # bytes of a worker's error response kept in the message
OUTPUT_BATCH = 2_000  # map outputs folded into the output tree at once
SYSTEMIC_FAILURES = 20  # newly mapped files that all failed, none mapped: the job is broken, not its files
FAILURE_BATCH = 200  # failed files written to the metadata store at once (memory stays bounded)
REASON_LIMIT = 500  # characters of a failed file's reason kept


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

    def __init__(self, store: RunStore, commit: str, job: str) -> None:
        self.store = store
        self.commit = commit
        self.job = job
        self.count = 0
        self.fresh = 0
        self.last = ""
        self.pending: list[Failure] = []
        self.lock = threading.Lock()

    def add(self, path: str, reason: str, fresh: bool) -> None:
        reason = _trim(" ".join(reason.split()), REASON_LIMIT)  # one line: listings show one per file
        with self.lock:
            self.count += 1
            self.fresh += fresh
            self.last = f"{path}: {reason}"
            self.pending.append(Failure(path, reason))
            if len(self.pending) < FAILURE_BATCH:
                return
            batch, self.pending = self.pending, []
        self.store.add_job_failures(self.commit, self.job, batch)

    def flush(self) -> None:
        with self.lock:
            batch, self.pending = self.pending, []
        self.store.add_job_failures(self.commit, self.job, batch)


class _GaveUp(JobError):
    """No more worker starts allowed for this job."""


class _WorkerSlot:
    """One worker (container or process) shared by a few request threads; replaced when
    it dies or hangs. Every worker it ever started is stopped at the end."""

    def __init__(self, job: JobExecution, index: int) -> None:
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

    def __init__(self, job: JobExecution, base: str | None) -> None:
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


class JobExecution:
    """One job of a run on commit `cid`, executed by `execute`. `root` is the commit's tree,
    `outputs` the output trees of the run's jobs done so far; `stopping` is set when pfs
    shuts down (no more workers start)."""

    def __init__(
        self,
        repo: Repository,
        store: RunStore,
        spec: JobSpec,
        cid: str,
        root: str,
        outputs: dict[str, str],
        runtime: Runtime,
        source: Input,
        stopping: threading.Event,
    ) -> None:
        self.repo = repo
        self.trees = repo.trees
        self.store = store
        self.spec = spec
        self.cid = cid
        self.root = root
        self.outputs = outputs
        self.runtime = runtime
        self.source = source
        self.stopping = stopping
        self.abort = threading.Event()
        self.error: PfsError | None = None
        self.err_lock = threading.Lock()
        self.failed_starts = 0  # in a row: a start that works resets it
        self.last_start_error = ""
        self.start_lock = threading.Lock()
        self.logs = _LogTail(LOG_LIMIT)
        self.progress = _Progress()
        self.failures = _Failures(store, cid, spec.name)
        self._reused = 0  # files of the input whose output the base run already had (set by _map)
        self.slots: list[_WorkerSlot] = []
        self.image = spec.image  # what every worker runs: pinned to a digest when the run starts

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
        self.store.update_job_run(self.cid, self.spec.name, **fields)

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
            if self.abort.is_set() or self.stopping.is_set():
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
                    image=self.image,
                    command=s.command,
                    env=dict(s.env),
                    memory=s.memory,
                    cpus=s.cpus,
                    pids=s.pids,
                    start_timeout=s.start_timeout,
                )
            )
        except JobError as exc:
            metrics.WORKER_FAILURES.labels(self.runtime.name).inc()
            with self.start_lock:
                self.failed_starts += 1
                self.last_start_error = exc.message
            with self.err_lock:
                self.logs.append(f"--- worker failed to start\n{exc.message}")
            raise
        metrics.WORKER_STARTS.labels(self.runtime.name).inc()
        with self.start_lock:
            self.failed_starts = 0
        return worker

    def note_dead(self, worker: Worker) -> None:
        metrics.WORKER_FAILURES.labels(self.runtime.name).inc()
        reason = worker.exit_reason()
        text = worker.logs(LOG_LIMIT // 4)
        with self.err_lock:
            self.logs.append(f"--- worker {worker.url} ({reason or 'replaced'})\n{text}")

    # ---- inputs ------------------------------------------------------------------
    def input_tree(self) -> str:
        return self.source.tree(self.repo, self.root, self.outputs)

    def open_input(self, path: str, entry: Entry) -> Iterator[bytes]:
        return self.source.open(self.repo, path, entry)

    # ---- the job -----------------------------------------------------------------
    def execute(self) -> str:
        spec = self.spec
        # Once per run: an image of the cluster registry is pinned to the digest its tag
        # names now, and that digest is what identifies the job's code for reuse.
        image_id, pinned = self.runtime.pin(spec.image, spec.start_timeout)
        self.image = pinned or spec.image
        key = spec.key(image_id)
        self.store.clear_job_failures(self.cid, spec.name)  # a resumed run starts over
        self.update(
            state=JobState.RUNNING,
            started=time.time(),
            image=pinned,
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
        prev = self._rely_on_base(self.store.job_run_base(spec.name, key), key)
        if (
            prev is not None
            and prev.input_tree == inp
            and prev.output_tree
            and prev.state.has_output
            and not prev.failed
        ):
            n = prev.total or 0
            self.update(state=JobState.REUSED, finished=time.time(), output_tree=prev.output_tree, total=n, reused=n)
            metrics.JOB_FILES.labels("reused").inc(n)
            metrics.JOBS.labels("reused").inc()
            return prev.output_tree
        try:
            out = self._map(inp, prev) if spec.type == "map" else self._reduce(inp)
        finally:
            self.failures.flush()  # a job stopped early shows the files that failed so far too
            self.update(log=self.logs.text() or None, done=self.progress.done, failed=self.failures.count)
        failed = self.failures.count
        done = self.progress.done
        for outcome, n in (("done", done), ("reused", self._reused), ("failed", failed)):
            metrics.JOB_FILES.labels(outcome).inc(n)
        if failed and not (spec.skip_failed and done + self._reused > 0):
            # Every file was tried: what mapped is kept for the next run, never readable.
            self.update(partial_tree=out, done=done, failed=failed)
            raise JobError(self._failure_summary(failed, done))
        self.update(state=JobState.SUCCEEDED, finished=time.time(), output_tree=out, done=done, failed=failed)
        metrics.JOBS.labels("succeeded").inc()
        return out

    def _rely_on_base(self, prev: JobRun | None, key: str) -> JobRun | None:
        """The run this one builds on: its trees are reused by reference, so they are recorded
        as found for garbage collection. While a GC is active the base must still be on
        record once logged; a base dropped meanwhile means a full run instead."""
        if prev is None:
            return None
        trees = [t for t in (prev.output_tree, prev.partial_tree) if t]
        if self.repo.found(collect.TREE, trees) and self.store.job_run_base(self.spec.name, key) != prev:
            return None
        return prev

    def _failure_summary(self, failed: int, done: int) -> str:
        first = self.store.job_failures(self.cid, self.spec.name, 3)
        shown = "; ".join(f"{f.path}: {_trim(f.error, 200)}" for f in first)
        more = f"; and {failed - len(first)} more" if failed > len(first) else ""
        why = " (skip_failed does not apply when every file failed)" if self.spec.skip_failed else ""
        return f"{failed} of {failed + done} files failed{why}: {shown}{more} (all in `pfs job log`)"

    def _refailed(self, prev: JobRun, old: str, inp: str) -> Iterator[tuple[str, Entry | None, Entry | None]]:
        """The files that failed in `prev` (whose input was `old`) and are unchanged since:
        they are mapped again. Changed or deleted ones are left to the diff, which yields them itself."""
        for f in self.store.iter_job_failures(prev.commit, self.spec.name):
            new = self.trees.lookup(inp, f.path)
            if new is None or new.is_dir:
                continue
            if self.trees.lookup(old, f.path) == new:
                yield f.path, None, new

    def _map(self, inp: str, prev: JobRun | None) -> str:
        base: str | None = None
        old = prev.input_tree if prev is not None else None
        if prev is not None and old:
            base = prev.output_tree or prev.partial_tree  # incremental: map only what changed since then

        def changes() -> Iterator[tuple[str, Entry | None, Entry | None, bool]]:
            """(path, old, new, fresh): fresh is False for a file that failed in `prev`."""
            if base is None or prev is None or old is None:
                yield from ((p, None, e, True) for p, e in self.trees.walk(inp))
                return
            yield from ((p, a, b, True) for p, a, b in self.trees.diff(old, inp))
            if prev.failed:
                yield from ((p, a, b, False) for p, a, b in self._refailed(prev, old, inp))

        total = sum(1 for _ in self.trees.walk(inp))
        to_map = sum(1 for _, _, new, _ in changes() if new is not None)
        self._reused = total - to_map
        self.update(total=total, reused=self._reused)
        out = _Outputs(self, base)
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
                            lambda p=path, e=entry: self.open_input(p, e),  # type: ignore[misc]
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

        def body() -> Iterator[bytes]:
            for path, entry in self.trees.walk(inp):
                yield from self.open_input(path, entry)

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
