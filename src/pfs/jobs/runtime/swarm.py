"""The `swarm` job runtime: each worker is a Docker Swarm service with one task.

It behaves like the `docker` runtime (same interface, same bounds, labels and cleanup) but
lets the swarm place workers on any node, so a cluster of pfs nodes spreads its jobs over
the machines of the swarm. pfs talks to a manager's Docker API (DOCKER_HOST or the local
socket); the workers never get the socket, mounts or capabilities.

How pfs reaches a worker, the one thing a swarm makes harder than one engine:

- PFS_SWARM_NETWORK unset (pfs runs on a swarm node, outside containers): the worker is
  placed on pfs's own node and publishes nothing; pfs connects to its container's address
  on the node's local `bridge` network, which only this host can reach. (Swarm cannot
  publish a port on 127.0.0.1 only: a published port would be open on every interface.)
  To spread workers over many nodes, run pfs in the stack with PFS_SWARM_NETWORK.
- PFS_SWARM_NETWORK=<overlay network> (pfs itself runs as a service on that network, as in
  deploy/stack.yaml): nothing is published; the worker joins the network and pfs connects
  to the task's address on it.

Neither needs the routing mesh (ingress, VIPs): workers use DNS round-robin endpoints and
are addressed directly, so the runtime also works where the kernel has no IPVS.

Images are run by id (or by repository digest when they have one), so a node never pulls
a tag: the image pfs checked is exactly the one that runs. On a multi-node swarm it must
be on every node (`docker save | docker load` keeps its id), or in the cluster registry
(PFS_REGISTRY_URL): its images run by the digest their tag named when the run started, and
each node pulls that digest from the registry, with the credentials pfs hands the swarm.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from typing import Any

from ...errors import BadRequest, PfsError, Unavailable
from ..registry import Registry
from ..spec import check_image
from .base import Worker, WorkerSpec, signal_name
from .engine import (
    CONTAINER_PORT,
    EngineRuntime,
    EngineWorker,
    docker_errors,
    inspect_image,
    remove_container,
    unless_gone,
)

log = logging.getLogger("pfs.jobs.swarm")

NETWORK_ENV = "PFS_SWARM_NETWORK"
TASK_ENV = "PFS_SWARM_TASK"  # the swarm task running this pfs, if it runs as a service ("{{.Task.ID}}")
SCHEDULE_TIMEOUT = 60.0  # seconds for the swarm to place a worker's task and start its container
REMOVE_TIMEOUT = 20.0  # seconds to wait for a removed service's containers to be gone
# Task states before it ends (https://docs.docker.com/engine/swarm/how-swarm-mode-works/swarm-task-states/)
_LIVE = frozenset({"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"})


def _service_name(job: str) -> str:
    """A unique service name: swarm names are DNS labels (letters, digits, '-'; 63 at most)."""
    slug = re.sub(r"[^a-z0-9]+", "-", job.lower()).strip("-")[:30].strip("-") or "job"
    return f"pfs-{slug}-{uuid.uuid4().hex[:12]}"


def _task_reason(task: dict[str, Any]) -> str | None:
    """None while a task has not ended; else why it ended, in the docker runtime's words."""
    status = task.get("Status") or {}
    state = str(status.get("State") or "")
    if state in _LIVE:
        return None
    err = str(status.get("Err") or status.get("Message") or "")
    code = int((status.get("ContainerStatus") or {}).get("ExitCode") or 0)
    if state == "complete":
        return "exited with code 0"
    if state == "failed" and code:
        reason = f"exited with code {code}"
        return reason + f" ({signal_name(code - 128)})" if code > 128 else reason
    if state == "rejected":
        return f"rejected by the swarm: {err}"
    if state == "orphaned":
        return "its swarm node is gone"
    if state in ("shutdown", "remove"):
        return "shut down by the swarm"
    return f"{state}: {err}" if err else state


