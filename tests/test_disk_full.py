"""Disk full (reliability catalogue F1): 507, nothing half-visible, and the server carries
on without a restart once space is freed. Needs root to mount a small tmpfs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ServerProc

from pfs import Client, errors
from pfs.config import Config
from pfs.records import BranchInfo
from pfs.repository.fsck import fsck


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_gives_507_and_recovers_without_restart(small_disk: Path) -> None:
    server = ServerProc(small_disk / "data").start()
    try:
        with Client(server.url) as c:
            c.put_file("keep.txt", b"acknowledged")
            first = c.commit(message="before the disk filled").id
            filler = small_disk / "filler"
            with open(filler, "wb") as f:  # leave ~12 MB
                f.write(b"\0" * (34 << 20))
            with pytest.raises(errors.InsufficientStorage):
                c.put_file("big.bin", os.urandom(20 << 20))
            # nothing half-visible, refs unmoved, the server still answers
            assert [e.path for e in c.ls()] == ["keep.txt"]
            assert c.branches() == [BranchInfo("master", first)]
            resp = httpx.post(server.url + "/file/big2.bin", content=os.urandom(20 << 20), timeout=60)
            assert resp.status_code == 507 and "space" in resp.text
            filler.unlink()  # free space: writes work again, no restart
            c.put_file("big.bin", os.urandom(20 << 20))
            second = c.commit(message="after").id
            assert c.get_file("keep.txt", commit=second) == b"acknowledged"
            assert server.proc is not None and server.proc.poll() is None
    finally:
        server.stop()
    report = fsck(Config(str(small_disk / "data")).open())
    assert report.ok, report.problems
