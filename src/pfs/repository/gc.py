"""What a repository stores and what it could give back: the mark of garbage collection
(every object a root reaches) and the storage report built on it (`pfs du`, `GET /du`).

Roots (docs/design.md, section 9): branch heads and their history, staged rows and
archives, multipart parts, and job runs' input, output and partial trees. An object no
root reaches and older than the grace period is what a sweep would delete: a commit that
only a deleted branch reached is such an object, and so is what a cut transfer or an
aborted upload left behind. This module only reads; nothing here deletes.

The mark holds each reachable key as its 32 raw bytes, not 64 hex characters, with a
bitmask of the groups of roots reaching it: one dict entry per object, whatever the
number of branches a storage report tells apart (about 140 MB per million objects).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import PfsError
from ..storage.trees import Commit, Entry
from .repo import Repository

DEFAULT_GRACE = 24 * 3600.0  # seconds an unreachable object is kept after its last write


def _short(key: str) -> bytes:
    return bytes.fromhex(key)


@dataclass
class Mark:
    """The objects some root reaches, each with the groups of roots that reach it (a bit
    per group: one per branch in a storage report, one in all for a sweep), and what went
    wrong reaching them: a mark with problems is incomplete, and nothing may be swept by it.
    One dict entry per object whatever the number of groups (about 140 MB per million)."""

    holders: dict[bytes, int] = field(default_factory=dict)
    bit: int = 1  # the group being walked now
    problems: list[str] = field(default_factory=list)

    def add(self, key: str) -> bool:
        """True the first time the current group reaches `key`."""
        short = _short(key)
        old = self.holders.get(short, 0)
        if old & self.bit:
            return False
        self.holders[short] = old | self.bit
        return True

    def reached(self, key: str) -> bool:
        """Whether the current group reaches `key` already (and so all below it)."""
        return bool(self.holders.get(_short(key), 0) & self.bit)

    def groups(self, key: str) -> int:
        """The groups that reach `key` (0: no root does)."""
        return self.holders.get(_short(key), 0)

    def __contains__(self, key: str) -> bool:
        return _short(key) in self.holders


class Marker:
    """Walks roots into a `Mark`: every commit, tree node, manifest and chunk once."""

    def __init__(self, repo: Repository, mark: Mark | None = None, progress: Callable[[int], None] | None = None):
        self.repo = repo
        self.mark = mark or Mark()
        self.progress = progress

    def _added(self, key: str) -> bool:
        if not self.mark.add(key):
            return False
        if self.progress is not None and len(self.mark.holders) % 10_000 == 0:
            self.progress(len(self.mark.holders))
        return True

    def history(self, head: str) -> None:
        todo = [head]
        while todo:
            cid = todo.pop()
            if not self._added(cid):
                continue
            try:
                commit = self.repo.trees.load_commit(cid)
            except PfsError as exc:
                self.mark.problems.append(f"commit {cid}: {exc.message}")
                continue
            self.tree(commit.tree)
            todo.extend(commit.parents)

    def tree(self, key: str, where: str = "") -> None:
        """A directory and everything below it (a subtree seen before was walked whole)."""
        if self.mark.reached(key):
            return
        try:
            for node in self.repo.trees.nodes(key):
                self._added(node)
            entries = list(self.repo.trees.dir_items(key))
        except PfsError as exc:
            self.mark.problems.append(f"tree {where or '/'} {key}: {exc.message}")
            return
        for name, entry in entries:
            path = f"{where}/{name}" if where else name
            if entry.is_dir:
                self.tree(entry.hash, path)
            else:
                self.file(entry, path)

    def file(self, entry: Entry, where: str = "") -> None:
        if entry.data is not None:
            return  # inline: its bytes are in the tree node
        if entry.manifest is not None and not self._added(entry.manifest):
            return  # the same file seen before: its chunks are marked
        try:
            chunks = self.repo.trees.chunks(entry)
        except PfsError as exc:
            self.mark.problems.append(f"file {where}: {exc.message}")
            return
        for key, _ in chunks:
            self._added(key)

    def branch(self, name: str, head: str | None) -> None:
        """A branch's roots: its history and its staged rows and archives."""
        if head is not None:
            self.history(head)
        for staged in self.repo.meta.staged(name):
            if staged.entry is not None:
                self.file(staged.entry, f"{name}:{staged.path} (staged)")
        for graft in self.repo.meta.grafts(name):
            self.tree(graft.entry.hash, f"{name}:{graft.prefix or '/'} (staged archive)")

    def others(self) -> None:
        """The roots that are no branch's: the empty directory (made when the repository
        is, and assumed present), multipart parts and job runs' trees."""
        self._added(self.repo.trees.empty_tree)
        meta = self.repo.meta
        for upload in meta.list_uploads("", 1 << 30):
            for part in meta.list_parts(upload.id):
                self.file(part.entry, f"upload {upload.id} part {part.number}")
        for run in meta.list_runs(limit=1 << 30):
            for jr in meta.job_runs(run.commit):
                for kind, tree in (("input", jr.input_tree), ("output", jr.output_tree), ("partial", jr.partial_tree)):
                    if tree:
                        self.tree(tree, f"job {jr.job} {kind} on {run.commit[:12]}")

    def roots(self) -> None:
        """Every root of the repository (design §9)."""
        for name, head in self.repo.meta.list_refs():
            self.branch(name, head)
        self.others()


