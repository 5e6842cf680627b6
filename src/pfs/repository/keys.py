"""A repository's files as an object store sees them: keys in S3 order, and each key's
versions (the commits that changed it).

S3 lists keys in byte order of their UTF-8 names, which is not the order of a tree walk:
"a.txt" sorts before "a/b" ('.' < '/'), while the tree lists the directory "a" first.
`walk_keys` yields paths in S3 order lazily, holding only the directories a key could
still sort between, and can jump over a whole prefix (`skip_prefix`), so a listing with a
delimiter never reads the files it rolls up. (Python compares strings by code point,
which for valid UTF-8 is the same order as the bytes.)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import BadRequest
from ..paths import join
from ..storage.trees import Commit, Entry
from .reader import Reader
from .repo import Repository


@dataclass
class _Frame:
    """One directory being listed: its children in name order, and the subdirectories
    seen but not yet entered (entered once no sibling can sort before `name/`)."""

    path: str
    children: Iterator[tuple[str, Entry]]
    pending: list[str] = field(default_factory=list)  # heap of "name/" keys
    peeked: tuple[str, Entry] | None = None
    done: bool = False

    def peek(self) -> tuple[str, Entry] | None:
        if self.peeked is None and not self.done:
            self.peeked = next(self.children, None)
            self.done = self.peeked is None
        return self.peeked

    @property
    def key(self) -> str:
        """What every path below this directory starts with."""
        return self.path + "/" if self.path else ""


class KeyWalk(Iterator[tuple[str, Entry]]):
    """Files of a reader below a path prefix, in S3 key order: (path, entry)."""

    def __init__(self, reader: Reader, prefix: str, start_after: str | None) -> None:
        self.reader = reader
        self.after = start_after or ""
        self.skip: str | None = None
        root, _, self.first = prefix.rpartition("/")  # list `root`; at its level only names starting with `first`
        self.stack: list[_Frame] = []
        top = reader.lookup(root) if root else Entry("dir", "", 0)
        if top is not None and top.is_dir and self._wanted(root + "/" if root else ""):
            self.stack.append(self._frame(root))

    def _frame(self, path: str) -> _Frame:
        key = path + "/" if path else ""
        start = ""
        if self.after.startswith(key):  # seek past the names that sort before the marker
            seg = self.after[len(key) :].split("/", 1)[0]
            # a name that is a prefix of `seg` followed by a character below "/" may hold a
            # directory whose keys sort after the marker ("a/" > "a.txt"): start there
            cut = next((i for i, ch in enumerate(seg) if ch < "/"), len(seg))
            start = seg[:cut]
        children: Iterator[tuple[str, Entry]]
        if self.stack == [] and self.first:
            first = self.first
            children = (c for c in self.reader.listdir(path, max(start, first)) if c[0].startswith(first))
        else:
            children = self.reader.listdir(path, start)
        return _Frame(path, children)

    def _wanted(self, key: str, is_dir: bool = True) -> bool:
        """Whether anything at `key` (a file, or a directory's `path/`) can still be yielded."""
        if self.skip is not None and key.startswith(self.skip):
            return False
        if not self.after:
            return True
        if is_dir:  # some path below may sort after the marker
            return key > self.after or self.after.startswith(key)
        return key > self.after

    def skip_prefix(self, prefix: str) -> None:
        """Go on at the first path that does not start with `prefix` (a prefix of the path
        yielded last)."""
        self.skip = prefix
        while self.stack and self.stack[-1].key.startswith(prefix) and self.stack[-1].key:
            self.stack.pop()

    def __iter__(self) -> KeyWalk:
        return self

    def __next__(self) -> tuple[str, Entry]:
        while self.stack:
            frame = self.stack[-1]
            child = frame.peek()
            ckey = None
            if child is not None:
                ckey = join(frame.path, child[0]) + ("/" if child[1].is_dir else "")
            if frame.pending and (ckey is None or frame.pending[0] < ckey):
                sub = heapq.heappop(frame.pending)  # "…/name/": nothing left here sorts before it
                if self._wanted(sub):
                    self.stack.append(self._frame(sub[:-1]))
                continue
            if child is None:
                self.stack.pop()
                continue
            frame.peeked = None
            name, entry = child
            assert ckey is not None
            if not self._wanted(ckey, entry.is_dir):
                continue
            if entry.is_dir:
                heapq.heappush(frame.pending, ckey)
                continue
            self.skip = None  # keys are in order: once one is past the skipped prefix, all are
            return ckey, entry
        raise StopIteration


def walk_keys(reader: Reader, prefix: str = "", start_after: str | None = None) -> KeyWalk:
    """Every file whose path starts with `prefix` (any string: "dir/fi" lists "dir/file1"),
    in byte order of the UTF-8 path, only those after `start_after` when given."""
    return KeyWalk(reader, prefix, start_after)


@dataclass(frozen=True)
class KeyVersion:
    """One version of a key: the commit that wrote it (or deleted it: entry None)."""

    path: str
    commit: Commit
    entry: Entry | None
    latest: bool  # the version the ref's head has


MAX_VERSIONS_SCANNED = 100_000  # history rows looked at for one listing; more is a 400 asking for a narrower prefix


def key_versions(repo: Repository, ref: str, prefix: str = "") -> list[KeyVersion]:
    """Each path under `prefix` that the history of `ref` (a branch or commit) ever
    changed, with one version per commit that changed it, sorted by path then newest
    first. Committed history only: a branch's dirty writes are not versions. A commit's
    change is against its first parent (a merge shows what it brought in)."""
    root = prefix.rpartition("/")[0]
    found: dict[str, list[tuple[Commit, Entry | None]]] = {}
    scanned = 0
    for c in repo.log(ref):
        parent = repo.get_commit(c.parents[0]).tree if c.parents else None
        a = _subtree(repo, parent, root)
        b = _subtree(repo, c.tree, root)
        for path, _old, new in repo.trees.diff(a, b, root):
            if not path.startswith(prefix):
                continue
            scanned += 1
            if scanned > MAX_VERSIONS_SCANNED:
                raise BadRequest(f"more than {MAX_VERSIONS_SCANNED} versions under {prefix!r}: list a narrower prefix")
            found.setdefault(path, []).append((c, new))
    out: list[KeyVersion] = []
    for path in sorted(found):
        versions = sorted(found[path], key=lambda v: (v[0].time, v[0].id), reverse=True)
        out += [KeyVersion(path, c, e, i == 0) for i, (c, e) in enumerate(versions)]
    return out


def _subtree(repo: Repository, tree: str | None, path: str) -> str | None:
    """The tree of directory `path` in `tree` (None: no such directory)."""
    if tree is None:
        return None
    entry = repo.trees.lookup(tree, path)
    return entry.hash if entry is not None and entry.is_dir else None
