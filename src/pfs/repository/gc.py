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
from dataclasses import asdict, dataclass, field

import orjson

from .. import metrics
from ..errors import BadRequest, PfsError
from ..failpoints import failpoint
from ..storage import collect
from ..storage.meta import SqlMetaStore
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
    # Objects kept for themselves (a logged find of a chunk, a node, or a commit's object),
    # apart from `holders`: a walk that meets one must still walk below it.
    pinned: set[bytes] = field(default_factory=set)

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
        """Whether `key` is kept: reached by a walk, or pinned."""
        return self.keeps(_short(key))

    def keeps(self, short: bytes) -> bool:
        return short in self.holders or short in self.pinned


class Marker:
    """Walks roots into a `Mark`: every commit, tree node, manifest and chunk once."""

    def __init__(self, repo: Repository, mark: Mark | None = None, progress: Callable[[int], None] | None = None):
        self.repo = repo
        self.mark = mark or Mark()
        self.progress = progress
        self._skeleton: Marker | None = None

    def _added(self, key: str) -> bool:
        if not self.mark.add(key):
            return False
        if self.progress is not None and len(self.mark.holders) % 10_000 == 0:
            self.progress(len(self.mark.holders))
        return True

    def history(self, head: str, keep_after: float | None = None) -> None:
        """A commit and its ancestors. With `keep_after` (a retention rule's horizon), the
        commits older than it, but the head, keep only their trees: their history and file
        lists stay, their files' data goes (`skeleton`)."""
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
            if keep_after is None or cid == head or commit.time >= keep_after:
                self.tree(commit.tree)
            else:
                self.skeleton.tree(commit.tree)
            todo.extend(commit.parents)

    @property
    def skeleton(self) -> Marker:
        """Trees without their files' data, in a mark of their own (a walk here must not
        stop a full walk of the same tree from another root), kept with this one's."""
        if self._skeleton is None:
            self._skeleton = _Skeleton(self.repo, Mark(pinned=self.mark.pinned))
        return self._skeleton

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

    def manifest(self, key: str) -> None:
        """A file by its manifest alone (a logged find): the manifest and its chunks."""
        if self._added(key):
            self.file(Entry("file", "", 0, manifest=key), f"manifest {key}")

    def roots(self) -> None:
        """Every root of the repository (design §9)."""
        for name, head in self.repo.meta.list_refs():
            self.branch(name, head)
        self.others()

    def sweep_roots(self, horizons: dict[str, float] | None = None) -> None:
        """The roots a sweep marks from, read in the order data moves between them — a
        multipart part into a staged row, a staged row into a commit — so a reference moved
        while they are read is seen where it went: parts, then staged rows and archives,
        then the heads. (Job runs are read by the sweep once it knows which commits go.)"""
        meta = self.repo.meta
        self._added(self.repo.trees.empty_tree)
        for upload in meta.list_uploads("", 1 << 30):
            for part in meta.list_parts(upload.id):
                self.file(part.entry, f"upload {upload.id} part {part.number}")
        for name, _ in meta.list_refs():
            self.branch(name, None)
        # Branches without a retention rule first, then those with one, the longest kept
        # first: a commit walked once keeps what its first walk gave it, the most data.
        horizons = horizons or {}
        heads = sorted(meta.list_refs(), key=lambda ref: horizons.get(ref[0], float("-inf")))
        for name, head in heads:
            if head is not None:
                self.history(head, horizons.get(name))

    def logged(self, finds: list[tuple[str, str]]) -> None:
        """What operations logged as found. One missing here is no damage: the operation
        looks again after logging, sees it gone and writes it again or fails."""
        before = len(self.mark.problems)
        for kind, key in finds:
            if kind == collect.COMMIT:
                self.history(key)
            elif kind == collect.TREE:
                self.tree(key)
            elif kind == collect.MANIFEST:
                self.manifest(key)
            else:
                self.mark.pinned.add(_short(key))
        del self.mark.problems[before:]


class _Skeleton(Marker):
    """Marks trees, not the files' data below them (what retention keeps of old commits).
    Its mark shares `pinned` with the full mark's, where what it reaches is put."""

    def _added(self, key: str) -> bool:
        added = super()._added(key)
        if added:
            self.mark.pinned.add(_short(key))
        return added

    def file(self, entry: Entry, where: str = "") -> None:
        return


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


# ---- the sweep ---------------------------------------------------------------------------
BATCH = 1000  # objects deleted per batch, each under the log's exclusive lock


@dataclass
class Collection:
    """What one garbage collection did, or (dry run) would do."""

    generation: int
    dry_run: bool
    grace: float
    cutoff: float  # objects last written before this (seconds since the epoch) could go
    objects: int  # objects listed
    stored: int  # their bytes
    kept: int = 0  # objects kept: a root or a logged find reaches them, or they are younger than the cutoff
    deleted: int = 0  # objects deleted (dry run: that would be)
    deleted_bytes: int = 0
    commits: int = 0  # commits no branch reached, forgotten with their job runs
    runs: int = 0  # job runs of those commits
    saved: int = 0  # objects a find logged during the sweep kept
    tmp_files: int = 0  # temporary files of dead writes removed
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def dumps(self) -> str:
        return orjson.dumps(asdict(self)).decode()


def _phase(name: str | None) -> None:
    for phase in ("waiting", "marking", "listing", "sweeping"):
        metrics.GC_PHASE.labels(phase).set(1 if phase == name else 0)


