"""Job runtimes: what starts a job's HTTP server (a worker) and hands back its URL.

- `docker` (docker.py): a container on the local Docker Engine;
- `swarm` (swarm.py): a one-task service of a Docker Swarm;
- `process` (process.py): a local process, which is no sandbox: the operator's choice only.

The interface is in base.py; what docker and swarm share, in engine.py. `Runtimes` is
the registry a pfs node keeps: one runtime of each kind, made when first needed, and the
rule that a spec can never choose the process runtime itself.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from ...errors import BadRequest, PfsError
from ..registry import Registry
from ..spec import JobSpec
from .base import Runtime, Worker, WorkerSpec
from .docker import DockerRuntime
from .process import ProcessRuntime
from .sandbox import Sandbox
from .swarm import SwarmRuntime

__all__ = ["NAMES", "JobLimits", "Runtime", "Runtimes", "Sandbox", "Worker", "WorkerSpec", "make_runtime"]

log = logging.getLogger("pfs.jobs.runtime")

NAMES = ("docker", "swarm", "process")
PROCESS_REFUSED = (
    "this server does not run jobs as host processes: the process runtime is no sandbox (a job "
    "would run with pfs's own rights), so only the operator enables it, when starting pfs "
    "(PFS_JOB_RUNTIME=process); give the job an image to run in a container"
)


@dataclass(frozen=True)
class JobLimits:
    """What one job may ask of this machine, set by the operator (`pfs serve --job-max-*`):
    a spec beyond it is a 400, so no client can book 256 GB of memory or 64 workers on a
    2-core host. The defaults follow the host: half its memory per worker, its cores per
    worker, and four workers per core per job."""

    memory: int  # bytes per worker
    cpus: float  # per worker
    parallelism: int  # workers of one map job

    @classmethod
    def of_host(cls, memory: int | None = None, cpus: float | None = None, parallelism: int | None = None) -> JobLimits:
        import psutil

        cores = os.cpu_count() or 1
        return cls(
            memory=memory if memory is not None else psutil.virtual_memory().total // 2,
            cpus=cpus if cpus is not None else float(cores),
            parallelism=parallelism if parallelism is not None else max(4, 4 * cores),
        )

    def check(self, memory: int, cpus: float, parallelism: int) -> None:
        over = []
        if memory > self.memory:
            over.append(f"memory {_size(memory)} (at most {_size(self.memory)})")
        if cpus > self.cpus:
            over.append(f"cpus {cpus:g} (at most {self.cpus:g})")
        if parallelism > self.parallelism:
            over.append(f"parallelism {parallelism} (at most {self.parallelism})")
        if over:
            raise BadRequest(
                f"job asks for more than this server allows: {', '.join(over)}; "
                "the operator sets these limits (pfs serve --job-max-memory, --job-max-cpus, --job-max-parallelism)"
            )


def _size(n: int) -> str:
    for unit, shift in (("g", 30), ("m", 20), ("k", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n} bytes"


def make_runtime(
    name: str, instance: str, state_dir: str, sandbox: Sandbox | None = None, registry: Registry | None = None
) -> Runtime:
    if name == "docker":
        return DockerRuntime(instance, sandbox, registry)
    if name == "process":
        return ProcessRuntime(instance, state_dir)
    if name == "swarm":
        return SwarmRuntime(instance, user=(sandbox or Sandbox()).user, registry=registry)
    raise BadRequest(f"unknown runtime {name!r}: use 'docker', 'process' or 'swarm'")


class Runtimes:
    """The runtimes of one pfs node. `default`: the operator's choice (None: docker);
    "process" alone lets jobs run as host processes."""

    def __init__(
        self,
        instance: str,
        state_dir: str,
        default: str | None = None,
        limits: JobLimits | None = None,
        sandbox: Sandbox | None = None,
        registry: Registry | None = None,
    ) -> None:
        if default not in (None, *NAMES):
            raise BadRequest(f"job runtime must be one of {', '.join(NAMES)}, not {default!r}")
        self.instance = instance
        self.state_dir = state_dir
        self.default = default or "docker"
        self.limits = limits if limits is not None else JobLimits.of_host()
        self.sandbox = sandbox or Sandbox()
        self.registry = registry  # the cluster's image registry, if the operator set one
        self._made: dict[str, Runtime] = {}
        self._lock = threading.Lock()

    def check(self, spec: JobSpec) -> str:
        """The runtime `spec` runs in, once it is within what the operator allows: a 400 for
        the process runtime unless the operator chose it (a spec must never get to run code
        on the host), and for resources beyond the operator's limits. Checked when a spec
        is stored and again when it runs, so lowering a limit stops stored specs too."""
        name = spec.runtime or self.default
        if name == "process" and self.default != "process":
            raise BadRequest(PROCESS_REFUSED)
        self.limits.check(spec.memory, spec.cpus, spec.parallelism)
        return name

    def get(self, name: str | None) -> Runtime:
        name = name or self.default
        with self._lock:
            rt = self._made.get(name)
            if rt is None:
                rt = self._made[name] = make_runtime(name, self.instance, self.state_dir, self.sandbox, self.registry)
            return rt

    def reap(self) -> None:
        """Remove the workers an earlier pfs process left: always its host processes, and
        containers or services of the default runtime (the only engine this node uses)."""
        for name in ("process", "docker", "swarm"):
            if name in ("docker", "swarm") and self.default != name:
                continue
            try:
                n = self.get(name).reap()
            except PfsError as exc:
                log.warning("could not reap %s workers: %s", name, exc)
                continue
            if n:
                log.warning("removed %d %s worker(s) left by an earlier pfs process", n, name)

    def stop_all(self) -> None:
        """Stop every worker, those still starting too (their readiness wait then ends)."""
        with self._lock:
            made = list(self._made.values())
        for rt in made:
            try:
                rt.stop_all()
            except Exception:
                log.exception("stopping %s workers", rt.name)

    def close(self) -> None:
        with self._lock:
            for rt in self._made.values():
                rt.close()
            self._made.clear()
        if self.registry is not None:
            self.registry.close()
