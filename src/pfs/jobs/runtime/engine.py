"""What the `docker` and `swarm` runtimes share: a Docker Engine client, workers labelled
with this pfs instance (so a later pfs can remove what a killed one left behind), engine
errors as pfs errors, and the way a worker is started, given up on and stopped."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from abc import abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import Any, TypeVar

from ...errors import BadRequest, ImageNotFound, JobError, PfsError, Unavailable
from ..registry import Registry
from ..spec import check_image
from .base import LOG_KEEP, Runtime, Worker, WorkerSpec, start_failed, tail, wait_until_serving

log = logging.getLogger("pfs.jobs.runtime")

CONTAINER_PORT = 80  # the port a job server listens on inside its container
T = TypeVar("T")
# Pulls from the cluster registry run here, one per image at a time however many workers
# wait for it, so one job's huge image never holds up another job's workers.
_pull_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="pfs-pull")
RETRY_FIRST, RETRY_MAX = 0.5, 5.0  # seconds between attempts while the registry does not answer


@contextmanager
def docker_errors(what: str) -> Iterator[None]:
    """Docker SDK and transport failures as pfs errors, so callers handle one tree."""
    import docker.errors
    import requests

    try:
        yield
    except docker.errors.APIError as exc:
        raise JobError(f"{what}: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise Unavailable(f"{what}: the Docker Engine did not answer: {exc}") from exc


def unless_gone(what: str, call: Callable[[], T]) -> T | None:
    """The engine's answer, or None when it has no such object (404)."""
    import docker.errors

    try:
        with docker_errors(what):
            return call()
    except JobError as exc:
        if isinstance(exc.__cause__, docker.errors.NotFound):
            return None
        raise


def remove_container(api: Any, container: str, what: str) -> bool:
    """Force-remove a container with the anonymous volumes its image's VOLUME lines made on
    the host; False if it was already gone or another removal of it is under way (409)."""
    import docker.errors

    try:
        with docker_errors(what):
            api.remove_container(container, force=True, v=True)
    except JobError as exc:
        cause = exc.__cause__
        gone = isinstance(cause, docker.errors.NotFound)
        busy = isinstance(cause, docker.errors.APIError) and cause.status_code == 409
        if not (gone or busy):
            raise
        return False
    return True


def inspect_image(rt: EngineRuntime, image: str | None) -> dict[str, Any]:
    """The engine's record of a local image: 400 for a malformed or absent one (pfs never
    pulls), 503 when the engine does not answer."""
    import docker.errors

    if not image:
        raise BadRequest(f"the {rt.name} runtime needs an image")
    check_image(image)  # before the engine is asked: its errors for a bad name are not the caller's 400
    try:
        with docker_errors(f"inspecting image {image!r}"):
            return dict(rt.api.inspect_image(image))
    except JobError as exc:
        cause = exc.__cause__
        if isinstance(cause, docker.errors.NotFound):
            raise BadRequest(
                f"image {image!r} not found locally (pfs never pulls: build or load it on this machine)"
            ) from None
        if isinstance(cause, docker.errors.APIError) and cause.is_client_error():
            raise BadRequest(f"image {image!r}: the Docker Engine refused it: {cause.explanation or cause}") from None
        raise


class _PullTooSlow(JobError):
    """A pull that goes on but did not finish in time: not worth another attempt."""


def _within(
    timeout: float,
    what: str,
    attempt: Callable[[], T],
    deadline: float | None = None,
    diagnose: Callable[[], str | None] | None = None,
) -> T:
    """`attempt()`, again while the registry (or the engine's pull from it) does not answer,
    until `timeout` seconds have passed; then a JobError that says why (and, from
    `diagnose`, whether the registry answers now). A tag or digest the registry does not
    have is a JobError at once."""
    deadline = deadline if deadline is not None else time.monotonic() + timeout
    delay = RETRY_FIRST
    while True:
        try:
            return attempt()
        except ImageNotFound as exc:
            raise JobError(exc.message) from None
        except _PullTooSlow:
            raise
        except (Unavailable, JobError) as exc:
            if time.monotonic() + delay > deadline:
                down = diagnose() if diagnose is not None else None
                why = f"; {down}" if down and down not in exc.message else ""
                raise JobError(f"{exc.message} (gave up after {timeout:g} s, the job's start_timeout{why})") from None
            log.warning("%s: %s; trying again in %g s", what, exc.message, delay)
        time.sleep(delay)
        delay = min(delay * 2, RETRY_MAX)


