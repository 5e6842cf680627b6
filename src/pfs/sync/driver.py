"""The driver of a transfer: `transfer` (run by `pfs clone/pull/push` or any Python program)
talks to the sender and the receiver over plain HTTP and pipes objects from one to the other.

Servers never connect to each other, so no server can be made to fetch from an arbitrary
URL. This is the client side: no server imports it.
"""

from __future__ import annotations

import contextlib
import graphlib
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from .. import errors
from ..client import Client
from ..errors import BadRequest, BranchNotFound, CommitNotFound, Conflict
from ..paths import check_branch, check_repo_name
from .wire import (
    COMMIT,
    END,
    ERROR,
    FIRST_PAGE,
    HEADER,
    HEADER_SIZE,
    LAST_PAGE,
    MAGIC,
    MAX_KEYS,
    MISSING_BATCH,
    WALK_COMMITS,
)


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
        kind_b, _, n = HEADER.unpack(data)
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
            page.extend((c.id, list(c.parents)) for c in got)
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
    """Parents before children. Commits are named by their content, so a real history has no
    cycle: a sender that reports one is broken or lying, and the transfer stops there."""
    graph = {cid: [p for p in ps if p in parents] for cid, ps in parents.items()}
    try:
        return list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(c[:12] for c in exc.args[1])
        raise errors.BadObject(
            f"the source's commit graph has a cycle ({cycle}): it cannot be a real history"
        ) from None


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
            try:
                res = dst.sync_receive(scanner.wrap(src.sync_fetch(need)))
            except errors.BadObject as exc:  # the receiver refused what the source sent: say who is who
                if not exc.message.startswith("the source "):
                    exc.message = f"{dst.url} refused what {src.url} sent: {exc.message}"
                    exc.args = (exc.message,)
                raise
            report.commits += res.commits

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
    src_heads: dict[str, str | None] = {b.name: b.head for b in src.branches()}
    dst_heads: dict[str, str | None] = {b.name: b.head for b in dst.branches()}
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
                res.result = dst.sync_update_ref(d, new, old or "", force).result
            except Conflict as exc:  # not a fast-forward, moved meanwhile, dirty, created meanwhile
                res.result, res.message = "rejected", exc.message
        report.branches.append(res)
    report.seconds = time.monotonic() - t0
    return report


End = str | Client  # a URL (credentials resolved for it alone), or a client made by the caller


def _client(end: End, made: contextlib.ExitStack) -> Client:
    """A client of one end. Each resolves its own credentials, from its URL's userinfo or
    its server's section of the credentials file (see `pfs.client.resolve_credentials`),
    so neither server is sent the other's key. Clients made here are closed by `made`; a
    caller's are left open."""
    if isinstance(end, Client):
        return end
    return made.enter_context(Client(check_url(end)))


def clone(source: End, dest: End, *, on_progress: Progress | None = None) -> TransferReport:
    """Copy every branch of the pfs at `source`, with full history, into the (empty) pfs at `dest`."""
    with contextlib.ExitStack() as made:
        src, dst = _client(source, made), _client(dest, made)
        return transfer(src, dst, clone=True, on_progress=on_progress)


def pull(
    remote: End,
    local: End,
    refspecs: list[tuple[str, str]] | None = None,
    *,
    force: bool = False,
    on_progress: Progress | None = None,
) -> TransferReport:
    """Bring `remote`'s branches (or `refspecs`: remote -> local names) into `local`."""
    with contextlib.ExitStack() as made:
        src, dst = _client(remote, made), _client(local, made)
        return transfer(src, dst, refspecs, force=force, on_progress=on_progress)


def push(
    local: End,
    remote: End,
    refspecs: list[tuple[str, str]] | None = None,
    *,
    force: bool = False,
    on_progress: Progress | None = None,
) -> TransferReport:
    """Send `local`'s branches (or `refspecs`: local -> remote names) to `remote`."""
    with contextlib.ExitStack() as made:
        src, dst = _client(local, made), _client(remote, made)
        return transfer(src, dst, refspecs, force=force, on_progress=on_progress)


def parse_refspec(spec: str) -> tuple[str, str]:
    """ "a" -> (a, a); "a:b" -> (a, b): branch a of the sender goes to branch b of the receiver."""
    s, sep, d = spec.partition(":")
    return check_branch(s), check_branch(d if sep else s)


def check_url(url: str) -> str:
    """A remote pfs server: http(s), a host, and optionally an access key pair
    (`http://ID:SECRET@host`, checked and taken out of the URL by `Client`). Messages show
    the URL with its credentials masked."""
    shown = re.sub(r"//[^/?#]*@", "//***@", url)[:200]  # never echo a secret
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises on a malformed port
    except ValueError:
        raise BadRequest(f"not a valid URL: {shown!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
        raise BadRequest(f"a remote must be an http:// or https:// URL with a host, not {shown!r}")
    if parts.query or parts.fragment:
        raise BadRequest(f"a remote URL must not have a query or fragment: {shown!r}")
    path = parts.path.rstrip("/")
    if path and not (path.startswith("/repo/") and path.count("/") == 2):
        raise BadRequest(f"a remote URL is a server or one of its repositories (…/repo/<name>), not {shown!r}")
    if path:
        check_repo_name(path.removeprefix("/repo/"))
    return url.rstrip("/")
