"""Streaming content-defined chunking of uploads.

Bytes arrive in pieces of any size; `FileWriter` cuts them with FastCDC (so an edit in
the middle of a large file changes only the chunks around it), hashes and stores each
chunk, and holds at most a few chunks in memory however large the file is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import blake3
from pyfastcdc import FastCDC

from ..errors import PayloadTooLarge
from .objects import Batch, ObjectStore, hash_bytes
from .trees import INLINE_DATA, Entry, TreeStore

AVG_CHUNK = 1 << 20
MIN_CHUNK = 256 << 10
MAX_CHUNK = 4 << 20
HASH_APART = 1 << 20  # new bytes from which the whole-file hash runs on `_hash_pool`
_hash_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pfs-hash")


def inline_file(data: bytes, meta: tuple[tuple[str, str], ...] = ()) -> Entry:
    """The entry of a file of at most INLINE_DATA bytes, which lives inside it: what
    `FileWriter` makes of such a file, for callers that hold its bytes whole."""
    return Entry("file", blake3.blake3(data).hexdigest(), len(data), data=data, meta=meta)


def _update(hasher: blake3.blake3, data: memoryview) -> None:
    hasher.update(data)


class FileWriter:
    """Feed bytes with `write`, then `finish` for the file's tree entry.

    Chunks are durable when `finish` returns (write order: blobs before anything that
    points at them). Not thread-safe; one writer per upload.

    Bytes are copied once, as they arrive, into the writer's buffer after what followed
    the last cut; once about `WINDOW` bytes are held they are hashed for the whole-file
    hash (one call, which releases the GIL) and cut. The chunks go to the store as views
    of the buffer, not copies (one copy of every byte less). So the rest after the last
    cut moves to another buffer, and a buffer is reused only once the writes of its chunks
    are done: at most `BUFFERS` of about `WINDOW` bytes per upload, each faulted in once
    (fresh memory costs a page fault per page, on a VM the biggest part of a copy's cost).
    """

    WINDOW = 2 * MAX_CHUNK  # bytes gathered before looking for cuts
    BUFFERS = 4  # the one being filled, and those whose chunks are still being written

    def __init__(
        self, objects: ObjectStore, trees: TreeStore, max_size: int | None = None, batch: Batch | None = None
    ) -> None:
        self.trees = trees
        # Many small files (an archive upload) share one batch: one durability barrier.
        self.own_batch = batch is None
        self.batch: Batch = batch if batch is not None else objects.batch()
        self.cdc: FastCDC | None = None  # made on the first cut: most files of an archive never need one
        self.hasher = blake3.blake3()
        self.hashing: Future[None] | None = None  # the update of `hasher` in flight, which reads `buf`
        self.buf = bytearray()  # its first `held` bytes: what followed the last cut, and what came since
        self.kept = 0  # of those, the ones already hashed (they followed the last cut)
        self.held = 0
        self.busy: deque[tuple[bytearray, list[Future[Any]]]] = deque()  # buffers whose chunks are being written
        self.spare: list[bytearray] = []
        self.chunks: list[tuple[str, int]] = []
        self.size = 0
        self.max_size = max_size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if not n:
            return
        self.size += n
        if self.max_size is not None and self.size > self.max_size:
            self.abort()
            raise PayloadTooLarge(f"file larger than the limit of {self.max_size} bytes")
        end = self.held + n
        if len(self.buf) < end:
            # small files stay small; a big one reaches its size in a few steps, then reuses it
            old, self.buf = self.buf, bytearray(max(end + (end >> 3), min(end * 2, self.WINDOW + (1 << 20))))
            self.buf[: self.held] = memoryview(old)[: self.held]
        memoryview(self.buf)[self.held : end] = data
        self.held = end
        if self.held >= self.WINDOW:
            self._cut(final=False)

    def write_many(self, pieces: Iterable[bytes | bytearray | memoryview]) -> None:
        """`write` each piece (one call for many small pieces: one thread hop for them)."""
        for piece in pieces:
            self.write(piece)

    def _block(self) -> memoryview:
        """The bytes held (what followed the last cut, and what came since); the new ones
        go to the whole-file hash, on another thread when there are many: BLAKE3 releases
        the GIL, so it runs beside the cutting, which does not."""
        view = memoryview(self.buf)
        new = view[self.kept : self.held]
        if self.hashing is not None:
            self.hashing.result()
        if len(new) >= HASH_APART:
            self.hashing = _hash_pool.submit(_update, self.hasher, new)
        else:
            self.hashing = None
            self.hasher.update(new)
        return view[: self.held]

    def _digest(self) -> str:
        if self.hashing is not None:
            self.hashing.result()
            self.hashing = None
        return self.hasher.hexdigest()

    def _cut(self, final: bool) -> None:
        block = self._block()
        if final and len(block) <= MIN_CHUNK:  # small file: one chunk, no need to look for cuts
            cuts = [(0, len(block))]
        else:
            if self.cdc is None:
                self.cdc = FastCDC(AVG_CHUNK - MIN_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK)
            cuts = [(c.offset, c.length) for c in self.cdc.cut_buf(block)]
            if not final:
                cuts = cuts[:-1]  # the last cut may move once more bytes arrive
        end = 0
        writes: list[Future[Any]] = []
        for i, (offset, length) in enumerate(cuts):
            data = block[offset : offset + length]
            key = hash_bytes(data)
            if final and self.own_batch and i == len(cuts) - 1:  # `finish` waits for it next
                self.batch.put_last(key, data)
            elif (fut := self.batch.put_view(key, data)) is not None:
                writes.append(fut)
            self.chunks.append((key, length))
            end = offset + length
        self.kept = self.held = len(block) - end
        if final:  # nothing is written to this buffer again
            return
        if writes:  # the rest goes to another buffer while the store reads this one
            old, self.buf = self.buf, self._spare_buffer()
            self.busy.append((old, writes if self.hashing is None else [*writes, self.hashing]))
            self.buf[: self.kept] = block[end:]
        else:
            if self.hashing is not None:
                self.hashing.result()
            block[: self.kept] = block[end:]  # overlapping: moved as by memmove

    def _spare_buffer(self) -> bytearray:
        """A buffer of the current one's size whose chunks are written (waiting for the
        oldest when `BUFFERS` are in use), else a new one."""
        while self.busy and (len(self.busy) + 1 >= self.BUFFERS or all(f.done() for f in self.busy[0][1])):
            buf, writes = self.busy.popleft()
            wait(writes)  # a failed write is raised by the batch, not here
            if len(buf) == len(self.buf):
                self.spare.append(buf)
        return self.spare.pop() if self.spare else bytearray(len(self.buf))

    def finish(self) -> Entry:
        if not self.chunks and self.size <= INLINE_DATA:  # tiny file: no object at all
            data = bytes(self._block())
            return Entry("file", self._digest(), self.size, data=data)
        if self.held:
            self._cut(final=True)
        entry = self.trees.file_entry(self._digest(), self.size, self.chunks, self.batch)
        if self.own_batch:
            self.batch.flush()
        return entry

    def abort(self) -> None:
        if self.own_batch:
            self.batch.abort()
        self.buf, self.kept, self.held = bytearray(), 0, 0
        self.busy.clear()
        self.spare.clear()
