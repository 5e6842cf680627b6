"""Immutable Merkle trees and commits stored in the object store.

A directory is a tree object listing its children (split into a B-tree of nodes when
big); a file entry carries its content hash, size and chunk list (the bytes themselves for
tiny files, a manifest object for big ones). Changing a path rewrites only the nodes on
its way to the root, so a commit costs O(changed paths x depth), and equal subtrees share
a hash, so diffs skip them.
"""

from __future__ import annotations

import binascii
import bisect
import heapq
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar

import blake3
import orjson

from ..errors import CommitNotFound, CorruptObject, MissingObject, PathConflict
from ..paths import join
from .objects import Batch, ObjectStore, hash_bytes

INLINE_CHUNKS = 8  # beyond this a file's chunk list goes to its own manifest object
INLINE_DATA = 2048  # files up to this size live inside their tree entry (like btrfs max_inline)
# The most plain bytes a local write can put in one tree node: a leaf holds at most LEAF_MAX
# (1024) entries of at most ~3.4 KB each (a 255-byte name, JSON-escaped, and 2 KiB of inline
# data in base64), an index node 256 children of well under 1 KB. Received nodes are held to it.
NODE_MAX = 4 << 20
# A commit object: the message is at most paths.MAX_MESSAGE (8 KiB) bytes, up to 6x that once
# JSON-escaped, plus a tree, two parents, a branch name and a time.
COMMIT_MAX = 64 << 10
# A manifest: about 80 bytes per chunk, so 256 MiB lists the ~3 million chunks of a multi-TB file.
MANIFEST_MAX = 256 << 20
MANIFEST_BYTES_PER_CHUNK = 80  # `["<64 hex digits>",<size up to 7 digits>],`
# Kinds of stored object, one letter each: what `TreeStore.delta` yields (pfs.sync sends these letters).
COMMIT, TREE, MANIFEST, BLOB = "c", "t", "m", "b"
V = TypeVar("V")


@dataclass(frozen=True)
class Entry:
    kind: str  # "file" | "dir"
    hash: str  # file: BLAKE3 of the content; dir: key of the tree object
    size: int  # file: bytes; dir: bytes of all files below
    chunks: tuple[tuple[str, int], ...] | None = None
    manifest: str | None = None
    data: bytes | None = None  # small files: the content itself, covered by the tree's hash
    # What an S3 client set on the object (content-type, x-amz-meta-*, …), sorted by name,
    # lowercase; versioned with the file. Empty for files written through pfs's own API.
    meta: tuple[tuple[str, str], ...] = ()

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    def to_list(self) -> list[Any]:
        if self.kind == "dir":
            return ["d", self.hash, self.size]
        out: list[Any]
        if self.data is not None:
            out = ["i", self.hash, self.size, binascii.b2a_base64(self.data, newline=False).decode()]
        elif self.manifest is not None:
            out = ["f", self.hash, self.size, self.manifest]
        else:
            out = ["f", self.hash, self.size, [list(c) for c in self.chunks or ()]]
        if self.meta:  # absent when empty: entries without metadata keep the form (and hash) they always had
            out.append(dict(self.meta))
        return out

    @classmethod
    def from_list(cls, item: list[Any]) -> Entry:
        if item[0] == "d":
            return cls("dir", item[1], item[2])
        meta = tuple(sorted(item[4].items())) if len(item) > 4 else ()
        if item[0] == "i":
            return cls("file", item[1], item[2], data=binascii.a2b_base64(item[3]), meta=meta)
        if isinstance(item[3], str):
            return cls("file", item[1], item[2], manifest=item[3], meta=meta)
        return cls("file", item[1], item[2], chunks=tuple((c[0], c[1]) for c in item[3]), meta=meta)

    def dumps(self) -> str:
        return orjson.dumps(self.to_list()).decode()

    @classmethod
    def loads(cls, text: str) -> Entry:
        return cls.from_list(orjson.loads(text))


