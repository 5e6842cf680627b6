"""Bounded work on ordinary routes: what a request declares is checked before pfs spends
CPU, memory or disk on it (issue "Trust nothing a peer or a job sends")."""

from __future__ import annotations

import subprocess
import time
import unicodedata
from pathlib import Path

import pytest
from conftest import tar_of

from pfs.config import Config
from pfs.errors import BadRequest, PayloadTooLarge
from pfs.repository.repo import Repository


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Config(str(tmp_path / "data"), max_file_size=1 << 20).open()


def test_sparse_tar_members_are_refused_at_once(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "hole.bin", "wb") as f:  # 4 GiB of hole and one byte of data
        f.truncate(4 << 30)
        f.seek((4 << 30) - 1)
        f.write(b"x")
    archive = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "-C", str(src), "-cf", str(archive), "hole.bin"], check=True)
    assert archive.stat().st_size < 1 << 20  # a few KB on the wire
    t0 = time.monotonic()
    with pytest.raises(BadRequest, match="sparse"), open(archive, "rb") as f:
        repo.stage_tar("master", "in", f)  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 2  # refused, not expanded (it took 68 s of CPU)
    assert not repo.meta.has_staged("master")


def test_tar_members_larger_than_the_limit_are_refused_before_reading(repo: Repository) -> None:
    archive = tar_of({"big.bin": bytes(2 << 20)})
    with pytest.raises(PayloadTooLarge, match="big.bin"):
        repo.stage_tar("master", "", archive)  # type: ignore[arg-type]
    assert not repo.meta.has_staged("master")


def test_unicode_names_keep_their_bytes(repo: Repository) -> None:
    """Policy: a name is its bytes, as in git and S3. `café` in NFC and in NFD are two
    files; nothing is renamed behind a user's back (an S3 key must read back as written)."""
    nfc = unicodedata.normalize("NFC", "café.txt")
    nfd = unicodedata.normalize("NFD", "café.txt")
    assert nfc != nfd
    for name, data in ((nfc, b"composed"), (nfd, b"decomposed")):
        w = repo.writer()
        w.write(data)
        repo.stage_file("master", f"u/{name}", w.finish())
    c = repo.commit_branch("master")
    names = [p for p, _ in repo.trees.walk(c.tree)]
    assert sorted(names) == sorted([f"u/{nfc}", f"u/{nfd}"])
    reader = repo.view(commit=c.id)
    assert b"".join(repo.read_file(reader.lookup(f"u/{nfd}"))) == b"decomposed"  # type: ignore[arg-type]
