"""The repository: versioning operations over an object store and a metadata store.

Every mutation follows one write order: objects durable, then trees, then the commit
object, then a single compare-and-swap of the branch head (which also drops the staged
rows it consumed). A crash before the swap leaves only unreferenced garbage.
"""

from __future__ import annotations

import heapq
import io
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .. import metrics
from ..errors import (
    BadRequest,
    BranchMoved,
    BranchNotFound,
    CommitNotFound,
    Conflict,
    DataExpired,
    DirtyBranch,
    FileNotFound,
    MergeConflict,
    MissingObject,
    NotFastForward,
    NotFound,
    PathConflict,
    PfsError,
)
from ..failpoints import failpoint
from ..paths import check_branch, check_message, human_duration, is_commit_like, parent_dirs, under
from ..storage import collect
from ..storage.chunking import FileWriter
from ..storage.meta import Graft, MetaStore, SqlMetaStore, Staged
from ..storage.objects import Batch, ObjectStore
from ..storage.trees import (
    COMMIT,
    Commit,
    Entry,
    TreeStore,
)
from .protection import BranchRules
from .reader import Reader
from .received import Received
from .tarball import Archive, unpack_tar

CAS_RETRIES = 20
RECLAIM_ROWS = 10_000  # staged rows a commit consumes before their space is given back at once
COMMIT_CACHE = 4096  # commits kept in memory (immutable, ~300 bytes each)
_SHORT_HEX = re.compile(r"[0-9a-fA-F]{4,7}")  # looks like a too-short commit id


@dataclass(frozen=True)
class MergeResult:
    commit: Commit
    kind: str  # "up-to-date" | "fast-forward" | "merge"


