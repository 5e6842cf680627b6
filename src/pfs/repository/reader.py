"""What a reader sees: a commit's tree, optionally overlaid with a branch's dirty writes.

Dirty writes live in the metadata store as per-path rows (a new file entry, or a
deletion); a branch read merges them over the head tree without building a new tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..errors import PathConflict
from ..paths import join, parent_dirs
from ..storage.meta import MetaStore
from ..storage.trees import Entry, TreeStore

STAGED_DIR = Entry("dir", "", 0)  # a directory that exists only through dirty writes


class Reader:
    """A read of a commit, or of a branch as of one moment.

    A branch read pins the head and then reads staged rows in separate queries; a commit
    that lands in between drops the rows it consumed, which would hide acknowledged
    writes. So after reading staged rows the view checks that the head has not moved and,
    if it has, re-pins and reads again (heads never repeat: every commit is new).
    """

    def __init__(
        self,
        trees: TreeStore,
        meta: MetaStore,
        root: str | None,
        branch: str | None,
        pin: Callable[[str], tuple[str | None, str | None, bool]] | None = None,
    ) -> None:
        self.trees = trees
        self.meta = meta
        self.root = root
        self.branch = branch  # None: a clean commit, no overlay
        self._name = branch
        self._pin_fn = pin
        self.head: str | None = None
        if branch is not None:
            self._pin()

    def _pin(self) -> None:
        assert self._name is not None and self._pin_fn is not None
        self.head, self.root, dirty = self._pin_fn(self._name)  # head and dirty in one statement
        self.branch = self._name if dirty else None  # nothing dirty: the tree alone

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
        if path != "":
            staged = self.meta.staged_get(self.branch, path)
            if staged is not None:
                return staged.entry
        entry = self.trees.lookup(self.root, path)
        if entry is not None and entry.is_dir and path != "" and not self._dir_alive(path, entry):
            entry = None
        if entry is None and self.meta.staged_under(self.branch, path, limit=1, puts=True):
            return STAGED_DIR
        return entry

    def _dir_alive(self, path: str, entry: Entry) -> bool:
        """A committed directory vanishes from a branch once every file in it is deleted."""
        assert self.branch is not None
        if not self.meta.staged_under(self.branch, path, limit=1):
            return True
        if self.meta.staged_under(self.branch, path, limit=1, puts=True):
            return True
        deleted = {s.path for s in self.meta.staged_under(self.branch, path)}
        return any(p not in deleted for p, _ in self.trees.walk(entry.hash, path))

    def listdir(self, path: str, start: str = "") -> Iterator[tuple[str, Entry]]:
        """Children of a directory, sorted by name, streamed from the tree with the branch's
        dirty writes merged in (caller checked it is a directory); `start`: only names from
        it on."""
        while True:
            overlay: dict[str, Entry | None] = {}
            doubtful: set[str] = set()  # committed dirs with deletions below: maybe emptied
            if self.branch is not None:
                for s in self.meta.staged_children(self.branch, path):
                    overlay[s.path.rpartition("/")[2]] = s.entry
                depth = path.count("/") + 1 if path else 0
                for s in self.meta.staged_under(self.branch, path):
                    parts = s.path.split("/")
                    if len(parts) > depth + 1:
                        if s.entry is None:
                            doubtful.add(parts[depth])
                        else:
                            overlay.setdefault(parts[depth], STAGED_DIR)
            if not self._moved():
                break
        base = self.trees.lookup(self.root, path)
        committed = self.trees.dir_items(base.hash, start) if base is not None and base.is_dir else iter(())
        if start:
            overlay = {n: e for n, e in overlay.items() if n >= start}
        if self.branch is None:
            yield from committed
            return
        for name, old, new in _zip_overlay(committed, overlay):
            if name not in overlay:
                assert old is not None
                if old.is_dir and name in doubtful and not self._dir_alive(join(path, name), old):
                    continue
                yield name, old
            elif new is STAGED_DIR and old is not None and old.is_dir:
                yield name, old
            elif new is not None:
                yield name, new

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
        """`check_placeable` for a whole archive, each directory looked up once."""
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

    def files_under(self, path: str) -> Iterator[tuple[str, Entry]]:
        """Every live file below a directory, recursively, in path order."""
        for name, entry in self.listdir(path):
            child = join(path, name)
            if entry.is_dir:
                yield from self.files_under(child)
            else:
                yield child, entry


def _zip_overlay(
    committed: Iterator[tuple[str, Entry]], overlay: dict[str, Entry | None]
) -> Iterator[tuple[str, Entry | None, Entry | None]]:
    """(name, committed entry, overlay entry) in name order over both."""
    names = iter(sorted(overlay))
    on = next(names, None)
    for name, entry in committed:
        while on is not None and on < name:
            yield on, None, overlay[on]
            on = next(names, None)
        if on == name:
            yield name, entry, overlay[name]
            on = next(names, None)
        else:
            yield name, entry, None
    while on is not None:
        yield on, None, overlay[on]
        on = next(names, None)
