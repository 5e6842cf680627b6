"""Streaming content-defined chunking of uploads.

Bytes arrive in pieces of any size; `FileWriter` cuts them with FastCDC (so an edit in
the middle of a large file changes only the chunks around it), hashes and stores each
chunk, and holds at most a few chunks in memory however large the file is.
"""

from __future__ import annotations

from collections.abc import Iterable

import blake3
from pyfastcdc import FastCDC

from ..errors import PayloadTooLarge
from .objects import Batch, ObjectStore, hash_bytes
from .trees import INLINE_DATA, Entry, TreeStore

AVG_CHUNK = 1 << 20
MIN_CHUNK = 256 << 10
MAX_CHUNK = 4 << 20


def inline_file(data: bytes, meta: tuple[tuple[str, str], ...] = ()) -> Entry:
    """The entry of a file of at most INLINE_DATA bytes, which lives inside it: what
    `FileWriter` makes of such a file, for callers that hold its bytes whole."""
    return Entry("file", blake3.blake3(data).hexdigest(), len(data), data=data, meta=meta)


class FileWriter:
    """Feed bytes with `write`, then `finish` for the file's tree entry.

    Chunks are durable when `finish` returns (write order: blobs before anything that
    points at them). Not thread-safe; one writer per upload.

    Bytes are copied as they arrive into the writer's buffer, after what followed the
    last cut; once about `WINDOW` bytes are held they are hashed for the whole-file hash
    (one call, which releases the GIL) and cut. Each chunk is copied out as it is handed
    to the store (views would keep the buffer from being reused while they wait to be
    written), and the rest moves to the buffer's start. The buffer grows to about `WINDOW`
    once per file and is reused: fresh memory costs a page fault per page, on a VM the
    biggest part of a copy's cost (holding the pieces until the cut instead tripled the
    server's page faults and cost ~10% of upload speed). So every byte is copied twice
    here, where the handler used to copy it twice more before.
    """

    WINDOW = 2 * MAX_CHUNK  # bytes gathered before looking for cuts

    def __init__(
        self, objects: ObjectStore, trees: TreeStore, max_size: int | None = None, batch: Batch | None = None
    ) -> None:
        self.trees = trees
        # Many small files (an archive upload) share one batch: one durability barrier.
        self.own_batch = batch is None
        self.batch: Batch = batch if batch is not None else objects.batch()
        self.cdc: FastCDC | None = None  # made on the first cut: most files of an archive never need one
        self.hasher = blake3.blake3()
        self.buf = bytearray()  # its first `held` bytes: what followed the last cut, and what came since
        self.kept = 0  # of those, the ones already hashed (they followed the last cut)
        self.held = 0
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
        are hashed."""
        view = memoryview(self.buf)
        self.hasher.update(view[self.kept : self.held])  # one call: it releases the GIL on big inputs
        return view[: self.held]

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
        for i, (offset, length) in enumerate(cuts):
            data = bytes(block[offset : offset + length])
            key = hash_bytes(data)
            last = final and self.own_batch and i == len(cuts) - 1  # `finish` waits for it next
            (self.batch.put_last if last else self.batch.put)(key, data)
            self.chunks.append((key, length))
            end = offset + length
        self.kept = self.held = len(block) - end
        block[: self.kept] = block[end:]  # overlapping: moved as by memmove

    def finish(self) -> Entry:
        if not self.chunks and self.size <= INLINE_DATA:  # tiny file: no object at all
            data = bytes(self._block())
            return Entry("file", self.hasher.hexdigest(), self.size, data=data)
        if self.held:
            self._cut(final=True)
        entry = self.trees.file_entry(self.hasher.hexdigest(), self.size, self.chunks, self.batch)
        if self.own_batch:
            self.batch.flush()
        return entry

    def abort(self) -> None:
        if self.own_batch:
            self.batch.abort()
        self.buf, self.kept, self.held = bytearray(), 0, 0
