"""The `docker` runtime: each worker is a container on the local Docker Engine, bounded
(memory, pids, cpus), without capabilities or mounts, as an unprivileged user, on pfs's
isolated jobs network (sandbox.py): it publishes no port, and pfs reaches it at its
address on that network, which nothing else can reach it from, and from which it
reaches nothing."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from ...errors import JobError, PfsError
from ..registry import Registry
from .base import Worker, WorkerSpec, signal_name, slug
from .engine import (
    CONTAINER_PORT,
    EngineRuntime,
    EngineWorker,
    docker_errors,
    inspect_image,
    remove_container,
    unless_gone,
)
from .sandbox import Isolation, Sandbox

log = logging.getLogger("pfs.jobs.runtime")


def _docker_reason(state: dict[str, Any], memory: int) -> str | None:
    status = state.get("Status")
    if status in ("running", "created", "restarting", "paused"):
        return None
    if state.get("OOMKilled"):
        return f"killed: out of memory (limit {memory / (1 << 20):g} MiB)"
    code = int(state.get("ExitCode") or 0)
    reason = f"exited with code {code}"
    if code > 128:
        reason += f" ({signal_name(code - 128)})"
    if state.get("Error"):
        reason += f": {state['Error']}"
    return reason


class DockerWorker(EngineWorker):
    gone_reason = "the container was removed"
    runtime: DockerRuntime

    def _state(self) -> dict[str, Any] | None:
        info = unless_gone("inspecting a container", lambda: self.runtime.api.inspect_container(self.id))
        return None if info is None else dict(info)

    def _current_reason(self) -> str | None:
        info = self._state()
        if info is None:
            return self.gone_reason
        return _docker_reason(info["State"], self.memory)

    def _read_logs(self, limit: int) -> bytes:
        with docker_errors("reading a container's log"):
            data = self.runtime.api.logs(self.id, stdout=True, stderr=True, tail=max(200, limit // 32))
        return bytes(data)[-limit:]

    def _remove(self) -> None:
        remove_container(self.runtime.api, self.id, "removing a container")


class DockerRuntime(EngineRuntime):
    """Workers as containers of the local Docker Engine."""

    name = "docker"
    kind = "container"

    def __init__(self, instance: str, sandbox: Sandbox | None = None, registry: Registry | None = None) -> None:
        super().__init__(instance, registry)
        self.sandbox = sandbox or Sandbox()
        self.isolation = Isolation(self.sandbox)

    def check_isolation(self) -> None:
        """503 now, when a spec is stored, rather than at its run, if workers could not be isolated."""
        self.isolation.ensure(self.api)

    def image_id(self, image: str | None) -> str:
        if self.in_registry(image):
            assert self.registry is not None and image is not None
            return self.registry.resolve(image)
        return str(inspect_image(self, image)["Id"])

    def start(self, spec: WorkerSpec) -> Worker:
        from docker.types import LogConfig

        # A local image must be here (a clear 400 rather than a pull attempt); a pinned
        # image of the cluster registry is pulled now if it is not.
        self.ensure_image(spec.image, spec.start_timeout)
        network = self.isolation.ensure(self.api)
        host_config = self.api.create_host_config(
            mem_limit=spec.memory,
            memswap_limit=spec.memory,  # no swap beyond the memory limit
            pids_limit=spec.pids,
            nano_cpus=max(int(spec.cpus * 1e9), 1),
            network_mode=network,  # never the default bridge: see sandbox.py
            security_opt=["no-new-privileges"],
            cap_drop=["ALL"],
            init=True,  # reaps zombies and forwards signals for servers that run as pid 1
            privileged=False,
            # lets a server without CAP_NET_BIND_SERVICE listen on port 80 on every engine version
            sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
            log_config=LogConfig(type="json-file", config={"max-size": "16m", "max-file": "1"}),
        )
        with docker_errors(f"creating a container of {spec.image!r}"):
            created = self.api.create_container(
                spec.image,
                command=list(spec.command),
                environment={**spec.env, "PORT": str(CONTAINER_PORT)},
                labels=self.labels(spec),
                user=self.sandbox.user,
                host_config=host_config,
                name=f"pfs-{slug(spec.job)}-{uuid.uuid4().hex[:12]}",
                detach=True,
            )
        worker = DockerWorker(self, str(created["Id"]), spec.memory)

        def launch() -> str | None:
            try:
                with docker_errors("starting a container"):
                    self.api.start(worker.id)
            except PfsError as exc:
                return exc.message
            return self._locate(worker, network, spec.start_timeout)

        return self._serve(worker, spec, launch)

    def _locate(self, worker: DockerWorker, network: str, timeout: float) -> str | None:
        """Find the worker's address on the jobs network; None once worker.url is set, else why not."""
        deadline = time.monotonic() + max(timeout, 1.0)
        while True:
            info = worker._state()
            if info is None:
                return worker.gone_reason
            reason = _docker_reason(info["State"], worker.memory)
            if reason is not None:
                return reason
            nets = (info.get("NetworkSettings") or {}).get("Networks") or {}
            ip = (nets.get(network) or {}).get("IPAddress")
            if ip:
                worker.url = f"http://{ip}:{CONTAINER_PORT}"
                return None
            if time.monotonic() >= deadline:
                return f"the container got no address on network {network!r}"
            time.sleep(0.02)

    def reap(self) -> int:
        with docker_errors("listing containers"):
            found = self.api.containers(all=True, filters={"label": ["pfs=1", f"pfs.instance={self.instance}"]})
        removed = 0
        for c in found:
            if (c.get("Labels") or {}).get("pfs.session") == self.session:
                continue  # ours, alive
            try:
                removed += remove_container(self.api, c["Id"], "removing a leftover container")
            except JobError as exc:
                log.warning("could not remove leftover container %s: %s", str(c["Id"])[:12], exc.message)
        return removed
