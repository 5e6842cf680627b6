"""The runtime interface: start a job's HTTP server (a worker) and hand back its URL.

The scheduler does not care which runtime runs a job. Every worker gets `$PORT`, the port
its server must listen on. Runtimes are thread-safe: the scheduler starts and stops
workers from several threads at once.
"""

from __future__ import annotations

import logging
import re
import signal
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import httpx

from ...errors import JobError, PfsError

log = logging.getLogger("pfs.jobs.runtime")

LOG_KEEP = 64 << 10  # bytes of a worker's log kept in memory once it is stopped
START_ERROR_LOG = 4 << 10  # bytes of the log quoted in a start error


@dataclass(frozen=True)
class WorkerSpec:
    job: str  # job name, goes into labels
    run: str  # run id (a commit id), goes into labels
    image: str | None  # docker image; ignored by the process runtime
    command: list[str]  # starts an HTTP server on $PORT
    env: dict[str, str]  # extra environment (PORT is set by the runtime)
    memory: int  # bytes
    cpus: float
    pids: int
    start_timeout: float  # seconds for the server to start answering HTTP


class Worker(ABC):
    """One running job server. Its state survives stop(): exit_reason() and logs() still answer."""

    url: str  # "http://127.0.0.1:<port>"

    @abstractmethod
    def alive(self) -> bool: ...

    @abstractmethod
    def exit_reason(self) -> str | None:
        """None while running; else why it ended, e.g. "exited with code 3"."""

    @abstractmethod
    def logs(self, limit: int = 65536) -> str:
        """The tail of its stdout and stderr."""

    @abstractmethod
    def stop(self) -> None:
        """Kill it and remove every trace (container, process group, files). Idempotent."""


class Runtime(ABC):
    name: str

    @abstractmethod
    def start(self, spec: WorkerSpec) -> Worker:
        """Returns once the server answers HTTP; raises JobError, after stopping it, if it
        exits first or does not answer within spec.start_timeout."""

    @abstractmethod
    def image_id(self, image: str | None) -> str:
        """What identifies the code a job runs, for incremental reuse: an image's id."""

    def pin(self, image: str | None, timeout: float) -> tuple[str, str | None]:
        """Once per run: (`image_id`, and the exact image every worker of the run then
        runs, or None for `image` itself). A runtime with a registry resolves its tags to
        digests here, waiting up to `timeout` seconds for it."""
        return self.image_id(image), None

    @abstractmethod
    def reap(self) -> int:
        """Stop and remove the workers an earlier (killed) pfs of this instance left behind."""

    @abstractmethod
    def stop_all(self) -> None:
        """Stop every worker this runtime started and has not stopped yet."""

    def check_isolation(self) -> None:  # noqa: B027 - only the docker runtime has something to check
        """Raise (503) if this runtime's workers could not be cut off from the host now."""

    def close(self) -> None:
        self.stop_all()


# ---- what every runtime uses -----------------------------------------------------------


def slug(text: str, limit: int = 40) -> str:
    """A worker-name-safe form of a job name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:limit] or "job"


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def tail(data: bytes, limit: int) -> str:
    return data[-limit:].decode(errors="replace") if limit > 0 else ""


def wait_until_serving(worker: Worker, timeout: float) -> str | None:
    """None once the server answers any HTTP request; else why it never will."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    with httpx.Client(trust_env=False) as client:
        while True:
            reason = worker.exit_reason()
            if reason is not None:
                return reason
            left = deadline - time.monotonic()
            if left <= 0:
                return f"did not answer HTTP within {timeout:g} s"
            try:
                client.get(worker.url + "/", timeout=max(min(left, 2.0), 0.05))
                return None
            except httpx.HTTPError:
                pass
            time.sleep(max(min(delay, deadline - time.monotonic()), 0))
            delay = min(delay * 2, 0.05)


def start_failed(worker: Worker, spec: WorkerSpec, reason: str) -> JobError:
    """Stop a worker that did not start and say why, with its log: the job's author needs both."""
    text = worker.logs(START_ERROR_LOG).strip()
    try:
        worker.stop()
    except PfsError as exc:
        log.warning("stopping a worker that failed to start: %s", exc.message)
    final = worker.exit_reason() if reason.startswith("did not") else reason
    if final and final != reason and final != "stopped by pfs":
        reason = f"{reason} ({final})"
    return JobError(
        f"worker for job {spec.job!r} failed to start: {reason}\n--- worker log (tail):\n{text or '(empty)'}",
        job=spec.job,
    )
