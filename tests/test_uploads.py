"""Multipart uploads in the repository layer: parts streamed as files, joined without
writing their chunks again, the result a file like any other (fsck, sync checks)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import blake3
import pytest

from pfs import errors
from pfs.config import Config
from pfs.repository.fsck import fsck
from pfs.repository.received import Received
from pfs.repository.repo import Repository
from pfs.repository.uploads import Uploads
from pfs.storage.chunking import MAX_CHUNK, MIN_CHUNK
from pfs.storage.trees import Entry


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Config(str(tmp_path / "data")).open()


def part_entry(repo: Repository, data: bytes) -> Entry:
    w = repo.writer()
    for i in range(0, len(data), 1 << 20):
        w.write(data[i : i + (1 << 20)])
    return w.finish()


def test_complete_joins_parts_into_a_valid_file(repo: Repository) -> None:
    ups = Uploads(repo)
    u = ups.create("master", "big/file.bin", (("content-type", "application/x-test"),))
    parts = [os.urandom(5 << 20) + os.urandom(123), os.urandom(3 << 20), os.urandom(100)]
    for n in (3, 1, 2):  # in any order, as parallel uploaders send them
        data = parts[n - 1]
        ups.put_part(u.id, n, part_entry(repo, data), hashlib.md5(data).hexdigest())
    assert [p.number for p in ups.parts(u.id)] == [1, 2, 3]
    before = set(repo.objects.keys())
    entry = ups.complete(u.id, [1, 2, 3], (("s3-etag", '"x-3"'),))
    whole = b"".join(parts)
    assert entry.hash == blake3.blake3(whole).hexdigest() and entry.size == len(whole)
    assert dict(entry.meta) == {"content-type": "application/x-test", "s3-etag": '"x-3"'}
    assert b"".join(repo.read_file(entry)) == whole
    chunks = list(repo.trees.chunks(entry))
    assert all(MIN_CHUNK <= n <= MAX_CHUNK for _, n in chunks[:-1])
    assert len(set(repo.objects.keys()) - before) <= 6  # only chunks at part boundaries are new
    c = repo.commit_branch("master")
    assert repo.view(commit=c.id).lookup("big/file.bin") == entry
    report = fsck(repo)
    assert report.ok, report.problems
    Received(repo)._chunk_list("test", [list(x) for x in chunks], entry.size)  # what a sync peer checks
    with pytest.raises(errors.UploadNotFound):
        ups.get(u.id)  # completed: gone


def test_bad_uses_change_nothing(repo: Repository) -> None:
    ups = Uploads(repo)
    u = ups.create("master", "f")
    e = part_entry(repo, b"x" * 10)
    with pytest.raises(errors.BadRequest):
        ups.put_part(u.id, 0, e, "0" * 32)
    with pytest.raises(errors.BadRequest):
        ups.put_part(u.id, 10_001, e, "0" * 32)
    ups.put_part(u.id, 1, e, "0" * 32)
    with pytest.raises(errors.BadRequest):
        ups.complete(u.id, [1, 2])  # 2 never uploaded
    with pytest.raises(errors.BadRequest):
        ups.complete(u.id, [1, 1])
    assert repo.view().lookup("f") is None
    with pytest.raises(errors.UploadNotFound):
        ups.put_part("f" * 32, 1, e, "0" * 32)
    with pytest.raises(errors.UploadNotFound):
        ups.get("../../etc")
    with pytest.raises(errors.BranchNotFound):
        ups.create("nobranch", "f")
    with pytest.raises(errors.InvalidPath):
        ups.create("master", "a/../b")
    assert [x.id for x in ups.in_progress()] == [u.id]
    ups.abort(u.id)
    assert ups.in_progress() == []
    with pytest.raises(errors.UploadNotFound):
        ups.abort(u.id)


def test_a_tiny_upload_is_stored_inline(repo: Repository) -> None:
    ups = Uploads(repo)
    u = ups.create("master", "tiny")
    ups.put_part(u.id, 1, part_entry(repo, b"hello "), "0" * 32)
    ups.put_part(u.id, 2, part_entry(repo, b"world"), "0" * 32)
    entry = ups.complete(u.id, [1, 2])
    assert entry.data == b"hello world" and entry.hash == blake3.blake3(b"hello world").hexdigest()


def test_metadata_is_part_of_the_entry_and_checked_when_received(repo: Repository) -> None:
    e = part_entry(repo, b"a,b\n1,2\n")
    with_meta = Entry(e.kind, e.hash, e.size, e.chunks, e.manifest, e.data, (("content-type", "text/csv"),))
    assert Entry.loads(with_meta.dumps()) == with_meta
    assert Entry.loads(e.dumps()) == e and len(e.to_list()) == 4  # no metadata: the form it always had
    r = Received(repo)
    name, got = r._check_received_entry("node", ["x.csv", *with_meta.to_list()])
    assert got == with_meta
    for bad in [{}, {"Content-Type": "x"}, {"b": "1", "a": "2"}, {"a": "x\x00"}, {"a": "v" * 3000}, ["a", "b"]]:
        with pytest.raises(errors.BadObject):
            r._check_received_entry("node", ["x.csv", *e.to_list(), bad])