@dataclass(frozen=True)
class Commit:
    id: str
    tree: str
    parents: tuple[str, ...]
    branch: str
    time: float
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tree": self.tree,
            "parents": list(self.parents),
            "branch": self.branch,
            "time": self.time,
            "message": self.message,
        }


def zip_sorted(a: Iterator[tuple[str, V]], b: Iterator[tuple[str, V]]) -> Iterator[tuple[str, V | None, V | None]]:
    """Merge-join two name-sorted streams (entries, or their stored forms)."""
    na, nb = next(a, None), next(b, None)
    while na is not None or nb is not None:
        if nb is None or (na is not None and na[0] < nb[0]):
            assert na is not None
            yield na[0], na[1], None
            na = next(a, None)
        elif na is None or nb[0] < na[0]:
            yield nb[0], None, nb[1]
            nb = next(b, None)
        else:
            yield na[0], na[1], nb[1]
            na, nb = next(a, None), next(b, None)


def _decode_json(key: str, data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise CorruptObject(f"object {key} is not valid metadata") from None


class Child(NamedTuple):
    """One node of a directory as its parent index node sees it."""

    first: str  # smallest name in the node
    key: str
    n: int  # entries below
    size: int  # bytes of files below


class _Leaf:
    """A leaf as stored (`raw`: `[name, *entry.to_list()]` each), its entries made when first
    asked for: a diff of two big directories compares the stored forms and makes entries
    only of the names that differ (making one costs more than comparing a thousand)."""

    __slots__ = ("key", "raw", "_items", "_by_name")

    def __init__(self, key: str, raw: list[list[Any]]) -> None:
        self.key = key
        self.raw = raw
        self._items: list[tuple[str, Entry]] | None = None
        self._by_name: dict[str, Entry] | None = None

    @property
    def items(self) -> list[tuple[str, Entry]]:
        if self._items is None:
            self._items = [(item[0], _entry(self.key, item)) for item in self.raw]
        return self._items

    @property
    def by_name(self) -> dict[str, Entry]:
        if self._by_name is None:
            self._by_name = dict(self.items)
        return self._by_name


def _entry(key: str, item: list[Any]) -> Entry:
    """The entry of one stored `[name, *entry]` of tree node `key`."""
    try:
        return Entry.from_list(item[1:])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, binascii.Error):
        raise CorruptObject(f"object {key} is not a tree") from None


class _Index(NamedTuple):
    children: list[Child]
    firsts: list[str]
    level: int  # 1: the children are leaves


def _leaf_boundary(name: str) -> bool:
    """Content-defined: a leaf ends after about one name in 256, decided by the name alone,
    so equal directories always split the same way and share hashes."""
    return blake3.blake3(name.encode("utf-8", "surrogatepass")).digest()[0] == 0


def _index_boundary(child: Child) -> bool:
    return int(child.key[:2], 16) < 8  # about one child in 32


