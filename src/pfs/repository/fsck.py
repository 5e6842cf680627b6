"""`pfs fsck`: check that every object reachable from a ref, a staged write, the commit
index or a job's recorded output exists and matches its hash, and (unless quick) that
every file's content, read chunk by chunk, matches the file's own hash."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import blake3

from ..errors import PfsError
from ..storage.objects import hash_bytes
from ..storage.trees import Entry
from .repo import Repository


@dataclass
class Report:
    commits: int = 0
    trees: int = 0
    files: int = 0
    chunks: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def fsck(repo: Repository, verify_data: bool = True, progress: Callable[[int], None] | None = None) -> Report:
    rep = Report()
    seen: set[str] = set()

    def check_object(key: str, what: str) -> bool:
        if key in seen:
            return False
        seen.add(key)
        try:
            if verify_data:
                repo.objects.get(key)
            elif not repo.objects.has(key):
                rep.problems.append(f"missing {what} {key}")
                return False
        except PfsError as exc:
            rep.problems.append(f"{what} {key}: {exc.message}")
            return False
        if progress is not None:
            progress(len(seen))
        return True

    verified: set[Entry] = set()  # file entries whose content was hashed already
    with_data = [True]  # False: the trees of commits whose data retention may have removed

    def check_file(entry: Entry, where: str) -> None:
        if not with_data[0] and entry.data is None:
            rep.files += 1
            return
        if entry.data is not None:
            rep.files += 1
            if len(entry.data) != entry.size or hash_bytes(entry.data) != entry.hash:
                rep.problems.append(f"file {where}: inline content does not match its hash")
            return
        if entry.manifest is not None:
            check_object(entry.manifest, f"manifest of {where}")
        try:
            chunks = repo.trees.chunks(entry)
        except PfsError as exc:
            rep.problems.append(f"file {where}: {exc.message}")
            return
        if sum(size for _, size in chunks) != entry.size:
            rep.problems.append(f"file {where}: chunk sizes do not add up to {entry.size}")
        rep.files += 1
        if not verify_data:
            for key, _ in chunks:
                if check_object(key, f"chunk of {where}"):
                    rep.chunks += 1
            return
        if entry in verified:
            return
        verified.add(entry)
        check_content(entry, chunks, where)

    def check_content(entry: Entry, chunks: tuple[tuple[str, int], ...], where: str) -> None:
        """One read of each chunk both checks the chunk (against its key) and feeds the
        file's hash: a file is as trustworthy as its entry's hash, which reads serve as ETag."""
        hasher = blake3.blake3()
        data, last = b"", ""
        for key, size in chunks:
            if key != last:
                first_time = key not in seen
                seen.add(key)
                try:
                    data = repo.objects.get(key)
                except PfsError as exc:
                    if first_time:
                        rep.problems.append(f"chunk of {where} {key}: {exc.message}")
                    return  # reported once, as the chunk's problem
                last = key
                if first_time:
                    rep.chunks += 1
                    if progress is not None:
                        progress(len(seen))
            if len(data) != size:
                rep.problems.append(f"file {where}: chunk {key} is {len(data)} bytes, not {size}")
                return
            hasher.update(data)
        if hasher.hexdigest() != entry.hash:
            rep.problems.append(f"file {where}: content does not match its hash {entry.hash}")

    def check_tree(key: str, where: str) -> None:
        if key in seen:
            return  # this whole subtree was checked already
        try:
            for node in repo.trees.nodes(key):
                if not check_object(node, f"tree {where or '/'}"):
                    return  # reported
            rep.trees += 1
            entries = list(repo.trees.dir_items(key))
        except PfsError as exc:
            rep.problems.append(f"tree {where or '/'}: {exc.message}")
            return
        for name, entry in entries:
            path = f"{where}/{name}" if where else name
            if entry.is_dir:
                check_tree(entry.hash, path)
            else:
                check_file(entry, path)

    todo: list[str] = []
    heads: set[str] = set()
    for _, head in repo.meta.list_refs():
        if head is not None:
            todo.append(head)
            heads.add(head)
    for c in repo.meta.list_commits():
        todo.append(c.id)
    # Commits older than what a retention rule let garbage collection apply keep their
    # trees, not necessarily their files' data: their trees are checked after every other
    # commit's (whose data must all be there), without their files.
    horizon = max((at or 0.0 for _, at in repo.meta.retention().values()), default=0.0)
    old: list[str] = []
    done: set[str] = set()
    while todo:
        cid = todo.pop()
        if cid in done:
            continue
        done.add(cid)
        if not check_object(cid, "commit"):
            continue
        try:
            commit = repo.trees.load_commit(cid)
        except PfsError as exc:
            rep.problems.append(f"commit {cid}: {exc.message}")
            continue
        rep.commits += 1
        if commit.time < horizon and cid not in heads:
            old.append(commit.tree)
        else:
            check_tree(commit.tree, "")
        todo.extend(commit.parents)
    with_data[0] = False
    for tree in old:
        check_tree(tree, "")
    with_data[0] = True
    for run in repo.meta.list_runs(limit=1 << 30):
        for jr in repo.meta.job_runs(run.commit):
            if jr.output_tree:  # a job's recorded output is as reachable as a commit
                check_tree(jr.output_tree, f"job {jr.job} output on {run.commit[:12]}")
            if jr.partial_tree:  # what a failed map did: the next run builds on it
                check_tree(jr.partial_tree, f"job {jr.job} partial output on {run.commit[:12]}")
    for name, _ in repo.meta.list_refs():
        for staged in repo.meta.staged(name):
            if staged.entry is not None:
                check_file(staged.entry, f"{name}:{staged.path} (staged)")
        for graft in repo.meta.grafts(name):  # an uploaded archive, staged whole
            check_tree(graft.entry.hash, f"{name}:{graft.prefix or '/'} (staged archive)")
    return rep
