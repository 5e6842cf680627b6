"""Disk full (reliability catalogue F1): 507, nothing half-visible, and the server carries
on without a restart once space is freed. Needs root to mount a small tmpfs."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
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


class _RefusingS3(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint whose bucket exists but which refuses every object write with the
    answer `answer` sets: what a full (or overloaded) store says."""

    answer = (507, "XMinioStorageFull")

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - the bucket is there; no object is
        self.send_response(200 if self.path.rstrip("/").count("/") == 1 else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_PUT(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, code = self.answer
        body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>no room here</Message></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.mark.parametrize(
    "answer, error",
    [
        ((507, "XMinioStorageFull"), errors.InsufficientStorage),
        ((403, "QuotaExceeded"), errors.InsufficientStorage),
        ((503, "SlowDown"), errors.Unavailable),
    ],
)
def test_s3_store_refusing_writes_maps_to_507_or_503(answer: tuple[int, str], error: type[errors.PfsError]) -> None:
    """An S3 store that is full answers 507 or a quota code: the write is a 507 with the
    store's words and no secret; any other refusal a 503."""
    from pfs.storage.objects import hash_bytes
    from pfs.storage.s3 import S3Config
    from pfs.storage.s3objects import S3ObjectStore

    handler = type("Handler", (_RefusingS3,), {"answer": answer})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = S3Config(f"http://127.0.0.1:{server.server_port}", "us-east-1", "key", "SECRET-NOT-SHOWN", 2, 5, 2)
        store = S3ObjectStore("s3://full-bucket/repo", cfg)
        assert store.fast is not None  # the path under test: obstore's PUT
        data = b"some bytes" * 100
        with pytest.raises(error) as caught, store.batch() as batch:
            batch.put(hash_bytes(data), data)
        assert answer[1] in caught.value.message and "SECRET" not in caught.value.message
    finally:
        server.shutdown()
