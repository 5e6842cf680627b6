"""A real PostgreSQL server for tests: a private cluster in a temporary directory, on a
random loopback port, with password authentication enforced.

Use the session fixture `postgres` (`from pg import postgres_fixture  # noqa: F401`, then
take a `postgres` argument) and `postgres.new_database()` for a fresh, empty database per
test. The binaries come from Debian's postgresql package (scripts/pg-setup.sh installs
it); when they cannot be found or the server does not start, the fixture raises: a test
that needs PostgreSQL fails, it is never skipped.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUP_SCRIPT = ROOT / "scripts" / "pg-setup.sh"
USER = "pfs"


def _bin_dir() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found and os.geteuid() == 0:
        subprocess.run(["bash", str(SETUP_SCRIPT)], check=True, capture_output=True, timeout=900)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError(f"PostgreSQL is not installed: run `sudo bash {SETUP_SCRIPT}`")
    return os.path.dirname(found[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = _bin_dir()
        self.port = _free_port()
        self.password = uuid.uuid4().hex
        self.data = root / "data"
        self.sock = root / "sock"
        self.log_path = root / "postgres.log"
        self._dbs = 0
        # postgres refuses to run as root: run it as Debian's `postgres` user then.
        self.run_as: pwd.struct_passwd | None = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def _run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        cmd = [os.path.join(self.bin, args[0]), *args[1:]]
        kw: dict[str, object] = {}
        if self.run_as is not None:
            uid, gid = self.run_as.pw_uid, self.run_as.pw_gid
            kw["preexec_fn"] = lambda: (os.setgid(gid), os.setuid(uid))  # noqa: PLW0108
        return subprocess.run(cmd, capture_output=True, timeout=120, check=False, **kw)  # type: ignore[call-overload,no-any-return]

    def start(self) -> PostgresServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.run_as is not None:
            for p in (self.root, self.sock, pwfile):
                os.chown(p, self.run_as.pw_uid, self.run_as.pw_gid)
        r = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr.decode(errors='replace')[-2000:]}")
        self._pg_ctl_start()
        return self

    def _pg_ctl_start(self) -> None:
        opts = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock} "
            "-c fsync=on -c max_connections=200 -c shared_buffers=32MB"
        )
        r = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-o", opts, "-w", "-t", "60", "start")
        if r.returncode != 0:
            raise RuntimeError(f"postgres did not start: {r.stderr.decode(errors='replace')}\n{self.log()}")

    def kill9(self) -> None:
        """The postmaster killed with -9, as a crash or an OOM kill would: its backends
        exit when they notice, and a restart recovers from the WAL."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        time.sleep(0.5)  # backends see the postmaster gone and exit

    def restart(self) -> PostgresServer:
        """Start again on the same data directory and port (after kill9 or a stop)."""
        self._pg_ctl_start()
        self.wait_ready()
        return self

    def stop(self) -> None:
        r = self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        if r.returncode != 0:
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def url(self, db: str = "postgres", driver: bool = False) -> str:
        scheme = "postgresql+psycopg" if driver else "postgresql"
        return f"{scheme}://{USER}:{self.password}@127.0.0.1:{self.port}/{db}"

    def new_database(self, stem: str = "t") -> str:
        """A fresh database; returns its URL (postgresql://..., as a user would write it)."""
        import psycopg

        self._dbs += 1
        name = f"{stem}_{self._dbs}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.url().replace("postgresql://", "postgresql://", 1), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


@contextlib.contextmanager
def running_postgres(root: Path | None = None) -> Iterator[PostgresServer]:
    """A private server for the duration of the block. Its directory is not under pytest's
    or tempfile's directories by default: those are root-only (0700), and when we are root
    the server runs as `postgres`."""
    server = PostgresServer(root or Path(f"/tmp/pfs-pg-{uuid.uuid4().hex[:8]}")).start()
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", name="postgres")
def postgres_fixture() -> Iterator[PostgresServer]:
    """One PostgreSQL for the whole session; tests make their own databases."""
    with running_postgres() as server:
        yield server


postgres = postgres_fixture
