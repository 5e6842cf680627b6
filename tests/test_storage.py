"""Storage model properties (DESIGN.md section 3), checked on a repository in-process."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
from conftest import tar_of

from pfs.config import Config
from pfs.errors import BranchMoved, CorruptObject
from pfs.repository.fsck import fsck
from pfs.repository.repo import Repository
from pfs.storage.objects import Batch, LocalObjectStore, hash_bytes
from pfs.storage.trees import INLINE_DATA, Entry


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Config(str(tmp_path / "data")).open()


def put(repo: Repository, path: str, data: bytes, branch: str = "master") -> Entry:
    w = repo.writer()
    for i in range(0, len(data), 1 << 20):
        w.write(data[i : i + (1 << 20)])
    entry = w.finish()
    repo.stage_file(branch, path, entry)
    return entry


def read(repo: Repository, path: str, commit: str | None = None, branch: str | None = None) -> bytes:
    entry = repo.view(branch=branch, commit=commit).lookup(path)
    assert entry is not None and not entry.is_dir
    return b"".join(repo.trees.read(entry))


def n_objects(repo: Repository) -> int:
    return sum(1 for _ in repo.objects.keys())  # noqa: SIM118 - not a dict


def test_small_edit_to_large_file_stores_only_changed_chunks(repo: Repository) -> None:
    rnd = random.Random(3)
    data = bytearray(rnd.randbytes(24 << 20))
    put(repo, "big", bytes(data))
    repo.commit_branch("master", "v1")
    before = n_objects(repo)
    data[10 << 20 : (10 << 20) + 10] = b"0123456789"  # overwrite in the middle
    data[20 << 20 : 20 << 20] = b"inserted bytes shift everything after"
    e2 = put(repo, "big", bytes(data))
    repo.commit_branch("master", "v2")
    new = n_objects(repo) - before
    # two edited regions: at most ~2 chunks each, plus manifest, trees and the commit
    assert new <= 8, new
    assert len(repo.trees.chunks(e2)) >= 10
    assert read(repo, "big", commit="master") == bytes(data)


def test_commit_cost_follows_the_change_not_the_repo(repo: Repository) -> None:
    for d in range(30):
        items = []
        for f in range(30):
            w = repo.writer()
            w.write(f"{d}/{f}".encode() * 200)  # beyond the inline limit: real objects
            items.append((f"top/d{d}/f{f}", w.finish()))
        repo.stage_files("master", items)
    repo.commit_branch("master", "load")
    before = n_objects(repo)
    put(repo, "top/d7/f3", os.urandom(5000))
    repo.commit_branch("master", "one change")
    # one chunk + trees on the path (d7, top, root) + the commit object
    assert n_objects(repo) - before == 5


def test_branch_creation_writes_no_objects(repo: Repository) -> None:
    put(repo, "a", os.urandom(100_000))
    c = repo.commit_branch("master")
    before = n_objects(repo)
    repo.create_branch("b1", c.id)
    repo.create_branch("b2")
    assert n_objects(repo) == before
    assert read(repo, "a", commit="b1") == read(repo, "a", commit="b2")


def test_small_files_are_inline_and_verified(repo: Repository) -> None:
    e = put(repo, "tiny", b"x" * INLINE_DATA)
    assert e.data == b"x" * INLINE_DATA and not e.chunks and e.manifest is None
    e2 = put(repo, "bigger", b"y" * (INLINE_DATA + 1))
    assert e2.data is None and e2.chunks
    repo.commit_branch("master")
    assert read(repo, "tiny", commit="master") == b"x" * INLINE_DATA
    assert fsck(repo).ok


def test_empty_file(repo: Repository) -> None:
    put(repo, "empty", b"")
    repo.commit_branch("master")
    assert read(repo, "empty", commit="master") == b""


def test_dirty_overlay_and_deletes(repo: Repository) -> None:
    put(repo, "d/a", b"1")
    put(repo, "d/b", b"2")
    repo.commit_branch("master")
    repo.delete("master", "d/a")
    put(repo, "d/c", b"3")
    names = [n for n, _ in repo.view(branch="master").listdir("d")]
    assert names == ["b", "c"]
    clean = [n for n, _ in repo.view(commit="master").listdir("d")]
    assert clean == ["a", "b"]
    repo.delete("master", "d", recursive=True)
    assert repo.view(branch="master").lookup("d") is None
    c = repo.commit_branch("master")
    assert repo.trees.load_tree(c.tree) == {}


def test_file_replaces_deleted_directory(repo: Repository) -> None:
    put(repo, "x/inner", b"1")
    repo.commit_branch("master")
    repo.delete("master", "x", recursive=True)
    put(repo, "x", b"now a file")
    c = repo.commit_branch("master")
    assert read(repo, "x", commit=c.id) == b"now a file"


def test_expect_guards_the_head(repo: Repository) -> None:
    c1 = repo.commit_branch("master")
    repo.commit_branch("master")
    put(repo, "kept", b"k")
    with pytest.raises(BranchMoved):
        repo.commit_branch("master", expect=c1.id)
    assert repo.meta.staged_get("master", "kept") is not None


def test_fsck_detects_corrupt_and_missing_objects(repo: Repository) -> None:
    put(repo, "a", os.urandom(10_000))
    put(repo, "b", os.urandom(10_000))
    repo.commit_branch("master")
    assert fsck(repo).ok
    store = repo.objects
    assert isinstance(store, LocalObjectStore)
    ea = repo.view(commit="master").lookup("a")
    eb = repo.view(commit="master").lookup("b")
    assert ea is not None and eb is not None and ea.chunks and eb.chunks
    path = store.path(ea.chunks[0][0])
    raw = bytearray(Path(path).read_bytes())
    raw[5] ^= 1
    Path(path).write_bytes(bytes(raw))
    os.unlink(store.path(eb.chunks[0][0]))
    rep = fsck(repo)
    assert not rep.ok
    assert any("does not match" in p for p in rep.problems)
    assert any("missing" in p for p in rep.problems)
    with pytest.raises(CorruptObject):
        read(repo, "a", commit="master")


@pytest.mark.parametrize("leaf_max,index_max", [(8, 4), (1024, 256)])
def test_big_directory_updates_are_canonical(repo: Repository, leaf_max: int, index_max: int) -> None:
    """A directory changed step by step hashes exactly like the same directory built at
    once, whatever the splits: so equal directories always share a hash."""
    trees = repo.trees
    trees.LEAF_MAX, trees.INDEX_MAX = leaf_max, index_max
    rnd = random.Random(leaf_max)
    model: dict[str, Entry] = {}
    key: str | None = None
    for step in range(30):
        changes: dict[str, Entry | None] = {}
        for _ in range(rnd.choice([1, 5, 200])):
            name = f"f{rnd.randrange(3000):05}"
            if name in model and rnd.random() < 0.3:
                changes[name] = None
            else:
                data = f"{step}-{name}".encode()
                changes[name] = Entry("file", f"{rnd.getrandbits(256):064x}", len(data), data=data)
        with repo.objects.batch() as b:
            key, size = trees.dir_update(key, changes, b)
            for name, e in changes.items():
                if e is None:
                    model.pop(name, None)
                else:
                    model[name] = e
            fresh = trees.write_tree(model, b)
        assert key == fresh
        assert size == sum(e.size for e in model.values())
        assert list(trees.dir_items(key)) == sorted(model.items())
        for name in list(model)[:20]:
            assert trees.dir_get(key, name) == model[name]
        assert trees.dir_get(key, "nope") is None
    assert len(trees.leaves(key)) > 1  # the directory really was split


def test_big_directory_commit_and_listing(repo: Repository) -> None:
    items = []
    for i in range(5000):
        w = repo.writer()
        w.write(b"%d" % i)
        items.append((f"flat/f{i:05}", w.finish()))
    repo.stage_files("master", items)
    c = repo.commit_branch("master")
    flat = repo.trees.lookup(c.tree, "flat")
    assert flat is not None and len(repo.trees.leaves(flat.hash)) > 3
    before = n_objects(repo)
    put(repo, "flat/f02500", b"changed")
    repo.delete("master", "flat/f00007")
    names = [n for n, _ in repo.view(branch="master").listdir("flat")]
    assert len(names) == 4999 and "f00007" not in names and names == sorted(names)
    c2 = repo.commit_branch("master")
    # one or two leaves, the index nodes above them, two root-path trees, the commit
    assert n_objects(repo) - before <= 8
    assert read(repo, "flat/f02500", commit=c2.id) == b"changed"
    assert [p for p, _, _ in repo.diff(c.id, c2.id)] == ["flat/f00007", "flat/f02500"]
    assert fsck(repo).ok


def test_master_cannot_be_deleted(repo: Repository) -> None:
    from pfs.errors import Conflict

    with pytest.raises(Conflict):
        repo.delete_branch("master")
    assert repo.meta.get_ref("master") is None  # still there


def test_expect_empty_means_no_commits_yet_and_ids_are_case_insensitive(repo: Repository) -> None:
    put(repo, "a", b"1")
    first = repo.commit_branch("master", expect="")  # strict: the branch had no commit
    with pytest.raises(BranchMoved):
        repo.commit_branch("master", expect="")
    assert repo.resolve(first.id.upper()).id == first.id
    assert repo.resolve(first.id[:10].upper()).id == first.id


def _recursive_apply(repo: Repository, root: str | None, changes: dict[str, Entry | None], b: Batch) -> str:
    """The recursive `apply` that the iterative one replaced (it ran out of stack on deep
    trees): the reference the iterative one must agree with."""

    def rec(root: str | None, changes: dict[str, Entry | None]) -> tuple[str, int]:
        direct: dict[str, Entry | None] = {}
        nested: dict[str, dict[str, Entry | None]] = {}
        for path, entry in changes.items():
            head, sep, rest = path.partition("/")
            if sep:
                nested.setdefault(head, {})[rest] = entry
            else:
                direct[head] = entry
        here: dict[str, Entry | None] = {}
        for name in set(direct) | set(nested):
            new = direct.get(name)
            if new is not None:
                here[name] = new
                continue
            sub = nested.get(name)
            if not sub:
                here[name] = None
                continue
            cur = None if name in direct else repo.trees.dir_get(root, name)
            sub_key, sub_size = rec(cur.hash if cur is not None and cur.is_dir else None, sub)
            here[name] = None if sub_key == repo.trees.empty_tree else Entry("dir", sub_key, sub_size)
        return repo.trees.dir_update(root, here, b)

    return rec(root, changes)[0]


def test_tree_apply_agrees_with_the_recursive_reference(repo: Repository) -> None:
    """Random puts and deletes, files replacing directories and back, in batches that mix
    both: the iterative apply builds exactly the trees the recursive one did."""
    rnd = random.Random(7)
    names = ["a", "b", "c"]
    root: str | None = None
    with repo.objects.batch() as b:
        for step in range(80):
            changes: dict[str, Entry | None] = {}
            for _ in range(rnd.randint(1, 6)):
                path = "/".join(rnd.choice(names) for _ in range(rnd.randint(1, 4)))
                data = f"{step}:{path}".encode()
                changes[path] = None if rnd.random() < 0.3 else Entry("file", "0" * 64, len(data), data=data)
            expected = _recursive_apply(repo, root, changes, b)
            root = repo.trees.apply(root, changes, b)
            assert root == expected, (step, changes)
            b.flush()  # the next step reads what this one wrote


def test_deep_paths_are_refused_at_the_edge_and_deep_trees_commit(repo: Repository) -> None:
    from pfs.errors import InvalidPath
    from pfs.paths import MAX_DEPTH, clean_path

    with pytest.raises(InvalidPath, match="deeper than"):
        clean_path("/".join(["d"] * 2000))
    deepest = "/".join(["d"] * (MAX_DEPTH - 1) + ["f.txt"])
    put(repo, deepest, b"deep")
    c = repo.commit_branch("master")
    assert read(repo, deepest, commit=c.id) == b"deep"
    put(repo, "other.txt", b"x")
    repo.commit_branch("master")  # later commits on the branch keep working
    assert [p for p, _ in repo.trees.walk(repo.resolve("master").tree)] == [deepest, "other.txt"]


def test_sqlite_gives_space_back_after_a_big_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Staged rows carry small files inline: 3,000 of 1 KiB (one row each, as S3 puts make
    them) grow the database by megabytes. A commit that consumes at least RECLAIM_ROWS of
    them gives the free pages back and cuts the WAL (in the background), so the files
    shrink to about what is left. The same files as one archive stage a single row."""
    import pfs.repository.repo as repo_module

    monkeypatch.setattr(repo_module, "RECLAIM_ROWS", 1000)
    data = tmp_path / "data"
    repos = Config(str(data)).open_repos()
    repo = repos.default

    def sqlite_bytes() -> int:
        return sum(p.stat().st_size for p in data.glob("meta.sqlite*") if not p.name.endswith("-shm"))

    rnd = random.Random(3)
    bodies = {f"d{i % 10}/f{i}.txt": rnd.randbytes(512).hex().encode() for i in range(3000)}
    empty = sqlite_bytes()
    items = []
    for path, body in bodies.items():
        w = repo.writer()
        w.write(body)
        items.append((f"t/{path}", w.finish()))
    repo.stage_files("master", items)
    staged = sqlite_bytes()
    assert staged > empty + 5_000_000
    repo.commit_branch("master", "many")
    deadline = time.monotonic() + 10
    while sqlite_bytes() > empty + 1_000_000:
        assert time.monotonic() < deadline, f"{sqlite_bytes()} bytes after the commit, {empty} before staging"
        time.sleep(0.1)
    before = sqlite_bytes()
    repo.stage_tar("master", "u", tar_of(bodies))  # type: ignore[arg-type]
    assert sqlite_bytes() < before + 200_000  # one row, not 3,000 (the WAL grows by pages)
    assert len(list(repo.view(branch="master").files_under("u"))) == 3000
    repo.commit_branch("master", "archive")
    assert len(list(repo.view(branch="master").files_under("t"))) == 3000
    repos.close()


