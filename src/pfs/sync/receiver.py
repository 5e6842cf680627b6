"""The receiving end of a transfer: answers `missing`, takes `objects`, moves a branch with `ref`.

Invariant: a commit is indexed only once every object it reaches is durable and is what
a local write could have made (checked by walking what it adds to its parent, which is
indexed already: `Repository.check_received`), and a branch only ever points at an
indexed commit. A commit object is stored only once it passed. An interrupted or refused
transfer therefore leaves at most unreferenced objects and complete, checked commits, and
rerunning it sends only the rest. Leftover objects are garbage: nothing indexed reaches
them, so a collector that marks from the refs, the commit index, staged writes and job
outputs (as fsck walks) and sweeps the rest finds them.

Memory: each object is decoded against its kind's bound (never decompressed past it), and
the plain bytes being decoded at once, over all requests, are bounded by VERIFY_BUDGET.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import orjson
import zstandard

from ..errors import (
    BadObject,
    BadRequest,
    CorruptObject,
    InsufficientStorage,
    PayloadTooLarge,
    PfsError,
)
from ..paths import check_branch
from ..storage import collect
from ..storage.objects import VERIFY_BUDGET, Batch, decode_bounded
from ..storage.trees import Commit
from .wire import (
    BLOB,
    COMMIT,
    END,
    ERROR,
    FLUSH_BYTES,
    FLUSH_OBJECTS,
    HEADER,
    HEADER_SIZE,
    KINDS,
    MAGIC,
    MANIFEST,
    MAX_FRAME,
    PIECE,
    TREE,
    check_key,
    error_text,
)

if TYPE_CHECKING:
    from ..repository.repo import Repository


def missing(repo: Repository, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The items this repository lacks, in their order. A commit counts as present only
    when indexed (complete); any other object when stored, since the receiver checks
    every new commit's objects itself before indexing it."""
    out, have = _lacking(repo, items)
    # What is here the sender will not send: the transfer relies on it, so it is recorded
    # as found (a garbage collection keeps it); while one is active, looked at again.
    commits = [key for kind, key in have if kind == COMMIT]
    objects = [key for kind, key in have if kind != COMMIT]
    logged = repo.found(collect.COMMIT, commits)
    logged = repo.found(collect.OBJECT, objects) or logged
    if logged:
        gone, _ = _lacking(repo, have)
        lost = set(out) | set(gone)
        out = [item for item in items if item in lost]
    return out


