"""A million small files in one archive upload (issue: millions of small files): the
server's memory stays under a fixed bound through the upload and its commit, and does not
grow with the number of files (100,000 and 1,000,000 measured on one server)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProc
from rss import PeakRss

from pfs import Client

MiB = 1 << 20
RSS_BOUND = 300 * MiB  # the whole server process, during the upload and the commit
GROWTH_BOUND = 48 * MiB  # 1,000,000 files against 100,000


def header(name: str, size: int) -> bytes:
    """A ustar header, built by hand: `tarfile` would take longer than the server."""
    h = bytearray(512)
    h[0 : len(name)] = name.encode()
    h[100:108] = b"0000644\0"
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[148:156] = b" " * 8
    h[156:157] = b"0"
    h[257:265] = b"ustar\x0000"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def archive(files: int, size: int, tag: str) -> Iterator[bytes]:
    """`files` files of `size` bytes in directories of 1,000, in tree order, a MiB at a time."""
    pad = b"\0" * (-size % 512)
    out: list[bytes] = []
    held = 0
    for i in range(files):
        body = b"%-*d" % (size, i)
        out += (header(f"d{i // 1000:04}/f{i % 1000:04}.{tag}", size), body, pad)
        held += 512 + size + len(pad)
        if held >= MiB:
            yield b"".join(out)
            out, held = [], 0
    out.append(b"\0" * 1024)
    yield b"".join(out)


@pytest.mark.timeout(900)
def test_a_million_files_upload_and_commit_in_bounded_memory(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ServerProc(data_dir).start()
    assert server.proc is not None
    peaks: dict[int, int] = {}
    try:
        with Client(server.url, timeout=900) as c:
            for n in (100_000, 1_000_000):
                t0 = time.monotonic()
                with PeakRss(server.proc.pid, interval=0.02) as rss:
                    res = c.put_tar(f"n{n}", archive(n, 100, "txt"))
                    assert (res.files, res.size) == (n, n * 100)
                    commit = c.commit(message=f"{n} files")
                peaks[n] = rss.peak
                print(f"\n{n} files: {time.monotonic() - t0:.1f} s, peak server RSS {rss.peak / MiB:.0f} MiB")
                assert rss.samples > 20, "too few RSS samples to trust the peak"
                assert rss.peak < RSS_BOUND, f"server RSS reached {rss.peak / MiB:.0f} MiB with {n} files"
            last = "d0999/f0999.txt"
            assert c.get_file(f"n1000000/{last}", commit=commit.id) == b"%-100d" % 999_999
            assert len(c.ls("n1000000/d0500", commit=commit.id)) == 1000
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    assert peaks[1_000_000] - peaks[100_000] < GROWTH_BOUND, (
        f"memory grew with the number of files: {peaks[100_000] / MiB:.0f} MiB at 100,000, "
        f"{peaks[1_000_000] / MiB:.0f} MiB at 1,000,000"
    )


@pytest.mark.timeout(600)
def test_files_stored_as_objects_do_not_grow_memory_with_their_number(tmp_path: Path) -> None:
    """Files too big to live in their tree entry are objects of their own, each awaiting
    the batch's durability barrier: the batch is flushed every PooledBatch.MAX_PENDING
    objects, so what it holds (a future and a key each) stays bounded (it once held
    100,000: 230 MiB at 100,000 files of 3 KB)."""
    data_dir = tmp_path / "data"
    server = ServerProc(data_dir).start()
    assert server.proc is not None
    peaks: dict[int, int] = {}
    try:
        with Client(server.url, timeout=600) as c:
            for n in (10_000, 60_000):
                with PeakRss(server.proc.pid, interval=0.02) as rss:
                    res = c.put_tar(f"n{n}", archive(n, 3000, "bin"))
                    assert (res.files, res.size) == (n, n * 3000)
                    commit = c.commit(message=f"{n} files")
                peaks[n] = rss.peak
                assert rss.samples > 20, "too few RSS samples to trust the peak"
            assert c.get_file("n60000/d0059/f0999.bin", commit=commit.id) == b"%-3000d" % 59_999
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    assert peaks[60_000] - peaks[10_000] < GROWTH_BOUND, (
        f"memory grew with the number of files: {peaks[10_000] / MiB:.0f} MiB at 10,000, "
        f"{peaks[60_000] / MiB:.0f} MiB at 60,000"
    )
