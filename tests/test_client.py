"""The Python client: every method, and server errors re-raised as the same typed classes.

One server (the server's app in this process, conftest's `AppServer`) serves the whole
module; each test works on its own branch (`b`) so tests do not see each other's writes.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest
from conftest import AppServer, ServerProc, free_port, tar_of

from pfs import Client, errors
from pfs.records import BranchInfo, Written
from pfs.storage.chunking import MAX_CHUNK

_names = itertools.count()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    s = AppServer(tmp_path_factory.mktemp("client") / "data").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def c(srv: AppServer) -> Iterator[Client]:
    with srv.client() as client:
        client.put_file("seed.txt", b"seed\n")
        client.commit(message="seed")
        yield client


@pytest.fixture
def b(c: Client) -> str:
    """A fresh branch at master's head, for this test alone."""
    name = f"t{next(_names)}"
    c.create_branch(name)
    return name


def tree(c: Client, branch: str | None = None, commit: str | None = None, path: str = "") -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for e in c.ls(path, commit=commit, branch=branch):
        if e.type == "dir":
            out.update(tree(c, branch, commit, e.path))
        else:
            out[e.path] = c.get_file(e.path, commit=commit, branch=branch)
    return out


# ---- files -------------------------------------------------------------------------------
def test_put_and_get_bytes(c: Client, b: str) -> None:
    res = c.put_file("a/b.txt", b"hello", branch=b)
    assert res == Written(b, "a/b.txt", 5, blake3.blake3(b"hello").hexdigest())
    assert c.get_file("a/b.txt", branch=b) == b"hello"
    with pytest.raises(errors.FileNotFound):
        c.get_file("a/b.txt")  # master does not have it