class EngineWorker(Worker):
    """A worker the Docker Engine runs (a container, or a swarm service): its state and log
    come from the engine's API, and survive stop() for the job's log and error."""

    gone_reason = "it was removed"  # exit_reason once the engine has no trace of it

    def __init__(self, runtime: EngineRuntime, wid: str, memory: int) -> None:
        self.runtime = runtime
        self.id = wid
        self.memory = memory
        self.url = ""
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._final_reason: str | None = None
        self._final_logs = b""

    @property
    def label(self) -> str:
        """How log lines name it."""
        return self.id[:12]

    @abstractmethod
    def _current_reason(self) -> str | None:
        """What the engine says now: None while running, `gone_reason` if it has no trace."""

    @abstractmethod
    def _read_logs(self, limit: int) -> bytes: ...

    @abstractmethod
    def _remove(self) -> None:
        """Remove it from the engine (already gone is fine)."""

    def alive(self) -> bool:
        return self.exit_reason() is None

    def exit_reason(self) -> str | None:
        if self._stopped:
            return self._final_reason
        return self._current_reason()

    def logs(self, limit: int = 65536) -> str:
        if self._stopped:
            return tail(self._final_logs, limit)
        try:
            return tail(self._read_logs(limit), limit)
        except PfsError:
            return ""

    def stop(self) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            try:
                reason = self._current_reason()
                if reason == self.gone_reason:
                    self._final_reason = reason
                else:
                    self._final_reason = reason or "stopped by pfs"
                    self._final_logs = self._read_logs(LOG_KEEP)
            except PfsError as exc:
                self._final_reason = f"stopped by pfs ({exc.message})"
            self._remove()
            self.runtime._forget(self)
            self._stopped = True


