"""Multipart uploads (S3's CreateMultipartUpload … CompleteMultipartUpload): each part is
streamed into chunks like any file and recorded; completing joins the parts' chunk lists
into one file, staged on the upload's branch, without writing the bytes again.

A joined chunk list must look like one the chunker made (every chunk but the last at
least MIN_CHUNK, none over MAX_CHUNK: what fsck and a sync peer check), but a part's last
chunk is usually short. So a short chunk is merged with the next one (split in two if that
is too big): a few chunks per part boundary are written again, the rest are reused.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import blake3
import orjson

from ..errors import BadRequest, UploadNotFound
from ..paths import check_branch, check_meta, clean_path
from ..storage.chunking import MAX_CHUNK, MIN_CHUNK, inline_file
from ..storage.meta import PartRow, UploadRow
from ..storage.objects import hash_bytes
from ..storage.trees import INLINE_DATA, Entry
from .repo import Repository

Meta = tuple[tuple[str, str], ...]
MAX_PART_NUMBER = 10_000


@dataclass(frozen=True)
class Upload:
    id: str
    branch: str
    path: str
    meta: Meta  # what the file gets when completed (content-type, x-amz-meta-*)
    created: float


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    md5: str  # hex digest of the part's bytes: its S3 ETag
    entry: Entry
    created: float


def _upload(row: UploadRow) -> Upload:
    return Upload(row.id, row.branch, row.path, check_meta(orjson.loads(row.meta)), row.created)


class Uploads:
    """The multipart uploads of one repository."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.store = repo.meta

    def create(self, branch: str, path: str, meta: Meta = ()) -> Upload:
        """A new upload to `path` on `branch` (checked: the branch exists, the path is
        placeable); its id is random and unguessable."""
        branch, path, meta = check_branch(branch), clean_path(path), check_meta(meta)
        self.repo.check_writable(branch, path)
        row = UploadRow(secrets.token_hex(16), branch, path, orjson.dumps(dict(meta)).decode(), time.time())
        self.store.create_upload(row)
        return _upload(row)

    def get(self, upload_id: str) -> Upload:
        """UploadNotFound (404) for an unknown, completed or aborted id."""
        row = self.store.get_upload(upload_id) if _is_id(upload_id) else None
        if row is None:
            raise UploadNotFound(f"upload {upload_id[:40]!r} not found (completed, aborted or never made)")
        return _upload(row)

    def in_progress(self, prefix: str = "", limit: int = 1000) -> list[Upload]:
        """Uploads in progress whose path starts with `prefix`, by path then creation."""
        return [_upload(r) for r in self.store.list_uploads(prefix, limit)]

    def put_part(self, upload_id: str, number: int, entry: Entry, md5: str) -> Part:
        """Record part `number` (1..10000) written as `entry`; a part sent again replaces it."""
        if not 1 <= number <= MAX_PART_NUMBER:
            raise BadRequest(f"part number must be 1 to {MAX_PART_NUMBER}, not {number}")
        part = PartRow(number, entry.size, md5, entry, time.time())
        if not self.store.put_part(upload_id, part):
            self.get(upload_id)  # raises UploadNotFound
        return Part(part.number, part.size, part.md5, part.entry, part.created)

    def parts(self, upload_id: str) -> list[Part]:
        """The parts recorded so far, by number."""
        self.get(upload_id)
        return [Part(r.number, r.size, r.md5, r.entry, r.created) for r in self.store.list_parts(upload_id)]

    def complete(self, upload_id: str, numbers: list[int], extra_meta: Meta = ()) -> Entry:
        """Join parts `numbers` (ascending, each recorded) into one file with the upload's
        meta (and `extra_meta`, e.g. the S3 ETag), stage it at the upload's path on its
        branch, and end the upload. Reads the parts' bytes back once, to hash the whole
        file; writes again only the chunks at part boundaries."""
        upload = self.get(upload_id)
        recorded = {r.number: r.entry for r in self.store.list_parts(upload_id)}
        if not numbers or numbers != sorted(set(numbers)):
            raise BadRequest("the parts to complete must be listed once each, in ascending order")
        missing = [n for n in numbers if n not in recorded]
        if missing:
            raise BadRequest(f"part {missing[0]} was not uploaded")
        meta = check_meta(dict(upload.meta) | dict(extra_meta))
        entry = self._join([recorded[n] for n in numbers], meta)
        self.repo.stage_file(upload.branch, upload.path, entry)
        self.store.end_upload(upload_id)
        return entry

    def abort(self, upload_id: str) -> None:
        """End the upload; its parts become garbage. UploadNotFound if unknown."""
        if not (_is_id(upload_id) and self.store.end_upload(upload_id)):
            raise UploadNotFound(f"upload {upload_id[:40]!r} not found (completed, aborted or never made)")

    # ---- joining -----------------------------------------------------------------------
    def _join(self, entries: list[Entry], meta: Meta) -> Entry:
        size = sum(e.size for e in entries)
        limit = self.repo.max_file_size
        if limit is not None and size > limit:
            raise BadRequest(f"the parts add up to {size} bytes, more than the limit of {limit}")
        if size <= INLINE_DATA:  # as the writer stores a tiny file: inline
            return inline_file(b"".join(b for e in entries for b in self.repo.read_file(e)), meta)
        hasher = blake3.blake3()
        chunks: list[tuple[str, int]] = []
        with self.repo.objects.batch() as batch:
            for key, data in _normalized(self._pieces(entries)):
                hasher.update(data)
                if key is None:  # a chunk made here at a part boundary
                    key = hash_bytes(data)
                    batch.put(key, data)
                chunks.append((key, len(data)))
            entry = self.repo.trees.file_entry(hasher.hexdigest(), size, chunks, batch)
        return Entry(entry.kind, entry.hash, entry.size, entry.chunks, entry.manifest, meta=meta)

    def _pieces(self, entries: list[Entry]) -> Iterator[tuple[str | None, bytes]]:
        """Every stored chunk of the parts in order, with its verified bytes (an inline part
        is one piece that is not stored yet)."""
        for e in entries:
            if e.data is not None:
                if e.data:
                    yield None, e.data
                continue
            for key, _ in self.repo.trees.chunks(e):
                yield key, self.repo.objects.get(key)


def _normalized(pieces: Iterator[tuple[str | None, bytes]]) -> Iterator[tuple[str | None, bytes]]:
    """The same bytes, cut so that every piece but the last is MIN_CHUNK to MAX_CHUNK long:
    a short piece is merged into the next, halved if the two are too long. A piece kept as
    it was keeps its key; a new one has key None."""
    carry: tuple[str | None, bytes] | None = None  # a short piece waiting for the next
    for key, data in pieces:
        if carry is not None:
            data, key, carry = carry[1] + data, None, None
            if len(data) > MAX_CHUNK:  # under MAX_CHUNK + MIN_CHUNK: both halves are in bounds
                half = len(data) // 2
                yield None, data[:half]
                data = data[half:]
        if len(data) < MIN_CHUNK:
            carry = (key, data)
            continue
        yield key, data
    if carry is not None:
        yield carry


def _is_id(upload_id: str) -> bool:
    return len(upload_id) == 32 and all(ch in "0123456789abcdef" for ch in upload_id)
