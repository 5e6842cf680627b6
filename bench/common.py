"""What every bench module uses: free ports, a pfs server process, timing."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

Rows = list[tuple[str, str, str, str]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.get(url + "/ping", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError("server did not start")


class Proc:
    def __init__(self, args: list[str], url: str, env: dict[str, str] | None = None) -> None:
        self.url = url
        self.proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
        wait_up(url, self.proc)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_pfs(data_dir: Path, env: dict[str, str] | None = None, args: list[str] | None = None) -> Proc:
    port = free_port()
    cmd = [sys.executable, "-m", "pfs", "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", str(data_dir)]
    return Proc([*cmd, *(args or [])], f"http://127.0.0.1:{port}", env)


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def tar_of(files: dict[str, bytes]) -> bytes:
    """An uncompressed tar of `files` (name: bytes), built in memory."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
