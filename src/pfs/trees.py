"""Immutable Merkle trees and commits stored in the object store.

A directory is one tree object listing its children; a file entry carries its content
hash, size and chunk list (inline for small files, in a manifest object for big ones).
Changing a path rewrites only the trees on its way to the root, so a commit costs
O(changed paths x depth), and equal subtrees share a hash, so diffs skip them.
"""

from __future__ import annotations

import base64
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import CommitNotFound, CorruptObject, MissingObject
from .objects import Batch, ObjectStore, hash_bytes
from .paths import join

INLINE_CHUNKS = 8  # beyond this a file's chunk list goes to its own manifest object
INLINE_DATA = 2048  # files up to this size live inside their tree entry (like btrfs max_inline)


@dataclass(frozen=True)
class Entry:
    kind: str  # "file" | "dir"
    hash: str  # file: BLAKE3 of the content; dir: key of the tree object
    size: int  # file: bytes; dir: bytes of all files below
    chunks: tuple[tuple[str, int], ...] | None = None
    manifest: str | None = None
    data: bytes | None = None  # small files: the content itself, covered by the tree's hash

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    def to_list(self) -> list[Any]:
        if self.kind == "dir":
            return ["d", self.hash, self.size]
        if self.data is not None:
            return ["i", self.hash, self.size, base64.b64encode(self.data).decode()]
        if self.manifest is not None:
            return ["f", self.hash, self.size, self.manifest]
        return ["f", self.hash, self.size, [list(c) for c in self.chunks or ()]]

    @classmethod
    def from_list(cls, item: list[Any]) -> Entry:
        if item[0] == "d":
            return cls("dir", item[1], item[2])
        if item[0] == "i":
            return cls("file", item[1], item[2], data=base64.b64decode(item[3]))
        if isinstance(item[3], str):
            return cls("file", item[1], item[2], manifest=item[3])
        return cls("file", item[1], item[2], chunks=tuple((c[0], c[1]) for c in item[3]))

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


def _decode_json(key: str, data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise CorruptObject(f"object {key} is not valid metadata") from None


class TreeStore:
    """Reads and writes trees, manifests and commits; caches immutable trees."""

    CACHE_SIZE = 4096

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self._cache: OrderedDict[str, dict[str, Entry]] = OrderedDict()
        self._lock = threading.Lock()
        self.empty_tree = self._encode_tree({})[0]

    # ---- trees -------------------------------------------------------------------
    @staticmethod
    def _encode_tree(entries: dict[str, Entry]) -> tuple[str, bytes]:
        data = orjson.dumps({"entries": [[name, *entries[name].to_list()] for name in sorted(entries)]})
        return hash_bytes(data), data

    def load_tree(self, key: str | None) -> dict[str, Entry]:
        if key is None or key == self.empty_tree:
            return {}
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        raw = _decode_json(key, self.objects.get(key))
        try:
            tree = {item[0]: Entry.from_list(item[1:]) for item in raw["entries"]}
        except (KeyError, IndexError, TypeError):
            raise CorruptObject(f"object {key} is not a tree") from None
        with self._lock:
            self._cache[key] = tree
            if len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return tree

    def write_tree(self, entries: dict[str, Entry], batch: Batch) -> str:
        key, data = self._encode_tree(entries)
        batch.put(key, data)
        return key

    def lookup(self, root: str | None, path: str) -> Entry | None:
        """The entry at `path` ("" is the root directory itself)."""
        if path == "":
            return Entry("dir", root or self.empty_tree, 0)
        tree = self.load_tree(root)
        parts = path.split("/")
        for i, part in enumerate(parts):
            entry = tree.get(part)
            if entry is None:
                return None
            if i == len(parts) - 1:
                return entry
            if not entry.is_dir:
                return None
            tree = self.load_tree(entry.hash)
        return None

    def apply(self, root: str | None, changes: dict[str, Entry | None], batch: Batch) -> str:
        """A new root with `changes` (path -> new file entry, or None to delete) applied."""
        key, _ = self._apply(root, changes, batch)
        return key

    def _apply(self, root: str | None, changes: dict[str, Entry | None], batch: Batch) -> tuple[str, int]:
        entries = dict(self.load_tree(root))
        direct: dict[str, Entry | None] = {}
        nested: dict[str, dict[str, Entry | None]] = {}
        for path, entry in changes.items():
            head, sep, rest = path.partition("/")
            if sep:
                nested.setdefault(head, {})[rest] = entry
            else:
                direct[head] = entry
        for name in set(direct) | set(nested):
            cur = entries.get(name)
            if name in direct:
                new = direct[name]
                if new is not None:  # a file put wins over anything below it
                    entries[name] = new
                    continue
                cur = None
            sub = nested.get(name)
            if sub:
                base = cur.hash if cur is not None and cur.is_dir else None
                sub_key, sub_size = self._apply(base, sub, batch)
                if sub_key == self.empty_tree:
                    entries.pop(name, None)  # directories exist only through their files
                else:
                    entries[name] = Entry("dir", sub_key, sub_size)
            else:
                entries.pop(name, None)
        size = sum(e.size for e in entries.values())
        return self.write_tree(entries, batch), size

    def walk(self, root: str | None, prefix: str = "") -> Iterator[tuple[str, Entry]]:
        """Every file below `root`, depth first in path order."""
        for name, entry in sorted(self.load_tree(root).items()):
            path = join(prefix, name)
            if entry.is_dir:
                yield from self.walk(entry.hash, path)
            else:
                yield path, entry

    def diff(self, a: str | None, b: str | None, prefix: str = "") -> Iterator[tuple[str, Entry | None, Entry | None]]:
        """Changed files between two trees, in path order; equal subtrees are skipped."""
        if (a or self.empty_tree) == (b or self.empty_tree):
            return
        ta, tb = self.load_tree(a), self.load_tree(b)
        for name in sorted(set(ta) | set(tb)):
            ea, eb = ta.get(name), tb.get(name)
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