class TreeStore:
    """Reads and writes trees, manifests and commits; caches immutable tree nodes.

    A directory is a single leaf object while small. A big one is split into leaves at
    content-defined boundaries, under index nodes (a B-tree whose shape depends only on the
    entries), so changing one entry rewrites one leaf and the small index above it, and
    listing streams leaf by leaf instead of loading the whole directory.
    """

    CACHE_SIZE = 4096  # nodes, and at most CACHE_BYTES of their stored bytes: leaves with
    CACHE_BYTES = 16 << 20  # inline files can be ~1 MB each, so a count alone bounds nothing
    LEAF_MAX = 1024  # entries; a forced cut bounds leaves without a natural boundary
    INDEX_MAX = 256  # children

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self._cache: OrderedDict[str, tuple[_Leaf | _Index, int]] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()
        self.empty_tree = hash_bytes(self._leaf_bytes([]))

    # ---- nodes -------------------------------------------------------------------
    @staticmethod
    def _leaf_bytes(items: list[tuple[str, Entry]]) -> bytes:
        return orjson.dumps({"entries": [[name, *e.to_list()] for name, e in items]})

    def _node(self, key: str) -> _Leaf | _Index:
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit[0]
        data = self.objects.get(key)
        raw = _decode_json(key, data)
        node: _Leaf | _Index
        try:
            if "entries" in raw:
                entries = raw["entries"]
                if not isinstance(entries, list):
                    raise ValueError("not a leaf")
                # Its entries are checked as they are made (`_Leaf.items`): every node in the
                # store was made by a TreeStore or checked whole when received (received.py).
                node = _Leaf(key, entries)
            else:
                children = [Child(*c) for c in raw["index"]]
                node = _Index(children, [c.first for c in children], int(raw["level"]))
        except (KeyError, IndexError, TypeError, ValueError):
            raise CorruptObject(f"object {key} is not a tree") from None
        with self._lock:
            if key not in self._cache:
                self._cache[key] = (node, len(data))
                self._cached_bytes += len(data)
            while len(self._cache) > self.CACHE_SIZE or self._cached_bytes > self.CACHE_BYTES:
                self._cached_bytes -= self._cache.popitem(last=False)[1][1]
        return node

    def index_children(self, key: str) -> tuple[int, list[str]] | None:
        """(level, child keys) of a directory's index node; None for a leaf. For walkers
        of the object graph (sync, fsck) that must see every node, not just entries."""
        node = self._node(key)
        if isinstance(node, _Index):
            return node.level, [c.key for c in node.children]
        return None

    def index_entries(self, key: str) -> tuple[int, list[Child]] | None:
        """(level, children with their first names, entry counts and sizes) of a directory's
        index node; None for a leaf. For checks of a tree's shape (received trees)."""
        node = self._node(key)
        if isinstance(node, _Index):
            return node.level, list(node.children)
        return None

    def _write_leaf(self, items: list[tuple[str, Entry]], batch: Batch) -> Child:
        data = self._leaf_bytes(items)
        key = hash_bytes(data)
        batch.put(key, data)
        return Child(items[0][0], key, len(items), sum(e.size for _, e in items))

    def _write_index(self, children: list[Child], level: int, batch: Batch) -> Child:
        data = orjson.dumps({"index": [list(c) for c in children], "level": level})
        key = hash_bytes(data)
        batch.put(key, data)
        return Child(children[0].first, key, sum(c.n for c in children), sum(c.size for c in children))

    def _cut(self, items: Iterator[tuple[str, Entry]], batch: Batch, out: list[Child]) -> list[tuple[str, Entry]]:
        """Cut entries into leaves, appending them to `out`; returns the unfinished tail."""
        cutter = _Cutter(self, batch, out)
        for name, entry in items:
            cutter.add(name, entry)
        return cutter.items

    def _build_index(self, children: list[Child], batch: Batch) -> tuple[str, int]:
        if not children:
            batch.put(self.empty_tree, self._leaf_bytes([]))
            return self.empty_tree, 0
        level = 1
        while len(children) > 1:
            parents: list[Child] = []
            group: list[Child] = []
            for c in children:
                group.append(c)
                if len(group) >= self.INDEX_MAX or _index_boundary(c):
                    parents.append(self._write_index(group, level, batch))
                    group = []
            if group:
                parents.append(self._write_index(group, level, batch))
            if len(parents) == len(children):  # every child was a boundary: force progress
                parents = [self._write_index(children[i : i + 2], level, batch) for i in range(0, len(children), 2)]
            children = parents
            level += 1
        return children[0].key, children[0].size

    def leaves(self, key: str | None) -> list[Child]:
        """Descriptors of a directory's leaves, in name order (reads index nodes only)."""
        if key is None or key == self.empty_tree:
            return []
        node = self._node(key)
        if isinstance(node, _Leaf):
            if not node.raw:
                return []
            return [Child(node.raw[0][0], key, len(node.raw), sum(item[3] for item in node.raw))]
        if node.level == 1:
            return list(node.children)  # the index already describes its leaves
        out: list[Child] = []
        for c in node.children:
            out.extend(self.leaves(c.key))
        return out

    def nodes(self, key: str) -> Iterator[str]:
        """Keys of every node object of one directory (for fsck)."""
        yield key
        if key == self.empty_tree:
            return
        node = self._node(key)
        if isinstance(node, _Index):
            for c in node.children:
                yield from self.nodes(c.key)

    # ---- directories -------------------------------------------------------------
    def dir_get(self, key: str | None, name: str) -> Entry | None:
        if key is None or key == self.empty_tree:
            return None
        node = self._node(key)
        while isinstance(node, _Index):
            i = max(0, bisect.bisect_right(node.firsts, name) - 1)
            node = self._node(node.children[i].key)
        return node.by_name.get(name)

    def dir_items(self, key: str | None, start: str = "") -> Iterator[tuple[str, Entry]]:
        """A directory's entries in name order, streamed node by node; `start`: only names
        from it on, found through the index (a page deep in a huge directory reads only
        the nodes on its way)."""
        if key is None or key == self.empty_tree:
            return
        node = self._node(key)
        if isinstance(node, _Leaf):
            if start:
                i = bisect.bisect_left(node.items, start, key=lambda item: item[0])
                yield from node.items[i:]
            else:
                yield from node.items
        else:
            first = max(0, bisect.bisect_right(node.firsts, start) - 1) if start else 0
            for c in node.children[first:]:
                yield from self.dir_items(c.key, start)

    def dir_stored(self, key: str | None, start: str = "") -> Iterator[tuple[str, list[Any]]]:
        """`dir_items` as stored: (name, `[name, *entry.to_list()]`), no entry made. Equal
        stored forms are equal entries; `stored_entry` makes one of those that differ."""
        if key is None or key == self.empty_tree:
            return
        node = self._node(key)
        if isinstance(node, _Leaf):
            i = bisect.bisect_left(node.raw, start, key=lambda item: item[0]) if start else 0
            for item in node.raw[i:]:
                yield item[0], item
        else:
            first = max(0, bisect.bisect_right(node.firsts, start) - 1) if start else 0
            for c in node.children[first:]:
                yield from self.dir_stored(c.key, start)

    @staticmethod
    def stored_entry(item: list[Any] | None, key: str = "") -> Entry | None:
        """The entry of a stored form `dir_stored` gave (None for None)."""
        return None if item is None else _entry(key, item)

    def load_tree(self, key: str | None) -> dict[str, Entry]:
        """A whole directory as a dict: for small directories and tests."""
        return dict(self.dir_items(key))

    def write_tree(self, entries: dict[str, Entry], batch: Batch) -> str:
        return self._build(entries, batch)[0]

    def _build(self, entries: dict[str, Entry], batch: Batch) -> tuple[str, int]:
        cutter = _Cutter(self, batch)
        for name, entry in sorted(entries.items()):
            cutter.add(name, entry)
        return cutter.finish()

    def dir_update(self, key: str | None, changes: dict[str, Entry | None], batch: Batch) -> tuple[str, int]:
        """Apply name -> entry (None: remove) to one directory; (new key, total size).

        Only the leaves holding changed names are re-cut, continuing into the next leaf
        until a cut lands where an old leaf ended; every other leaf is reused as is."""
        old = self.leaves(key)
        if not old:
            return self._build({n: e for n, e in changes.items() if e is not None}, batch)
        firsts = [c.first for c in old]
        per_leaf: dict[int, dict[str, Entry | None]] = {}
        for name, entry in changes.items():
            per_leaf.setdefault(max(0, bisect.bisect_right(firsts, name) - 1), {})[name] = entry
        new: list[Child] = []
        i = 0
        while i < len(old):
            if i not in per_leaf:
                new.append(old[i])
                i += 1
                continue
            tail: list[tuple[str, Entry]] = []
            while i < len(old):
                merged = dict(self.dir_items(old[i].key))
                for name, entry in per_leaf.get(i, {}).items():
                    if entry is None:
                        merged.pop(name, None)
                    else:
                        merged[name] = entry
                tail = self._cut(iter([*tail, *sorted(merged.items())]), batch, new)
                i += 1
                if not tail and i not in per_leaf:
                    break  # realigned with the old cuts: the rest is unchanged
            if tail:
                new.append(self._write_leaf(tail, batch))
        return self._build_index(new, batch)

    def merge(self, a: str | None, b: str, batch: Batch) -> tuple[str, int]:
        """Directory `b` laid over directory `a`: (key, total size). A name in both is
        `b`'s, except that two directories merge. Streamed: it holds a leaf per level, not
        the directories, so merging two of a million entries costs no more memory than two
        of ten; a name only in one side keeps its subtree as it is, unread."""
        if a is None or a == self.empty_tree or a == b:
            return b, sum(c.size for c in self.leaves(b))
        cutter = _Cutter(self, batch)
        for name, ea, eb in zip_sorted(self.dir_items(a), self.dir_items(b)):
            if eb is None:
                assert ea is not None
                cutter.add(name, ea)
            elif ea is not None and ea.is_dir and eb.is_dir:
                key, size = self.merge(ea.hash, eb.hash, batch)  # one frame a level: 256 levels fit
                cutter.add(name, Entry("dir", key, size))
            else:
                cutter.add(name, eb)
        return cutter.finish()

    def merge_many(self, keys: list[str], batch: Batch) -> tuple[str, int]:
        """Directories merged in order, a later one winning a name, streamed a leaf of each
        at a time (the runs of an archive that arrived out of order). A name that is a file
        in one and a directory in another raises PathConflict: the archive held both."""
        cutter = _Cutter(self, batch)
        merged = heapq.merge(*(self._tagged(i, k) for i, k in enumerate(keys)))
        for name, items in groupby(merged, key=itemgetter(0)):
            cutter.add(name, self._merged_entry(name, [entry for _, _, entry in items], batch))
        return cutter.finish()

    def _tagged(self, i: int, key: str) -> Iterator[tuple[str, int, Entry]]:
        for name, entry in self.dir_items(key):
            yield name, i, entry

    def _merged_entry(self, name: str, group: list[Entry], batch: Batch) -> Entry:
        kinds = {e.is_dir for e in group}
        if len(kinds) > 1:
            raise PathConflict(f"{name[:200]!r} is both a file and a directory in the upload")
        if len(group) == 1 or not group[0].is_dir:
            return group[-1]
        key, size = self.merge_many([e.hash for e in group], batch)  # two frames a level
        return Entry("dir", key, size)

    def graft(self, root: str | None, prefix: str, sub: Entry, batch: Batch) -> str:
        """A new root with directory `sub` merged into the directory at `prefix` (made if
        absent; a file there is replaced): how an uploaded archive lands in a commit. The
        cost follows the names the two share, not the files `sub` holds."""
        cur = self.lookup(root, prefix)
        base = cur.hash if cur is not None and cur.is_dir else None
        key, size = self.merge(base, sub.hash, batch)
        if prefix == "":
            return key
        return self.apply(root, {prefix: None if key == self.empty_tree else Entry("dir", key, size)}, batch)

    # ---- paths -------------------------------------------------------------------
    def lookup(self, root: str | None, path: str) -> Entry | None:
        """The entry at `path` ("" is the root directory itself)."""
        if path == "":
            return Entry("dir", root or self.empty_tree, 0)
        key = root
        parts = path.split("/")
        for i, part in enumerate(parts):
            entry = self.dir_get(key, part)
            if entry is None:
                return None
            if i == len(parts) - 1:
                return entry
            if not entry.is_dir:
                return None
            key = entry.hash
        return None

    def shadows(self, root: str | None, path: str) -> bool:
        """Is there anything at `path`, or a file on the way to it?"""
        key = root
        for part in path.split("/"):
            entry = self.dir_get(key, part)
            if entry is None:
                return False
            if not entry.is_dir:
                return True
            key = entry.hash
        return True

    def apply(self, root: str | None, changes: dict[str, Entry | None], batch: Batch) -> str:
        """A new root with `changes` (path -> new file entry, or None to delete) applied.

        Iterative, deepest directories first, so no depth of tree can exhaust the stack.
        A file put wins over changes below the same name; a deletion of a name with
        changes below it starts that directory afresh; directories exist only through
        their files, so one left empty disappears."""
        direct: dict[str, dict[str, Entry | None]] = {"": {}}  # directory -> name -> change
        subdirs: dict[str, set[str]] = {"": set()}  # directory -> names of changed subdirectories
        for path, entry in changes.items():
            parent, _, name = path.rpartition("/")
            d = ""
            for part in parent.split("/") if parent else ():
                child = join(d, part)
                if child not in direct:
                    direct[child], subdirs[child] = {}, set()
                    subdirs[d].add(part)
                d = child
            direct[d][name] = entry
        # Top down: each changed directory's current tree (None: new or started afresh);
        # a directory under a file put is skipped, as the put replaces it whole.
        base: dict[str, str | None] = {"": root}
        order = sorted(direct, key=lambda d: d.count("/") + (d != ""))
        for d in order[1:]:
            parent, _, name = d.rpartition("/")
            if parent not in base:
                continue
            if name in direct[parent]:
                if direct[parent][name] is None:
                    base[d] = None
                continue
            cur = self.dir_get(base[parent], name)
            base[d] = cur.hash if cur is not None and cur.is_dir else None
        # Bottom up: each directory rewritten with its own changes and its children's results.
        done: dict[str, tuple[str, int]] = {}
        for d in reversed(order):
            if d not in base:
                continue
            here: dict[str, Entry | None] = dict(direct[d])
            for name in subdirs[d]:
                sub = done.get(join(d, name))
                if sub is None:
                    continue  # replaced by a file put
                key, size = sub
                here[name] = None if key == self.empty_tree else Entry("dir", key, size)
            done[d] = self.dir_update(base[d], here, batch)
        return done[""][0]

    def walk(self, root: str | None, prefix: str = "") -> Iterator[tuple[str, Entry]]:
        """Every file below `root`, depth first in path order."""
        for name, entry in self.dir_items(root):
            path = join(prefix, name)
            if entry.is_dir:
                yield from self.walk(entry.hash, path)
            else:
                yield path, entry

    def diff(self, a: str | None, b: str | None, prefix: str = "") -> Iterator[tuple[str, Entry | None, Entry | None]]:
        """Changed files between two trees, in path order; equal subtrees are skipped."""
        if (a or self.empty_tree) == (b or self.empty_tree):
            return
        for name, ra, rb in zip_sorted(self.dir_stored(a), self.dir_stored(b)):
            if ra == rb:  # stored alike: the same entry (most names of a big directory)
                continue
            ea, eb = self.stored_entry(ra, a or ""), self.stored_entry(rb, b or "")
            path = join(prefix, name)
            if ea == eb:
                continue
            if ea is not None and eb is not None and ea.is_dir and eb.is_dir:
                yield from self.diff(ea.hash, eb.hash, path)
                continue
            if ea is not None and ea.is_dir:
                for p, e in self.walk(ea.hash, path):
                    yield p, e, None
                ea = None
            if eb is not None and eb.is_dir:
                for p, e in self.walk(eb.hash, path):
                    yield p, None, e
                eb = None
            if ea != eb:
                yield path, ea, eb

    # ---- what a change adds, as objects (sync) -------------------------------------
    def delta(self, new: str, old: str | None) -> Iterator[tuple[str, str]]:
        """(kind, key) of every object under directory `new` that `old` does not already
        reach at the same place, children before the nodes that name them.

        Nodes shared with `old` are skipped whole; inside a changed node only entries that
        differ from `old`'s are followed. So the cost is that of the change, not of the tree."""
        if new == old:
            return
        old_nodes = self._node_keys(old) if old is not None else set()
        fresh: list[str] = []  # new nodes of this directory, parents before children
        leaves: list[str] = []
        stack = [new]
        while stack:
            key = stack.pop()
            if key in old_nodes:
                continue
            fresh.append(key)
            index = self.index_children(key)
            if index is not None:
                stack.extend(index[1])
            else:
                leaves.append(key)
        for leaf in leaves:
            for name, entry in self.dir_items(leaf):
                prev = self.dir_get(old, name)
                if prev == entry:
                    continue
                if entry.is_dir:
                    yield from self.delta(entry.hash, prev.hash if prev is not None and prev.is_dir else None)
                else:
                    yield from self._file_delta(entry, prev if prev is not None and not prev.is_dir else None)
        for key in reversed(fresh):
            yield TREE, key

    def _node_keys(self, key: str) -> set[str]:
        """Keys of every node of one directory, reading index nodes only (not its leaves)."""
        out = {key}
        stack = [key]
        while stack:
            index = self.index_children(stack.pop())
            if index is not None:
                level, children = index
                out.update(children)
                if level > 1:
                    stack.extend(children)
        return out

    def _file_delta(self, entry: Entry, prev: Entry | None) -> Iterator[tuple[str, str]]:
        if entry.data is not None:
            return  # inline: its bytes are in the tree node
        old = {k for k, _ in self.chunks(prev)} if prev is not None else set()
        for key, _ in self.chunks(entry):
            if key not in old:
                old.add(key)
                yield BLOB, key
        if entry.manifest is not None and (prev is None or prev.manifest != entry.manifest):
            yield MANIFEST, entry.manifest

    # ---- files -------------------------------------------------------------------
    def chunks(self, entry: Entry) -> tuple[tuple[str, int], ...]:
        """Chunk keys and sizes of a file stored as objects (none for an inline file)."""
        if entry.manifest is None:
            return entry.chunks or ()
        raw = _decode_json(entry.manifest, self.objects.get(entry.manifest))
        try:
            return tuple((c[0], c[1]) for c in raw["chunks"])
        except (KeyError, IndexError, TypeError):
            raise CorruptObject(f"object {entry.manifest} is not a manifest") from None

    def file_entry(self, content_hash: str, size: int, chunks: list[tuple[str, int]], batch: Batch) -> Entry:
        if len(chunks) <= INLINE_CHUNKS:
            return Entry("file", content_hash, size, chunks=tuple(chunks))
        data = orjson.dumps({"chunks": [list(c) for c in chunks]})
        key = hash_bytes(data)
        batch.put(key, data)
        return Entry("file", content_hash, size, manifest=key)

    def read(self, entry: Entry) -> Iterator[bytes]:
        """The file's bytes, chunk by chunk, each verified against its hash."""
        if entry.data is not None:
            yield entry.data
        for key, _ in self.chunks(entry):
            yield self.objects.get(key)

    # ---- commits -----------------------------------------------------------------
    def write_commit(
        self, tree: str, parents: list[str], branch: str, time: float, message: str, batch: Batch
    ) -> Commit:
        body = {"tree": tree, "parents": parents, "branch": branch, "time": time, "message": message}
        data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        key = hash_bytes(data)
        batch.put(key, data)
        return Commit(key, tree, tuple(parents), branch, time, message)

    def load_commit(self, key: str) -> Commit:
        try:
            raw = _decode_json(key, self.objects.get(key))
        except MissingObject:
            raise CommitNotFound(f"commit {key} not found") from None
        try:
            return Commit(key, raw["tree"], tuple(raw["parents"]), raw["branch"], raw["time"], raw["message"])
        except (KeyError, TypeError):
            raise CorruptObject(f"object {key} is not a commit") from None