class EngineRuntime(Runtime):
    """A runtime whose workers the Docker Engine runs. Images are local to the engine's
    machine (never pulled), or in the cluster registry when pfs has one (`registry`): those
    are pinned to a digest once per run and pulled by it, from that registry only."""

    kind = "worker"  # what one worker is, in log lines

    def __init__(self, instance: str, registry: Registry | None = None) -> None:
        self.instance = instance
        self.registry = registry
        self._pulls: dict[str, Future[None]] = {}
        self.session = uuid.uuid4().hex  # tells this pfs process's workers from a dead one's
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._lock = threading.Lock()
        self._workers: dict[str, EngineWorker] = {}

    @property
    def api(self) -> Any:
        """The low-level client (exact control, no implicit pulls), connected on first use:
        an engine that is down is a 503 of the request that needs it, not of pfs's start."""
        with self._client_lock:
            if self._client is None:
                import docker

                with docker_errors("connecting to the Docker Engine"):
                    self._client = docker.from_env(timeout=60, max_pool_size=64)
            return self._client.api

    # ---- images of the cluster registry ----------------------------------------------
    def in_registry(self, image: str | None) -> bool:
        return self.registry is not None and self.registry.owns(image)

    def pin(self, image: str | None, timeout: float) -> tuple[str, str | None]:
        """A registry image's tag resolved to its digest now (retried while the registry
        does not answer, for up to `timeout` seconds); other images as `image_id` says."""
        if not self.in_registry(image):
            return self.image_id(image), None
        registry = self.registry
        assert registry is not None and image is not None
        digest = _within(timeout, f"resolving {image}", lambda: registry.resolve(image), diagnose=registry.unreachable)
        return digest, registry.pinned(image, digest)

    def ensure_image(self, image: str | None, timeout: float) -> None:
        """The image is on this engine: a local one must be (a 400 otherwise: pfs never
        pulls it); a pinned image of the cluster registry is pulled if it is not, retried
        while the registry does not answer, for up to `timeout` seconds in all."""
        registry = self.registry
        if registry is None or not registry.owns(image):
            inspect_image(self, image)
            return
        assert image is not None
        if "@" not in image:
            raise BadRequest(f"image {image!r}: a registry image runs by digest, pinned when its run starts")
        if self._present(image):
            return
        deadline = time.monotonic() + timeout

        def pulled() -> None:
            if self._present(image):  # another worker's pull brought it meanwhile
                return
            fut = self._pull(image)
            try:
                fut.result(timeout=max(deadline - time.monotonic(), 0.0))
            except FutureTimeout:
                down = registry.unreachable()
                raise _PullTooSlow(
                    f"pulling {image} did not finish within {timeout:g} s (the job's start_timeout)"
                    + (f": {down}" if down else "; the pull goes on, and the next start uses the image once it is here")
                ) from None

        _within(timeout, f"pulling {image}", pulled, deadline, registry.unreachable)

    def _present(self, image: str) -> bool:
        return unless_gone(f"inspecting image {image!r}", lambda: self.api.inspect_image(image)) is not None

    def _pull(self, image: str) -> Future[None]:
        """The pull of `image` under way, or a new one."""
        with self._lock:
            fut = self._pulls.get(image)
            if fut is None or fut.done():
                for done in [k for k, f in self._pulls.items() if f.done()]:  # only pulls under way stay
                    del self._pulls[done]
                fut = self._pulls[image] = _pull_pool.submit(self._pull_now, image)
            return fut

    def _pull_now(self, image: str) -> None:
        assert self.registry is not None
        log.info("pulling %s from the cluster registry", image)
        started = time.monotonic()
        try:
            with docker_errors(f"pulling {image}"):
                for event in self.api.pull(image, stream=True, decode=True, auth_config=self.registry.auth_config()):
                    if isinstance(event, dict) and event.get("error"):
                        raise Unavailable(f"pulling {image}: {str(event['error'])[:500]}")
        except JobError as exc:
            import docker.errors

            if isinstance(exc.__cause__, docker.errors.NotFound):  # the registry answered: no such digest
                raise ImageNotFound(f"image {image}: the registry {self.registry.address} does not have it") from None
            raise
        if not self._present(image):
            raise Unavailable(f"pulling {image}: the engine does not have it after the pull")
        log.info("pulled %s in %.1f s", image, time.monotonic() - started)

    def _forget(self, worker: EngineWorker) -> None:
        with self._lock:
            self._workers.pop(worker.id, None)

    def labels(self, spec: WorkerSpec) -> dict[str, str]:
        """What marks a worker as this pfs's: `reap` finds leftovers by them."""
        return {
            "pfs": "1",
            "pfs.instance": self.instance,
            "pfs.job": spec.job,
            "pfs.run": spec.run,
            "pfs.session": self.session,
        }

    def _serve(self, worker: EngineWorker, spec: WorkerSpec, launch: Callable[[], str | None]) -> Worker:
        """Track a created worker, `launch` it (None once it runs and worker.url is set,
        else why not) and wait until it answers HTTP; a worker that never does is stopped,
        and the error says why, with its log."""
        with self._lock:
            self._workers[worker.id] = worker
        try:
            reason = launch()
            if reason is None:
                reason = wait_until_serving(worker, max(spec.start_timeout, 0.0))
        except BaseException:
            worker.stop()
            raise
        if reason is not None:
            raise start_failed(worker, spec, reason)
        return worker

    def stop_all(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            try:
                w.stop()
            except PfsError as exc:
                log.warning("stopping %s %s: %s", self.kind, w.label, exc.message)

    def close(self) -> None:
        """Stops whatever the scheduler left running, then lets go of the engine."""
        self.stop_all()
        if self._client is not None:
            self._client.close()