class SwarmWorker(EngineWorker):
    gone_reason = "the service was removed"
    runtime: SwarmRuntime

    def __init__(self, runtime: SwarmRuntime, service_id: str, name: str, memory: int) -> None:
        super().__init__(runtime, service_id, memory)
        self.name = name

    @property
    def label(self) -> str:
        return self.name

    def _task(self) -> dict[str, Any] | None:
        """The service's task (the newest, should there be more), {} before it has one, None
        once the service is gone."""
        tasks = unless_gone("listing a service's tasks", lambda: self.runtime.api.tasks(filters={"service": self.id}))
        if tasks is None:
            return None
        if not tasks:
            return {}
        newest: dict[str, Any] = max(tasks, key=lambda t: str(t.get("CreatedAt") or ""))
        return newest

    def _reason(self, task: dict[str, Any] | None) -> str | None:
        if task is None:
            return self.gone_reason
        if not task:
            return None  # not scheduled yet
        reason = _task_reason(task)
        if reason is not None and reason.startswith("exited with code 137") and self._oom_killed(task):
            return f"killed: out of memory (limit {self.memory / (1 << 20):g} MiB)"
        return reason

    def _oom_killed(self, task: dict[str, Any]) -> bool:
        """Swarm does not report OOM kills; the container says so, when it ran on this node."""
        cid = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        if not cid or task.get("NodeID") != self.runtime.node_id():
            return False
        try:
            with docker_errors("inspecting a container"):
                info = self.runtime.api.inspect_container(cid)
        except PfsError:
            return False
        return bool((info.get("State") or {}).get("OOMKilled"))

    def _current_reason(self) -> str | None:
        return self._reason(self._task())

    def _read_logs(self, limit: int) -> bytes:
        with docker_errors("reading a service's log"):
            chunks = self.runtime.api.service_logs(
                self.id, stdout=True, stderr=True, tail=max(200, limit // 32), follow=False, is_tty=False
            )
            data = b"".join(chunks)
        return data[-limit:]

    def _remove(self) -> None:
        self.runtime._remove(self.id, self.name)


class SwarmRuntime(EngineRuntime):
    """Workers as one-task services of the Docker Swarm whose manager pfs talks to."""

    name = "swarm"
    kind = "service"

    def __init__(
        self,
        instance: str,
        network: str | None = None,
        owner_task: str | None = None,
        user: str = "65534:65534",
        registry: Registry | None = None,
    ) -> None:
        super().__init__(instance, registry)
        self._logged_in = False
        self.user = user  # who its containers run as: not root
        self.network = network if network is not None else (os.environ.get(NETWORK_ENV) or None)
        # A pfs that is itself a swarm task has no data dir that outlives it, so no lasting
        # instance id: its workers also name the task, and any pfs reaps those of a dead task.
        self.owner_task = owner_task if owner_task is not None else (os.environ.get(TASK_ENV) or None)
        self._node_id: str | None = None
        self.api  # noqa: B018 - connect now: a swarm runtime is only made for a swarm that should answer

    def node_id(self) -> str:
        """This engine's swarm node id; Unavailable unless it is an active manager. The engine
        is only asked until it first says yes."""
        if self._node_id is None:
            with docker_errors("asking the Docker Engine about its swarm"):
                info = self.api.info()
            swarm = info.get("Swarm") or {}
            if swarm.get("LocalNodeState") != "active" or not swarm.get("NodeID"):
                raise Unavailable(
                    "the swarm runtime needs a Docker Engine in a swarm "
                    "(`docker swarm init --advertise-addr <address>`, or `docker swarm join`)"
                )
            if not swarm.get("ControlAvailable"):
                raise Unavailable("the swarm runtime needs a swarm manager's Docker API; this engine is a worker")
            self._node_id = str(swarm["NodeID"])
        return self._node_id

    def _image(self, image: str | None) -> tuple[str, str]:
        """(image id, what the service runs): the digest of the image's own repository if
        it has one, else its id, so that no node ever pulls a tag. An image of the cluster registry
        runs by digest (pinned when its run started), which every node pulls from it."""
        if not image:
            raise BadRequest("the swarm runtime needs an image")
        check_image(image)  # a malformed name is a 400 before any engine is asked
        self.node_id()
        if self.in_registry(image):
            assert self.registry is not None
            if "@" in image:
                return image.rsplit("@", 1)[1], image
            digest = self.registry.resolve(image)
            return digest, self.registry.pinned(image, digest)
        info = inspect_image(self, image)
        image_id = str(info["Id"])
        name = image.split("@")[0]
        last = name.rsplit("/", 1)[-1]
        repo = name[: len(name) - len(last)] + last.split(":")[0]  # without the tag; a registry's port stays
        # Only a digest of the image's own repository: one of another (a registry it was
        # once pushed to, maybe gone) would send every node to pull from there.
        digests = [str(d) for d in info.get("RepoDigests") or []]
        return image_id, next((d for d in digests if d.split("@")[0] == repo), image_id)

    def image_id(self, image: str | None) -> str:
        return self._image(image)[0]

    def start(self, spec: WorkerSpec) -> Worker:
        _, ref = self._image(spec.image)  # a clear 400 rather than a pull attempt on some node
        if self.in_registry(ref):
            self._login()  # the nodes pull it with the registry's credentials
        name = _service_name(spec.job)
        labels = {**self.labels(spec), "pfs.image": spec.image or ""}
        if self.owner_task:
            labels["pfs.owner-task"] = self.owner_task
        # The containers' labels leave out "pfs": the docker runtime's reap must not take them.
        container_labels = {k: labels[k] for k in ("pfs.instance", "pfs.job", "pfs.run")}
        container_labels["pfs.service"] = name
        task_template: dict[str, Any] = {
            "ContainerSpec": {
                "Image": ref,
                "Args": list(spec.command),  # the image's CMD; its ENTRYPOINT stays, as with `docker run`
                "Env": [f"{k}={v}" for k, v in {**spec.env, "PORT": str(CONTAINER_PORT)}.items()],
                "Labels": container_labels,
                "User": self.user,
                "Init": True,  # reaps zombies and forwards signals for servers that run as pid 1
                "CapabilityDrop": ["ALL"],
                # lets a server without CAP_NET_BIND_SERVICE listen on port 80 on every engine version
                "Sysctls": {"net.ipv4.ip_unprivileged_port_start": "0"},
                "StopGracePeriod": 0,  # a stopped worker is killed at once, as `docker rm -f` does
            },
            # Swarm sets no memory+swap limit: with swap on a node a worker may swap up to its memory again.
            "Resources": {
                "Limits": {"NanoCPUs": max(int(spec.cpus * 1e9), 1), "MemoryBytes": spec.memory, "Pids": spec.pids}
            },
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},  # pfs replaces dead workers itself
            "LogDriver": {"Name": "json-file", "Options": {"max-size": "16m", "max-file": "1"}},
        }
        endpoint: dict[str, Any] = {"Mode": "dnsrr"}  # no VIP: workers are addressed directly
        if self.network:
            task_template["Networks"] = [{"Target": self.network}]
        else:  # on this node, on its local bridge: no port published anywhere
            task_template["Placement"] = {"Constraints": [f"node.id=={self.node_id()}"]}
        with docker_errors(f"creating a swarm service of {spec.image!r}"):
            created = self.api.create_service(
                task_template,
                name=name,
                labels=labels,
                mode={"Replicated": {"Replicas": 1}},
                endpoint_spec=endpoint,
            )
        worker = SwarmWorker(self, str(created["ID"]), name, spec.memory)
        return self._serve(worker, spec, lambda: self._locate(worker))

    def _login(self) -> None:
        """Give the engine client the registry's credentials once: service creation sends
        them to the swarm (X-Registry-Auth), and each node pulls with them."""
        auth = self.registry.auth_config() if self.registry is not None else None
        if auth is None or self._logged_in:
            return
        with docker_errors(f"signing in to the registry {auth['serveraddress']}"):
            self.api.login(username=auth["username"], password=auth["password"], registry=auth["serveraddress"])
        self._logged_in = True

    def _locate(self, worker: SwarmWorker) -> str | None:
        """Wait for the task to run and set worker.url; None once set, else why not."""
        deadline = time.monotonic() + SCHEDULE_TIMEOUT
        while True:
            task = worker._task()
            reason = worker._reason(task)
            if reason is not None:
                return reason
            assert task is not None
            status = task.get("Status") or {}
            if status.get("State") == "running":
                url = self._task_url(task)
                if url is not None:
                    worker.url = url
                    return None
            if time.monotonic() >= deadline:
                state = status.get("State") or "not scheduled"
                detail = status.get("Err") or status.get("Message")
                state = f"{state}: {detail}" if detail else state
                return f"the swarm did not start it within {SCHEDULE_TIMEOUT:g} s (task {state})"
            time.sleep(0.05)

    def _task_url(self, task: dict[str, Any]) -> str | None:
        if self.network:
            for att in task.get("NetworksAttachments") or []:
                net = att.get("Network") or {}
                if self.network in (net.get("ID"), (net.get("Spec") or {}).get("Name")) and att.get("Addresses"):
                    addr = str(att["Addresses"][0]).split("/")[0]
                    return f"http://[{addr}]:{CONTAINER_PORT}" if ":" in addr else f"http://{addr}:{CONTAINER_PORT}"
            return None
        return self._bridge_url(task)

    def _bridge_url(self, task: dict[str, Any]) -> str | None:
        """The worker's address on this node's `bridge` network (the task runs here)."""
        cid = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        if not cid:
            return None
        info = unless_gone("inspecting a worker's container", lambda: self.api.inspect_container(cid))
        if info is None:
            return None
        for net in ((info.get("NetworkSettings") or {}).get("Networks") or {}).values():
            addr = str((net or {}).get("IPAddress") or "")
            if addr:
                return f"http://{addr}:{CONTAINER_PORT}"
        return None

    def _remove(self, service_id: str, name: str) -> None:
        """Remove a service, then wait (bounded) until the swarm has shut down and removed its
        containers, so that a stopped worker is really gone, not just going. A container on
        this node is killed first: the swarm alone takes a second or two to stop it."""
        by_service = {"label": [f"com.docker.swarm.service.id={service_id}"]}
        try:
            with docker_errors("listing a service's containers"):
                mine = self.api.containers(all=True, filters=by_service)
            for c in mine:
                remove_container(self.api, c["Id"], "removing a service's container")
        except PfsError as exc:
            log.warning("killing the container of service %s: %s", name, exc.message)  # the swarm will
        unless_gone("removing a swarm service", lambda: self.api.remove_service(service_id))
        deadline = time.monotonic() + REMOVE_TIMEOUT
        while True:
            try:
                with docker_errors("waiting for a removed service's tasks"):
                    tasks = [t for t in self.api.tasks(filters={"name": name}) if t.get("ServiceID") == service_id]
                    local = self.api.containers(all=True, filters=by_service)
            except PfsError as exc:
                log.warning("waiting for service %s to go: %s", name, exc.message)
                return
            if not tasks and not local:
                return
            if time.monotonic() >= deadline:
                log.warning("service %s removed, but its containers are still there after %g s", name, REMOVE_TIMEOUT)
                return
            time.sleep(0.05)

    def reap(self) -> int:
        """Removes the services of an earlier pfs of this instance, and those of any pfs whose
        swarm task has ended (a replica of a stack that died)."""
        with docker_errors("listing swarm services"):
            found = self.api.services(filters={"label": ["pfs=1", f"pfs.instance={self.instance}"]})
            owned = self.api.services(filters={"label": ["pfs=1", "pfs.owner-task"]})
        found = [s for s in found if ((s.get("Spec") or {}).get("Labels") or {}).get("pfs.session") != self.session]
        owners: dict[str, bool] = {}  # task id -> still running
        for s in owned:
            owner = str(((s.get("Spec") or {}).get("Labels") or {}).get("pfs.owner-task") or "")
            if not owner or owner == self.owner_task or any(f["ID"] == s["ID"] for f in found):
                continue
            if owner not in owners:
                with docker_errors("looking up a pfs task"):
                    tasks = self.api.tasks(filters={"id": owner})
                owners[owner] = any(t.get("ID") == owner and _task_reason(t) is None for t in tasks)
            if not owners[owner]:
                found.append(s)
        removed = 0
        for s in found:
            try:
                self._remove(str(s["ID"]), str((s.get("Spec") or {}).get("Name") or ""))
                removed += 1
            except PfsError as exc:
                log.warning("could not remove leftover service %s: %s", str(s["ID"])[:12], exc.message)
        return removed
