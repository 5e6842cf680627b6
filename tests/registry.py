"""A real Docker registry for tests: Docker Distribution 2.8 (Debian's docker-registry,
unpacked by scripts/registry-setup.sh) on loopback, storing on SeaweedFS over S3, with
htpasswd authentication, as the deployment runs it.

On 127.0.0.1 the Docker Engine talks plain HTTP to it without any daemon setting (loopback
registries are trusted as insecure by default), so push and pull are real.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import time
import uuid
from pathlib import Path

import bcrypt
import httpx
from jobenv import ROOT
from relay import Relay
from seaweed import SeaweedServer, _die_with_parent, _free_ports

BINARY = ROOT / "build" / "registry" / "docker-registry"
SETUP_SCRIPT = ROOT / "scripts" / "registry-setup.sh"
START_TIMEOUT = 30.0


def docker(*args: str, input: bytes | None = None, check: bool = True) -> str:
    proc = subprocess.run(["docker", *args], input=input, capture_output=True, timeout=600, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return proc.stdout.decode()


def build_variant(base: str, tag: str, extra: str = "") -> str:
    """An image of the test job server whose bytes no other test has (its own label): a
    push records a registry's digest on the image it pushes, and shared images must not
    carry one."""
    dockerfile = f"FROM {base}\nLABEL pfs.test={uuid.uuid4().hex}\n{extra}\n"
    docker("build", "-q", "-t", tag, "-", input=dockerfile.encode())
    return tag


def forget_images(address: str) -> None:
    """Remove from the engine every image named after the registry at `address` (what the
    tests pushed and pulled), so that runs do not pile them up."""
    refs = docker("images", "--format", "{{.Repository}}@{{.Digest}} {{.Repository}}:{{.Tag}}", check=False)
    names = {r for line in refs.splitlines() for r in line.split() if r.startswith(f"{address}/") and "<none>" not in r}
    if names:
        docker("rmi", "-f", *sorted(names), check=False)


def registry_binary() -> Path:
    if not os.access(BINARY, os.X_OK):
        proc = subprocess.run(["bash", str(SETUP_SCRIPT)], capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{SETUP_SCRIPT} failed:\n{proc.stderr[-3000:]}")
    return BINARY


class RegistryServer:
    """One registry process on a free loopback port; `kill()` is SIGKILL, `start()` again
    brings it back on the same port and storage."""

    def __init__(self, root: Path, seaweed: SeaweedServer, bucket: str | None = None) -> None:
        self.root = root
        self.seaweed = seaweed
        self.bucket = bucket or seaweed.new_bucket("registry")
        self.port = _free_ports(1)[0]
        self.user = "pfs"
        self.password = secrets.token_urlsafe(18)
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=6)).decode()
        (root / "htpasswd").write_text(f"{self.user}:{hashed}\n")
        (root / "config.yml").write_text(
            "version: 0.1\n"
            "log: {level: info, accesslog: {disabled: true}}\n"
            "storage:\n"
            "  s3:\n"
            f"    accesskey: {seaweed.access_key}\n"
            f"    secretkey: {seaweed.secret_key}\n"
            f"    region: {seaweed.region}\n"
            f"    regionendpoint: {seaweed.endpoint}\n"
            f"    bucket: {self.bucket}\n"
            "    rootdirectory: /registry\n"
            "    secure: false\n"
            "    v4auth: true\n"
            "  delete: {enabled: true}\n"
            "  redirect: {disable: true}\n"
            "  cache: {blobdescriptor: inmemory}\n"
            f"http: {{addr: '127.0.0.1:{self.port}', secret: {secrets.token_hex(16)}}}\n"
            f"auth: {{htpasswd: {{realm: pfs-registry, path: {root / 'htpasswd'}}}}}\n"
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def env(self) -> dict[str, str]:
        """What points a pfs server at it."""
        (self.root / "password").write_text(self.password)
        return {
            "PFS_REGISTRY_URL": self.url,
            "PFS_REGISTRY_USER": self.user,
            "PFS_REGISTRY_PASSWORD_FILE": str(self.root / "password"),
        }

    def start(self) -> RegistryServer:
        log = open(self.root / "registry.log", "ab")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen(
            [str(registry_binary()), "serve", str(self.root / "config.yml")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root)},
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the registry exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v2/", auth=(self.user, self.password), timeout=2).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"the registry did not answer within {START_TIMEOUT} s:\n{self.log()}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        try:
            return (self.root / "registry.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def slow_link(port: int, rate: int) -> Relay:
    """A relay to a local port whose downstream (server to client) runs at `rate` bytes a
    second: a slow network between an engine and the registry. A push passes at full speed."""
    return Relay("127.0.0.1", lambda: asyncio.open_connection("127.0.0.1", port), rate=rate).start()
