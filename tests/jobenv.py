"""Docker for tests: a working engine and the test job image, each made once per session.

Use the session fixture `job_image` (`from jobenv import job_image  # noqa: F401`), which
returns the image's tag, or call `build_job_image()`. When the engine cannot be made to
work, they raise: a test that needs Docker fails, it is never skipped.

The same server (tests/jobimage/jobserver.py) runs as a local process for the process
runtime: `process_command(mode, ...)`; in the image it is `docker_command(mode, ...)`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JOBIMAGE_DIR = ROOT / "tests" / "jobimage"
JOBSERVER = str(JOBIMAGE_DIR / "jobserver.py")
SETUP_SCRIPT = ROOT / "scripts" / "docker-setup.sh"
BASE_IMAGE = "pfs-python-base:local"
TEST_IMAGE = "pfs-test-job:local"

_lock = threading.Lock()
_built: str | None = None


def process_command(mode: str, *args: str) -> list[str]:
    return [sys.executable, JOBSERVER, mode, *args]


def docker_command(mode: str, *args: str) -> list[str]:
    return ["python3", "/jobserver.py", mode, *args]


def _ok(*cmd: str) -> bool:
    return subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60).returncode == 0


def ensure_docker() -> None:
    """A running engine with the base image, set up by scripts/docker-setup.sh if need be."""
    if _ok("docker", "info") and _ok("docker", "image", "inspect", BASE_IMAGE):
        return
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise RuntimeError(f"Docker is not usable and setting it up needs root: run `sudo bash {SETUP_SCRIPT}`")
    proc = subprocess.run(
        ["bash", str(SETUP_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900, check=False
    )
    if proc.returncode != 0:
        out = proc.stdout.decode(errors="replace")[-4000:]
        raise RuntimeError(f"{SETUP_SCRIPT} failed with code {proc.returncode}:\n{out}")


def build_job_image() -> str:
    """The test job image's tag, built from tests/jobimage (cached by Docker: fast when unchanged)."""
    global _built
    with _lock:
        if _built is None:
            ensure_docker()
            proc = subprocess.run(
                ["docker", "build", "-q", "-t", TEST_IMAGE, str(JOBIMAGE_DIR)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=600,
                check=False,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"docker build of {TEST_IMAGE} failed:\n{proc.stdout.decode(errors='replace')}")
            _built = TEST_IMAGE
        return _built


@pytest.fixture(scope="session", name="job_image")
def job_image_fixture() -> str:
    return build_job_image()


job_image = job_image_fixture  # `from jobenv import job_image` works too
