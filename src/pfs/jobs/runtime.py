"""Job runtimes: start a job's HTTP server (a worker) and hand back its URL.

Two runtimes share one interface, so the scheduler does not care which one runs a job:

- `docker`: a container on the local Docker Engine, bounded (memory, pids, cpus), without
  capabilities or mounts, its port published on 127.0.0.1 only, labelled with this pfs
  instance so that a later pfs can remove what a killed one left behind;
- `process`: `command` as a local process, for machines without Docker. It is NOT a
  sandbox: the job runs as the pfs user with pfs's privileges; only its memory is bounded.
  So it exists only where the operator chose it (`PFS_JOB_RUNTIME=process`); a spec can
  never switch it on (the scheduler refuses, see `Scheduler.check_runtime`).

Every worker gets `$PORT`, the port its server must listen on. Both runtimes are
thread-safe: the scheduler starts and stops workers from several threads at once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ..errors import BadRequest, JobError, PfsError, Unavailable
from .spec import check_image

log = logging.getLogger("pfs.jobs.runtime")

LOG_KEEP = 64 << 10  # bytes of a worker's log kept in memory once it is stopped
START_ERROR_LOG = 4 << 10  # bytes of the log quoted in a start error
CONTAINER_PORT = 80  # the port a job server listens on inside its container


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

    @abstractmethod
    def reap(self) -> int:
        """Stop and remove the workers an earlier (killed) pfs of this instance left behind."""

    @abstractmethod
    def stop_all(self) -> None:
        """Stop every worker this runtime started and has not stopped yet."""

    def close(self) -> None:
        self.stop_all()


def make_runtime(name: str, instance: str, state_dir: str) -> Runtime:
    if name == "docker":
        return DockerRuntime(instance)
    if name == "process":
        return ProcessRuntime(instance, state_dir)
    if name == "swarm":
        from .swarm import SwarmRuntime  # imports this module: loaded only when asked for

        return SwarmRuntime(instance)
    raise BadRequest(f"unknown runtime {name!r}: use 'docker', 'process' or 'swarm'")


# ---- shared helpers ------------------------------------------------------------------


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")[:limit] or "job"


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _tail(data: bytes, limit: int) -> str:
    return data[-limit:].decode(errors="replace") if limit > 0 else ""


def _wait_until_serving(worker: Worker, timeout: float) -> str | None:
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


def _start_failed(worker: Worker, spec: WorkerSpec, reason: str) -> JobError:
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


# ---- docker --------------------------------------------------------------------------


@contextmanager
def _docker_errors(what: str) -> Iterator[None]:
    """Docker SDK and transport failures as pfs errors, so callers handle one tree."""
    import docker.errors
    import requests

    try:
        yield
    except docker.errors.APIError as exc:
        raise JobError(f"{what}: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise Unavailable(f"{what}: the Docker Engine did not answer: {exc}") from exc


def _inspect_image(rt: Any, image: str | None) -> dict[str, Any]:
    """The engine's record of a local image: 400 for a malformed or absent one (pfs never
    pulls), 503 when the engine does not answer."""
    import docker.errors

    if not image:
        raise BadRequest(f"the {rt.name} runtime needs an image")
    check_image(image)  # before the engine is asked: its errors for a bad name are not the caller's 400
    try:
        with _docker_errors(f"inspecting image {image!r}"):
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


def _docker_reason(state: dict[str, Any], memory: int) -> str | None:
    status = state.get("Status")
    if status in ("running", "created", "restarting", "paused"):
        return None
    if state.get("OOMKilled"):
        return f"killed: out of memory (limit {memory / (1 << 20):g} MiB)"
    code = int(state.get("ExitCode") or 0)
    reason = f"exited with code {code}"
    if code > 128:
        reason += f" ({_signal_name(code - 128)})"
    if state.get("Error"):
        reason += f": {state['Error']}"
    return reason


class EngineWorker(Worker):
    """A worker the Docker Engine runs (a container, or a swarm service): its state and log
    come from the engine's API, and survive stop() for the job's log and error."""

    gone_reason = "it was removed"  # exit_reason once the engine has no trace of it

    def __init__(self, wid: str, memory: int) -> None:
        self.id = wid
        self.memory = memory
        self.url = ""
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._final_reason: str | None = None
        self._final_logs = b""

    @abstractmethod
    def _current_reason(self) -> str | None:
        """What the engine says now: None while running, `gone_reason` if it has no trace."""

    @abstractmethod
    def _read_logs(self, limit: int) -> bytes: ...

    @abstractmethod
    def _remove(self) -> None:
        """Remove it from the engine (already gone is fine), and forget it."""

    def alive(self) -> bool:
        return self.exit_reason() is None

    def exit_reason(self) -> str | None:
        if self._stopped:
            return self._final_reason
        return self._current_reason()

    def logs(self, limit: int = 65536) -> str:
        if self._stopped:
            return _tail(self._final_logs, limit)
        try:
            return _tail(self._read_logs(limit), limit)
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
            self._stopped = True


class DockerWorker(EngineWorker):
    gone_reason = "the container was removed"

    def __init__(self, runtime: DockerRuntime, container_id: str, memory: int) -> None:
        super().__init__(container_id, memory)
        self.runtime = runtime

    def _state(self) -> dict[str, Any] | None:
        import docker.errors

        try:
            with _docker_errors("inspecting a container"):
                info = self.runtime.api.inspect_container(self.id)
        except JobError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                return None
            raise
        return dict(info)

    def _current_reason(self) -> str | None:
        info = self._state()
        if info is None:
            return self.gone_reason
        return _docker_reason(info["State"], self.memory)

    def _read_logs(self, limit: int) -> bytes:
        with _docker_errors("reading a container's log"):
            data = self.runtime.api.logs(self.id, stdout=True, stderr=True, tail=max(200, limit // 32))
        return bytes(data)[-limit:]

    def _remove(self) -> None:
        import docker.errors

        try:
            with _docker_errors("removing a container"):
                # v: the anonymous volumes an image's VOLUME lines made on the host go too
                self.runtime.api.remove_container(self.id, force=True, v=True)
        except JobError as exc:
            cause = exc.__cause__
            gone = isinstance(cause, docker.errors.NotFound)
            busy = isinstance(cause, docker.errors.APIError) and cause.status_code == 409
            if not (gone or busy):  # 409: another removal of it is under way
                raise
        self.runtime._forget(self)


class DockerRuntime(Runtime):
    """Workers as containers of the local Docker Engine. Images must be on this machine: no
    registry is reached (never pulled)."""

    name = "docker"

    def __init__(self, instance: str) -> None:
        self.instance = instance
        self.session = uuid.uuid4().hex  # tells this pfs process's containers from a dead one's
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._lock = threading.Lock()
        self._workers: dict[str, DockerWorker] = {}

    @property
    def api(self) -> Any:
        """The low-level client (exact control, no implicit pulls), connected on first use:
        an engine that is down is a 503 of the request that needs it, not of pfs's start."""
        with self._client_lock:
            if self._client is None:
                import docker

                with _docker_errors("connecting to the Docker Engine"):
                    self._client = docker.from_env(timeout=60, max_pool_size=64)
            return self._client.api

    def _forget(self, worker: DockerWorker) -> None:
        with self._lock:
            self._workers.pop(worker.id, None)

    def image_id(self, image: str | None) -> str:
        return str(_inspect_image(self, image)["Id"])

    def start(self, spec: WorkerSpec) -> Worker:
        from docker.types import LogConfig

        self.image_id(spec.image)  # a clear 400 rather than a pull attempt
        labels = {
            "pfs": "1",
            "pfs.instance": self.instance,
            "pfs.job": spec.job,
            "pfs.run": spec.run,
            "pfs.session": self.session,
        }
        host_config = self.api.create_host_config(
            mem_limit=spec.memory,
            memswap_limit=spec.memory,  # no swap beyond the memory limit
            pids_limit=spec.pids,
            nano_cpus=max(int(spec.cpus * 1e9), 1),
            port_bindings={CONTAINER_PORT: ("127.0.0.1",)},  # loopback only, a random host port
            security_opt=["no-new-privileges"],
            cap_drop=["ALL"],
            init=True,  # reaps zombies and forwards signals for servers that run as pid 1
            privileged=False,
            # lets a server without CAP_NET_BIND_SERVICE listen on port 80 on every engine version
            sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
            log_config=LogConfig(type="json-file", config={"max-size": "16m", "max-file": "1"}),
        )
        with _docker_errors(f"creating a container of {spec.image!r}"):
            created = self.api.create_container(
                spec.image,
                command=list(spec.command),
                environment={**spec.env, "PORT": str(CONTAINER_PORT)},
                labels=labels,
                ports=[CONTAINER_PORT],
                host_config=host_config,
                name=f"pfs-{_slug(spec.job)}-{uuid.uuid4().hex[:12]}",
                detach=True,
            )
        worker = DockerWorker(self, str(created["Id"]), spec.memory)
        with self._lock:
            self._workers[worker.id] = worker
        try:
            with _docker_errors("starting a container"):
                self.api.start(worker.id)
        except PfsError as exc:
            raise _start_failed(worker, spec, exc.message) from None
        except BaseException:
            worker.stop()
            raise
        try:
            reason = self._publish(worker, spec.start_timeout)
            if reason is None:
                reason = _wait_until_serving(worker, max(spec.start_timeout, 0.0))
        except BaseException:
            worker.stop()
            raise
        if reason is not None:
            raise _start_failed(worker, spec, reason)
        return worker

    def _publish(self, worker: DockerWorker, timeout: float) -> str | None:
        """Find the host port Docker picked; None once worker.url is set, else why not."""
        deadline = time.monotonic() + max(timeout, 1.0)
        key = f"{CONTAINER_PORT}/tcp"
        while True:
            info = worker._state()
            if info is None:
                return "the container was removed"
            reason = _docker_reason(info["State"], worker.memory)
            if reason is not None:
                return reason
            bindings = (info.get("NetworkSettings") or {}).get("Ports") or {}
            for b in bindings.get(key) or []:
                if b.get("HostIp") == "127.0.0.1" and b.get("HostPort"):
                    worker.url = f"http://127.0.0.1:{int(b['HostPort'])}"
                    return None
            if time.monotonic() >= deadline:
                return f"Docker published no port for {key}"
            time.sleep(0.02)

    def reap(self) -> int:
        with _docker_errors("listing containers"):
            found = self.api.containers(all=True, filters={"label": ["pfs=1", f"pfs.instance={self.instance}"]})
        removed = 0
        for c in found:
            if (c.get("Labels") or {}).get("pfs.session") == self.session:
                continue  # ours, alive
            try:
                with _docker_errors("removing a leftover container"):
                    self.api.remove_container(c["Id"], force=True, v=True)
                removed += 1
            except JobError as exc:
                log.warning("could not remove leftover container %s: %s", str(c["Id"])[:12], exc.message)
        return removed

    def stop_all(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            try:
                w.stop()
            except PfsError as exc:
                log.warning("stopping container %s: %s", w.id[:12], exc.message)

    def close(self) -> None:
        """Stops whatever the scheduler left running, then lets go of the engine."""
        self.stop_all()
        if self._client is not None:
            self._client.close()


# ---- local processes -----------------------------------------------------------------

# Runs in the child before the job's command: sets the limits, then exec()s the command.
# A trampoline rather than preexec_fn, which is not safe in a process with threads.
_TRAMPOLINE = """\
import os, resource, sys
limit = int(sys.argv[1])
for res, value in ((resource.RLIMIT_DATA, limit), (resource.RLIMIT_CORE, 0)):
    hard = resource.getrlimit(res)[1]
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(res, (value, value))
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except OSError as exc:
    sys.stderr.write(f"pfs: cannot run {sys.argv[2]!r}: {exc}\\n")
    sys.exit(127)
"""
_TOKEN_VAR = "PFS_WORKER"  # in every worker's environment: tells our processes from any other
# Passed through from pfs's environment; the rest (credentials above all) is not.
_PASS_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SYSTEMROOT")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pids_with_token(tokens: set[bytes]) -> dict[bytes, list[int]]:
    """Live processes whose environment has one of `tokens`, found through /proc (Linux)."""
    found: dict[bytes, list[int]] = {}
    if not tokens:
        return found
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    me = os.getpid()
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue  # gone, or not ours to read
        for var in env.split(b"\0"):
            if var in tokens:
                found.setdefault(var, []).append(int(entry))
                break
    return found


def _kill_token(token: bytes) -> int:
    """SIGKILL the process groups of every process that carries `token`; how many processes."""
    pids = _pids_with_token({token}).get(token, [])
    mine = os.getpgrp()
    for pid in pids:
        try:
            pgid = os.getpgid(pid)
            if pgid != mine:
                os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)  # one that left the group (setsid) too
    return len(pids)


