"""Streaming content-defined chunking of uploads.

Bytes arrive in pieces of any size; `FileWriter` cuts them with FastCDC (so an edit in
the middle of a large file changes only the chunks around it), hashes and stores each
chunk, and holds at most a few chunks in memory however large the file is.
"""

from __future__ import annotations

import blake3
from pyfastcdc import FastCDC

from ..errors import PayloadTooLarge
from .objects import Batch, ObjectStore, hash_bytes
from .trees import INLINE_DATA, Entry, TreeStore

AVG_CHUNK = 1 << 20
MIN_CHUNK = 256 << 10
MAX_CHUNK = 4 << 20


class FileWriter:
    """Feed bytes with `write`, then `finish` for the file's tree entry.

    Chunks are durable when `finish` returns (write order: blobs before anything that
    points at them). Not thread-safe; one writer per upload.
    """

    def __init__(
        self, objects: ObjectStore, trees: TreeStore, max_size: int | None = None, batch: Batch | None = None
    ) -> None:
        self.trees = trees
        # Many small files (an archive upload) share one batch: one durability barrier.
        self.own_batch = batch is None
        self.batch: Batch = batch if batch is not None else objects.batch()
        self.cdc = FastCDC(AVG_CHUNK - MIN_CHUNK, min_size=MIN_CHUNK, max_size=MAX_CHUNK)
        self.hasher = blake3.blake3()
        self.buf = bytearray()
        self.chunks: list[tuple[str, int]] = []
        self.size = 0
        self.max_size = max_size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.size += len(data)
        if self.max_size is not None and self.size > self.max_size:
            self.abort()
            raise PayloadTooLarge(f"file larger than the limit of {self.max_size} bytes")
        self.hasher.update(data)
        self.buf += data
        if len(self.buf) >= 2 * MAX_CHUNK:
            self._cut(final=False)

    def _cut(self, final: bool) -> None:
        if final and len(self.buf) <= MIN_CHUNK:  # small file: one chunk, no need to look for cuts
            pieces = [(0, bytes(self.buf))]
        else:
            cuts = list(self.cdc.cut_buf(self.buf))
            if not final:
                cuts = cuts[:-1]  # the last cut may move once more bytes arrive
            # One copy per chunk, and no view of the buffer kept: a chunk waiting to be
            # written must not pin a whole copy of the buffer (that made server RSS grow
            # ~100 MiB during a streamed upload), and the buffer is trimmed in place.
            pieces = [(c.offset, bytes(c.data)) for c in cuts]
            del cuts
        end = 0
        for offset, data in pieces:
            key = hash_bytes(data)
            self.batch.put(key, data)
            self.chunks.append((key, len(data)))
            end = offset + len(data)
        del self.buf[:end]

    def finish(self) -> Entry:
        if not self.chunks and self.size <= INLINE_DATA:  # tiny file: no object at all
            return Entry("file", self.hasher.hexdigest(), self.size, data=bytes(self.buf))
        if self.buf:
            self._cut(final=True)
        entry = self.trees.file_entry(self.hasher.hexdigest(), self.size, self.chunks, self.batch)
        if self.own_batch:
            self.batch.flush()
        return entry

    def abort(self) -> None:
        if self.own_batch:
            self.batch.abort()
        self.buf = bytearray()