def test_put_streams_from_a_file_object(c: Client, b: str, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # several client pieces
    assert c.put_file("fromio.bin", io.BytesIO(data), branch=b).size == len(data)
    assert c.get_file("fromio.bin", branch=b) == data
    local = tmp_path / "local.bin"
    local.write_bytes(data[::-1])
    with open(local, "rb") as f:
        res = c.put_file("fromfile.bin", f, branch=b)
    assert res.hash == blake3.blake3(data[::-1]).hexdigest()
    assert c.get_file("fromfile.bin", branch=b) == data[::-1]


def test_put_streams_from_an_iterator(c: Client, b: str) -> None:
    pieces = [os.urandom(100_000 + i) for i in range(20)]
    pulled: list[int] = []

    def gen() -> Iterator[bytes]:
        for i, p in enumerate(pieces):
            pulled.append(i)
            yield p

    res = c.put_file("gen.bin", gen(), branch=b)
    assert pulled == list(range(20))
    assert res.size == sum(map(len, pieces))
    assert c.get_file("gen.bin", branch=b) == b"".join(pieces)
    # an empty iterator makes an empty file
    assert c.put_file("empty", iter([]), branch=b).size == 0
    assert c.get_file("empty", branch=b) == b""


def test_open_file_streams_in_pieces(c: Client, b: str) -> None:
    """The body comes in pieces as they arrive, never buffered whole: over TCP at most what
    one read gives, from the app in this process the server's own pieces (chunks)."""
    data = os.urandom((9 << 20) + 12345)  # more than two of the largest chunks
    c.put_file("big", data, branch=b)
    pieces = list(c.open_file("big", branch=b))
    assert len(pieces) >= 3 and max(map(len, pieces)) <= MAX_CHUNK
    assert b"".join(pieces) == data


def test_ls_and_directory_reads(c: Client, b: str) -> None:
    for p in ["d/z", "d/a", "d/m/x"]:
        c.put_file(p, p.encode(), branch=b)
    listing = c.ls("d", branch=b)
    assert [(e.name, e.type) for e in listing] == [("a", "file"), ("m", "dir"), ("z", "file")]
    assert c.ls("d/", branch=b) == listing
    with pytest.raises(errors.InvalidPath):
        c.ls("/d", branch=b)  # absolute, like everywhere else
    assert "seed.txt" in [e.name for e in c.ls(branch=b)]
    assert c.get_file("d/*", branch=b) == b"d/ad/z"
    with pytest.raises(errors.FileNotFound):
        c.ls("nope", branch=b)
    with pytest.raises(errors.BadRequest):
        c.ls("d/a", branch=b)  # a file is not a directory
    with pytest.raises(errors.BadRequest):
        c.get_file("d", branch=b)  # a directory is not a file


def test_delete_file_and_recursive(c: Client, b: str) -> None:
    for p in ["r/x", "r/y/z", "keep"]:
        c.put_file(p, b"1", branch=b)
    assert c.delete_file("keep", branch=b) == 1
    with pytest.raises(errors.FileNotFound):
        c.get_file("keep", branch=b)
    with pytest.raises(errors.PathConflict):
        c.delete_file("r", branch=b)
    assert c.delete_file("r", branch=b, recursive=True) == 2
    with pytest.raises(errors.FileNotFound):
        c.delete_file("r", branch=b)


def test_put_tar_and_put_dir(c: Client, b: str, tmp_path: Path) -> None:
    res = c.put_tar("unpacked", tar_of({"one.txt": b"1", "sub/two.txt": b"22"}), branch=b)
    assert res.files == 2 and res.size == 3
    assert c.get_file("unpacked/sub/two.txt", branch=b) == b"22"

    local = tmp_path / "tree"
    (local / "deep" / "er").mkdir(parents=True)
    (local / "top.txt").write_bytes(b"top")
    (local / "deep" / "er" / "leaf.bin").write_bytes(os.urandom(300_000))
    (local / "empty-dir").mkdir()
    os.symlink("/etc/passwd", local / "link")  # symlinks are not followed or uploaded
    seen: list[int] = []
    res = c.put_dir(str(local), "up", branch=b, on_bytes=seen.append)
    assert res.files == 2 and sum(seen) == res.size == 300_003
    assert tree(c, b, path="up") == {
        "up/deep/er/leaf.bin": (local / "deep" / "er" / "leaf.bin").read_bytes(),
        "up/top.txt": b"top",
    }
    res = c.put_dir(str(local), branch=b)  # no prefix: at the root
    assert c.get_file("top.txt", branch=b) == b"top"


# ---- commits, branches, history -----------------------------------------------------------
def test_commit_commits_inspect(c: Client, b: str) -> None:
    c.put_file("x", b"1", branch=b)
    c1 = c.commit(b, "first")
    assert c1.branch == b and c1.message == "first" and len(c1.parents) == 1
    assert c.inspect_commit(c1.id) == c1
    assert c.inspect_commit(c1.id[:12]) == c1
    assert c.inspect_commit(b) == c1
    assert c1.id in [x.id for x in c.commits()]
    assert c.get_file("x", commit=c1.id) == b"1"
    with pytest.raises(errors.CommitNotFound):
        c.inspect_commit("deadbeefdeadbeef")
    with pytest.raises(errors.CommitNotFound):
        c.get_file("x", commit="0" * 64)


def test_commit_expect_raises_branch_moved_and_keeps_the_write(c: Client, b: str) -> None:
    c.put_file("x", b"1", branch=b)
    c1 = c.commit(b).id
    c.put_file("x", b"2", branch=b)
    c2 = c.commit(b, expect=c1).id
    c.put_file("y", b"3", branch=b)
    with pytest.raises(errors.BranchMoved) as ei:
        c.commit(b, expect=c1)
    assert isinstance(ei.value, errors.Conflict) and ei.value.status == 409
    assert c.log(b, limit=1)[0].id == c2
    assert c.get_file("y", branch=b) == b"3"
    assert c.get_file("y", commit=c.commit(b, expect=c2).id) == b"3"


def test_branches_create_delete(c: Client) -> None:
    name = f"t{next(_names)}"
    head = c.log("master", limit=1)[0].id
    assert c.create_branch(name) == BranchInfo(name, head)
    assert BranchInfo(name, head) in c.branches()
    with pytest.raises(errors.AlreadyExists):
        c.create_branch(name)
    with pytest.raises(errors.InvalidName):
        c.create_branch("a b")
    with pytest.raises(errors.InvalidName):
        c.create_branch("ab" * 32)
    with pytest.raises(errors.CommitNotFound):
        c.create_branch(name + "x", "deadbeefdeadbeef")
    with pytest.raises(errors.BranchNotFound):
        c.create_branch(name + "y", "no-such-branch")
    assert c.delete_branch(name) is None
    assert name not in [x.name for x in c.branches()]
    with pytest.raises(errors.BranchNotFound):
        c.delete_branch(name)
    with pytest.raises(errors.InvalidName):
        c.delete_branch("..")


def test_log_and_diff(c: Client, b: str) -> None:
    ids = []
    for i in range(3):
        c.put_file(f"f{i}", b"x", branch=b)
        ids.append(c.commit(b, f"m{i}").id)
    log = c.log(b)
    assert [x.id for x in log[:3]] == ids[::-1]
    assert log[-1].message == "seed"
    assert [x.id for x in c.log(b, limit=2)] == ids[:0:-1]
    assert c.log(b, limit=0) == []
    assert [x.id for x in c.log(ids[0], limit=1)] == [ids[0]]
    c.put_file("f0", b"changed", branch=b)
    c.delete_file("f1", branch=b)
    last = c.commit(b).id
    assert [(d.status, d.path) for d in c.diff(ids[1], last)] == [("M", "f0"), ("D", "f1"), ("A", "f2")]
    assert c.diff(last, b) == []
    with pytest.raises(errors.BadRequest):
        c.log(b, limit=-1)
    with pytest.raises(errors.BranchNotFound):
        c.diff("no-such-branch", b)


def test_merge_kinds_and_conflict(c: Client, b: str) -> None:
    other = f"t{next(_names)}"
    c.put_file("m/shared", b"base", branch=b)
    base = c.commit(b).id
    c.create_branch(other, base)
    # fast-forward, then up-to-date
    c.put_file("m/ff", b"ff", branch=other)
    ff = c.commit(other).id
    assert c.merge(other, b).kind == "fast-forward"
    res = c.merge(other, b)
    assert res.kind == "up-to-date" and res.id == ff
    # true merge
    c.put_file("m/mine", b"mine", branch=b)
    c.commit(b)
    c.put_file("m/theirs", b"theirs", branch=other)
    c.commit(other)
    res = c.merge(other, b, message="merged")
    assert res.kind == "merge" and res.message == "merged" and len(res.parents) == 2
    assert c.get_file("m/theirs", commit=res.id) == b"theirs"
    # conflict: typed, with the paths, and nothing applied
    c.put_file("m/shared", b"ours", branch=b)
    ours = c.commit(b).id
    c.put_file("m/shared", b"theirs", branch=other)
    c.put_file("m/clean", b"would be merged", branch=other)
    c.commit(other)
    with pytest.raises(errors.MergeConflict) as ei:
        c.merge(other, b)
    assert [x["path"] for x in ei.value.details["conflicts"]] == ["m/shared"]
    assert ei.value.status == 409 and "conflict" in ei.value.message
    assert c.log(b, limit=1)[0].id == ours
    with pytest.raises(errors.FileNotFound):
        c.get_file("m/clean", branch=b)
    # resolved by strategy
    assert c.get_file("m/shared", commit=c.merge(other, b, strategy="theirs").id) == b"theirs"
    with pytest.raises(errors.BadRequest):
        c.merge(other, b, strategy="bogus")
    # into a dirty branch
    c.put_file("m/wip", b"wip", branch=other)
    with pytest.raises(errors.DirtyBranch):
        c.merge(b, other)


def test_revert_and_discard(c: Client, b: str) -> None:
    c.put_file("r", b"1", branch=b)
    c1 = c.commit(b).id
    c.put_file("r", b"2", branch=b)
    c.put_file("s", b"s", branch=b)
    c2 = c.commit(b).id
    res = c.revert(b, c1, message="back")
    assert res.parents == (c2,) and res.message == "back"
    assert tree(c, b) == tree(c, commit=c1)
    c.put_file("dirty", b"d", branch=b)
    with pytest.raises(errors.DirtyBranch):
        c.revert(b, c2)
    assert c.discard(b) == 1
    assert c.discard(b) == 0
    with pytest.raises(errors.FileNotFound):
        c.get_file("dirty", branch=b)
    with pytest.raises(errors.BranchNotFound):
        c.discard("no-such-branch")


def test_fsck(c: Client) -> None:
    rep = c.fsck()
    assert rep.ok is True and rep.problems == () and rep.commits >= 1
    assert c.fsck(quick=True).ok is True


# ---- typed errors --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    ["../x", "a/../../x", "a/./b", ".", "..", "/abs", "a//b", "a\\b", "a*b", "nul\x00", "x" * 256, "new\nline"],
)
def test_bad_paths_raise_invalid_path_and_write_nothing(c: Client, b: str, path: str) -> None:
    before = tree(c, b)
    with pytest.raises(errors.InvalidPath):
        c.put_file(path, b"data", branch=b)
    with pytest.raises(errors.InvalidPath):
        c.get_file(path, branch=b)
    with pytest.raises(errors.InvalidPath):
        c.delete_file(path, branch=b)
    assert tree(c, b) == before


