"""Archives staged whole (grafts): one row per upload, read and committed exactly as if
every file had been staged on its own. Checked against a model of the branch under random
mixes of file puts, deletions and archive uploads, in-process."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import BACKENDS, Storage, tar_of

import pfs.repository.tarball as tarball
from pfs.config import Config
from pfs.errors import DirtyBranch, FileNotFound, PathConflict
from pfs.paths import parent_dirs
from pfs.repository.fsck import fsck
from pfs.repository.keys import walk_keys
from pfs.repository.reader import Reader
from pfs.repository.repo import Repository
from pfs.storage.meta import SqlMetaStore
from pfs.storage.s3 import S3Config
from pfs.storage.s3objects import S3ObjectStore
from pfs.storage.trees import Entry, tree_order


@pytest.fixture(params=BACKENDS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Repository:
    """The embedded store, and (cluster) PostgreSQL for the metadata with S3 for objects."""
    if request.param == "embedded":
        return Config(str(tmp_path / "data")).open()
    storage = Storage(tmp_path / "data", request.getfixturevalue("postgres"), request.getfixturevalue("seaweed"))
    env = storage.env()
    objects = S3ObjectStore(env["PFS_OBJECTS_URL"], S3Config(**request.getfixturevalue("seaweed").config()))
    return Repository(objects, SqlMetaStore(storage.sql_url()))


def put(repo: Repository, path: str, body: bytes, branch: str = "master") -> Entry:
    w = repo.writer()
    w.write(body)
    entry = w.finish()
    repo.stage_file(branch, path, entry)
    return entry


def content(repo: Repository, branch: str | None = None, commit: str | None = None) -> dict[str, bytes]:
    view = repo.view(branch=branch, commit=commit)
    return {p: b"".join(repo.read_file(e)) for p, e in view.files_under("")}


def test_an_archive_is_one_row_and_commits_to_the_tree_of_its_files(repo: Repository, tmp_path: Path) -> None:
    files = [(f"d{i % 7}/sub{i % 3}/f{i:04}.txt", f"body {i}".encode() * (i % 5 + 1)) for i in range(2000)]
    files.append(("big.bin", random.Random(1).randbytes(3 << 20)))  # chunked, not inline
    files.sort(key=lambda f: tree_order(f[0]))
    archive = repo.stage_tar("master", "up", tar_of(files))  # type: ignore[arg-type]
    assert (archive.files, archive.size) == (len(files), sum(len(b) for _, b in files))
    assert repo.meta.staged("master") == [] and len(repo.meta.grafts("master")) == 1
    want = {f"up/{p}": b for p, b in files}
    assert content(repo, branch="master") == want
    assert repo.view(branch="master").lookup("up/d3/sub1").is_dir  # type: ignore[union-attr]
    commit = repo.commit_branch("master", "archive")
    assert repo.meta.grafts("master") == [] and not repo.meta.has_staged("master")
    assert content(repo, commit=commit.id) == want
    # the same files staged one by one make the very same tree
    other = Config(str(Path(tmp_path) / "other")).open()
    items = []
    for p, b in files:
        w = other.writer()
        w.write(b)
        items.append((f"up/{p}", w.finish()))
    other.stage_files("master", items)
    assert other.commit_branch("master", "rows").tree == commit.tree
    assert fsck(repo).ok


def test_an_archive_out_of_tree_order_is_sorted_in_runs(
    repo: Repository, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Members in any order, a path sent twice (the last wins): runs of a few KB, merged
    a few at a time, give the tree of the sorted files."""
    monkeypatch.setattr(tarball, "RUN_BYTES", 4000)
    monkeypatch.setattr(tarball, "MERGE_FAN_IN", 3)
    rnd = random.Random(7)
    files = [(f"a{rnd.randrange(5)}/b{rnd.randrange(5)}/c{i}", rnd.randbytes(rnd.randrange(50))) for i in range(500)]
    files += [(files[i][0], b"again") for i in range(0, 500, 50)]
    shuffled = files[:50] + rnd.sample(files[50:], len(files) - 50)
    repo.stage_tar("master", "", tar_of(shuffled))  # type: ignore[arg-type]
    want = dict(shuffled)
    assert content(repo, branch="master") == want
    commit = repo.commit_branch("master", "shuffled")
    other = Config(str(Path(tmp_path) / "other")).open()
    other.stage_tar("master", "", tar_of(sorted(want.items(), key=lambda f: tree_order(f[0]))))  # type: ignore[arg-type]
    assert other.commit_branch("master", "sorted").tree == commit.tree


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_an_archive_with_a_file_that_is_also_a_directory_is_refused(
    repo: Repository, monkeypatch: pytest.MonkeyPatch, order: str
) -> None:
    monkeypatch.setattr(tarball, "RUN_BYTES", 300)
    files = [(f"x/f{i}", b"1") for i in range(20)] + [("a", b"file"), ("a/b", b"below")]
    if order == "sorted":
        files.sort(key=lambda f: tree_order(f[0]))
    else:
        files = [("a/b", b"below"), *files[:20], ("a", b"file")]
    with pytest.raises(PathConflict, match="both a file and a directory"):
        repo.stage_tar("master", "", tar_of(files))  # type: ignore[arg-type]
    assert not repo.meta.has_staged("master")


