"""The `process` runtime: `command` as a local process, for machines without Docker.

It is NOT a sandbox: the job runs as the pfs user with pfs's privileges; only its memory
is bounded. So it exists only where the operator chose it (`PFS_JOB_RUNTIME=process`); a
spec can never switch it on (see `Runtimes.check`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil

from ...errors import BadRequest, JobError
from .base import LOG_KEEP, Runtime, Worker, WorkerSpec, signal_name, slug, start_failed, tail, wait_until_serving

log = logging.getLogger("pfs.jobs.runtime")

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


def _pids_with_token(tokens: set[str]) -> dict[str, list[int]]:
    """Live processes (other than pfs) whose environment has one of `tokens` as $PFS_WORKER."""
    found: dict[str, list[int]] = {}
    if not tokens:
        return found
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            token = proc.environ().get(_TOKEN_VAR)
        except psutil.Error:
            continue  # gone, or not ours to read
        if token is not None and token in tokens:
            found.setdefault(token, []).append(proc.pid)
    return found


def _kill_token(token: str) -> int:
    """SIGKILL the process groups of every process that carries `token` and wait until they
    have exited; how many processes."""
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
    _wait_exited(pids)
    return len(pids)


def _wait_exited(pids: list[int], timeout: float = 5.0) -> None:
    """A killed process dies when it next runs, which on a busy machine may be a moment
    later: until then it still holds its memory and files (a zombie no longer does)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.Error:
                break  # gone
            time.sleep(0.01)


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
            return f"killed by {signal_name(-rc)}"
        return f"exited with code {rc}"

    def logs(self, limit: int = 65536) -> str:
        if self._stopped:
            return tail(self._final_logs, limit)
        try:
            with open(self.log_path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                f.seek(max(size - max(limit, 0), 0))
                return tail(f.read(), limit)
        except OSError:
            return tail(self._final_logs, limit)

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
            _kill_token(self.token)
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
        wid = f"{slug(spec.job)}-{uuid.uuid4().hex[:12]}"
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
            reason = wait_until_serving(worker, max(spec.start_timeout, 0.0))
        except OSError as exc:
            worker.stop()
            raise JobError(f"worker for job {spec.job!r} failed to start: {exc}") from exc
        except BaseException:
            worker.stop()
            raise
        if reason is not None:
            raise start_failed(worker, spec, reason)
        return worker

    def reap(self) -> int:
        leftovers: dict[str, Path] = {}
        with self._lock:
            for d in self.root.iterdir():
                if not d.is_dir() or d.name in self._workers:
                    continue
                try:
                    token = str(json.loads((d / "worker.json").read_text())["token"])
                except (OSError, ValueError, KeyError, TypeError):  # killed before it was written
                    token = f"{self.instance}/{d.name}"
                leftovers[token] = d
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
