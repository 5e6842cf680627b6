"""Shared fixtures: a real `pfs serve` process on loopback with its own data directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pg import PostgresServer, postgres_fixture  # noqa: F401
from seaweed import SeaweedServer, seaweed_fixture  # noqa: F401

from pfs import Client

BACKENDS = ["embedded", "cluster"]  # SQLite + local directory; PostgreSQL + S3 (SeaweedFS)


class Storage:
    """Where a test server keeps its data, with backdoors for tests that look at (or
    damage) the stored bytes themselves: the embedded data dir, or PostgreSQL + S3."""

    def __init__(self, data_dir: Path, pg: PostgresServer | None = None, weed: SeaweedServer | None = None) -> None:
        self.data_dir = data_dir
        self.pg_url = pg.new_database() if pg is not None else None
        self.weed = weed
        self.bucket = weed.new_bucket("pfs") if weed is not None else None

    @property
    def kind(self) -> str:
        return "cluster" if self.pg_url else "embedded"

    def env(self) -> dict[str, str]:
        if self.pg_url is None or self.weed is None:
            return {}
        return {"PFS_META_URL": self.pg_url, "PFS_OBJECTS_URL": f"s3://{self.bucket}/repo", **self.weed.env()}

    def sql_url(self) -> str:
        if self.pg_url is None:
            return "sqlite:///" + os.path.join(self.data_dir, "meta.sqlite")
        return self.pg_url.replace("postgresql://", "postgresql+psycopg://", 1)

    def object_sizes(self) -> dict[str, int]:
        """Stored size of every object, by storage name."""
        if self.weed is None:
            root = Path(self.data_dir) / "objects"
            return {str(p): p.stat().st_size for p in root.rglob("*") if p.is_file()}
        pages = self.weed.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="repo/")
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents") or ()}

    @staticmethod
    def key_of(name: str) -> str:
        """The object key (64 hex digits) stored under a storage name."""
        parts = name.replace("\\", "/").split("/")
        return parts[-2] + parts[-1]

    def delete(self, name: str) -> None:
        if self.weed is None:
            Path(name).unlink()
        else:
            self.weed.client().delete_object(Bucket=self.bucket, Key=name)

    def corrupt(self, name: str) -> None:
        """Flip a byte in the middle of a stored object, behind pfs's back."""
        if self.weed is None:
            raw = bytearray(Path(name).read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            Path(name).write_bytes(bytes(raw))
            return
        s3 = self.weed.client()
        raw = bytearray(s3.get_object(Bucket=self.bucket, Key=name)["Body"].read())
        raw[len(raw) // 2] ^= 0xFF
        s3.put_object(Bucket=self.bucket, Key=name, Body=bytes(raw))


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Each test that takes it runs once per backend."""
    if request.param == "embedded":
        return Storage(tmp_path / "data")
    return Storage(tmp_path / "data", request.getfixturevalue("postgres"), request.getfixturevalue("seaweed"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProc:
    """A pfs server subprocess that tests can start, kill -9 and restart on one data dir."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        storage: Storage | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.storage = storage or Storage(data_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self, env: dict[str, str] | None = None, wait: bool = True) -> ServerProc:
        full_env = {
            **os.environ,
            "PFS_DATA_DIR": str(self.data_dir),
            **self.storage.env(),
            **self.extra_env,
            **(env or {}),
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pfs.cli", "serve", "--addr", f"127.0.0.1:{self.port}", *self.args],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait:
            return self
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pfs serve exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("pfs serve did not come up: " + self.log())

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@pytest.fixture
def server(storage: Storage) -> Iterator[ServerProc]:
    s = ServerProc(storage.data_dir, storage=storage).start()
    yield s
    s.stop()


@pytest.fixture
def url(server: ServerProc) -> str:
    return server.url


@pytest.fixture
def client(server: ServerProc) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


@pytest.fixture
def http(server: ServerProc) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as h:
        yield h
