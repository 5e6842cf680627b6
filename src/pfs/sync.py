"""Clone, pull and push between pfs instances: only the objects the receiver lacks travel.

Objects are immutable and named by their hash, so a transfer is a walk of what the
receiver does not have yet, like `git fetch`. Three parties:

- the *sender* (source server) answers `ancestors` (its commit graph, a page at a time),
  `walk` (the objects each commit adds to its first parent, children before parents) and
  `fetch` (those objects, framed);
- the *receiver* (destination server) answers `missing` (which of these it lacks), takes
  `objects` (each verified against its name, made durable, then each commit checked to be
  complete and indexed) and moves a branch with `ref` (a compare-and-swap, fast-forward
  only unless forced);
- the *driver*, `transfer` (run by `pfs clone/pull/push` or any Python program), talks to
  both over plain HTTP. Servers never connect to each other, so no server can be made to
  fetch from an arbitrary URL.

Invariant on the receiver: a commit is indexed only once every object it reaches is
durable (checked by walking what it adds to its parent, which is indexed already), and a
branch only ever points at an indexed commit. An interrupted transfer therefore leaves at
most unreferenced objects and complete commits, and rerunning it sends only the rest.
"""

from __future__ import annotations

import io
import math
import re
import struct
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import zstandard

from . import errors
from .errors import (
    BadObject,
    BadRequest,
    BranchMoved,
    BranchNotFound,
    CommitNotFound,
    Conflict,
    CorruptObject,
    DirtyBranch,
    InsufficientStorage,
    MissingObject,
    NotFastForward,
    PayloadTooLarge,
    PfsError,
)
from .objects import Batch, LocalObjectStore, ObjectStore, decode, encode
from .paths import check_branch
from .trees import Commit, Entry, TreeStore

if TYPE_CHECKING:
    from .client import Client
    from .repo import Repository

# ---- wire format ---------------------------------------------------------------------
# Object stream (`fetch` answers it, `objects` takes it): MAGIC, then frames of
#   kind (1 byte) | key (32 bytes, raw BLAKE3) | length (4 bytes, big-endian) | payload
# where the payload is the object's stored form (1-byte encoding + raw or zstd body), so
# compressed objects travel compressed. An ERROR frame carries the sender's error as JSON
# (key all zero); the END frame (key zero, no payload) marks a complete stream, so a cut
# one is never mistaken for a finished one.
MAGIC = b"PFSYNC1\n"
COMMIT, TREE, MANIFEST, BLOB = "c", "t", "m", "b"
KINDS = frozenset((COMMIT, TREE, MANIFEST, BLOB))
ERROR, END = "!", "."
_HEADER = struct.Struct(">c32sI")
HEADER_SIZE = _HEADER.size
_ZERO_KEY = bytes(32)

MAX_FRAME = 256 << 20  # stored bytes of one object; the largest are manifests of multi-TB files
MAX_OBJECT = 256 << 20  # plain bytes of one object (a zstd body announcing more is refused unread)
MAX_KEYS = 10_000  # object or commit ids in one request
MAX_JSON = 2 << 20  # bytes of a JSON request body
MAX_PAGE = 10_000  # commits in one `ancestors` answer

FLUSH_BYTES = 32 << 20  # the receiver makes what it got durable (and indexes commits) this often:
FLUSH_OBJECTS = 5_000  # an interrupted transfer keeps all but the last few MB of what it sent
PIECE = 1 << 20  # the sender's streams are handed to the event loop in pieces of about this size

WALK_COMMITS = 500  # commits per `walk` request
MISSING_BATCH = 2_000  # object ids per `missing` question (and per `fetch`/`objects` pair)
FIRST_PAGE, LAST_PAGE = 16, 4_096  # `ancestors` page sizes: small for a pull, growing x4 for a clone

_has_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="pfs-sync-has")  # threads start on first use


def check_key(key: object, what: str = "object") -> str:
    """A full object or commit id: 64 lowercase hex digits."""
    if not isinstance(key, str) or len(key) != 64 or any(ch not in "0123456789abcdef" for ch in key):
        raise BadRequest(f"{what} id must be 64 lowercase hex digits, not {str(key)[:80]!r}")
    return key


def parse_commits(body: Any) -> list[str]:
    """`{"commits": [id, ...]}` from a request body, validated."""
    items = body.get("commits") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise BadRequest('body must be JSON {"commits": [commit id, ...]} with at least one id')
    if len(items) > MAX_KEYS:
        raise PayloadTooLarge(f"at most {MAX_KEYS} commits per request")
    return [check_key(c, "commit") for c in items]


