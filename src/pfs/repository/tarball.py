"""Tar archives as uploads: every regular file of a stream stored, and all of them made
into one tree, staged whole (a graft) rather than a row per file.

Nothing is staged here, so a bad archive changes nothing. Links and devices are refused
(they could point outside the tree), and so are sparse members (a few bytes on the wire
that expand to any size); a member's declared size is held to the file-size limit before
any of it is read.

Memory does not grow with the number of files. Members that arrive in tree order (as
`pfs put-dir`, GNU tar over a sorted list, or any walk of a directory sends them) go
straight into a `TreeBuilder`, which writes each leaf as it fills. Once one arrives out of
order, the rest are gathered in runs of at most RUN_BYTES, each sorted and built into a
tree of its own; the trees are then merged, a leaf per tree at a time.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import BadRequest, PayloadTooLarge
from ..paths import clean_path
from ..storage.chunking import inline_file
from ..storage.objects import Batch
from ..storage.trees import INLINE_DATA, Entry, TreeBuilder, tree_order
from .tarstream import TarError, members

if TYPE_CHECKING:
    from .repo import Repository

PIECE = 1 << 20  # bytes handed to the chunker at a time
RUN_BYTES = 8 << 20  # entries of an out-of-order archive held before they are built into a tree
MERGE_FAN_IN = 32  # trees merged at once (a leaf of each is in memory)
ENTRY_OVERHEAD = 200  # bytes a held entry costs beyond its name and inline data


@dataclass(frozen=True)
class Archive:
    """An archive stored: its files as one directory (relative to the prefix)."""

    tree: Entry
    files: int
    size: int


def unpack_tar(repo: Repository, raw: io.RawIOBase, prefix: str, check: Callable[[str], None]) -> Archive:
    """Store every regular file of a tar stream; their tree, as if placed under `prefix`
    (the paths are checked as full paths: the prefix counts toward length and depth, and
    `check` may refuse one before its bytes are read)."""
    with repo.objects.batch() as batch:
        sorter = _Sorter(repo, batch)
        try:
            for member, read in members(io.BufferedReader(raw, PIECE).read):
                name, size = member.name, member.size
                if member.kind == "dir":
                    continue
                if member.kind != "file":
                    raise BadRequest(f"archive member {name[:200]!r} is not a regular file")
                if member.sparse:  # holes cost no bytes to send and a full file's CPU to expand
                    raise BadRequest(f"archive member {name[:200]!r} is a sparse file: not accepted")
                limit = repo.max_file_size
                if limit is not None and size > limit:
                    raise PayloadTooLarge(f"archive member {name[:200]!r} is larger than the limit of {limit} bytes")
                name = name[2:] if name.startswith("./") else name
                path = clean_path(f"{prefix}/{name}" if prefix else name)
                check(path)
                rel = path[len(prefix) + 1 :] if prefix else path
                if size <= INLINE_DATA:  # the usual member: its entry holds it, as a writer would make it
                    data = read(size)
                    while len(data) < size and (more := read(size - len(data))):
                        data += more  # a piece may end at the reader's buffer
                    sorter.add(rel, inline_file(data))
                    continue
                writer = repo.writer(batch)
                while piece := read(PIECE):
                    writer.write(piece)
                sorter.add(rel, writer.finish())
        except TarError as exc:
            raise BadRequest(f"not a valid tar archive: {exc}") from None
        return sorter.finish()


class _Sorter:
    """Files in any order in, one tree out, in bounded memory (see the module's doc)."""

    def __init__(self, repo: Repository, batch: Batch) -> None:
        self.trees = repo.trees
        self.batch = batch
        self.builder: TreeBuilder | None = TreeBuilder(self.trees, batch)  # None: out of order
        self.last = ""
        self.runs: list[Entry] = []
        self.held: list[tuple[str, int, str, Entry]] = []  # (order key, arrival, path, entry)
        self.held_bytes = 0
        self.files = 0
        self.size = 0

    def add(self, path: str, entry: Entry) -> None:
        self.files += 1
        self.size += entry.size
        key = tree_order(path)
        if self.builder is not None:
            if key > self.last:
                self.last = key
                self.builder.add(path, entry)
                return
            self.runs.append(self.builder.finish())
            self.builder = None
        self.held.append((key, self.files, path, entry))
        self.held_bytes += len(path) + len(entry.data or b"") + ENTRY_OVERHEAD
        if self.held_bytes >= RUN_BYTES:
            self._run()

    def _run(self) -> None:
        """Build the held entries into a tree of their own (the last of a name wins)."""
        self.held.sort(key=lambda h: (h[0], h[1]))
        builder = TreeBuilder(self.trees, self.batch)
        for i, (key, _, path, entry) in enumerate(self.held):
            if i + 1 < len(self.held) and self.held[i + 1][0] == key:
                continue  # the same path again later in the archive: that one wins
            builder.add(path, entry)
        self.runs.append(builder.finish())
        self.held, self.held_bytes = [], 0
        if len(self.runs) > MERGE_FAN_IN:
            self.runs = [self._merge(self.runs)]

    def _merge(self, runs: list[Entry]) -> Entry:
        self.batch.flush()  # the runs' nodes are read back now
        key, size = self.trees.merge_many([r.hash for r in runs], self.batch)
        return Entry("dir", key, size)

    def finish(self) -> Archive:
        if self.builder is not None:
            tree = self.builder.finish()
        else:
            if self.held:
                self._run()
            tree = self.runs[0] if len(self.runs) == 1 else self._merge(self.runs)
        return Archive(tree, self.files, self.size)