def _lacking(repo: Repository, items: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The items this repository lacks and those it has, each in their order."""
    present = iter(repo.has_objects([key for kind, key in items if kind != COMMIT]))
    lacks: list[tuple[str, str]] = []
    has: list[tuple[str, str]] = []
    for kind, key in items:
        there = repo.has_commit(key) if kind == COMMIT else next(present)
        (has if there else lacks).append((kind, key))
    return lacks, has


def _read_exact(f: io.BufferedIOBase, n: int) -> bytes:
    """Exactly n bytes; memory grows with what actually arrives, not with a claimed length."""
    if n <= PIECE:
        data = f.read(n)
    else:
        buf = bytearray()
        while len(buf) < n and (piece := f.read(min(PIECE, n - len(buf)))):
            buf += piece
        data = bytes(buf)
    if len(data) != n:
        raise BadRequest("the object stream ended early (cut off); what arrived complete is kept")
    return data


KIND_NAMES = {BLOB: "chunk", TREE: "tree node", MANIFEST: "manifest", COMMIT: "commit"}
SEEN_MAX = 100_000  # subtrees and files remembered as checked within one transfer


def _frame_limit(plain: int) -> int:
    """Stored bytes of an object of at most `plain` plain bytes: raw, or zstd at its worst."""
    return plain + plain // 128 + 1024


def _verify(repo: Repository, kind: str, key: str, blob: bytes) -> bytes:
    """The plain bytes of a received object, checked against its name and held to the bound
    of its kind (a chunk to the chunker's maximum, a tree node to what a leaf can hold...):
    decompressed no further than that bound, whatever its header announces."""
    limit = repo.received_limit(kind)
    try:
        return decode_bounded(key, blob, limit)
    except PayloadTooLarge:
        what = KIND_NAMES[kind]
        raise BadObject(
            f"object {key} sent as a {what} is larger than the {limit} bytes a {what} may have; "
            "nothing from it on was stored"
        ) from None
    except CorruptObject as exc:
        raise BadObject(f"{exc.message} (as received); nothing from it on was stored") from None


def _estimate(kind: str, blob: bytes, limit: int) -> int:
    """Plain bytes decoding `blob` may take: what a zstd header announces, else the bound."""
    if blob[:1] == b"Z":
        try:
            size = zstandard.frame_content_size(blob[1:])
        except zstandard.ZstdError:
            return 0
        return limit if size < 0 else min(size, limit)
    return len(blob)


def _parse_commit(repo: Repository, key: str, data: bytes) -> Commit:
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadObject(f"object {key} was sent as a commit but is not one") from None
    return repo.check_received_commit(key, raw)


def _index(repo: Repository, batch: Batch, pending: list[tuple[Commit, bytes]], seen: dict[Any, Any]) -> int:
    """Check the commits received (in arrival order: parents first) against the objects now
    durable; store and index those that pass. The first that fails stops it, after the
    ones before it are indexed, and is raised; `pending` is left empty either way.

    A commit's object is stored only once it passed: a refused commit leaves nothing
    that names it."""
    checked: dict[str, Commit] = {}
    error: PfsError | None = None
    try:
        for commit, data in pending:
            if commit.id in checked or repo.has_commit(commit.id):
                continue
            try:
                repo.check_received(commit, checked, seen)
            except PfsError as exc:
                error = exc
                break
            checked[commit.id] = commit
            batch.put(commit.id, data)
    finally:
        pending.clear()
        if len(seen) > SEEN_MAX:
            seen.clear()
    if checked:
        batch.flush()
        for commit in checked.values():
            repo.index_commit(commit)
    if error is not None:
        raise error
    return len(checked)


def receive(repo: Repository, raw: io.RawIOBase) -> dict[str, int]:
    """Take an object stream: verify each object against its name and its kind's bound,
    store it, and every FLUSH_BYTES make the lot durable, then check and index the commits
    it completes (`Repository.check_received`: trees, names, sizes, file hashes). Returns counts.

    Write order: objects durable, then (checked) commits stored and indexed; refs move only
    later, by `update_ref`. A bad or cut stream fails here, keeping what was verified before it."""
    f = io.BufferedReader(raw, PIECE)
    if f.read(len(MAGIC)) != MAGIC:
        raise BadRequest("not a pfs object stream (it must start with PFSYNC1)")
    objects = commits = nbytes = unflushed = unflushed_n = 0
    pending: list[tuple[Commit, bytes]] = []
    seen: dict[Any, Any] = {}
    batch = repo.object_batch()
    try:
        while True:
            kind_b, key_b, n = HEADER.unpack(_read_exact(f, HEADER_SIZE))
            kind = kind_b.decode("latin-1")
            if kind == END:
                break
            if n > MAX_FRAME:
                raise PayloadTooLarge(f"an object of {n} bytes is larger than the limit of {MAX_FRAME}")
            if kind == ERROR:
                raise BadRequest("the sender aborted the stream: " + error_text(_read_exact(f, n)))
            if kind not in KINDS:
                raise BadRequest(f"unknown frame kind {kind!r} in the object stream")
            key = key_b.hex()
            limit = repo.received_limit(kind)
            if n > _frame_limit(limit):
                raise BadObject(
                    f"object {key} sent as a {KIND_NAMES[kind]} takes {n} bytes, larger than one of at most "
                    f"{limit} bytes can be stored as; nothing from it on was stored"
                )
            blob = _read_exact(f, n)
            with VERIFY_BUDGET.hold(_estimate(kind, blob, limit)):
                data = _verify(repo, kind, key, blob)
                del blob
                if kind == COMMIT:
                    pending.append((_parse_commit(repo, key, data), data))
                else:
                    batch.put(key, data)
                    if kind == BLOB:  # lets a one-chunk file be checked without reading it back
                        seen["blob", key] = len(data)
            objects += 1
            nbytes += HEADER_SIZE + n
            unflushed += len(data)
            unflushed_n += 1
            del data
            if unflushed >= FLUSH_BYTES or unflushed_n >= FLUSH_OBJECTS:
                batch.flush()
                commits += _index(repo, batch, pending, seen)
                unflushed, unflushed_n = 0, 0
        if f.read(1):
            raise BadRequest("data after the end of the object stream")
        batch.flush()
        commits += _index(repo, batch, pending, seen)
    except Exception as exc:
        if isinstance(exc, OSError | InsufficientStorage):
            batch.abort()
        else:  # a cut or bad stream: keep what was verified, so a rerun need not send it again
            _keep(repo, batch, pending)
        raise
    except BaseException:
        batch.abort()
        raise
    return {"objects": objects, "bytes": nbytes, "commits": commits}


def _keep(repo: Repository, batch: Batch, pending: list[tuple[Commit, bytes]]) -> None:
    """Best effort: make the objects verified so far durable and index the commits they
    complete (each still checked); on any trouble, drop the rest as `abort` would."""
    try:
        batch.flush()
        _index(repo, batch, pending, {})
    except PfsError:
        batch.abort()


def update_ref(repo: Repository, branch: str, new: str, old: str | None = None, force: bool = False) -> str:
    """The `ref` request, checked: see `Repository.move_branch` (a compare-and-swap under
    the branch's lock, fast-forward only unless forced)."""
    check_branch(branch)
    check_key(new, "commit")
    if old:
        check_key(old, "commit")
    return repo.move_branch(branch, new, old, force)