class ProcessWorker(Worker):
    def __init__(self, runtime: ProcessRuntime, wid: str, workdir: Path, token: str, port: int) -> None:
        self.runtime = runtime
        self.wid = wid
        self.workdir = workdir
        self.token = token
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop_lock = threading.Lock()
        self._stopped = False
        self._killed_running = False
        self._final_logs = b""

    @property
    def log_path(self) -> Path:
        return self.workdir / "log"

    def alive(self) -> bool:
        return self.proc is not None and not self._stopped and self.proc.poll() is None

    def exit_reason(self) -> str | None:
        if self.proc is None:
            return "never started"
        rc = self.proc.poll()
        if rc is None:
            return None
        if self._killed_running:
            return "stopped by pfs"
        if rc < 0:
            return f"killed by {_signal_name(-rc)}"
        return f"exited with code {rc}"

    def logs(self, limit: int = 65536) -> str:
        if self._stopped:
            return _tail(self._final_logs, limit)
        try:
            with open(self.log_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(size - max(limit, 0), 0))
                return _tail(f.read(), limit)
        except OSError:
            return _tail(self._final_logs, limit)

    def stop(self) -> None:
        with self._stop_lock:
            if self._stopped:
                return
            proc = self.proc
            if proc is not None and proc.poll() is None:
                # Not reaped yet, so its pid (= its group's id) cannot have been reused.
                self._killed_running = True
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            # Children that outlived the leader: found by our token, never by a bare pid.
            _kill_token(f"{_TOKEN_VAR}={self.token}".encode())
            if proc is not None:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    log.warning("worker %s (pid %d) did not die after SIGKILL", self.wid, proc.pid)
            self._final_logs = self.logs(LOG_KEEP).encode(errors="replace")
            self._stopped = True
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.runtime._forget(self)


