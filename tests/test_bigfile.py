"""A 2 GiB file streamed up and down through the HTTP server (reliability catalogue D4):
the bytes round-trip exactly and the server's memory does not grow with the file size."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest
from conftest import ServerProc
from rss import PeakRss

from pfs import Client

SIZE = 2 << 30
PIECE = 1 << 20
RSS_BOUND = 64 << 20
MiB = 1 << 20


class Source:
    """Deterministic bytes that neither dedupe nor compress: the BLAKE3 extendable output of
    a seed (~9 GB/s, so the generator is never the bottleneck), hashed as it is produced."""

    def __init__(self, size: int, seed: bytes) -> None:
        self.size = size
        self.xof = blake3.blake3(seed)
        self.hash = blake3.blake3()
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for off in range(0, self.size, PIECE):
            piece = self.xof.digest(min(PIECE, self.size - off), seek=off)
            self.hash.update(piece)
            self.sent += len(piece)
            yield piece


def stored_bytes(data_dir: Path) -> int:
    return sum(f.stat().st_size for f in (data_dir / "objects").rglob("*") if f.is_file())


@pytest.mark.timeout(600)
def test_2gib_upload_and_download_stream_with_bounded_server_memory(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = ServerProc(data_dir).start()
    assert server.proc is not None
    try:
        with Client(server.url, timeout=600) as c:
            # Warm up (thread pools, compressor contexts, connections) so the baseline is fair.
            warm = os.urandom(16 * MiB)
            c.put_file("warm.bin", warm)
            assert c.get_file("warm.bin") == warm
            time.sleep(0.5)
            baseline = PeakRss(server.proc.pid).rss()

            src = Source(SIZE, seed=b"pfs big file")
            t0 = time.monotonic()
            with PeakRss(server.proc.pid) as up:
                res = c.put_file("big/blob.bin", src)
            upload_s = time.monotonic() - t0
            want = src.hash.hexdigest()
            assert src.sent == SIZE and res.size == SIZE
            assert res.hash == want, "the server hashed other bytes than were sent"
            commit = c.commit(message="2 GiB").id
            # Really stored, not deduped or compressed away: the test moved 2 GiB.
            assert stored_bytes(data_dir) >= SIZE * 0.98

            got, n = blake3.blake3(), 0
            t0 = time.monotonic()
            with PeakRss(server.proc.pid) as down:
                for piece in c.open_file("big/blob.bin", commit=commit):
                    got.update(piece)
                    n += len(piece)
            download_s = time.monotonic() - t0
            assert n == SIZE and got.hexdigest() == want, "downloaded bytes differ from the upload"

        up_growth, down_growth = up.peak - baseline, down.peak - baseline
        print(
            f"\nbaseline RSS {baseline / MiB:.0f} MiB; upload {upload_s:.1f} s, peak growth "
            f"{up_growth / MiB:.1f} MiB ({up.samples} samples); download {download_s:.1f} s, "
            f"peak growth {down_growth / MiB:.1f} MiB ({down.samples} samples)"
        )
        assert up.samples > 20 and down.samples > 20, "too few RSS samples to trust the peak"
        assert up_growth <= RSS_BOUND, f"server RSS grew {up_growth / MiB:.0f} MiB during the upload"
        assert down_growth <= RSS_BOUND, f"server RSS grew {down_growth / MiB:.0f} MiB during the download"
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)  # 2 GiB: do not leave it to pytest's tmp retention