def test_error_classes_match_the_server(c: Client, b: str) -> None:
    c.put_file("file", b"f", branch=b)
    cases: list[tuple[type[errors.PfsError], object]] = [
        (errors.FileNotFound, lambda: c.get_file("missing", branch=b)),
        (errors.BranchNotFound, lambda: c.put_file("x", b"x", branch="no-such-branch")),
        (errors.BranchNotFound, lambda: c.commit("no-such-branch")),
        (errors.CommitNotFound, lambda: c.get_file("file", commit="deadbeef")),
        (errors.InvalidName, lambda: c.put_file("x", b"x", branch="../x")),
        (errors.PathConflict, lambda: c.put_file("file/below", b"x", branch=b)),
        (errors.PathConflict, lambda: c.put_file("seed.txt/x", b"x", branch=b)),  # a committed file
        (errors.AlreadyExists, lambda: c.create_branch(b)),
        (errors.BadRequest, lambda: c.get_file("file", commit="master", branch=b)),
    ]
    for cls, call in cases:
        with pytest.raises(cls) as ei:
            call()  # type: ignore[operator]
        assert type(ei.value) is cls
        assert 400 <= ei.value.status < 500 and ei.value.message and "\n" not in ei.value.message
    assert issubclass(errors.FileNotFound, errors.NotFound)
    assert issubclass(errors.InvalidPath, errors.BadRequest)