class Repository:
    def __init__(
        self,
        objects: ObjectStore,
        meta: MetaStore,
        max_file_size: int | None = None,
        name: str = "default",
        rules: BranchRules | None = None,
        repo_id: int = 0,
    ) -> None:
        self.name = name
        self.id = repo_id  # the catalog's id: never reused, so grants and rules name it
        self.rules = rules  # protected branches (None: no rules, as in tools that open a store)
        self.objects = objects
        self.meta = meta
        self.trees = TreeStore(objects)
        self.max_file_size = max_file_size
        self._branch_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._commits: OrderedDict[str, Commit] = OrderedDict()
        self._received = Received(self)
        objects.on_found = lambda key: self.found(collect.OBJECT, [key])
        objects.on_blind_write = self._blind_write
        if not objects.has(self.trees.empty_tree):
            with objects.batch() as b:
                self.trees.write_tree({}, b)

    # ---- what operations rely on (garbage collection, docs/design.md section 9) ---------
    def found(self, kind: str, keys: list[str]) -> bool:
        """Record that the operation in flight relies on stored objects it did not write.
        True: a GC is active, they were logged, and the caller must look again."""
        if not isinstance(self.meta, SqlMetaStore):
            return False
        return collect.FLIGHT.found(collect.board(self.meta.db), self.meta.repo_id, [(kind, k) for k in keys])

    def _blind_write(self, key: str) -> None:
        """A write that did not look first is a find only while a GC is active (the object
        may be on its list from before); otherwise the write itself makes it young."""
        if isinstance(self.meta, SqlMetaStore) and collect.FLIGHT.logging((self.meta.db.url, self.meta.repo_id)):
            self.found(collect.OBJECT, [key])

    # ---- retention rules ----------------------------------------------------------
    def retention(self) -> dict[str, tuple[float, float | None]]:
        """Branch -> (seconds its commits' data is kept, the horizon the last GC applied)."""
        return self.meta.retention()

    def set_retention(self, branch: str, keep: float) -> None:
        """Keep the data of `branch`'s commits younger than `keep` seconds, and of its head
        whatever its age; a garbage collection removes the rest (history and file lists stay)."""
        if keep <= 0:
            raise BadRequest("keep must be more than 0 s (to drop a branch's history, delete the branch)")
        if not isinstance(self.meta, SqlMetaStore):
            raise BadRequest("retention rules need the metadata database")
        self.meta.set_retention(check_branch(branch), keep)

    def drop_retention(self, branch: str) -> None:
        if not isinstance(self.meta, SqlMetaStore) or not self.meta.drop_retention(check_branch(branch)):
            raise NotFound(f"branch {branch!r} has no retention rule")

    def check_data(self, entry: Entry) -> None:
        """Before a file's bytes are sent: once a retention rule let a garbage collection
        remove old commits' data, a file whose data went answers 410 Gone with the reason,
        not a stream that breaks halfway. Costs a look per chunk, and only then."""
        if entry.data is not None or not isinstance(self.meta, SqlMetaStore):
            return
        applied = [(at, branch, keep) for branch, (keep, at) in self.meta.retention().items() if at]
        if not applied:
            return
        try:
            keys = [key for key, _ in self.trees.chunks(entry)] + ([entry.manifest] if entry.manifest else [])
            there = all(self.objects.has_many(keys))
        except MissingObject:
            there = False
        if there:
            return
        at, branch, keep = max(applied)
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))
        raise DataExpired(
            f"the data of this file was removed by garbage collection: branch {branch!r} keeps the data of "
            f"its commits younger than {human_duration(keep)}, and the data of older commits (before {when}) went; "
            "the commit, its history and its file list remain"
        )

    def rely_on_commit(self, commit: Commit) -> Commit:
        """`commit`, which a new branch head or commit is about to name: recorded as found,
        and still indexed (so complete) once logged, or CommitNotFound."""
        if self.found(collect.COMMIT, [commit.id]) and self.meta.get_commit(commit.id) is None:
            raise CommitNotFound(f"commit {commit.id} was removed by a garbage collection")
        return commit

    def rely_on_entry(self, entry: Entry) -> Entry:
        """A stored file that a new staged row is about to name (a copy): its manifest and
        chunks, recorded as found, and still all stored once logged, or MissingObject."""
        if entry.manifest is not None:
            logged = self.found(collect.MANIFEST, [entry.manifest])
        else:
            logged = self.found(collect.OBJECT, [key for key, _ in entry.chunks or ()])
        if logged:
            keys = [key for key, _ in self.trees.chunks(entry)] + ([entry.manifest] if entry.manifest else [])
            gone = [k for k, there in zip(keys, self.objects.has_many(keys), strict=True) if not there]
            if gone:
                raise MissingObject(f"object {gone[0]} of the file was removed by a garbage collection")
        return entry

    def _lock(self, branch: str) -> threading.Lock:
        """In-process serialisation of one branch's commits; CAS still guards other nodes."""
        with self._locks_lock:
            return self._branch_locks.setdefault(branch, threading.Lock())

    # ---- resolving names -----------------------------------------------------------
    def get_commit(self, cid: str) -> Commit:
        """An indexed commit. Only the index names commits: any other object (an uploaded file
        shaped like one, a commit a transfer left unchecked) is not one. Commits are
        immutable: cached, so resolving a head costs no query after the first."""
        with self._locks_lock:
            hit = self._commits.get(cid)
        if hit is not None:
            return hit
        commit = self.meta.get_commit(cid)
        if commit is None:
            raise CommitNotFound(f"commit {cid} not found")
        with self._locks_lock:
            self._commits[cid] = commit
            if len(self._commits) > COMMIT_CACHE:
                self._commits.popitem(last=False)
        return commit

    def resolve(self, ref: str) -> Commit:
        """A commit id, a unique prefix of one (8+ hex digits), or a branch name (its head)."""
        if ref == "":
            raise BadRequest("empty commit or branch name")
        if is_commit_like(ref.lower()):
            ref = ref.lower()
            if len(ref) == 64:
                return self.get_commit(ref)
            found = self.meta.find_commits(ref)
            if len(found) > 1:
                raise BadRequest(f"commit prefix {ref!r} is ambiguous")
            if not found:
                raise CommitNotFound(f"commit {ref!r} not found")
            return self.get_commit(found[0])
        head = self._branch_head(ref)
        if head is None:
            raise CommitNotFound(f"branch {ref!r} has no commits yet")
        return self.get_commit(head)

    def _branch_head(self, name: str) -> str | None:
        """A branch's head; a missing name that looks like a short commit id says how to
        name a commit instead."""
        try:
            return self.meta.get_ref(check_branch(name))
        except BranchNotFound:
            if _SHORT_HEX.fullmatch(name):
                raise CommitNotFound(
                    f"no branch named {name!r}; to name a commit, give at least 8 hex digits of its id"
                ) from None
            raise

    def check_stores(self) -> tuple[bool, str]:
        """Readiness: both stores answer a cheap request now."""
        try:
            self.meta.ping()
            self.objects.has(self.trees.empty_tree)
        except PfsError as exc:
            return False, exc.message
        return True, "ready"

    def head_tree(self, branch: str) -> tuple[str | None, str | None]:
        head = self.meta.get_ref(branch)
        return head, (self.get_commit(head).tree if head else None)

    def pin(self, branch: str) -> tuple[str | None, str | None, bool, bool]:
        """(head, its tree, staged rows?, staged archives?) of a branch, consistent with
        each other: one query."""
        head, dirty, grafted = self.meta.head_and_dirty(branch)
        return head, (self.get_commit(head).tree if head else None), dirty, grafted

    def view(self, branch: str | None = None, commit: str | None = None) -> Reader:
        """Commit C as committed, or branch B including its dirty writes (default master)."""
        if commit is not None and branch is not None:
            raise BadRequest("give either commit or branch, not both")
        if commit is not None:
            return Reader(self.trees, self.meta, self.resolve(commit).tree, None)
        return Reader(self.trees, self.meta, None, check_branch(branch or "master"), self.pin)

    def read_file(self, entry: Entry) -> Iterator[bytes]:
        """A file's bytes, a chunk at a time, each verified against its hash before it is
        yielded: a damaged chunk raises instead of reaching a reader."""
        return self.trees.read(entry)

    def read_range(self, entry: Entry, first: int, last: int) -> Iterator[bytes]:
        """Bytes `first`..`last` (inclusive) of a file: chunks wholly outside are not read,
        the ones read are verified whole (a chunk is the unit of its hash)."""
        if entry.data is not None:
            yield entry.data[first : last + 1]
            return
        offset = 0
        for key, size in self.trees.chunks(entry):
            end = offset + size  # this chunk holds [offset, end)
            if end > first and offset <= last:
                data = self.objects.get(key)
                yield data[max(first - offset, 0) : last + 1 - offset]
            if end > last:
                return
            offset = end

    # ---- branches and commits, as they are -----------------------------------------
    def branches(self) -> list[tuple[str, str | None]]:
        """Every branch with its head (None: no commit yet), by name."""
        return self.meta.list_refs()

    def branch_head(self, name: str) -> str | None:
        """A branch's head (None: no commit yet); BranchNotFound if there is no such branch."""
        return self.meta.get_ref(check_branch(name))

    def all_commits(self) -> Iterator[Commit]:
        """Every indexed commit of every branch, oldest first, a page at a time."""
        return self.meta.list_commits()

    def tree_reader(self, tree: str) -> Reader:
        """A reader of any tree this repository holds (a job's output, say), with no overlay."""
        return Reader(self.trees, self.meta, tree, None)

    # ---- dirty writes --------------------------------------------------------------
    def writer(self, batch: Batch | None = None) -> FileWriter:
        return FileWriter(self.objects, self.trees, self.max_file_size, batch)

    def store(self, pieces: Iterable[bytes | memoryview]) -> Entry:
        """A new file of these bytes, stored (not staged): its entry. Nothing is left
        half-written if storing fails."""
        writer = self.writer()
        try:
            writer.write_many(pieces)
            return writer.finish()
        except BaseException:
            writer.abort()
            raise

    def put_file(self, branch: str, path: str, data: bytes) -> Entry:
        """Store and stage a whole small file in one call: one thread hop for a front end."""
        entry = self.store([data])
        self.stage_file(branch, path, entry)
        return entry

    def guard(self, branch: str, what: str) -> None:
        """BranchProtected unless `branch` may change by `what` (anything but a merge)."""
        if self.rules is not None:
            self.rules.check(branch, what)

    def check_writable(self, branch: str, path: str) -> None:
        """PathConflict unless a file may be written at `path` now. One query in the common
        case (Reader.decide_placement); the full view only where that cannot tell."""
        self.guard(branch, "a write")
        facts = self.meta.placement(check_branch(branch), path, parent_dirs(path))
        root = self.get_commit(facts.head).tree if facts.head else None
        if not Reader.decide_placement(self.trees, root, path, facts):
            self.view(branch=branch).check_placeable(path)

    def stage_file(self, branch: str, path: str, entry: Entry) -> None:
        failpoint("stage.before")
        self.check_writable(branch, path)
        self.meta.stage(branch, path, entry)

    def stage_files(self, branch: str, items: list[tuple[str, Entry]]) -> None:
        """Stage many files at once (archive upload): all of them or none."""
        self.guard(branch, "a write")
        self.view(branch=branch).check_placeable_many([p for p, _ in items])
        self.meta.stage_many(branch, list(items))

    def stage_tar(self, branch: str, prefix: str, raw: io.RawIOBase) -> Archive:
        """Unpack a tar stream under `prefix` and stage all its files at once, or none: as
        one graft (its tree), so staging costs one row however many files it holds. The
        branch is checked before the first byte is read."""
        self.meta.get_ref(check_branch(branch))
        self.guard(branch, "a write")
        placer = self.view(branch=branch).placer(prefix)
        archive = unpack_tar(self, raw, prefix, placer.check)
        if archive.files:
            self.meta.stage_graft(branch, prefix, archive.tree, archive.files)
        return archive

    def delete(self, branch: str, path: str, recursive: bool = False) -> int:
        self.guard(branch, "a delete")
        view = self.view(branch=branch)
        entry = view.lookup(path)
        if entry is None:
            raise FileNotFound(f"{path!r} not found on branch {branch!r}")
        if not entry.is_dir:
            self.meta.stage(branch, path, None)
            return 1
        if not recursive:
            raise PathConflict(f"{path!r} is a directory; delete it recursively")
        doomed: list[tuple[str, Entry | None]] = [(p, None) for p, _ in view.files_under(path)]
        self.meta.stage_many(branch, doomed)
        return len(doomed)

    def discard(self, branch: str) -> int:
        self.meta.get_ref(check_branch(branch))
        return self.meta.discard_staged(branch)

    # ---- commits -------------------------------------------------------------------
    def commit_branch(self, branch: str, message: str = "", expect: str | None = None) -> Commit:
        """Commit the branch's dirty writes. `expect` turns it into a strict compare-and-swap:
        a commit id the head must be at, or "" for a branch with no commits yet."""
        if expect is not None and expect != "" and not (len(expect) == 64 and is_commit_like(expect)):
            raise BadRequest("expect must be a full 64-digit commit id, or empty for a branch with no commits")
        check_branch(branch)
        check_message(message)
        self.guard(branch, "a commit")
        with self._lock(branch):
            for _ in range(CAS_RETRIES):
                head, tree = self.head_tree(branch)
                if expect is not None and head != (expect or None):
                    raise BranchMoved(f"branch {branch!r} is at {head or 'no commit'}, not {expect or 'no commit'}")
                staged = self.meta.staged(branch)
                grafts = self.meta.grafts(branch)
                with self.objects.batch() as b:
                    for g in grafts:
                        tree = self.trees.graft(tree, g.prefix, g.entry, b)
                        b.flush()  # what comes next reads the nodes just written
                    changes = {s.path: s.entry for s in staged if not self._grafted_over(s, grafts)}
                    new_tree = self.trees.apply(tree, changes, b)
                    failpoint("commit.tree_written")
                    commit = self.trees.write_commit(new_tree, [head] if head else [], branch, time.time(), message, b)
                failpoint("commit.object_written")
                try:
                    last = max([s.seq for s in staged] + [g.seq for g in grafts], default=None)
                    self.meta.swap_ref(branch, head, commit, last)
                except BranchMoved:
                    if expect is not None:
                        raise
                    continue
                failpoint("commit.ref_swapped")
                metrics.COMMITS.inc()
                if len(staged) >= RECLAIM_ROWS:
                    self.meta.reclaim()
                return commit
        raise BranchMoved(f"branch {branch!r} kept moving; retry")

    def _grafted_over(self, row: Staged, grafts: list[Graft]) -> bool:
        """Did an archive staged after `row` put something at its path, or a file above it?
        Then the archive wins, and the row is not applied after it."""
        for g in grafts:
            rel = under(row.path, g.prefix) if g.seq > row.seq else None
            if rel is not None and (rel == "" or self.trees.shadows(g.entry.hash, rel)):
                return True
        return False

    def _new_commit(self, branch: str, tree: str, parents: list[str], message: str) -> Commit:
        with self.objects.batch() as b:
            return self.trees.write_commit(tree, parents, branch, time.time(), message, b)

    def create_branch(self, name: str, commit: str | None = None) -> str | None:
        check_branch(name)
        head = self.rely_on_commit(self.resolve(commit)).id if commit else self.meta.get_ref("master")
        self.meta.create_ref(name, head)
        return head

    def delete_branch(self, name: str) -> None:
        """Drops the ref and its dirty writes; its commits stay readable by id until a
        garbage collection removes those no other branch reaches."""
        if check_branch(name) == "master":
            raise Conflict("master is the default branch and cannot be deleted")
        self.guard(name, "deleting it")
        self.meta.delete_ref(name)

    # ---- history -------------------------------------------------------------------
    def log(self, ref: str, limit: int | None = None) -> Iterator[Commit]:
        """Ancestors of `ref`, newest first (like `git log`)."""
        if not is_commit_like(ref) and self._branch_head(ref) is None:
            return
        yield from self.walk_log([self.resolve(ref)], limit)

    def walk_log(self, starts: list[Commit], limit: int | None = None) -> Iterator[Commit]:
        """`starts` and their ancestors, each once, newest first: `log`'s walk, also where
        a walk that stopped goes on (the console's pages carry the commits it had queued)."""
        seen = {c.id for c in starts}
        heap = [(-c.time, c.id, c) for c in starts]
        heapq.heapify(heap)
        n = 0
        while heap and (limit is None or n < limit):
            _, _, c = heapq.heappop(heap)
            yield c
            n += 1
            for p in c.parents:
                if p not in seen:
                    seen.add(p)
                    pc = self.get_commit(p)
                    heapq.heappush(heap, (-pc.time, pc.id, pc))

    def merge_base(self, a: str, b: str) -> str | None:
        ancestors = set(self._walk_ancestors(a))
        seen = {b}
        frontier = [b]
        while frontier:  # breadth first from b: the nearest common ancestor
            nxt = []
            for c in frontier:
                if c in ancestors:
                    return c
                for p in self.get_commit(c).parents:
                    if p not in seen:
                        seen.add(p)
                        nxt.append(p)
            frontier = nxt
        return None

    def diff(self, a: str, b: str) -> Iterator[tuple[str, Entry | None, Entry | None]]:
        ta, tb = self.resolve(a).tree, self.resolve(b).tree
        return self.trees.diff(ta, tb)

    # ---- merge and revert ----------------------------------------------------------
    def merge(self, source: str, into: str, strategy: str | None = None, message: str | None = None) -> MergeResult:
        if strategy not in (None, "ours", "theirs"):
            raise BadRequest("strategy must be 'ours' or 'theirs'")
        check_branch(into)
        if message is not None:
            check_message(message)
        theirs = self.rely_on_commit(self.resolve(source))
        with self._lock(into):
            for _ in range(CAS_RETRIES):
                if self.meta.has_staged(into):
                    raise DirtyBranch(f"branch {into!r} has uncommitted changes; commit them first")
                ours_id = self.meta.get_ref(into)
                if ours_id is not None and self.is_ancestor(theirs.id, ours_id):
                    return MergeResult(self.get_commit(ours_id), "up-to-date")
                if ours_id is None or self.is_ancestor(ours_id, theirs.id):
                    try:
                        self.meta.swap_ref(into, ours_id, theirs)
                    except BranchMoved:
                        continue
                    return MergeResult(theirs, "fast-forward")
                ours = self.get_commit(ours_id)
                base_id = self.merge_base(ours.id, theirs.id)
                base_tree = self.get_commit(base_id).tree if base_id else None
                mine = {p: new for p, _, new in self.trees.diff(base_tree, ours.tree)}
                their = {p: new for p, _, new in self.trees.diff(base_tree, theirs.tree)}
                conflicts = _conflicts(mine, their)
                if conflicts and strategy is None:
                    raise MergeConflict(
                        f"merge of {source!r} into {into!r} conflicts in {len(conflicts)} path(s)",
                        conflicts=[{"path": p, "ours": _h(mine.get(p)), "theirs": _h(their.get(p))} for p in conflicts],
                    )
                if strategy == "ours":
                    lost = set(conflicts)
                    their = {p: e for p, e in their.items() if p not in lost and lost.isdisjoint(parent_dirs(p))}
                changes = {p: e for p, e in their.items() if p not in mine or mine[p] != e}
                with self.objects.batch() as b:
                    tree = self.trees.apply(ours.tree, changes, b)
                    commit = self.trees.write_commit(
                        tree,
                        [ours.id, theirs.id],
                        into,
                        time.time(),
                        message or f"Merge {source} into {into}",
                        b,
                    )
                try:
                    self.meta.swap_ref(into, ours.id, commit)
                except BranchMoved:
                    continue
                metrics.COMMITS.inc()
                return MergeResult(commit, "merge")
        raise BranchMoved(f"branch {into!r} kept moving; retry")

    def revert(self, branch: str, target: str, message: str | None = None) -> Commit:
        """A new commit on `branch` whose content is `target`'s; history is kept."""
        check_branch(branch)
        if message is not None:
            check_message(message)
        self.guard(branch, "a revert")
        dest = self.rely_on_commit(self.resolve(target))
        with self._lock(branch):
            if self.meta.has_staged(branch):
                raise DirtyBranch(f"branch {branch!r} has uncommitted changes; commit them first")
            head = self.meta.get_ref(branch)
            commit = self._new_commit(
                branch, dest.tree, [head] if head else [], message or f"Revert {branch} to {dest.id[:12]}"
            )
            self.meta.swap_ref(branch, head, commit)
            metrics.COMMITS.inc()
            return commit

    # ---- sync support --------------------------------------------------------------
    # What pfs.sync's two ends need: objects in their stored form, the commit index, what a
    # commit adds to its parent, and a branch move that checks history.
    def has_commit(self, cid: str) -> bool:
        """Is `cid` indexed, i.e. complete here with all its ancestors? A commit object that
        is merely stored (from an interrupted transfer) does not count."""
        return self.meta.get_commit(cid) is not None

    def index_commit(self, commit: Commit) -> None:
        """Index a commit that arrived from elsewhere. The caller has checked that it is
        complete (parents indexed, every object of `commit_delta` stored): the index and
        the branches name only complete commits."""
        self.meta.index_commit(commit)

    def has_object(self, key: str) -> bool:
        return self.objects.has(key)

    def has_objects(self, keys: list[str]) -> list[bool]:
        """`has_object` for each key, in order; many at once where the store is remote."""
        return self.objects.has_many(keys)

    def stored_object(self, key: str) -> bytes:
        """An object's stored form, verified: what a sender puts on the wire."""
        return self.objects.get_stored(key)

    def object_batch(self) -> Batch:
        """A batch for objects that arrive already named (a receiver verifies each first)."""
        return self.objects.batch()

    def commit_delta(self, commit: Commit) -> Iterator[tuple[str, str]]:
        """(kind, key) of the objects `commit` adds to its first parent, children before the
        nodes naming them, then the commit itself. A receiver that has every parent complete
        needs nothing else; objects that came with another parent (a merge) are listed too."""
        base = self.get_commit(commit.parents[0]).tree if commit.parents else None
        yield from self.trees.delta(commit.tree, base)
        yield COMMIT, commit.id

    def _walk_ancestors(self, cid: str) -> Iterator[str]:
        """`cid` and each of its ancestors once, depth first, lazily: a search stops where
        it finds what it looks for instead of reading the whole history."""
        seen = {cid}
        todo = [cid]
        while todo:
            c = todo.pop()
            yield c
            for p in self.get_commit(c).parents:
                if p not in seen:
                    seen.add(p)
                    todo.append(p)

    def is_ancestor(self, a: str, b: str) -> bool:
        """Is commit `a` reachable from `b` (or `b` itself)?"""
        return any(c == a for c in self._walk_ancestors(b))

    def move_branch(self, branch: str, new: str, old: str | None = None, force: bool = False) -> str:
        """Point `branch` (created if absent) at `new`, an indexed commit, by compare-and-swap
        under the branch's lock, so it cannot interleave with a commit or merge here.

        `old` is the head the caller saw ("" for none/absent; None: whatever it is now); if
        the branch moved since, BranchMoved (409). Unless `force`, only a fast-forward is
        allowed: NotFastForward (409) otherwise, or "ahead" (no change) when the branch
        already contains `new`. A branch with uncommitted writes is refused (DirtyBranch).
        Returns created | fast-forward | forced | up-to-date | ahead."""
        check_branch(branch)
        self.guard(branch, "a push")
        commit = self.meta.get_commit(new)
        if commit is None:
            raise CommitNotFound(f"commit {new} is not on this server; send its objects first")
        self.rely_on_commit(commit)
        with self._lock(branch):
            try:
                cur: str | None = self.meta.get_ref(branch)
                exists = True
            except BranchNotFound:
                cur, exists = None, False
            if old is not None and (old or None) != cur:
                raise BranchMoved(f"branch {branch!r} is at {cur or 'no commit'}, not {old or 'no commit'}")
            if cur == new:
                return "up-to-date"
            ff = cur is None or self.is_ancestor(cur, new)
            if not ff and not force:
                assert cur is not None
                if self.is_ancestor(new, cur):
                    return "ahead"
                raise NotFastForward(
                    f"branch {branch!r} at {cur[:12]} is not an ancestor of {new[:12]}: "
                    "the two histories diverged (merge first, or force)"
                )
            if exists and self.meta.has_staged(branch):
                raise DirtyBranch(f"branch {branch!r} has uncommitted changes; commit or discard them first")
            if not exists:
                self.meta.create_ref(branch, new)
            else:
                self.meta.swap_ref(branch, cur, commit)
            return "created" if cur is None else "fast-forward" if ff else "forced"

    # ---- validation of received objects (received.py) ------------------------------
    def received_limit(self, kind: str) -> int:
        """The most plain bytes an object sent as `kind` (a sync letter) may have."""
        return self._received.limit(kind)

    def check_received(self, commit: Commit, pending: Mapping[str, Commit], seen: dict[Any, Any]) -> None:
        """Refuse (BadObject) a commit from a sync peer unless all it adds to its first
        parent is what a local write could have made: see `received.Received.check`."""
        self._received.check(commit, pending, seen)

    def check_received_commit(self, key: str, raw: Any) -> Commit:
        """A commit object from a sync peer (parsed JSON), with the bounds of a local commit."""
        return self._received.check_commit(key, raw)

    def verify_file(self, entry: Entry, chunks: tuple[tuple[str, int], ...] | None = None) -> None:
        """Check a stored file against its entry, chunk by chunk, hashing as it reads."""
        self._received.verify_file(entry, chunks)


def _h(entry: Entry | None) -> str | None:
    return None if entry is None else entry.hash


def _conflicts(mine: dict[str, Entry | None], their: dict[str, Entry | None]) -> list[str]:
    """Paths changed differently on both sides, including a file on one side where the
    other side put a directory."""
    out = {p for p in their if p in mine and mine[p] != their[p]}
    mine_files = {p for p, e in mine.items() if e is not None}
    their_files = {p for p, e in their.items() if e is not None}
    for p in their_files:
        out.update(d for d in parent_dirs(p) if d in mine_files)
    for p in mine_files:
        out.update(d for d in parent_dirs(p) if d in their_files)
    return sorted(out)
