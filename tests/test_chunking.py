"""The upload path's storage side: FileWriter's chunking does not depend on how the bytes
arrive, keeps no reference to bytes a caller may change, and chunks that do not compress
are stored raw (read back verified)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from pathlib import Path

import blake3
import pytest

from pfs.errors import PayloadTooLarge
from pfs.storage.chunking import MAX_CHUNK, FileWriter
from pfs.storage.objects import SAMPLE, LocalObjectStore, hash_bytes
from pfs.storage.trees import INLINE_DATA, TreeStore

MiB = 1 << 20


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


Piece = bytes | bytearray | memoryview


def upload(
    store: LocalObjectStore, pieces: Sequence[Piece], max_size: int | None = None
) -> tuple[str, int, list[tuple[str, int]]]:
    trees = TreeStore(store)
    w = FileWriter(store, trees, max_size)
    w.write_many(pieces)
    entry = w.finish()
    return entry.hash, entry.size, list(trees.chunks(entry))


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        out.append(data[i : i + n])
        i, k = i + n, k + 1
    return out


def test_chunks_do_not_depend_on_how_the_bytes_arrive(store: LocalObjectStore) -> None:
    data = random.Random(7).randbytes(3 * MAX_CHUNK + 12345)
    whole = upload(store, [data])
    assert whole[0] == blake3.blake3(data).hexdigest() and whole[1] == len(data)
    assert len(whole[2]) > 3
    for sizes in ([1], [MiB], [65536, 3, 262144], [5 * MAX_CHUNK]):
        pieces = split(data, sizes) if sizes != [1] else split(data[: 300 << 10], [4096]) + [data[300 << 10 :]]
        assert upload(store, list(pieces)) == whole, sizes
    # views of immutable bytes are taken as they are
    view = memoryview(data)
    assert upload(store, [view[:MiB], view[MiB:]]) == whole
    for key, size in whole[2]:
        assert len(store.get(key)) == size
    assert b"".join(store.get(k) for k, _ in whole[2]) == data


def test_mutable_pieces_are_copied(store: LocalObjectStore) -> None:
    data = os.urandom(9 * MiB)
    w = FileWriter(store, TreeStore(store))
    buf = bytearray(MiB)
    for i in range(0, len(data), MiB):
        buf[:] = data[i : i + MiB]
        w.write(buf)  # the caller reuses its buffer
        w.write(memoryview(bytearray(0)))
    entry = w.finish()
    assert entry.hash == blake3.blake3(data).hexdigest()
    assert b"".join(TreeStore(store).read(entry)) == data


def test_tiny_and_small_files(store: LocalObjectStore) -> None:
    trees = TreeStore(store)
    w = FileWriter(store, trees)
    w.write(b"ab")
    w.write(bytearray(b"cd"))
    e = w.finish()
    assert e.data == b"abcd" and e.hash == blake3.blake3(b"abcd").hexdigest()
    small = os.urandom(INLINE_DATA + 1)
    h, n, chunks = upload(store, split(small, [100]))
    assert (h, n) == (blake3.blake3(small).hexdigest(), len(small))
    assert chunks == [(hash_bytes(small), len(small))]


def test_size_limit_while_streaming(store: LocalObjectStore) -> None:
    with pytest.raises(PayloadTooLarge):
        upload(store, [os.urandom(MiB)] * 20, max_size=10 * MiB)


def stored_kind(store: LocalObjectStore, key: str) -> bytes:
    with open(store.path(key), "rb") as f:
        return f.read(1)


def test_incompressible_chunks_are_stored_raw_and_read_back(store: LocalObjectStore) -> None:
    rnd = random.Random(11)
    noise = rnd.randbytes(2 * MiB)
    text = b"".join(b"line %d of a very compressible file\n" % i for i in range(60000))
    # compressible start, noise after it: the sample says compress, the result says raw
    mixed = b"a" * (SAMPLE * 2) + rnd.randbytes(8 * MiB)
    with store.batch() as b:
        for data in (noise, text, mixed):
            b.put(hash_bytes(data), data)
    assert stored_kind(store, hash_bytes(noise)) == b"R"
    assert os.path.getsize(store.path(hash_bytes(noise))) == len(noise) + 1
    assert stored_kind(store, hash_bytes(text)) == b"Z"
    assert os.path.getsize(store.path(hash_bytes(text))) < len(text) / 4
    assert stored_kind(store, hash_bytes(mixed)) == b"R"
    for data in (noise, text, mixed):
        assert store.get(hash_bytes(data)) == data
    # and through the upload path: every chunk of random bytes is raw, all verified on read
    h, _, chunks = upload(store, split(noise + rnd.randbytes(8 * MiB), [256 << 10]))
    assert all(stored_kind(store, k) == b"R" for k, _ in chunks)
    assert all(len(store.get(k)) == n for k, n in chunks)


class SlowStore(LocalObjectStore):
    """Fault injection: every object write waits first, so chunks are still being written
    while the writer fills its next buffers."""

    def write_tmp(self, key: str, data: bytes | memoryview, compress: bool) -> str | None:
        time.sleep(0.02)
        return super().write_tmp(key, data, compress)


def test_a_buffer_is_reused_only_once_its_chunks_are_written(tmp_path: Path) -> None:
    """Chunks go to the store as views of the writer's buffers: were a buffer refilled
    before its chunks were written, stored objects would hold other bytes than their keys
    say (the store's reads verify every one), or an upload of the same bytes would differ."""
    store = SlowStore(tmp_path / "slow")
    data = random.Random(5).randbytes(12 * FileWriter.WINDOW + 777)
    w = FileWriter(store, TreeStore(store))
    w.write_many(split(data, [65536, 4 * MiB + 1]))
    assert len(w.busy) + 1 <= FileWriter.BUFFERS  # never more buffers than the bound
    entry = w.finish()
    assert entry.hash == blake3.blake3(data).hexdigest()
    chunks = list(TreeStore(store).chunks(entry))
    assert len(chunks) > 12 * 4
    assert b"".join(store.get(k) for k, _ in chunks) == data  # each verified against its key
    fast = LocalObjectStore(tmp_path / "fast")
    assert upload(fast, [data])[2] == chunks