class ProcessRuntime(Runtime):
    """Workers as local processes, for machines without Docker. Not a sandbox: a job runs
    with the pfs user's privileges and sees its files; only memory is bounded (RLIMIT_DATA),
    and cpus and pids are not. Each worker runs in its own session (process group), with
    $TMPDIR a scratch directory under state_dir that also holds its log and a record of its pgid."""

    name = "process"

    def __init__(self, instance: str, state_dir: str) -> None:
        self.instance = instance
        self.root = Path(state_dir) / "workers"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._workers: dict[str, ProcessWorker] = {}
        self._ports: set[int] = set()

    def _forget(self, worker: ProcessWorker) -> None:
        with self._lock:
            self._workers.pop(worker.wid, None)
            self._ports.discard(worker.port)

    def _pick_port(self) -> int:
        """A free loopback port not just handed to another worker that has yet to bind it."""
        with self._lock:
            for _ in range(100):
                port = _free_port()
                if port not in self._ports:
                    self._ports.add(port)
                    return port
        raise JobError("no free loopback port")

    def image_id(self, image: str | None) -> str:
        return ""

    def start(self, spec: WorkerSpec) -> Worker:
        if not spec.command:
            raise BadRequest("a job needs a command")
        wid = f"{_slug(spec.job)}-{uuid.uuid4().hex[:12]}"
        workdir = self.root / wid
        token = f"{self.instance}/{wid}"
        worker = ProcessWorker(self, wid, workdir, token, self._pick_port())
        with self._lock:  # with reap() shut out, so it never takes this half-made worker for a leftover
            self._workers[wid] = worker
            (workdir / "tmp").mkdir(parents=True)
        env = {k: os.environ[k] for k in _PASS_ENV if k in os.environ}
        env.update(spec.env)
        env.update({"PORT": str(worker.port), "TMPDIR": str(workdir / "tmp"), _TOKEN_VAR: token})
        # Recorded before the process exists, so a pfs killed at any moment leaves a trace.
        record: dict[str, Any] = {
            "token": token,
            "job": spec.job,
            "run": spec.run,
            "instance": self.instance,
            "pgid": None,
        }
        (workdir / "worker.json").write_text(json.dumps(record))
        argv = [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(spec.memory), *spec.command]
        try:
            with open(worker.log_path, "ab") as logf:
                worker.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env=env,  # the working directory stays pfs's, so relative paths in commands work
                    start_new_session=True,
                )
            record["pgid"] = worker.proc.pid
            (workdir / "worker.json").write_text(json.dumps(record))
            reason = _wait_until_serving(worker, max(spec.start_timeout, 0.0))
        except OSError as exc:
            worker.stop()
            raise JobError(f"worker for job {spec.job!r} failed to start: {exc}") from exc
        except BaseException:
            worker.stop()
            raise
        if reason is not None:
            raise _start_failed(worker, spec, reason)
        return worker

    def reap(self) -> int:
        leftovers: dict[bytes, Path] = {}
        with self._lock:
            for d in self.root.iterdir():
                if not d.is_dir() or d.name in self._workers:
                    continue
                try:
                    token = str(json.loads((d / "worker.json").read_text())["token"])
                except (OSError, ValueError, KeyError, TypeError):  # killed before it was written
                    token = f"{self.instance}/{d.name}"
                leftovers[f"{_TOKEN_VAR}={token}".encode()] = d
        if not leftovers:
            return 0
        for found in _pids_with_token(set(leftovers)):
            _kill_token(found)
        for d in leftovers.values():
            shutil.rmtree(d, ignore_errors=True)
        return len(leftovers)

    def stop_all(self) -> None:
        with self._lock:
            workers = list(self._workers.values())
        for w in workers:
            w.stop()