class Model:
    """What the branch should hold: path -> bytes, and the conflicts a write must refuse."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def is_dir(self, path: str) -> bool:
        return any(p.startswith(path + "/") for p in self.files)

    def placeable(self, path: str) -> bool:
        parts = path.split("/")
        above = ["/".join(parts[:i]) for i in range(1, len(parts))]
        return not any(a in self.files for a in above) and not self.is_dir(path)


def random_path(rnd: random.Random) -> str:
    return "/".join(rnd.choice("abc") for _ in range(rnd.randint(1, 3)))


def test_rows_and_archives_mixed_read_and_commit_like_a_model(repo: Repository) -> None:
    """Random puts, deletions (of files and whole directories), archives and commits over
    a few names, so that they overlap: after each step the branch reads as the model, and
    each commit holds exactly it."""
    rnd = random.Random(11)
    model = Model()
    for step in range(400):
        op = rnd.random()
        body = f"v{step}".encode()
        if op < 0.35:
            path = random_path(rnd)
            if model.placeable(path):
                put(repo, path, body)
                model.files[path] = body
            else:
                with pytest.raises(PathConflict):
                    put(repo, path, body)
        elif op < 0.55:
            path = random_path(rnd)
            if path in model.files:
                assert repo.delete("master", path) == 1
                del model.files[path]
            elif model.is_dir(path):
                doomed = [p for p in model.files if p.startswith(path + "/")]
                assert repo.delete("master", path, recursive=True) == len(doomed)
                for p in doomed:
                    del model.files[p]
            else:
                with pytest.raises(FileNotFound):
                    repo.delete("master", path)
        elif op < 0.85:
            prefix = rnd.choice(["", "a", "b/c", "c"])
            rel = {random_path(rnd): f"{body.decode()}.{i}".encode() for i in range(rnd.randint(1, 6))}
            rel = {p: b for p, b in rel.items() if not any(q.startswith(p + "/") for q in rel)}
            full = {f"{prefix}/{p}" if prefix else p: b for p, b in rel.items()}
            ok = all(model.placeable(p) for p in full) and not (prefix and prefix in model.files)
            ok = ok and not any(prefix.startswith(f + "/") for f in model.files)
            members = sorted(rel.items(), key=lambda f: tree_order(f[0]))
            if rnd.random() < 0.5:
                rnd.shuffle(members)
            if ok:
                repo.stage_tar("master", prefix, tar_of(members))  # type: ignore[arg-type]
                model.files.update(full)
            else:
                with pytest.raises(PathConflict):
                    repo.stage_tar("master", prefix, tar_of(members))  # type: ignore[arg-type]
        else:
            commit = repo.commit_branch("master", f"step {step}")
            assert content(repo, commit=commit.id) == model.files, step
        assert content(repo, branch="master") == model.files, step
        for d in {p.rpartition("/")[0] for p in model.files} - {""}:
            assert repo.view(branch="master").lookup(d) is not None, (step, d)
    commit = repo.commit_branch("master", "last")
    assert content(repo, commit=commit.id) == model.files


def placeable_by_view(repo: Repository, path: str) -> bool:
    try:
        repo.view(branch="master").check_placeable(path)
    except PathConflict:
        return False
    return True


def test_the_one_query_placement_check_agrees_with_the_view(repo: Repository) -> None:
    """Without archives a write's placement is decided from one statement
    (Reader.decide_placement); under random puts, deletions and commits it answers as the
    model and the full view do for every path, and it does decide most of them itself."""
    rnd = random.Random(5)
    model = Model()
    decided = 0
    paths = sorted({random_path(rnd) for _ in range(200)})
    for step in range(150):
        op = rnd.random()
        path = random_path(rnd)
        if op < 0.5 and model.placeable(path):
            put(repo, path, b"x")
            model.files[path] = b"x"
        elif op < 0.75 and path in model.files:
            repo.delete("master", path)
            del model.files[path]
        elif op < 0.85 and model.is_dir(path):
            for p in repo.view(branch="master").files_under(path):
                del model.files[p[0]]
            repo.delete("master", path, recursive=True)
        elif op >= 0.85:
            repo.commit_branch("master", f"step {step}")
        for p in paths:
            facts = repo.meta.placement("master", p, parent_dirs(p))
            root = repo.get_commit(facts.head).tree if facts.head else None
            try:
                fast: bool | None = Reader.decide_placement(repo.trees, root, p, facts) or None
            except PathConflict:
                fast = False
            decided += fast is not None
            want = model.placeable(p)
            assert placeable_by_view(repo, p) == want, (step, p)
            assert fast in (None, want), (step, p)
            if want:
                repo.check_writable("master", p)
            else:
                with pytest.raises(PathConflict):
                    repo.check_writable("master", p)
    assert decided > 0.8 * 150 * len(paths)


def test_a_single_file_write_costs_two_statements(repo: Repository) -> None:
    """The write path of every small upload: its placement read in one statement and its
    row staged in one more (on SQLite, a transaction of two)."""
    assert isinstance(repo.meta, SqlMetaStore)
    put(repo, "d/first", b"1")
    repo.commit_branch("master", "one")
    put(repo, "d/second", b"2")
    seen: list[str] = []

    def count(conn: object, cursor: object, statement: str, *rest: object) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    engines = {repo.meta.db.engine, repo.meta.db.reader}
    for e in engines:
        sa.event.listen(e, "before_cursor_execute", count)
    try:
        repo.put_file("master", "d/third", b"three")
    finally:
        for e in engines:
            sa.event.remove(e, "before_cursor_execute", count)
    want = ["SELECT", "UPDATE", "INSERT"] if repo.meta.is_sqlite else ["SELECT", "WITH"]
    assert [s for s in seen if s != "BEGIN"] == want, seen  # SQLite opens its transactions itself
    assert content(repo, branch="master") == {"d/first": b"1", "d/second": b"2", "d/third": b"three"}


def test_archives_are_listed_through_s3_keys_discarded_and_checked(repo: Repository) -> None:
    put(repo, "base", b"committed")
    repo.commit_branch("master", "base")
    repo.create_branch("other")
    put(repo, "p/a.txt", b"row")
    repo.stage_tar("master", "p", tar_of([("b.txt", b"one"), ("q/c.txt", b"two")]))  # type: ignore[arg-type]
    view = repo.view(branch="master")
    assert [k for k, _ in walk_keys(view, "p/")] == ["p/a.txt", "p/b.txt", "p/q/c.txt"]
    assert fsck(repo).ok
    with pytest.raises(DirtyBranch):
        repo.merge("other", "master")
    assert repo.discard("master") == 3  # a row and an archive of two files
    assert content(repo, branch="master") == {"base": b"committed"}


def test_archives_as_deep_as_paths_go_merge_without_running_out_of_stack(
    repo: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """250 levels (paths may have 256), out of order (runs merged) and merged again at
    commit into the same deep directory: no RecursionError (a 500) for a hostile client."""
    monkeypatch.setattr(tarball, "RUN_BYTES", 100)
    deep = "/".join(["d"] * 250)
    repo.stage_tar("master", "p", tar_of([(f"{deep}/z", b"1"), (f"{deep}/a", b"2"), ("x", b"3")]))  # type: ignore[arg-type]
    repo.stage_tar("master", "p", tar_of([(f"{deep}/m", b"4"), (f"{deep}/a", b"5")]))  # type: ignore[arg-type]
    commit = repo.commit_branch("master", "deep")
    want = {f"p/{deep}/a": b"5", f"p/{deep}/m": b"4", f"p/{deep}/z": b"1", "p/x": b"3"}
    assert content(repo, commit=commit.id) == want
