"""A real Docker registry for tests: Docker Distribution 2.8 (Debian's docker-registry,
unpacked by scripts/registry-setup.sh) on loopback, storing on SeaweedFS over S3, with
htpasswd authentication, as the deployment runs it.

On 127.0.0.1 the Docker Engine talks plain HTTP to it without any daemon setting (loopback
registries are trusted as insecure by default), so push and pull are real.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import bcrypt
import httpx
from jobenv import ROOT
from seaweed import SeaweedServer, _die_with_parent, _free_ports

BINARY = ROOT / "build" / "registry" / "docker-registry"
SETUP_SCRIPT = ROOT / "scripts" / "registry-setup.sh"
START_TIMEOUT = 30.0


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