class _Cutter:
    """A directory written as its entries arrive in name order: each leaf as it is cut
    (content-defined, at most LEAF_MAX entries), the index over them at the end. The one
    place that decides where leaves end, so every writer of trees cuts alike."""

    __slots__ = ("trees", "batch", "leaves", "items")

    def __init__(self, trees: TreeStore, batch: Batch, leaves: list[Child] | None = None) -> None:
        self.trees = trees
        self.batch = batch
        self.leaves: list[Child] = [] if leaves is None else leaves  # the finished ones, in order
        self.items: list[tuple[str, Entry]] = []  # the leaf being filled

    def add(self, name: str, entry: Entry) -> None:
        self.items.append((name, entry))
        if len(self.items) >= self.trees.LEAF_MAX or _leaf_boundary(name):
            self.leaves.append(self.trees._write_leaf(self.items, self.batch))
            self.items = []

    def finish(self) -> tuple[str, int]:
        if self.items:
            self.leaves.append(self.trees._write_leaf(self.items, self.batch))
        return self.trees._build_index(self.leaves, self.batch)


class _OpenDir(_Cutter):
    """A directory `TreeBuilder` is still filling: its name, and the last name added."""

    __slots__ = ("name", "last")

    def __init__(self, name: str, trees: TreeStore, batch: Batch) -> None:
        super().__init__(trees, batch)
        self.name = name
        self.last: str | None = None