def mark(repo: Repository, progress: Callable[[int], None] | None = None) -> Mark:
    marker = Marker(repo, progress=progress)
    marker.roots()
    return marker.mark


@dataclass
class BranchUsage:
    name: str
    head: str | None
    logical: int  # bytes of the files at the head (what a checkout of it takes)
    stored: int | None = None  # bytes of the objects its history and dirty writes reach
    exclusive: int | None = None  # of those, bytes no other root reaches: what deleting it frees


@dataclass
class Usage:
    """A repository's storage: what its branches hold, what is stored, what a sweep with
    this grace period would give back. Per-branch `stored` and `exclusive` are left out
    (None) past DETAILED branches: each branch is one more walk of its history."""

    branches: list[BranchUsage]
    objects: int  # stored objects
    stored: int  # their bytes as stored (compressed, with their headers)
    reachable: int  # objects some root reaches
    reachable_bytes: int
    reclaimable: int  # objects no root reaches, older than the grace period
    reclaimable_bytes: int
    young: int  # objects no root reaches yet, within the grace period (a write in flight, or soon garbage)
    young_bytes: int
    grace: float
    problems: list[str]
    orphans: int = 0  # indexed commits no branch reaches (a deleted branch's): a sweep removes them
    orphans_shown: list[Commit] = field(default_factory=list)  # the newest SHOWN of them

    @property
    def logical(self) -> int:
        """Bytes of every file of every branch head (a file on two branches counts twice)."""
        return sum(b.logical for b in self.branches)

    @property
    def dedupe(self) -> float:
        """Logical bytes per stored reachable byte: above 1, branches and files share data."""
        return self.logical / self.reachable_bytes if self.reachable_bytes else 1.0


DETAILED = 64  # branches that get their own group (bit) in `usage`
SHOWN = 20  # commits no branch reaches, listed by `usage` (newest first); all are counted


def usage(
    repo: Repository,
    grace: float = DEFAULT_GRACE,
    now: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> Usage:
    """Mark (each branch as its own group, up to DETAILED), then one pass over the store's
    listing, which names each object with its stored size and last write."""
    start = time.time() if now is None else now
    refs = list(repo.meta.list_refs())
    detailed = len(refs) <= DETAILED
    marker = Marker(repo, progress=progress)
    whole = marker.mark
    for i, (name, head) in enumerate(refs):
        whole.bit = 1 << i if detailed else 1
        marker.branch(name, head)
    rest = whole.bit = 1 << len(refs) if detailed else 1  # the roots that are no branch's
    marker.others()

    cutoff = start - grace
    stored = [0] * len(refs)
    exclusive = [0] * len(refs)
    objects = total = reachable = reachable_bytes = reclaimable = reclaimable_bytes = young = young_bytes = 0
    for obj in repo.objects.listing():
        objects += 1
        total += obj.size
        groups = whole.groups(obj.key)
        if groups:
            reachable += 1
            reachable_bytes += obj.size
            if detailed:
                for i in range(len(refs)):
                    if groups >> i & 1:
                        stored[i] += obj.size
                if groups & (groups - 1) == 0 and groups != rest:  # one branch alone
                    exclusive[groups.bit_length() - 1] += obj.size
        elif obj.modified < cutoff:
            reclaimable += 1
            reclaimable_bytes += obj.size
        else:
            young += 1
            young_bytes += obj.size
    orphans = 0
    shown: list[Commit] = []
    for commit in repo.meta.list_commits():  # oldest first, paged
        if commit.id not in whole:
            orphans += 1
            shown = [commit, *shown][:SHOWN]
    branches = [
        BranchUsage(
            name,
            head,
            _logical(repo, head),
            stored[i] if detailed else None,
            exclusive[i] if detailed else None,
        )
        for i, (name, head) in enumerate(refs)
    ]
    return Usage(
        branches,
        objects,
        total,
        reachable,
        reachable_bytes,
        reclaimable,
        reclaimable_bytes,
        young,
        young_bytes,
        grace,
        whole.problems,
        orphans,
        shown,
    )


def _logical(repo: Repository, head: str | None) -> int:
    """A head's bytes: its root directory's entries carry their subtrees' totals."""
    if head is None:
        return 0
    try:
        return sum(entry.size for _, entry in repo.trees.dir_items(repo.get_commit(head).tree))
    except PfsError:
        return 0  # the mark reported it