def test_a_batch_of_many_objects_holds_a_bounded_set_of_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch flushes every MAX_PENDING objects, and forgets their keys then: an archive of
    a million chunked files must not hold a million keys."""
    from pfs.storage.objects import LocalBatch, hash_bytes

    monkeypatch.setattr(LocalBatch, "MAX_PENDING", 10)
    store = LocalObjectStore(tmp_path / "objs")
    blobs = [f"object {i}".encode() for i in range(25)]
    with store.batch() as b:
        for data in blobs:
            b.put(hash_bytes(data), data)
            assert len(b.seen) <= 10  # type: ignore[attr-defined]
    assert all(store.get(hash_bytes(d)) == d for d in blobs)


def test_short_writes_still_store_whole_objects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file write may take fewer bytes than asked (a signal, a full quota's edge): the
    rest must follow, not be lost, and the object read back whole."""
    store = LocalObjectStore(tmp_path / "objects")
    real = os.writev

    def stingy(fd: int, buffers: list[memoryview]) -> int:
        first = next(b for b in buffers if len(b))
        return real(fd, [first[:1000]])  # at most 1000 bytes, never past the first buffer

    monkeypatch.setattr(os, "writev", stingy)
    data = random.Random(5).randbytes(300_000)  # incompressible: stored raw, one header byte
    key = store.put_bytes(data)
    assert store.get(key) == data


