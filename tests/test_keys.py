"""A repository's files in S3 key order (`walk_keys`) and each key's versions
(`key_versions`), against plain references: sorting every path, and replaying history."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pfs.config import Config
from pfs.repository.keys import key_versions, walk_keys
from pfs.repository.repo import Repository
from pfs.storage.trees import Entry

ALPHABET = ["a", "a.b", "a-b", "a0", "ab", "b", "é", "a!", "z", "A"]


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Config(str(tmp_path / "data")).open()


def write(repo: Repository, path: str, data: bytes, branch: str = "master") -> Entry:
    w = repo.writer()
    w.write(data)
    entry = w.finish()
    repo.stage_file(branch, path, entry)
    return entry


def random_paths(rng: random.Random, n: int) -> list[str]:
    """Paths whose names make directory and file keys interleave ("a.b" < "a/" < "a0")."""
    out: set[str] = set()
    while len(out) < n:
        depth = rng.randint(1, 4)
        out.add("/".join(rng.choice(ALPHABET) for _ in range(depth)))
    # a path may not be both a file and a directory: keep the files no other path goes through
    dirs = {p.rsplit("/", 1)[0] for p in out if "/" in p}
    for d in list(dirs):
        parts = d.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return sorted(p for p in out if p not in dirs)


@pytest.mark.parametrize("seed", range(6))
def test_walk_keys_is_sorted_bytes_order_with_prefix_and_marker(repo: Repository, seed: int) -> None:
    rng = random.Random(seed)
    paths = random_paths(rng, 120)
    committed = paths[: len(paths) // 2]
    for p in committed:
        write(repo, p, p.encode())
    repo.commit_branch("master")
    for p in paths[len(paths) // 2 :]:  # the rest dirty: the walk sees the branch as it reads
        write(repo, p, p.encode())
    gone = rng.sample(committed, 5)
    for p in gone:
        repo.delete("master", p)
    live = sorted(set(paths) - set(gone), key=lambda p: p.encode())
    reader = repo.view(branch="master")
    assert [p for p, _ in walk_keys(reader)] == live
    for prefix in ["", "a", "a/", "a.", "a/a", "é/", "zz", *rng.sample(live, 5)]:
        want = [p for p in live if p.startswith(prefix)]
        assert [p for p, _ in walk_keys(reader, prefix)] == want, prefix
        for after in rng.sample(live, 3) + ["a/", "a", "~"]:
            got = [p for p, _ in walk_keys(reader, prefix, start_after=after)]
            assert got == [p for p in want if p.encode() > after.encode()], (prefix, after)


def test_skip_prefix_rolls_up_without_reading_below(repo: Repository) -> None:
    for i in range(50):
        write(repo, f"logs/day{i:02}/x.txt", b"x")
    write(repo, "logs.txt", b"1")
    write(repo, "logs-old/a", b"2")
    write(repo, "z", b"3")
    repo.commit_branch("master")
    walk = walk_keys(repo.view(commit="master"))
    seen = []
    for path, _ in walk:
        seen.append(path)
        if path.startswith("logs/"):
            walk.skip_prefix("logs/")
    assert seen == ["logs-old/a", "logs.txt", "logs/day00/x.txt", "z"]


def test_key_versions_are_the_commits_that_changed_each_key(repo: Repository) -> None:
    write(repo, "d/a", b"1")
    write(repo, "d/b", b"1")
    c1 = repo.commit_branch("master", "one")
    write(repo, "d/a", b"2")
    write(repo, "other", b"x")
    c2 = repo.commit_branch("master", "two")
    repo.delete("master", "d/b")
    c3 = repo.commit_branch("master", "three")
    write(repo, "d/a", b"dirty")  # not a version until committed
    got = [(v.path, v.commit.id, v.entry is not None, v.latest) for v in key_versions(repo, "master", "d/")]
    assert got == [
        ("d/a", c2.id, True, True),
        ("d/a", c1.id, True, False),
        ("d/b", c3.id, False, True),
        ("d/b", c1.id, True, False),
    ]
    assert [v.path for v in key_versions(repo, c2.id, "")] == ["d/a", "d/a", "d/b", "other"]
    assert key_versions(repo, "master", "nothing/") == []


def test_markers_seek_in_a_big_directory(repo: Repository) -> None:
    """A directory of thousands of names is a B-tree of many nodes: a marker seeks through
    its index, and every page comes out as the sorted reference says."""
    rng = random.Random(9)
    names = sorted({f"f{rng.randrange(10**6):06d}" + rng.choice(["", ".txt", "-x", "/in"]) for _ in range(5000)})
    names = [n for n in names if not any(o.startswith(n + "/") for o in names)][:4000]
    items = []
    for n in names:
        w = repo.writer()
        w.write(b"x")
        items.append((f"big/{n}", w.finish()))
    repo.stage_files("master", items)
    repo.commit_branch("master")
    reader = repo.view(commit="master")
    want = sorted((f"big/{n}" for n in names), key=lambda p: p.encode())
    assert [p for p, _ in walk_keys(reader, "big/")] == want
    for after in rng.sample(want, 20) + ["big/f5", "big/f500000-", "big/f500000.", "big/"]:
        got = [p for p, _ in walk_keys(reader, "big/", start_after=after)]
        assert got == [p for p in want if p.encode() > after.encode()], after