class TreeBuilder:
    """Builds a tree from files given in tree order (`tree_order` of their paths), writing
    each leaf as soon as it is cut: memory holds one leaf per open directory, whatever the
    number of files. The result is the tree `write_tree` would make of the same files.

    A name given twice, or out of order, raises ValueError; a file that is also a
    directory (`a` and `a/b`) raises PathConflict."""

    def __init__(self, trees: TreeStore, batch: Batch) -> None:
        self.trees = trees
        self.batch = batch
        self.open: list[_OpenDir] = [_OpenDir("", trees, batch)]

    def add(self, path: str, entry: Entry) -> None:
        *dirs, name = path.split("/")
        depth = 0
        open_ = self.open
        while depth < len(dirs) and depth + 1 < len(open_) and open_[depth + 1].name == dirs[depth]:
            depth += 1
        while len(open_) > depth + 1:
            self._close()
        for d in dirs[depth:]:
            open_.append(_OpenDir(d, self.trees, self.batch))
        self._put(open_[-1], name, entry, path)

    def _put(self, d: _OpenDir, name: str, entry: Entry, path: str) -> None:
        if d.last is not None and name <= d.last:
            if name == d.last:
                raise PathConflict(f"{path[:200]!r} is both a file and a directory in the upload")
            raise ValueError(f"{path[:200]!r} is out of tree order")
        d.last = name
        d.add(name, entry)

    def _close(self) -> None:
        d = self.open.pop()
        key, size = d.finish()
        parent = "/".join(o.name for o in self.open[1:])
        self._put(self.open[-1], d.name, Entry("dir", key, size), join(parent, d.name))

    def finish(self) -> Entry:
        """The root directory's entry (the empty tree if no file was added)."""
        while len(self.open) > 1:
            self._close()
        key, size = self.open[0].finish()
        return Entry("dir", key, size)


def tree_order(path: str) -> str:
    """A key that sorts paths as a depth-first walk of their tree meets them: "a/b" before
    "a.txt" (the directory "a" sorts before the name "a.txt"). NUL is in no path."""
    return path.replace("/", "\0")