def _fs_type(path: str) -> str:
    """The type of the filesystem holding `path` (Linux: the longest mount point above it)."""
    best, kind = "", ""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            point, fstype = line.split()[1:3]
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
                best, kind = point, fstype
    return kind


def _dirty_pages(path: str) -> int | None:
    """Dirty page-cache pages of a file (Linux >= 6.5 `cachestat`), None where unknown or
    where pages are never written back (tmpfs and the like)."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return None
    if _fs_type(os.path.realpath(path)) not in ("ext4", "xfs", "btrfs", "f2fs", "ext3"):
        return None

    class Range(ctypes.Structure):
        _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]

    class Stat(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint64) for n in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    rng, st = Range(0, 0), Stat()
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syscall(451, fd, ctypes.byref(rng), ctypes.byref(st), 0) != 0:  # cachestat
            return None
    finally:
        os.close(fd)
    return int(st.dirty)


def test_big_objects_start_their_writeback_before_the_barrier(tmp_path: Path) -> None:
    """The disk takes a big upload's chunks while it goes on, so the barrier at its end
    waits only for the tail: without that, 8 MiB written stays dirty for the kernel's
    30 s until the barrier."""
    store = LocalObjectStore(tmp_path / "objects")
    data = random.Random(6).randbytes(8 << 20)
    tmp = store.write_tmp(hash_bytes(data), data, compress=True)  # written, not yet synced
    assert tmp is not None
    if _dirty_pages(tmp) is None:
        pytest.skip("cannot see a file's dirty pages here (no cachestat, or not a disk filesystem)")
    deadline = time.monotonic() + 5
    while (left := _dirty_pages(tmp)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == 0, f"{left} pages still dirty"