def collect_garbage(
    repo: Repository,
    grace: float = DEFAULT_GRACE,
    dry_run: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> Collection:
    """Delete every object no root reaches and no operation relies on, last written before
    the cutoff (docs/design.md, section 9), while writers go on. A mark that met damage
    deletes nothing (its problems are reported). 409 if another GC of the repository runs."""
    meta = repo.meta
    if not isinstance(meta, SqlMetaStore):
        raise BadRequest("garbage collection needs the metadata database")
    board = collect.board(meta.db)
    started = time.time()
    lease = board.begin(repo.id)
    report: Collection | None = None
    try:
        _phase("waiting")
        oldest = board.acknowledged(lease)
        failpoint("gc-acknowledged")
        cutoff = min(lease.activated, oldest) - max(grace, collect.SKEW)
        report = _mark_and_sweep(repo, meta, board, lease, grace, cutoff, dry_run, progress)
        report.seconds = round(time.time() - started, 3)
        return report
    finally:
        _phase(None)
        metrics.GC_PROGRESS.set(0)
        result = "failed" if report is None or report.problems else "dry_run" if dry_run else "done"
        metrics.GC_RUNS.labels(result).inc()
        board.end(lease, report.dumps() if report is not None else orjson.dumps({"failed": True}).decode())


def _mark_and_sweep(
    repo: Repository,
    meta: SqlMetaStore,
    board: collect.Board,
    lease: collect.Lease,
    grace: float,
    cutoff: float,
    dry_run: bool,
    progress: Callable[[str, int], None] | None,
) -> Collection:
    def marked(n: int) -> None:
        board.keep(lease)
        metrics.GC_PROGRESS.set(n)
        if progress is not None:
            progress("marked", n)

    _phase("marking")
    marker = Marker(repo, progress=marked)
    mark = marker.mark
    horizons = {branch: lease.activated - keep for branch, (keep, _) in meta.retention().items()}
    marker.sweep_roots(horizons)
    since = lease.activated - collect.FIND_WINDOW
    with board.exclusive(repo.id):  # no log write half done: none is skipped by `after`
        finds, after = board.logged(repo.id, 0, since)
    marker.logged(finds)

    _phase("listing")
    report = Collection(lease.gen, dry_run, grace, cutoff, 0, 0)
    candidates: dict[bytes, int] = {}  # unreachable and old: raw key -> stored bytes
    for obj in repo.objects.listing():
        report.objects += 1
        report.stored += obj.size
        if report.objects % 10_000 == 0:
            board.keep(lease)
        if obj.key not in mark and obj.modified < cutoff:
            candidates[_short(obj.key)] = obj.size
    # Indexed commits no root reached: old ones go; a young one (just made or received, its
    # branch not moved yet) stays whole, for the index names only complete commits.
    # (An object pinned by a logged find that is a commit is walked here too: pinned, its
    # history was not.)
    board.keep(lease)
    orphans = [c.id for c in meta.list_commits() if _short(c.id) not in mark.holders]
    for cid in orphans:
        if _short(cid) not in candidates:
            marker.history(cid)
    doomed = {cid for cid in orphans if cid not in mark}
    board.keep(lease)
    for run in meta.list_runs(limit=1 << 30):
        if run.commit in doomed:
            report.runs += 1
            continue
        for jr in meta.job_runs(run.commit):
            for kind, tree in (("input", jr.input_tree), ("output", jr.output_tree), ("partial", jr.partial_tree)):
                if tree:
                    marker.tree(tree, f"job {jr.job} {kind} on {run.commit[:12]}")
    report.problems = mark.problems
    if report.problems:
        report.problems = [*mark.problems, "nothing was deleted: the mark is incomplete"]
        return report

    for k in [k for k in candidates if mark.keeps(k)]:  # reached from a young commit or a job run
        del candidates[k]
    if dry_run:
        report.deleted, report.deleted_bytes = len(candidates), sum(candidates.values())
        report.kept = report.objects - report.deleted
        report.commits = len(doomed)
        return report

    _phase("sweeping")
    board.renew(lease)
    with board.exclusive(repo.id):  # first the commits: a find of one logged after this sees it gone
        finds, after = board.logged(repo.id, after, since)
        marker.logged(finds)
        for cid in [cid for cid in doomed if cid in mark]:
            marker.history(cid)  # kept after all: its index names it, so all below it stays too
        doomed = {cid for cid in doomed if cid not in mark}
        meta.drop_commits(sorted(doomed))
        meta.retention_applied(horizons)  # before any data goes: a read of it says why
    report.commits = len(doomed)
    failpoint("gc-forgot-commits")
    report.tmp_files = repo.objects.sweep_tmp(cutoff)
    if progress is not None:
        progress("sweeping", 0)
    keys = sorted(candidates)
    for i in range(0, len(keys), BATCH):
        board.renew(lease)
        with board.exclusive(repo.id):
            finds, after = board.logged(repo.id, after, since)
            marker.logged(finds)
            batch = [k for k in keys[i : i + BATCH] if not mark.keeps(k)]
            repo.objects.delete_many([k.hex() for k in batch])
            failpoint("gc-deleting")
        freed = sum(candidates[k] for k in batch)
        report.saved += min(BATCH, len(keys) - i) - len(batch)
        report.deleted += len(batch)
        report.deleted_bytes += freed
        metrics.GC_DELETED.inc(len(batch))
        metrics.GC_FREED.inc(freed)
        metrics.GC_PROGRESS.set(report.deleted)
        if progress is not None:
            progress("deleted", report.deleted)
        failpoint("gc-batch")
    report.kept = report.objects - report.deleted
    return report


def status(repo: Repository) -> tuple[bool, str | None]:
    """Whether a GC of the repository is active, and the last finished one's report (JSON)."""
    if not isinstance(repo.meta, SqlMetaStore):
        return False, None
    return collect.board(repo.meta.db).last(repo.id)