def test_payload_too_large(tmp_path: Path) -> None:
    srv = AppServer(tmp_path / "data", env={"PFS_MAX_FILE_SIZE": "1000"}).start()
    try:
        with srv.client() as c:
            c.put_file("ok", b"x" * 1000)
            with pytest.raises(errors.PayloadTooLarge) as ei:
                c.put_file("big", b"x" * 1001)
            assert ei.value.status == 413
            with pytest.raises(errors.PayloadTooLarge):
                c.put_file("big", iter([b"x" * 600, b"x" * 600]))  # no length up front
            with pytest.raises(errors.FileNotFound):
                c.get_file("big")
            assert c.get_file("ok") == b"x" * 1000
    finally:
        srv.stop()


def test_unreachable_server_raises_unavailable() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", timeout=5) as c:
        for call in [
            lambda: c.get_file("x"),
            lambda: c.put_file("x", b"x"),
            lambda: c.put_file("x", io.BytesIO(b"x")),
            lambda: c.ls(),
            lambda: c.commit(),
            lambda: c.branches(),
            lambda: c.log(),
            lambda: c.fsck(),
        ]:
            with pytest.raises(errors.Unavailable) as ei:
                call()
            assert ei.value.status == 503 and "127.0.0.1" in ei.value.message


def test_url_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real `pfs serve`: the point is that a Client made without arguments reaches the
    # server at $PFS_URL over the network.
    srv = ServerProc(tmp_path / "data").start()
    try:
        with Client(srv.url) as seeder:
            seeder.put_file("seed.txt", b"seed\n")
            seeder.commit(message="seed")
        monkeypatch.setenv("PFS_URL", srv.url + "/")
        with Client() as c:
            assert c.url == srv.url
            assert c.get_file("seed.txt", commit="master") == b"seed\n"
    finally:
        srv.stop()
