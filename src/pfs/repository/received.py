"""What a sync peer sends, held to what a local write could have produced.

A commit from a peer is indexed only once everything it adds to its first parent passes:
tree shape and names, sizes, chunk and node bounds, file hashes, this server's limits.
Only what a commit adds is walked (its parent is indexed, so it was checked or written
here), so the cost is the change's, not the repository's.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import blake3
import orjson

from ..errors import (
    BadObject,
    BadRequest,
    CorruptObject,
    InvalidPath,
    MissingObject,
    PayloadTooLarge,
)
from ..paths import MAX_DEPTH, MAX_PATH, check_branch, check_message, check_meta, clean_path, join
from ..storage.chunking import MAX_CHUNK, MIN_CHUNK
from ..storage.objects import VERIFY_BUDGET, hash_bytes
from ..storage.trees import (
    BLOB,
    COMMIT,
    COMMIT_MAX,
    INLINE_CHUNKS,
    INLINE_DATA,
    MANIFEST_BYTES_PER_CHUNK,
    MANIFEST_MAX,
    NODE_MAX,
    TREE,
    Commit,
    Entry,
)

if TYPE_CHECKING:
    from .repo import Repository


class Received:
    """The checks, over one repository's stores."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    # A sync peer's objects are held to what a local write can produce before any commit
    # naming them is indexed: tree shape and names, sizes, chunk and node bounds, file
    # hashes, server limits. Only what a commit adds to its first parent is walked (the
    # parent is indexed, so it was checked or written here), so the cost is the change's.
    def limit(self, kind: str) -> int:
        """The most plain bytes an object sent as `kind` (a sync letter) may have."""
        if kind == BLOB:
            return MAX_CHUNK
        if kind == TREE:
            return NODE_MAX
        if kind == COMMIT:
            return COMMIT_MAX
        return self._manifest_limit(self.repo.max_file_size)

    @staticmethod
    def _manifest_limit(size: int | None) -> int:
        """Bytes of the manifest of a file of `size` bytes: every chunk but the last has at
        least MIN_CHUNK bytes, so the list cannot be longer than this."""
        if size is None:
            return MANIFEST_MAX
        return min(MANIFEST_MAX, 16 + MANIFEST_BYTES_PER_CHUNK * (size // MIN_CHUNK + 1))

    def check(self, commit: Commit, pending: Mapping[str, Commit], seen: dict[Any, Any]) -> None:
        """Refuse (BadObject naming the object and path) a commit from a sync peer unless
        everything it adds to its first parent is what a local write could have made. Its
        parents must be indexed or checked earlier in the same transfer (`pending`); `seen`
        carries what earlier commits of the transfer had checked (subtrees, entries, files)
        and, as ("blob", key) -> size, the chunks the transfer brought (each checked against
        its key on arrival): a file of one such chunk is then the chunk, and needs no read.

        The commit's own fields are checked when it arrives (`check_received_commit`)."""
        for p in commit.parents:
            if p not in pending and not self.repo.has_commit(p):
                raise BadObject(f"commit {commit.id}: its parent {p} is not here; send parents first")
        parents = [pending[p] if p in pending else self.repo.get_commit(p) for p in commit.parents]
        base = parents[0].tree if parents else None
        try:
            self._check_received_tree(commit.tree, base, [p.tree for p in parents[1:]], seen)
        except MissingObject as exc:
            seen.clear()  # it may hold subtrees whose check did not finish
            raise BadObject(f"commit {commit.id} is incomplete: {exc.message}; send its objects before it") from None
        except BadObject as exc:
            seen.clear()
            raise BadObject(f"commit {commit.id}: {exc.message}") from None
        except BaseException:
            seen.clear()
            raise

    def check_commit(self, key: str, raw: Any) -> Commit:
        """A commit object from a sync peer (parsed JSON), with the bounds of a local commit:
        exactly its five fields, a valid branch name, a message within paths.MAX_MESSAGE, a
        time a date can show (year 1970 to 9999), distinct well-formed parent ids."""
        if not isinstance(raw, dict) or set(raw) != {"tree", "parents", "branch", "time", "message"}:
            raise BadObject(f"object {key} was sent as a commit but is not one")
        tree, parents, branch, when, message = (raw[k] for k in ("tree", "parents", "branch", "time", "message"))
        what = f"commit {key}"
        if not self._is_key(tree):
            raise BadObject(f"{what}: its tree is not an object id")
        if (
            not isinstance(parents, list)
            or not all(self._is_key(p) for p in parents)
            or len(set(parents)) != len(parents)
        ):
            raise BadObject(f"{what}: its parents are not distinct commit ids")
        if not isinstance(when, int | float) or isinstance(when, bool) or not 0 <= when <= Received.MAX_COMMIT_TIME:
            raise BadObject(f"{what}: its time {str(when)[:40]} is not between 1970 and 9999")
        if not isinstance(branch, str) or not isinstance(message, str):
            raise BadObject(f"{what}: its branch and message must be strings")
        try:
            check_branch(branch)
            check_message(message)
        except BadRequest as exc:
            raise BadObject(f"{what}: {exc.message}") from None
        return Commit(key, tree, tuple(parents), branch, float(when), message)

    def verify_file(self, entry: Entry, chunks: tuple[tuple[str, int], ...] | None = None) -> None:
        """Check a stored file against its entry: each chunk there and of its stated size,
        and all of them, in order, hashing to the entry's hash. One chunk in memory at a
        time, never more than its stated size decompressed; a run of one repeated chunk (a
        file of zeros) is read once. CorruptObject or MissingObject otherwise."""
        if entry.data is not None:
            if len(entry.data) != entry.size or hash_bytes(entry.data) != entry.hash:
                raise CorruptObject(f"inline content does not match its size or hash {entry.hash}")
            return
        hasher = blake3.blake3()
        last_key, data = "", b""
        for key, size in chunks if chunks is not None else self.repo.trees.chunks(entry):
            if key != last_key or len(data) != size:
                try:
                    data = self.repo.objects.get_bounded(key, size)
                except PayloadTooLarge:
                    raise CorruptObject(f"chunk {key} is larger than the {size} bytes stated") from None
                last_key = key
            if len(data) != size:
                raise CorruptObject(f"chunk {key} is {len(data)} bytes, not the {size} stated")
            hasher.update(data)
        if hasher.hexdigest() != entry.hash:
            raise CorruptObject(f"content does not match its hash {entry.hash}")

    def _check_received_tree(self, root: str, base: str | None, others: list[str], seen: dict[Any, Any]) -> None:
        """Walk directory by directory (a stack, not recursion) what `root` adds to `base`."""
        # (directory's tree, the first parent's tree at the same path, path, depth, size its entry claims)
        todo: list[tuple[str, str | None, str, int, int | None]] = [(root, base, "", 0, None)]
        while todo:
            key, old, path, depth, claimed = todo.pop()
            if key == old and claimed is None:
                continue  # the root tree of the first parent, as it is
            where = f"directory {path!r}" if path else "the root directory"
            length = len(path.encode())
            known = seen.get(("tree", key))
            if known is not None and depth <= known[0] and length <= known[1]:  # checked as deep or deeper
                size = known[2]
            elif key == self.repo.trees.empty_tree:
                if path:
                    raise BadObject(f"{where} is empty (a local write never leaves an empty directory)")
                size = 0
            else:
                size, items = self._check_received_dir(key, old, where, seen)
                for name, entry in items:
                    child = join(path, name)
                    if depth + 1 > MAX_DEPTH or len(child.encode()) > MAX_PATH:
                        raise BadObject(
                            f"path {child[:200]!r} is deeper than {MAX_DEPTH} levels or longer than {MAX_PATH} bytes"
                        )
                    prev = self.repo.trees.dir_get(old, name)
                    if prev == entry:
                        continue
                    if entry.is_dir:
                        prev_dir = prev.hash if prev is not None and prev.is_dir else None
                        todo.append((entry.hash, prev_dir, child, depth + 1, entry.size))
                    else:
                        self._check_received_file(entry, child, others, seen)
                seen[("tree", key)] = (depth, length, size)
            if claimed is not None and claimed != size:
                raise BadObject(f"{where} (tree {key}): its entry says {claimed} bytes, its files hold {size}")

    def _check_received_dir(
        self, key: str, old: str | None, where: str, seen: dict[Any, Any]
    ) -> tuple[int, list[tuple[str, Entry]]]:
        """The nodes of one directory that `old` (the same directory in the first parent)
        lacks: each within NODE_MAX, LEAF_MAX and INDEX_MAX, names valid and in order across
        nodes, index records matching the nodes they describe. Returns the directory's total
        size and the entries of its new leaves (to check further)."""
        layout, following = self._old_layout(old)
        items: list[tuple[str, Entry]] = []

        def visit(k: str, level_above: int) -> tuple[int, str, str | None, int, int]:
            """(level, first name, last name or None if not read, entries, size) of a node."""
            if k in layout:
                level, first, n, size = layout[k]
                return level, first, None, n, size
            raw = self._received_node(k, where)
            if isinstance(raw, dict) and set(raw) == {"entries"} and isinstance(raw["entries"], list):
                entries = raw["entries"]
                if not 1 <= len(entries) <= self.repo.trees.LEAF_MAX:
                    raise BadObject(
                        f"tree node {k} of {where} has {len(entries)} entries, not 1 to {self.repo.trees.LEAF_MAX}"
                    )
                last: str | None = None
                total = 0
                for item in entries:
                    name, entry = self._received_entry(k, item, seen)
                    if last is not None and name <= last:
                        raise BadObject(f"tree node {k} of {where}: names are not in strictly increasing order")
                    last = name
                    total += entry.size
                    items.append((name, entry))
                return 0, entries[0][0], last, len(entries), total
            if isinstance(raw, dict) and set(raw) == {"index", "level"}:
                level, children = raw["level"], raw["index"]
                bad = BadObject(f"tree node {k} of {where} is not a valid index node")
                if not self._is_count(level) or not 1 <= level < min(level_above, self.MAX_INDEX_LEVEL + 1):
                    raise bad
                if not isinstance(children, list) or not 1 <= len(children) <= self.repo.trees.INDEX_MAX:
                    raise bad
                n_all = size_all = 0
                prev_key, prev_last = "", None
                for c in children:
                    if not (isinstance(c, list) and len(c) == 4 and isinstance(c[0], str) and self._is_key(c[1])):
                        raise bad
                    if not (self._is_count(c[2]) and self._is_count(c[3])):
                        raise bad
                    sub_level, first, sub_last, n, size = visit(c[1], level)
                    if (sub_level, first, n, size) != (level - 1, c[0], c[2], c[3]):
                        raise BadObject(f"tree node {k} of {where} describes its child {c[1]} wrongly")
                    if prev_key:  # every name of the previous child sorts before this child's first
                        if prev_last is None and following.get(prev_key) != c[1]:
                            prev_last = self._last_name(prev_key)
                        if prev_last is not None and prev_last >= first:
                            raise BadObject(f"tree node {k} of {where}: names are not in order across its children")
                    prev_key, prev_last = c[1], sub_last
                    n_all += n
                    size_all += size
                return level, children[0][0], prev_last, n_all, size_all
            raise BadObject(f"object {k} of {where} is not a tree node")

        total = visit(key, self.MAX_INDEX_LEVEL + 1)[4]
        return total, items

    def _old_layout(self, old: str | None) -> tuple[dict[str, tuple[int, str, int, int]], dict[str, str]]:
        """Every node of a checked directory: key -> (level, first name, entries, size), and
        key -> the next node of the same level in name order. Reads index nodes (and a lone
        leaf), as `TreeStore.delta` does, not the leaves below an index."""
        layout: dict[str, tuple[int, str, int, int]] = {}
        by_level: dict[int, list[str]] = {}
        if old is None:
            return layout, {}
        stack = [old]
        while stack:
            k = stack.pop()
            node = self.repo.trees.index_entries(k)
            if node is None:  # a directory that is one leaf
                entries = list(self.repo.trees.dir_items(k))
                first = entries[0][0] if entries else ""
                layout[k] = (0, first, len(entries), sum(e.size for _, e in entries))
                by_level.setdefault(0, []).append(k)
                continue
            level, children = node
            if k == old:
                layout[k] = (level, children[0].first, sum(c.n for c in children), sum(c.size for c in children))
                by_level.setdefault(level, []).append(k)
            for c in children:
                layout[c.key] = (level - 1, c.first, c.n, c.size)
                by_level.setdefault(level - 1, []).append(c.key)
            if level > 1:
                stack.extend(reversed([c.key for c in children]))
        following = {a: b for keys in by_level.values() for a, b in zip(keys, keys[1:], strict=False)}
        return layout, following

    def _last_name(self, key: str) -> str:
        """The last name under a node of a checked directory (its rightmost leaf's last)."""
        node = self.repo.trees.index_entries(key)
        while node is not None:
            key = node[1][-1].key
            node = self.repo.trees.index_entries(key)
        names = [name for name, _ in self.repo.trees.dir_items(key)]
        return names[-1] if names else ""

    def _received_node(self, key: str, where: str) -> Any:
        """A tree node's JSON, read bounded: a node bigger than a local write can make
        (sent as another kind, say) is refused without being decompressed."""
        try:
            data = self.repo.objects.get_bounded(key, NODE_MAX)
        except PayloadTooLarge:
            raise BadObject(f"tree node {key} of {where} is larger than {NODE_MAX} bytes") from None
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            raise BadObject(f"object {key} of {where} is not a tree node") from None

    def _received_entry(self, node: str, item: Any, seen: dict[Any, Any]) -> tuple[str, Entry]:
        """One entry of a received leaf, checked like a local write: its name is one clean
        path segment, its fields have their types, a file is within --max-file-size, inline
        bytes match their size and hash, a chunk list its size and the chunker's bounds.
        An entry met before in the transfer (most of a leaf that one file changed) is
        recognised by its exact JSON and not checked again."""
        memo = ("entry", hash_bytes(orjson.dumps(item)))
        if memo in seen:  # byte for byte an entry that passed: read it as a reader would
            return item[0], Entry.from_list(item[1:])
        name, entry = self._check_received_entry(node, item)
        seen[memo] = True
        return name, entry

    def _check_received_entry(self, node: str, item: Any) -> tuple[str, Entry]:
        if not isinstance(item, list) or len(item) not in (4, 5, 6) or not isinstance(item[0], str):
            raise BadObject(f"tree node {node}: an entry is malformed")
        name, tag, h, size = item[0], item[1], item[2], item[3]
        what = f"tree node {node}: entry {name[:100]!r}"
        try:
            if "/" in name or clean_path(name) != name:
                raise InvalidPath("a name is one path segment")
        except InvalidPath as exc:
            raise BadObject(f"{what} is not a valid name: {exc.message}") from None
        if not self._is_key(h) or not self._is_count(size):
            raise BadObject(f"{what} has a malformed hash or size")
        if tag == "d" and len(item) == 4:
            return name, Entry("dir", h, size)
        if tag not in ("i", "f") or len(item) not in (5, 6):
            raise BadObject(f"{what} is neither a file nor a directory")
        meta: tuple[tuple[str, str], ...] = ()
        if len(item) == 6:
            try:
                meta = check_meta(item[5])
            except BadRequest as exc:
                raise BadObject(f"{what} has malformed metadata: {exc.message}") from None
            if not meta or not isinstance(item[5], dict) or list(item[5]) != [k for k, _ in meta]:
                raise BadObject(f"{what} has metadata that is empty or not sorted")
        if self.repo.max_file_size is not None and size > self.repo.max_file_size:
            raise BadObject(f"{what} is {size} bytes, more than this server's limit of {self.repo.max_file_size}")
        body = item[4]
        if tag == "i":
            data = binascii.a2b_base64(body) if isinstance(body, str) and self._BASE64.fullmatch(body) else None
            if data is None or len(data) > INLINE_DATA or len(data) != size or hash_bytes(data) != h:
                raise BadObject(
                    f"{what}: its inline content does not match its size and hash (or is over {INLINE_DATA} bytes)"
                )
            return name, Entry("file", h, size, data=data, meta=meta)
        if self._is_key(body):
            return name, Entry("file", h, size, manifest=body, meta=meta)
        if not isinstance(body, list) or not 1 <= len(body) <= INLINE_CHUNKS:
            raise BadObject(f"{what} has no chunk list of 1 to {INLINE_CHUNKS} chunks nor a manifest")
        return name, Entry("file", h, size, chunks=self._chunk_list(what, body, size), meta=meta)

    def _check_received_file(self, entry: Entry, path: str, others: list[str], seen: dict[Any, Any]) -> None:
        """A new chunked file: its manifest (bounded by the file's size), then its content
        hashed chunk by chunk against its hash. Skipped for a file equal to the one at the
        same path in another parent (a merge brings it, checked)."""
        if entry.data is not None or entry in seen:
            return
        if any(self.repo.trees.lookup(t, path) == entry for t in others):
            return
        if entry.chunks is not None and len(entry.chunks) == 1:
            key, size = entry.chunks[0]
            if key == entry.hash and seen.get(("blob", key)) == size == entry.size:
                return  # the file is that one chunk, whose bytes hashed to its key on arrival
        what = f"file {path[:200]!r}"
        limit = self._manifest_limit(entry.size) if entry.manifest is not None else 0
        with VERIFY_BUDGET.hold(limit):
            chunks = entry.chunks
            if entry.manifest is not None:
                try:
                    raw = orjson.loads(self.repo.objects.get_bounded(entry.manifest, limit))
                except PayloadTooLarge:
                    raise BadObject(
                        f"{what}: manifest {entry.manifest} is larger than a file of {entry.size} bytes needs"
                    ) from None
                except orjson.JSONDecodeError:
                    raw = None
                if not (isinstance(raw, dict) and set(raw) == {"chunks"} and isinstance(raw["chunks"], list)):
                    raise BadObject(f"{what}: object {entry.manifest} is not a manifest")
                if len(raw["chunks"]) <= INLINE_CHUNKS:
                    raise BadObject(
                        f"{what}: manifest {entry.manifest} lists {INLINE_CHUNKS} chunks or fewer (they go inline)"
                    )
                chunks = self._chunk_list(f"{what}: manifest {entry.manifest}", raw["chunks"], entry.size)
            try:
                self.verify_file(entry, chunks)
            except CorruptObject as exc:
                raise BadObject(f"{what}: {exc.message}") from None
        seen[entry] = True

    MAX_COMMIT_TIME = 253402300799  # 9999-12-31T23:59:59Z: the last time a date can show
    MAX_INDEX_LEVEL = 64  # index levels of one directory: each level has at least 2x fewer nodes
    _HEX64 = re.compile(r"[0-9a-f]{64}")
    _BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")

    @staticmethod
    def _is_key(value: Any) -> bool:
        return isinstance(value, str) and Received._HEX64.fullmatch(value) is not None

    @staticmethod
    def _is_count(value: Any) -> bool:
        """A size or count as a local write stores it: a non-negative JSON integer below 2**63."""
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63

    @staticmethod
    def _chunk_list(what: str, items: list[Any], size: int) -> tuple[tuple[str, int], ...]:
        """A received chunk list: well-formed, each chunk within the chunker's bounds (every
        one but the last at least MIN_CHUNK, none over MAX_CHUNK), adding up to the file's size."""
        out: list[tuple[str, int]] = []
        for i, c in enumerate(items):
            if not (isinstance(c, list) and len(c) == 2 and Received._is_key(c[0]) and Received._is_count(c[1])):
                raise BadObject(f"{what}: chunk {i} is malformed")
            least = 1 if i == len(items) - 1 else MIN_CHUNK
            if not least <= c[1] <= MAX_CHUNK:
                raise BadObject(f"{what}: chunk {i} ({c[0]}) of {c[1]} bytes is outside {least} to {MAX_CHUNK}")
            out.append((c[0], c[1]))
        total = sum(n for _, n in out)
        if total != size:
            raise BadObject(f"{what}: its chunks hold {total} bytes, not the {size} stated")
        return tuple(out)
