"""The repository: versioning operations over an object store and a metadata store.

Every mutation follows one write order: objects durable, then trees, then the commit
object, then a single compare-and-swap of the branch head (which also drops the staged
rows it consumed). A crash before the swap leaves only unreferenced garbage.
"""

from __future__ import annotations

import heapq
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass

from .chunking import FileWriter
from .errors import (
    BadRequest,
    BranchMoved,
    BranchNotFound,
    CommitNotFound,
    Conflict,
    DirtyBranch,
    FileNotFound,
    MergeConflict,
    PathConflict,
    PfsError,
)
from .failpoints import failpoint
from .meta import MetaStore
from .objects import Batch, ObjectStore
from .paths import check_branch, check_message, is_commit_like, parent_dirs
from .staging import View
from .trees import Commit, Entry, TreeStore

CAS_RETRIES = 20
COMMIT_CACHE = 4096  # commits kept in memory (immutable, ~300 bytes each)
_SHORT_HEX = re.compile(r"[0-9a-fA-F]{4,7}")  # looks like a too-short commit id


@dataclass(frozen=True)
class MergeResult:
    commit: Commit
    kind: str  # "up-to-date" | "fast-forward" | "merge"


class Repository:
    def __init__(self, objects: ObjectStore, meta: MetaStore, max_file_size: int | None = None) -> None:
        self.objects = objects
        self.meta = meta
        self.trees = TreeStore(objects)
        self.max_file_size = max_file_size
        self._branch_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._commits: OrderedDict[str, Commit] = OrderedDict()
        if not objects.has(self.trees.empty_tree):
            with objects.batch() as b:
                self.trees.write_tree({}, b)

    def _lock(self, branch: str) -> threading.Lock:
        """In-process serialisation of one branch's commits; CAS still guards other nodes."""
        with self._locks_lock:
            return self._branch_locks.setdefault(branch, threading.Lock())

    # ---- resolving names -----------------------------------------------------------
    def commit(self, cid: str) -> Commit:
        """Commits are immutable: cached, so resolving a head costs no query after the first."""
        with self._locks_lock:
            hit = self._commits.get(cid)
        if hit is not None:
            return hit
        found = self.meta.get_commit(cid)
        commit = found if found is not None else self.trees.load_commit(cid)
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
                return self.commit(ref)
            found = self.meta.find_commits(ref)
            if len(found) > 1:
                raise BadRequest(f"commit prefix {ref!r} is ambiguous")
            if not found:
                raise CommitNotFound(f"commit {ref!r} not found")
            return self.commit(found[0])
        head = self._branch_head(ref)
        if head is None:
            raise CommitNotFound(f"branch {ref!r} has no commits yet")
        return self.commit(head)

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
        return head, (self.commit(head).tree if head else None)

    def pin(self, branch: str) -> tuple[str | None, str | None, bool]:
        """(head, its tree, dirty) of a branch, consistent with each other: one query."""
        head, dirty = self.meta.head_and_dirty(branch)
        return head, (self.commit(head).tree if head else None), dirty

    def view(self, branch: str | None = None, commit: str | None = None) -> View:
        """Commit C as committed, or branch B including its dirty writes (default master)."""
        if commit is not None and branch is not None:
            raise BadRequest("give either commit or branch, not both")
        if commit is not None:
            return View(self.trees, self.meta, self.resolve(commit).tree, None)
        return View(self.trees, self.meta, None, check_branch(branch or "master"), self.pin)

    # ---- dirty writes --------------------------------------------------------------
    def writer(self, batch: Batch | None = None) -> FileWriter:
        return FileWriter(self.objects, self.trees, self.max_file_size, batch)

    def check_writable(self, branch: str, path: str) -> None:
        self.view(branch=branch).check_placeable(path)

    def stage_file(self, branch: str, path: str, entry: Entry) -> None:
        failpoint("stage.before")
        self.check_writable(branch, path)
        self.meta.stage(branch, path, entry)

    def stage_files(self, branch: str, items: list[tuple[str, Entry]]) -> None:
        """Stage many files at once (archive upload): all of them or none."""
        self.view(branch=branch).check_placeable_many([p for p, _ in items])
        self.meta.stage_many(branch, list(items))

    def delete(self, branch: str, path: str, recursive: bool = False) -> int:
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
        with self._lock(branch):
            for _ in range(CAS_RETRIES):
                head, tree = self.head_tree(branch)
                if expect is not None and head != (expect or None):
                    raise BranchMoved(f"branch {branch!r} is at {head or 'no commit'}, not {expect or 'no commit'}")
                staged = self.meta.staged(branch)
                with self.objects.batch() as b:
                    new_tree = self.trees.apply(tree, {s.path: s.entry for s in staged}, b)
                    failpoint("commit.tree_written")
                    commit = self.trees.write_commit(new_tree, [head] if head else [], branch, time.time(), message, b)
                failpoint("commit.object_written")
                try:
                    self.meta.swap_ref(branch, head, commit, max((s.seq for s in staged), default=None))
                except BranchMoved:
                    if expect is not None:
                        raise
                    continue
                failpoint("commit.ref_swapped")
                return commit
        raise BranchMoved(f"branch {branch!r} kept moving; retry")

    def _new_commit(self, branch: str, tree: str, parents: list[str], message: str) -> Commit:
        with self.objects.batch() as b:
            return self.trees.write_commit(tree, parents, branch, time.time(), message, b)

    def create_branch(self, name: str, commit: str | None = None) -> str | None:
        check_branch(name)
        head = self.resolve(commit).id if commit else self.meta.get_ref("master")
        self.meta.create_ref(name, head)
        return head

    def delete_branch(self, name: str) -> None:
        """Drops the ref and its dirty writes; its commits stay reachable by id."""
        if check_branch(name) == "master":
            raise Conflict("master is the default branch and cannot be deleted")
        self.meta.delete_ref(name)

    # ---- history -------------------------------------------------------------------
    def log(self, ref: str, limit: int | None = None) -> Iterator[Commit]:
        """Ancestors of `ref`, newest first (like `git log`)."""
        if not is_commit_like(ref) and self._branch_head(ref) is None:
            return
        start = self.resolve(ref)
        seen = {start.id}
        heap = [(-start.time, start.id, start)]
        n = 0
        while heap and (limit is None or n < limit):
            _, _, c = heapq.heappop(heap)
            yield c
            n += 1
            for p in c.parents:
                if p not in seen:
                    seen.add(p)
                    pc = self.commit(p)
                    heapq.heappush(heap, (-pc.time, pc.id, pc))

    def _ancestors(self, cid: str) -> set[str]:
        seen = {cid}
        todo = [cid]
        while todo:
            for p in self.commit(todo.pop()).parents:
                if p not in seen:
                    seen.add(p)
                    todo.append(p)
        return seen

    def merge_base(self, a: str, b: str) -> str | None:
        ancestors = self._ancestors(a)
        seen = {b}
        frontier = [b]
        while frontier:  # breadth first from b: the nearest common ancestor
            nxt = []
            for c in frontier:
                if c in ancestors:
                    return c
                for p in self.commit(c).parents:
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
        theirs = self.resolve(source)
        with self._lock(into):
            for _ in range(CAS_RETRIES):
                if self.meta.has_staged(into):
                    raise DirtyBranch(f"branch {into!r} has uncommitted changes; commit them first")
                ours_id = self.meta.get_ref(into)
                if ours_id is not None and (ours_id == theirs.id or theirs.id in self._ancestors(ours_id)):
                    return MergeResult(self.commit(ours_id), "up-to-date")
                if ours_id is None or ours_id in self._ancestors(theirs.id):
                    try:
                        self.meta.swap_ref(into, ours_id, theirs)
                    except BranchMoved:
                        continue
                    return MergeResult(theirs, "fast-forward")
                ours = self.commit(ours_id)
                base_id = self.merge_base(ours.id, theirs.id)
                base_tree = self.commit(base_id).tree if base_id else None
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
                return MergeResult(commit, "merge")
        raise BranchMoved(f"branch {into!r} kept moving; retry")

    def revert(self, branch: str, target: str, message: str | None = None) -> Commit:
        """A new commit on `branch` whose content is `target`'s; history is kept."""
        check_branch(branch)
        if message is not None:
            check_message(message)
        dest = self.resolve(target)
        with self._lock(branch):
            if self.meta.has_staged(branch):
                raise DirtyBranch(f"branch {branch!r} has uncommitted changes; commit them first")
            head = self.meta.get_ref(branch)
            commit = self._new_commit(
                branch, dest.tree, [head] if head else [], message or f"Revert {branch} to {dest.id[:12]}"
            )
            self.meta.swap_ref(branch, head, commit)
            return commit


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
