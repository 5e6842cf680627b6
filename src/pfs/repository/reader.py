"""What a reader sees: a commit's tree, optionally overlaid with a branch's dirty writes.

Dirty writes live in the metadata store as per-path rows (a new file entry, or a
deletion); a branch read merges them over the head tree without building a new tree.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from itertools import groupby
from operator import itemgetter

from ..errors import PathConflict
from ..paths import join, parent_dirs, under
from ..storage.meta import Graft, MetaStore, Placement
from ..storage.trees import Entry, TreeStore

STAGED_DIR = Entry("dir", "", 0)  # a directory that exists only through dirty writes


class Reader:
    """A read of a commit, or of a branch as of one moment.

    A branch read pins the head and then reads staged rows in separate queries; a commit
    that lands in between drops the rows it consumed, which would hide acknowledged
    writes. So after reading staged rows the view checks that the head has not moved and,
    if it has, re-pins and reads again (heads never repeat: every commit is new).

    A branch's dirty state has two kinds of record: rows (one file put or deleted) and
    grafts (an uploaded archive, a tree merged into a directory). Each is numbered when it
    is staged, and for any one path the newest record that speaks of it wins; the head's
    tree speaks last. Directories exist only through their live files.
    """

    def __init__(
        self,
        trees: TreeStore,
        meta: MetaStore,
        root: str | None,
        branch: str | None,
        pin: Callable[[str], tuple[str | None, str | None, bool, bool]] | None = None,
    ) -> None:
        self.trees = trees
        self.meta = meta
        self.root = root
        self.branch = branch  # None: a clean commit, no overlay
        self._name = branch
        self._pin_fn = pin
        self.head: str | None = None
        self.grafts: list[Graft] = []
        if branch is not None:
            self._pin()

    def _pin(self) -> None:
        assert self._name is not None and self._pin_fn is not None
        while True:
            self.head, self.root, dirty, grafted = self._pin_fn(self._name)  # in one statement
            self.branch = self._name if dirty or grafted else None  # nothing dirty: the tree alone
            self.grafts = self.meta.grafts(self._name) if grafted else []
            if not grafted or self.meta.get_ref(self._name) == self.head:
                return  # the grafts read are those of this head

    def _moved(self) -> bool:
        """True (and re-pinned) if a commit landed since the staged rows were read."""
        if self.branch is None or self.meta.get_ref(self.branch) == self.head:
            return False
        self._pin()
        return True

    def lookup(self, path: str) -> Entry | None:
        while True:
            entry = self._lookup(path)
            if not self._moved():
                return entry

    def _lookup(self, path: str) -> Entry | None:
        if self.branch is None:
            return self.trees.lookup(self.root, path)
        head = self.trees.lookup(self.root, path)
        if path == "":
            return head
        seq, best = (0, head) if head is not None and not head.is_dir else (-1, None)
        staged = self.meta.staged_get(self.branch, path)
        if staged is not None:
            seq, best = staged.seq, staged.entry
        grafted: Entry | None = None  # a directory some archive puts here
        for g in self.grafts:
            rel = under(path, g.prefix)
            if rel is None:
                if under(g.prefix, path):  # an archive staged below `path`
                    grafted = grafted or STAGED_DIR
                continue
            entry = self.trees.lookup(g.entry.hash, rel)
            if entry is None:
                continue
            if entry.is_dir:
                grafted = entry
            elif g.seq > seq:
                seq, best = g.seq, entry
        if best is not None:
            return best
        if head is not None and head.is_dir and self._dir_alive(path):
            return head
        if grafted is not None and self._dir_alive(path):
            return grafted
        if self.meta.staged_under(self.branch, path, limit=1, puts=True):
            return STAGED_DIR
        return None

    def _dir_alive(self, path: str) -> bool:
        """Does a live file remain below `path`, where the head or an archive has a
        directory? Only staged deletions can take files away, so the walk stops at the
        first file that none of them deleted after it arrived: its cost follows the
        deletions, not the directory."""
        assert self.branch is not None
        if not self.meta.staged_under(self.branch, path, limit=1):
            return True
        if self.meta.staged_under(self.branch, path, limit=1, puts=True):
            return True
        deleted = {s.path: s.seq for s in self.meta.staged_under(self.branch, path)}
        sources: list[tuple[int, str | None, str, str]] = [(0, self.root, path, path)]  # seq, tree, at, named
        for g in self.grafts:
            rel = under(path, g.prefix)
            if rel is not None:
                sources.append((g.seq, g.entry.hash, rel, path))
            elif under(g.prefix, path):  # an archive staged below `path`
                sources.append((g.seq, g.entry.hash, "", g.prefix))
        for seq, tree, at, named in sources:
            entry = self.trees.lookup(tree, at)
            if entry is None or not entry.is_dir:
                continue
            for p, _ in self.trees.walk(entry.hash, named):
                if deleted.get(p, -1) < seq:
                    return True
        return False

    def listdir(self, path: str, start: str = "") -> Iterator[tuple[str, Entry]]:
        """Children of a directory, sorted by name, streamed from the tree with the branch's
        dirty writes merged in (caller checked it is a directory); `start`: only names from
        it on."""
        while True:
            rows: dict[str, tuple[int, Entry | None]] = {}  # child name -> staged row
            put_below: set[str] = set()  # child directories with a staged put below
            doubtful: set[str] = set()  # child directories with deletions below: maybe emptied
            if self.branch is not None:
                for s in self.meta.staged_children(self.branch, path):
                    rows[s.path.rpartition("/")[2]] = (s.seq, s.entry)
                depth = path.count("/") + 1 if path else 0
                for s in self.meta.staged_under(self.branch, path):
                    parts = s.path.split("/")
                    if len(parts) > depth + 1:
                        (doubtful if s.entry is None else put_below).add(parts[depth])
            if not self._moved():
                break
        base = self.trees.lookup(self.root, path)
        committed = self.trees.dir_items(base.hash, start) if base is not None and base.is_dir else iter(())
        if self.branch is None:
            yield from committed
            return
        streams: list[Iterator[tuple[str, int, Entry | None]]] = [_tagged(committed, 0)]
        for g in self.grafts:
            rel = under(path, g.prefix)
            if rel is None:
                below = under(g.prefix, path)
                if below:  # an archive staged below `path`: its first name is a directory here
                    put_below.add(below.split("/")[0])
                continue
            d = self.trees.lookup(g.entry.hash, rel)
            if d is not None and d.is_dir:
                streams.append(_tagged(self.trees.dir_items(d.hash, start), g.seq))
        names = sorted(n for n in rows.keys() | put_below if n >= start)
        streams.append(iter([(n, -1, None) for n in names]))  # a marker: rows and puts are looked up
        for name, items in groupby(heapq.merge(*streams, key=itemgetter(0)), key=itemgetter(0)):
            claims = [(seq, entry) for _, seq, entry in items if seq >= 0]
            out = self._resolve(path, name, claims, rows, put_below, doubtful)
            if out is not None:
                yield name, out

    def _resolve(
        self,
        path: str,
        name: str,
        claims: list[tuple[int, Entry | None]],
        rows: dict[str, tuple[int, Entry | None]],
        put_below: set[str],
        doubtful: set[str],
    ) -> Entry | None:
        """What one name of a listing is: the newest file claim if it is a live file, else
        a directory if anything puts one there and a file remains in it."""
        if name in rows:
            claims = [*claims, rows[name]]
        files = [(s, e) for s, e in claims if e is None or not e.is_dir]
        if files:
            best = max(files, key=lambda c: c[0])[1]
            if best is not None:
                return best
        dirs = [e for _, e in claims if e is not None and e.is_dir]
        if not dirs and name not in put_below:
            return None
        if name in put_below and name not in doubtful:
            return dirs[0] if dirs else STAGED_DIR
        if name in doubtful and name not in put_below and not self._dir_alive(join(path, name)):
            return None
        return dirs[0] if dirs else STAGED_DIR

    @staticmethod
    def decide_placement(trees: TreeStore, root: str | None, path: str, facts: Placement) -> bool:
        """`check_placeable` from one statement's facts (MetaStore.placement) when they
        suffice, which is the common case: no staged archive, no directory in the head at
        `path`. True: the write may go ahead; False: undecided (a full view must look).
        PathConflict as `check_placeable` would raise it."""
        if facts.grafted:
            return False
        for parent in parent_dirs(path):
            row = facts.rows.get(parent)
            entry = trees.lookup(root, parent) if row is None else row.entry  # the newest record wins
            if entry is not None and not entry.is_dir:
                raise PathConflict(f"cannot write {path!r}: {parent!r} is a file")
        row = facts.rows.get(path)
        if row is not None and row.entry is not None:
            return not row.entry.is_dir  # a staged file: overwritten
        head = trees.lookup(root, path)
        if head is not None and head.is_dir:
            return False  # alive only if some file below it was not deleted: the view knows
        if row is None and head is not None:
            return True  # a committed file: overwritten
        if facts.put_below:
            raise PathConflict(f"cannot write {path!r}: it is a directory")
        return True

    def check_placeable(self, path: str) -> None:
        """A file may be written at `path`: no file above it, no directory at it."""
        for parent in parent_dirs(path):
            entry = self.lookup(parent)
            if entry is not None and not entry.is_dir:
                raise PathConflict(f"cannot write {path!r}: {parent!r} is a file")
        entry = self.lookup(path)
        if entry is not None and entry.is_dir:
            raise PathConflict(f"cannot write {path!r}: it is a directory")

    def check_placeable_many(self, paths: list[str]) -> None:
        """`check_placeable` for many files at once, each directory looked up once."""
        files = set(paths)
        dirs = {d for p in paths for d in parent_dirs(p)}
        clash = files & dirs
        if clash:
            raise PathConflict(f"{sorted(clash)[0]!r} is both a file and a directory in the upload")
        for d in sorted(dirs):
            entry = self.lookup(d)
            if entry is not None and not entry.is_dir:
                raise PathConflict(f"cannot write below {d!r}: it is a file")
        for p in paths:
            entry = self.lookup(p)
            if entry is not None and entry.is_dir:
                raise PathConflict(f"cannot write {p!r}: it is a directory")

    def placer(self, prefix: str) -> Placer:
        """A check of each file of an archive going under `prefix`, as it arrives."""
        return Placer(self, prefix)

    def files_under(self, path: str) -> Iterator[tuple[str, Entry]]:
        """Every live file below a directory, recursively, in path order."""
        for name, entry in self.listdir(path):
            child = join(path, name)
            if entry.is_dir:
                yield from self.files_under(child)
            else:
                yield child, entry


class Placer:
    """Checks, file by file, that an archive's files may go under `prefix`: no file above
    one, no directory at one. Into a new directory (the usual upload) that is settled by
    one lookup for all of them; else each directory is looked up once, and each file
    where its directory already exists. Checking while the archive streams means a
    refused one stops before its trees are written."""

    def __init__(self, view: Reader, prefix: str) -> None:
        self.view = view
        self.prefix = prefix
        self.depth = prefix.count("/") + 1 if prefix else 0
        self.known: dict[str, Entry | None] = {}  # directory path -> what is there
        for parent in parent_dirs(prefix) if prefix else ():
            entry = view.lookup(parent)
            if entry is not None and not entry.is_dir:
                raise PathConflict(f"cannot write below {parent!r}: it is a file")
        top = view.lookup(prefix) if prefix else Entry("dir", "", 0)
        if top is not None and not top.is_dir:
            raise PathConflict(f"cannot write below {prefix!r}: it is a file")
        self.fresh = top is None

    def check(self, path: str) -> None:
        if self.fresh:
            return
        for d in parent_dirs(path)[self.depth :]:
            if d not in self.known:
                if len(self.known) >= 10_000:
                    self.known.clear()
                self.known[d] = self.view.lookup(d)
            entry = self.known[d]
            if entry is None:
                return  # a new directory: nothing below it can clash
            if not entry.is_dir:
                raise PathConflict(f"cannot write below {d!r}: it is a file")
        entry = self.view.lookup(path)
        if entry is not None and entry.is_dir:
            raise PathConflict(f"cannot write {path!r}: it is a directory")


def _tagged(items: Iterator[tuple[str, Entry]], seq: int) -> Iterator[tuple[str, int, Entry | None]]:
    for name, entry in items:
        yield name, seq, entry