def parse_objects(body: Any) -> list[tuple[str, str]]:
    """`{"objects": [[kind, id], ...]}` from a request body, validated."""
    items = body.get("objects") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise BadRequest('body must be JSON {"objects": [[kind, object id], ...]}')
    if len(items) > MAX_KEYS:
        raise PayloadTooLarge(f"at most {MAX_KEYS} objects per request")
    out: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, list) or len(item) != 2 or item[0] not in KINDS:
            raise BadRequest(f"each object must be [kind, id] with kind one of c, t, m, b; got {str(item)[:80]}")
        out.append((item[0], check_key(item[1])))
    return out


def parse_limit(body: Any) -> int:
    limit = body.get("limit", FIRST_PAGE) if isinstance(body, dict) else FIRST_PAGE
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_PAGE}")
    return limit


def check_url(url: str) -> str:
    """A remote pfs server: http(s), a host, nothing else. Credentials are refused (pfs has
    no authentication) so that they can never end up in an error message or a log."""
    shown = re.sub(r"//[^/?#]*@", "//***@", url)[:200]  # never echo a password
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises on a malformed port
    except ValueError:
        raise BadRequest(f"not a valid URL: {shown!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise BadRequest(f"a remote must be an http:// or https:// URL with a host, not {shown!r}")
    if parts.username is not None or parts.password is not None:
        raise BadRequest(f"a remote URL must not contain credentials (user:password@): {shown!r}")
    if parts.query or parts.fragment:
        raise BadRequest(f"a remote URL must not have a query or fragment: {shown!r}")
    return url.rstrip("/")


# ---- what a commit adds (both ends use it) ----------------------------------------------
def _node_keys(trees: TreeStore, key: str) -> set[str]:
    """Keys of every node of one directory, reading index nodes only (not its leaves)."""
    out = {key}
    stack = [key]
    while stack:
        index = trees.index_children(stack.pop())
        if index is not None:
            level, children = index
            out.update(children)
            if level > 1:
                stack.extend(children)
    return out


def tree_delta(trees: TreeStore, new: str, old: str | None) -> Iterator[tuple[str, str]]:
    """(kind, key) of every object under directory `new` that `old` does not already
    reach at the same place, children before the nodes that name them.

    Nodes shared with `old` are skipped whole; inside a changed node only entries that
    differ from `old`'s are followed. So the cost is that of the change, not of the tree."""
    if new == old:
        return
    old_nodes = _node_keys(trees, old) if old is not None else set()
    fresh: list[str] = []  # new nodes of this directory, parents before children
    leaves: list[str] = []
    stack = [new]
    while stack:
        key = stack.pop()
        if key in old_nodes:
            continue
        fresh.append(key)
        index = trees.index_children(key)
        if index is not None:
            stack.extend(index[1])
        else:
            leaves.append(key)
    for leaf in leaves:
        for name, entry in trees.dir_items(leaf):
            prev = trees.dir_get(old, name)
            if prev == entry:
                continue
            if entry.is_dir:
                yield from tree_delta(trees, entry.hash, prev.hash if prev is not None and prev.is_dir else None)
            else:
                yield from _file_delta(trees, entry, prev if prev is not None and not prev.is_dir else None)
    for key in reversed(fresh):
        yield TREE, key


def _file_delta(trees: TreeStore, entry: Entry, prev: Entry | None) -> Iterator[tuple[str, str]]:
    if entry.data is not None:
        return  # inline: its bytes are in the tree node
    old = {k for k, _ in trees.chunks(prev)} if prev is not None else set()
    for key, _ in trees.chunks(entry):
        if key not in old:
            old.add(key)
            yield BLOB, key
    if entry.manifest is not None and (prev is None or prev.manifest != entry.manifest):
        yield MANIFEST, entry.manifest


def commit_delta(repo: Repository, commit: Commit) -> Iterator[tuple[str, str]]:
    """Objects `commit` adds to its first parent, then the commit itself. A receiver that
    has every parent complete needs nothing else; objects that came with another parent
    (a merge) are listed too, and `missing` filters them out."""
    base = repo.commit(commit.parents[0]).tree if commit.parents else None
    yield from tree_delta(repo.trees, commit.tree, base)
    yield COMMIT, commit.id


# ---- sender -----------------------------------------------------------------------------
def ancestors(repo: Repository, starts: list[str], limit: int) -> list[tuple[str, list[str]]]:
    """The commit graph breadth first from `starts` (included), at most `limit` commits."""
    seen = set(starts)
    queue = deque(dict.fromkeys(starts))
    out: list[tuple[str, list[str]]] = []
    while queue and len(out) < limit:
        c = repo.commit(queue.popleft())
        out.append((c.id, list(c.parents)))
        for p in c.parents:
            if p not in seen:
                seen.add(p)
                queue.append(p)
    return out


def check_commits(repo: Repository, commits: list[str]) -> None:
    """CommitNotFound (404) before a stream starts, rather than an error frame inside it."""
    for cid in commits:
        repo.commit(cid)


def walk_lines(repo: Repository, commits: list[str]) -> Iterator[bytes]:
    """`walk`'s answer: "<kind> <key>" lines for each commit in turn, then "."; an error
    on the way becomes a final "! <json>" line, since the status is sent already."""

    def lines() -> Iterator[bytes]:
        try:
            for cid in commits:
                for kind, key in commit_delta(repo, repo.commit(cid)):
                    yield f"{kind} {key}\n".encode()
        except PfsError as exc:
            yield b"! " + orjson.dumps(exc.to_json()) + b"\n"
            return
        yield b".\n"

    return _pieces(lines())


def _stored(store: ObjectStore, key: str) -> bytes:
    """An object's stored form, verified: a damaged object is never sent."""
    if isinstance(store, LocalObjectStore):  # send the file as it is, no recompression
        try:
            with open(store.path(key), "rb") as f:
                blob = f.read()
        except FileNotFoundError:
            raise MissingObject(f"object {key} is missing") from None
        decode(key, blob)
        return blob
    return encode(store.get(key))


def _frame(kind: str, key: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(kind.encode(), key, len(payload)) + payload


def frames(store: ObjectStore, items: list[tuple[str, str]]) -> Iterator[bytes]:
    """`fetch`'s answer: the object stream for `items`, in their order."""

    def gen() -> Iterator[bytes]:
        yield MAGIC
        try:
            for kind, key in items:
                blob = _stored(store, key)
                yield _HEADER.pack(kind.encode(), bytes.fromhex(key), len(blob))
                yield blob
        except PfsError as exc:
            yield _frame(ERROR, _ZERO_KEY, orjson.dumps(exc.to_json()))
            return
        yield _frame(END, _ZERO_KEY, b"")

    return _pieces(gen())


def _pieces(parts: Iterator[bytes]) -> Iterator[bytes]:
    """Small parts joined into pieces of about PIECE bytes (one thread hop each on the
    server); a big part goes alone, uncopied."""
    buf: list[bytes] = []
    size = 0
    for part in parts:
        if len(part) >= PIECE:
            if buf:
                yield b"".join(buf)
                buf, size = [], 0
            yield part
            continue
        buf.append(part)
        size += len(part)
        if size >= PIECE:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


# ---- receiver ---------------------------------------------------------------------------
def missing(repo: Repository, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The items this repository lacks, in their order. A commit counts as present only
    when indexed (complete); any other object when stored, since the receiver checks
    every new commit's objects itself before indexing it."""
    flags: Iterable[bool]
    others = [key for kind, key in items if kind != COMMIT]
    if isinstance(repo.objects, LocalObjectStore) or len(others) < 8:
        flags = [repo.objects.has(k) for k in others]
    else:  # a remote store answers each question with a round trip: ask many at once
        flags = list(_has_pool.map(repo.objects.has, others))
    present = iter(flags)
    out: list[tuple[str, str]] = []
    for kind, key in items:
        have = repo.meta.get_commit(key) is not None if kind == COMMIT else next(present)
        if not have:
            out.append((kind, key))
    return out


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


def _verify(key: str, blob: bytes) -> bytes:
    """The plain bytes of a received object, checked against its name."""
    if blob[:1] == b"Z":
        try:
            size = zstandard.frame_content_size(blob[1:])
        except zstandard.ZstdError:
            size = -1
        if not 0 <= size <= MAX_OBJECT:
            raise BadObject(f"object {key} received: compressed body without a size, or larger than {MAX_OBJECT}")
    try:
        return decode(key, blob)
    except CorruptObject:
        raise BadObject(f"object {key} received does not match its hash; nothing from it on was stored") from None


def _parse_commit(key: str, data: bytes) -> Commit:
    try:
        raw = orjson.loads(data)
        parents = raw["parents"]
        ok = (
            isinstance(raw["tree"], str)
            and isinstance(parents, list)
            and isinstance(raw["branch"], str)
            and len(raw["branch"]) <= 100
            and isinstance(raw["time"], int | float)
            and math.isfinite(raw["time"])
            and isinstance(raw["message"], str)
        )
        if ok:
            check_key(raw["tree"])
            for p in parents:
                check_key(p)
            return Commit(key, raw["tree"], tuple(parents), raw["branch"], float(raw["time"]), raw["message"])
    except (orjson.JSONDecodeError, KeyError, TypeError, BadRequest):
        pass
    raise BadObject(f"object {key} was sent as a commit but is not one")


def check_connected(repo: Repository, commit: Commit) -> None:
    """Refuse to index a commit unless everything it reaches is stored: its parents are
    indexed (so complete) and every object it adds to its first parent is here.

    The objects' own hashes were checked on receipt; this checks the graph, and reads
    each new tree node, so a blob sent in place of a tree is caught too."""
    for p in commit.parents:
        if repo.meta.get_commit(p) is None:
            raise BadObject(f"commit {commit.id}: its parent {p} is not here; send parents first")
    try:
        for kind, key in commit_delta(repo, commit):
            if kind == BLOB and not repo.objects.has(key):
                raise MissingObject(f"object {key} is missing")
    except (MissingObject, CorruptObject, CommitNotFound) as exc:
        raise BadObject(f"commit {commit.id} is incomplete: {exc.message}; send its objects before it") from None


def _index(repo: Repository, commits: list[Commit]) -> int:
    n = 0
    for c in commits:
        if repo.meta.get_commit(c.id) is None:
            check_connected(repo, c)
            repo.meta.index_commit(c)
            n += 1
    return n


def receive(repo: Repository, raw: io.RawIOBase) -> dict[str, int]:
    """Take an object stream: verify each object against its name, store it, and every
    FLUSH_BYTES make the lot durable and index the commits it completes. Returns counts.

    Write order: objects durable, then (checked) commits indexed; refs move only later,
    by `update_ref`. A bad or cut stream fails here, keeping the objects verified before it."""
    f = io.BufferedReader(raw, PIECE)
    if f.read(len(MAGIC)) != MAGIC:
        raise BadRequest("not a pfs object stream (it must start with PFSYNC1)")
    objects = commits = nbytes = unflushed = unflushed_n = 0
    pending: list[Commit] = []
    batch = repo.objects.batch()
    try:
        while True:
            kind_b, key_b, n = _HEADER.unpack(_read_exact(f, HEADER_SIZE))
            kind = kind_b.decode("latin-1")
            if kind == END:
                break
            if n > MAX_FRAME:
                raise PayloadTooLarge(f"an object of {n} bytes is larger than the limit of {MAX_FRAME}")
            if kind == ERROR:
                raise BadRequest("the sender aborted the stream: " + _error_text(_read_exact(f, n)))
            if kind not in KINDS:
                raise BadRequest(f"unknown frame kind {kind!r} in the object stream")
            key = key_b.hex()
            data = _verify(key, _read_exact(f, n))
            if kind == COMMIT:
                pending.append(_parse_commit(key, data))
            batch.put(key, data)
            objects += 1
            nbytes += HEADER_SIZE + n
            unflushed += len(data)
            unflushed_n += 1
            if unflushed >= FLUSH_BYTES or unflushed_n >= FLUSH_OBJECTS:
                batch.flush()
                commits += _index(repo, pending)
                pending, unflushed, unflushed_n = [], 0, 0
        if f.read(1):
            raise BadRequest("data after the end of the object stream")
        batch.flush()
        commits += _index(repo, pending)
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


def _keep(repo: Repository, batch: Batch, pending: list[Commit]) -> None:
    """Best effort: make the objects verified so far durable and index the commits they
    complete (each still checked); on any trouble, drop the rest as `abort` would."""
    try:
        batch.flush()
        _index(repo, pending)
    except PfsError:
        batch.abort()


def _error_text(payload: bytes) -> str:
    try:
        return str(orjson.loads(payload).get("message", "unknown error"))[:500]
    except (orjson.JSONDecodeError, AttributeError):
        return "unknown error"


def _is_ancestor(repo: Repository, a: str, b: str) -> bool:
    """Is commit `a` reachable from `b` (or `b` itself)? Walks back from `b` until found."""
    seen = {b}
    todo = [b]
    while todo:
        cid = todo.pop()
        if cid == a:
            return True
        for p in repo.commit(cid).parents:
            if p not in seen:
                seen.add(p)
                todo.append(p)
    return False


def update_ref(repo: Repository, branch: str, new: str, old: str | None = None, force: bool = False) -> str:
    """Point `branch` at `new` (a complete, indexed commit) by compare-and-swap.

    `old` is the head the caller saw ("" for none/absent; None: whatever it is now); if
    the branch moved since, BranchMoved (409). Unless `force`, only a fast-forward is
    allowed: NotFastForward (409) otherwise, or "ahead" (no change) when the branch
    already contains `new`. A branch with uncommitted writes is refused (DirtyBranch).
    Returns created | fast-forward | forced | up-to-date | ahead."""
    check_branch(branch)
    check_key(new, "commit")
    if old:
        check_key(old, "commit")
    commit = repo.meta.get_commit(new)
    if commit is None:
        raise CommitNotFound(f"commit {new} is not on this server; send its objects first")
    try:
        cur: str | None = repo.meta.get_ref(branch)
        exists = True
    except BranchNotFound:
        cur, exists = None, False
    if old is not None and (old or None) != cur:
        raise BranchMoved(f"branch {branch!r} is at {cur or 'no commit'}, not {old or 'no commit'}")
    if cur == new:
        return "up-to-date"
    ff = cur is None or _is_ancestor(repo, cur, new)
    if not ff and not force:
        assert cur is not None
        if _is_ancestor(repo, new, cur):
            return "ahead"
        raise NotFastForward(
            f"branch {branch!r} at {cur[:12]} is not an ancestor of {new[:12]}: "
            "the two histories diverged (merge first, or force)"
        )
    if exists and repo.meta.has_staged(branch):
        raise DirtyBranch(f"branch {branch!r} has uncommitted changes; commit or discard them first")
    if not exists:
        repo.meta.create_ref(branch, new)
    else:
        repo.meta.swap_ref(branch, cur, commit)
    return "created" if cur is None else "fast-forward" if ff else "forced"


# ---- driver -----------------------------------------------------------------------------
@dataclass
class BranchResult:
    source: str  # branch on the sender
    dest: str  # branch on the receiver
    old: str | None  # receiver's head before
    new: str  # sender's head
    result: str  # created | fast-forward | forced | up-to-date | ahead | rejected
    message: str = ""


@dataclass
class TransferReport:
    commits: int = 0  # commits indexed by the receiver
    objects: int = 0  # objects sent (commits, trees, manifests, chunks)
    bytes: int = 0  # bytes of the object stream (what the objects cost on the wire)
    overhead: int = 0  # bytes of negotiation: commit graph pages, object lists, `missing` questions
    seconds: float = 0.0
    branches: list[BranchResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(b.result != "rejected" for b in self.branches)


Progress = Callable[[int, int], None]  # (objects, bytes) sent so far


class _Scanner:
    """Follows the frames of an object stream on its way from sender to receiver: counts
    objects and bytes, and raises the sender's error frame as the sender's exception
    (which also cuts the upload, so the receiver drops the unfinished part)."""

    def __init__(self, report: TransferReport, source: str, on_progress: Progress | None) -> None:
        self.report = report
        self.source = source
        self.on_progress = on_progress
        self.head = bytearray()  # the header (or error payload) being collected
        self.want = len(MAGIC)  # bytes still to collect into `head`
        self.skip = 0  # payload bytes still to pass through uncollected
        self.kind = ""  # kind of the last header, or "" before the first
        self.magic = True

    def wrap(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            self._feed(piece)
            self.report.bytes += len(piece)
            if self.on_progress is not None:
                self.on_progress(self.report.objects, self.report.bytes)
            yield piece

    def _feed(self, piece: bytes) -> None:
        i = 0
        while i < len(piece):
            if self.skip:
                step = min(self.skip, len(piece) - i)
                self.skip -= step
                i += step
                continue
            step = min(self.want, len(piece) - i)
            self.head += piece[i : i + step]
            self.want -= step
            i += step
            if self.want == 0:
                self._header_done()

    def _header_done(self) -> None:
        data, self.head = bytes(self.head), bytearray()
        if self.magic:
            self.magic = False
            self.want = HEADER_SIZE
            return
        if self.kind == ERROR:  # `data` is the error frame's payload
            try:
                body = orjson.loads(data)
            except orjson.JSONDecodeError:
                body = {}
            err = errors.from_json(500, body if isinstance(body, dict) else {})
            err.message = f"the source {self.source} failed: {err.message}"
            err.args = (err.message,)
            raise err
        kind_b, _, n = _HEADER.unpack(data)
        self.kind = kind_b.decode("latin-1")
        self.want = HEADER_SIZE
        if self.kind == ERROR:
            if n > 1 << 16:
                raise errors.Unavailable(f"the source {self.source} sent a malformed object stream")
            self.want = n
        elif self.kind != END:
            self.report.objects += 1
            self.skip = n
        if self.want == 0:
            self._header_done()


def _json_size(value: Any) -> int:
    return len(orjson.dumps(value))


def _negotiate(src: Client, dst: Client, wants: list[str], report: TransferReport) -> list[str]:
    """Commits the receiver lacks, parents before children.

    The sender's graph comes a page at a time (breadth first from the commits still to
    place); the receiver says which of the page it has; its indexed commits are complete
    with all their ancestors, so the walk stops there. A pull of one commit costs two
    small round trips; a clone's pages grow to LAST_PAGE."""
    has: dict[str, bool] = {}

    def classify(ids: list[str]) -> None:
        ids = [i for i in dict.fromkeys(ids) if i not in has]
        for i in range(0, len(ids), MISSING_BATCH):
            part = [(COMMIT, c) for c in ids[i : i + MISSING_BATCH]]
            lacking = {k for _, k in dst.sync_missing(part)}
            report.overhead += _json_size({"objects": part}) + _json_size({"missing": [list(x) for x in lacking]})
            for _, c in part:
                has[c] = c not in lacking

    classify(wants)
    parents: dict[str, list[str]] = {}
    todo = [w for w in dict.fromkeys(wants) if not has[w]]
    limit = FIRST_PAGE
    while todo:
        page: list[tuple[str, list[str]]] = []
        for i in range(0, len(todo), MAX_KEYS):
            got = src.sync_ancestors(todo[i : i + MAX_KEYS], max(limit, len(todo[i : i + MAX_KEYS])))
            report.overhead += _json_size({"commits": got})
            page.extend((c["id"], c["parents"]) for c in got)
        classify([cid for cid, _ in page])
        graph = dict(page)
        later: list[str] = []
        stack = list(todo)
        while stack:
            cid = stack.pop()
            if cid in parents:
                continue
            if cid not in graph:
                later.append(cid)  # beyond this page
                continue
            parents[cid] = graph[cid]
            stack.extend(p for p in graph[cid] if p not in parents and has.get(p) is not True)
        classify(later)
        todo = [c for c in dict.fromkeys(later) if not has[c] and c not in parents]
        limit = min(limit * 4, LAST_PAGE)
    return _topo(parents)


def _topo(parents: dict[str, list[str]]) -> list[str]:
    """Parents before children (iterative depth-first post-order)."""
    order: list[str] = []
    done: set[str] = set()
    for root in parents:
        if root in done:
            continue
        stack = [(root, iter(parents[root]))]
        done.add(root)
        while stack:
            cid, it = stack[-1]
            nxt = next((p for p in it if p in parents and p not in done), None)
            if nxt is None:
                stack.pop()
                order.append(cid)
            else:
                done.add(nxt)
                stack.append((nxt, iter(parents[nxt])))
    return order


def _send_objects(
    src: Client, dst: Client, commits: list[str], report: TransferReport, on_progress: Progress | None
) -> None:
    """Walk the new commits on the sender, ask the receiver what it lacks a batch at a
    time, and pipe exactly those objects from one to the other, in walk order (children
    first: the receiver has every object a node names before the node)."""

    def send(batch: list[tuple[str, str]]) -> None:
        need = dst.sync_missing(batch)
        report.overhead += _json_size({"objects": batch}) + _json_size({"missing": need})
        if need:
            scanner = _Scanner(report, src.url, on_progress)
            report.overhead += _json_size({"objects": need})
            res = dst.sync_receive(scanner.wrap(src.sync_fetch(need)))
            report.commits += int(res["commits"])

    for start in range(0, len(commits), WALK_COMMITS):
        group = commits[start : start + WALK_COMMITS]
        report.overhead += _json_size({"commits": group})
        batch: dict[str, str] = {}  # key -> kind, in walk order, without repeats
        for kind, key in src.sync_walk(group):
            report.overhead += 67
            batch.setdefault(key, kind)
            if len(batch) >= MISSING_BATCH:
                send([(k, key) for key, k in batch.items()])
                batch = {}
        if batch:
            send([(k, key) for key, k in batch.items()])


def transfer(
    src: Client,
    dst: Client,
    refspecs: list[tuple[str, str]] | None = None,
    *,
    force: bool = False,
    clone: bool = False,
    on_progress: Progress | None = None,
) -> TransferReport:
    """Copy branches from `src` to `dst` with all their history, sending only what `dst`
    lacks, then move each destination branch by compare-and-swap.

    `refspecs`: (source branch, destination branch) pairs; default every source branch
    that has commits, under its own name. Branch updates are fast-forward only unless
    `force`; a refused one is reported (result "rejected") and the others still go.
    `clone`: the destination must be empty (or an interrupted clone of the same source)."""
    t0 = time.monotonic()
    report = TransferReport()
    src_heads: dict[str, str | None] = {b["name"]: b["head"] for b in src.branches()}
    dst_heads: dict[str, str | None] = {b["name"]: b["head"] for b in dst.branches()}
    if refspecs is None:
        refspecs = [(name, name) for name, head in sorted(src_heads.items()) if head]
    dests = [d for _, d in refspecs]
    if len(set(dests)) != len(dests):
        raise BadRequest("two source branches go to the same destination branch")
    for s, d in refspecs:
        check_branch(s)
        check_branch(d)
        if s not in src_heads:
            raise BranchNotFound(f"branch {s!r} not found on {src.url}")
        if not src_heads[s]:
            raise CommitNotFound(f"branch {s!r} on {src.url} has no commits yet")
    if clone:
        taken = sorted(n for n, h in dst_heads.items() if h and h != src_heads.get(n))
        if taken:
            raise Conflict(f"{dst.url} is not empty (branches {', '.join(taken)} have commits); use pull to update it")
    plan = [(s, d, src_heads[s] or "") for s, d in refspecs]
    wanted = list(dict.fromkeys(new for _, _, new in plan))
    commits = _negotiate(src, dst, wanted, report) if wanted else []
    if commits:
        _send_objects(src, dst, commits, report, on_progress)
    for s, d, new in plan:
        old = dst_heads.get(d)
        res = BranchResult(s, d, old, new, "up-to-date")
        if old != new:
            try:
                res.result = str(dst.sync_update_ref(d, new, old or "", force)["result"])
            except Conflict as exc:  # not a fast-forward, moved meanwhile, dirty, created meanwhile
                res.result, res.message = "rejected", exc.message
        report.branches.append(res)
    report.seconds = time.monotonic() - t0
    return report


def _clients(a: str, b: str) -> tuple[Client, Client]:
    from .client import Client

    return Client(check_url(a)), Client(check_url(b))


def clone(source: str, dest: str, *, on_progress: Progress | None = None) -> TransferReport:
    """Copy every branch of the pfs at `source`, with full history, into the (empty) pfs at `dest`."""
    src, dst = _clients(source, dest)
    with src, dst:
        return transfer(src, dst, clone=True, on_progress=on_progress)


def pull(
    remote: str,
    local: str,
    refspecs: list[tuple[str, str]] | None = None,
    *,
    force: bool = False,
    on_progress: Progress | None = None,
) -> TransferReport:
    """Bring `remote`'s branches (or `refspecs`: remote -> local names) into `local`."""
    src, dst = _clients(remote, local)
    with src, dst:
        return transfer(src, dst, refspecs, force=force, on_progress=on_progress)


def push(
    local: str,
    remote: str,
    refspecs: list[tuple[str, str]] | None = None,
    *,
    force: bool = False,
    on_progress: Progress | None = None,
) -> TransferReport:
    """Send `local`'s branches (or `refspecs`: local -> remote names) to `remote`."""
    src, dst = _clients(local, remote)
    with src, dst:
        return transfer(src, dst, refspecs, force=force, on_progress=on_progress)


def parse_refspec(spec: str) -> tuple[str, str]:
    """ "a" -> (a, a); "a:b" -> (a, b): branch a of the sender goes to branch b of the receiver."""
    s, sep, d = spec.partition(":")
    return check_branch(s), check_branch(d if sep else s)
