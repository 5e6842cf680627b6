"""Clone, pull and push between real `pfs serve` processes (pfs.sync).

Every transfer here runs between two (or three) servers on their own data directories:
full history arrives and checks out (`fsck` re-hashes every object), a pull sends only
what changed, branch updates are compare-and-swaps, an interrupted transfer (the driver
or the receiving server killed with -9) leaves no ref on missing objects and resumes
with fewer bytes, and damaged or malformed streams are refused with a clear 4xx.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import httpx
import orjson
import pytest
import zstandard
from conftest import ServerProc, Storage, tar_of
from seaweed import SeaweedServer

from pfs import Client, errors, sync
from pfs.config import Config
from pfs.errors import CorruptObject, MissingObject
from pfs.repository.repo import Repository
from pfs.storage import trees
from pfs.storage.objects import LocalObjectStore, ObjectStore, decode, encode, hash_bytes
from pfs.storage.s3 import S3Config
from pfs.storage.s3objects import S3ObjectStore
from pfs.sync import wire
from pfs.sync.driver import check_url

BIG = 12 << 20  # more than 8 chunks: stored with a manifest object


def start(tmp_path: Path, name: str) -> ServerProc:
    (tmp_path / name).mkdir()
    return ServerProc(tmp_path / name / "data").start()


def pfs(url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("PFS_DATA_DIR", "PFS_URL")}
    cmd = [sys.executable, "-m", "pfs.cli", "--url", url, *args]
    return subprocess.run(cmd, capture_output=True, timeout=120, env=env)


def heads(c: Client) -> dict[str, str | None]:
    return {b.name: b.head for b in c.branches()}


def objects_size(server: ServerProc) -> int:
    root = server.data_dir / "objects"
    total = 0
    for sub in os.scandir(root):
        if sub.is_dir():
            total += sum(e.stat().st_size for e in os.scandir(sub.path))
    return total


def make_history(c: Client, rnd: random.Random) -> None:
    """Every kind of object: inline files, chunked files, a manifest, a directory split
    into leaves under index nodes, nested directories, a branch and a merge commit."""
    c.put_file("README", b"hello\n")
    c.put_file("docs/guide/intro.txt", b"intro " * 1000)
    c.commit(message="first")
    c.put_tar("flat", tar_of({f"f{i:05}.txt": f"tiny file {i}\n".encode() for i in range(1500)}))
    c.commit(message="a flat directory")
    c.put_file("data/big.bin", rnd.randbytes(BIG))
    c.commit(message="big file")
    c.create_branch("exp")
    c.put_file("exp.txt", b"on exp\n", branch="exp")
    c.delete_file("README", branch="exp")
    c.commit(branch="exp", message="exp work")
    c.put_file("docs/guide/intro.txt", b"changed intro\n")
    c.commit(message="edit on master")
    assert c.merge("exp", "master").kind == "merge"
    c.create_branch("old", c.log("master")[-1].id)


def assert_same_repo(a: Client, b: Client) -> None:
    assert heads(b) == heads(a)
    assert sorted(x.id for x in b.commits()) == sorted(x.id for x in a.commits())
    for name, head in heads(a).items():
        if head:
            assert [x.id for x in b.log(name)] == [x.id for x in a.log(name)]
    rep = b.fsck()
    assert rep.ok, rep.problems


# ---- clone, pull ------------------------------------------------------------------------
def test_clone_copies_all_branches_and_history_then_pull_sends_only_the_change(tmp_path: Path) -> None:
    src, dst = start(tmp_path, "src"), start(tmp_path, "dst")
    rnd = random.Random(1)
    with Client(src.url) as a, Client(dst.url) as b:
        make_history(a, rnd)
        r = pfs(dst.url, "clone", src.url)
        assert r.returncode == 0, r.stderr
        out = r.stdout.decode()
        assert "exp: created" in out and "master: created" in out and "old: created" in out
        assert "new commits" in out
        assert_same_repo(a, b)  # equal commit ids: equal trees and bytes; fsck re-hashed them all
        assert b.get_file("data/big.bin") == a.get_file("data/big.bin")
        assert b.get_file("flat/f01234.txt") == b"tiny file 1234\n"
        assert b.get_file("exp.txt", commit="master") == b"on exp\n"
        head = a.log("master")[0].id
        assert b.inspect_commit(head).parents == a.inspect_commit(head).parents  # the merge

        # Nothing new: nothing sent.
        rep = sync.pull(src.url, dst.url)
        assert (rep.objects, rep.commits, rep.bytes) == (0, 0, 0)
        assert {x.result for x in rep.branches} == {"up-to-date"}

        # One new 100 KB file: its chunk, two tree nodes and the commit.
        a.put_file("docs/new.bin", rnd.randbytes(100_000))
        a.commit(message="one new file")
        rep = sync.pull(src.url, dst.url, [("master", "master")])
        assert rep.commits == 1 and rep.objects == 4, rep
        assert 100_000 < rep.bytes < 104_000
        assert rep.branches[0].result == "fast-forward"

        # 100 bytes changed inside the 12 MiB file: a chunk or two and a manifest, not 12 MiB.
        big = bytearray(a.get_file("data/big.bin"))
        big[BIG // 2 : BIG // 2 + 100] = rnd.randbytes(100)
        a.put_file("data/big.bin", bytes(big))
        # ... and one tiny file in the 1,500-entry directory: one leaf and its index path.
        a.put_file("flat/f00007.txt", b"edited\n")
        a.commit(message="small edits")
        rep = sync.pull(src.url, dst.url)
        assert rep.commits == 1
        assert rep.bytes < 3 * (4 << 20), rep  # at most 2 chunks of the 4 MiB maximum, plus trees
        assert rep.objects <= 12, rep
        assert_same_repo(a, b)
    src.stop()
    dst.stop()


def test_push_is_a_compare_and_swap_fast_forward_unless_forced(tmp_path: Path) -> None:
    remote, local = start(tmp_path, "remote"), start(tmp_path, "local")
    with Client(remote.url) as r, Client(local.url) as loc:
        r.put_file("a.txt", b"a\n")
        base = r.commit(message="base").id
        assert sync.clone(remote.url, local.url).ok

        # A new local commit goes out as a fast-forward.
        loc.put_file("b.txt", b"b\n")
        mine = loc.commit(message="local work").id
        p = pfs(local.url, "push", remote.url, "-b", "master")
        assert p.returncode == 0, p.stderr
        assert f"master: fast-forward {base[:12]} -> {mine[:12]}" in p.stdout.decode()
        assert heads(r)["master"] == mine and r.get_file("b.txt") == b"b\n"

        # Both sides move on: the push is refused, the remote keeps its commit.
        r.put_file("theirs.txt", b"theirs\n")
        theirs = r.commit(message="remote work").id
        loc.put_file("mine.txt", b"mine\n")
        mine2 = loc.commit(message="more local work").id
        p = pfs(local.url, "push", remote.url)
        assert p.returncode == 1
        assert "master: rejected" in p.stdout.decode() and "diverged" in p.stdout.decode()
        assert p.stderr.decode().count("\n") == 1 and "not updated: master" in p.stderr.decode()
        assert heads(r)["master"] == theirs

        # A clone needs an empty destination.
        p = pfs(local.url, "clone", remote.url)
        assert p.returncode == 1 and "is not empty (branches master have commits)" in p.stderr.decode()

        # The same refusal pulling the other way; the remote's history lands under another name.
        rep = sync.pull(remote.url, local.url)
        assert not rep.ok and rep.branches[0].result == "rejected" and heads(loc)["master"] == mine2
        rep = sync.pull(remote.url, local.url, [sync.parse_refspec("master:theirs")])
        assert rep.ok and heads(loc)["theirs"] == theirs and rep.objects == 0  # the commits came already
        loc.merge("theirs", "master")
        assert sync.push(local.url, remote.url, [("master", "master")]).branches[0].result == "fast-forward"
        assert r.get_file("theirs.txt") == b"theirs\n" and r.get_file("mine.txt") == b"mine\n"

        # A remote that is ahead is left alone.
        r.put_file("later.txt", b"later\n")
        later = r.commit().id
        rep = sync.push(local.url, remote.url, [("master", "master")])
        assert rep.ok and rep.branches[0].result == "ahead" and heads(r)["master"] == later

        # --force moves it back, still as a swap from the head it saw.
        p = pfs(local.url, "push", "--force", remote.url, "-b", "master")
        assert p.returncode == 0 and "master: forced" in p.stdout.decode(), p.stderr
        assert heads(r)["master"] == heads(loc)["master"]

        # The swap itself: a stale `old` is a 409 and changes nothing.
        with pytest.raises(errors.BranchMoved):
            r.sync_update_ref("master", later, old=base)
        assert heads(r)["master"] == heads(loc)["master"]
        # A branch with uncommitted writes is not moved under them.
        r.put_file("dirty.txt", b"dirty\n")
        with pytest.raises(errors.DirtyBranch):
            r.sync_update_ref("master", later, force=True)
        r.discard()
        # A commit the server does not have cannot be named.
        with pytest.raises(errors.CommitNotFound):
            r.sync_update_ref("master", "ab" * 32)
    remote.stop()
    local.stop()


def test_clone_and_push_back_on_every_backend(storage: Storage, tmp_path: Path) -> None:
    """Sender and receiver on the embedded store and on PostgreSQL + S3."""
    (tmp_path / "local").mkdir()
    there = ServerProc(storage.data_dir, storage=storage).start()
    here = ServerProc(tmp_path / "local" / "data").start()
    rnd = random.Random(4)
    with Client(there.url) as a, Client(here.url) as b:
        a.put_file("x/big.bin", rnd.randbytes(5 << 20))
        a.put_file("x/small.txt", b"small\n")
        a.commit(message="one")
        assert sync.clone(there.url, here.url).commits == 1
        b.put_file("x/big.bin", rnd.randbytes(3 << 20))
        b.put_file("y/new.txt", b"new\n")
        b.commit(message="two")
        rep = sync.push(here.url, there.url)
        assert rep.ok and rep.commits == 1 and rep.branches[0].result == "fast-forward"
        assert rep.objects <= 8  # a new 3 MiB file: a few chunks, three tree nodes, the commit
        assert_same_repo(b, a)
        assert a.get_file("y/new.txt") == b"new\n"
    there.stop()
    here.stop()


# ---- interruption and resume ------------------------------------------------------------
def wait_for(cond: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.002)


def test_interrupted_transfer_moves_no_ref_and_resumes_with_fewer_bytes(tmp_path: Path) -> None:
    src, dst = start(tmp_path, "src"), start(tmp_path, "dst")
    rnd = random.Random(2)
    with Client(src.url) as a:
        for i in range(8):
            a.put_file(f"part{i}.bin", rnd.randbytes(20 << 20))
            a.commit(message=f"part {i}")
    total = objects_size(src)
    empty = objects_size(dst)

    # 1. The driver (`pfs clone`) is killed with -9 once the receiver made a batch durable.
    env = {k: v for k, v in os.environ.items() if k not in ("PFS_DATA_DIR", "PFS_URL")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pfs.cli", "--url", dst.url, "clone", src.url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: objects_size(dst) > empty)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    with Client(dst.url) as b:
        assert heads(b) == {"master": None}  # no ref moved
        assert b.fsck().ok
    first = objects_size(dst) - empty
    assert 0 < first < total

    # 2. The receiving server, then 3. the sending one, are killed with -9 in the middle of
    # an attempt (from the progress callback, so mid-stream for sure).
    def attempt(victim: ServerProc, after: int) -> None:
        def progress(objects: int, sent: int) -> None:
            if sent >= after and victim.proc is not None and victim.proc.poll() is None:
                victim.kill9()

        before = objects_size(dst)
        with pytest.raises(errors.Unavailable):
            sync.clone(src.url, dst.url, on_progress=progress)
        victim.start()
        if victim is src:  # the receiver keeps what it verified before the cut
            wait_for(lambda: objects_size(dst) > before, timeout=10)
        with Client(dst.url) as b:
            assert heads(b) == {"master": None}
            assert b.fsck().ok

    attempt(dst, 40 << 20)
    attempt(src, 16 << 20)
    kept = objects_size(dst) - empty
    assert first < kept < total

    # 4. The rerun sends only what is still missing, and finishes.
    rep = sync.clone(src.url, dst.url)
    assert rep.ok and rep.branches[0].result == "created"
    assert rep.bytes < total - kept + (1 << 20), (rep.bytes, total, kept)
    with Client(src.url) as a, Client(dst.url) as b:
        assert_same_repo(a, b)
    src.stop()
    dst.stop()


# ---- damage -----------------------------------------------------------------------------
def flip_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_corrupt_object_on_the_source_fails_the_transfer_and_changes_nothing(tmp_path: Path) -> None:
    src, dst = start(tmp_path, "src"), start(tmp_path, "dst")
    with Client(src.url) as a, Client(dst.url) as b:
        a.put_file("x/chunked.bin", random.Random(3).randbytes(3 << 20))
        a.put_file("x/small.txt", b"small\n")
        a.commit()
        files = sorted((src.data_dir / "objects").glob("*/*"), key=lambda p: p.stat().st_size)
        chunk = files[-1]  # the biggest object: a chunk of the file
        flip_byte(chunk)
        r = pfs(dst.url, "clone", src.url)
        assert r.returncode == 1
        err = r.stderr.decode()
        assert err.count("\n") == 1 and "does not match its hash" in err and src.url in err
        assert chunk.parent.name + chunk.name in err
        assert heads(b) == {"master": None} and b.fsck().ok

        flip_byte(chunk)  # repaired; now damage the root tree, met while listing what to send
        tree_key = a.inspect_commit("master").tree
        flip_byte(src.data_dir / "objects" / tree_key[:2] / tree_key[2:])
        with pytest.raises(errors.CorruptObject, match=tree_key):
            sync.clone(src.url, dst.url)
        assert heads(b) == {"master": None} and b.fsck().ok
    src.stop()
    dst.stop()


# ---- malformed input (a fault-injecting sender) ------------------------------------------
def frame(kind: str, key: str, payload: bytes) -> bytes:
    return kind.encode() + bytes.fromhex(key) + len(payload).to_bytes(4, "big") + payload


def obj(data: bytes) -> tuple[str, bytes]:
    return blake3.blake3(data).hexdigest(), encode(data)


END = frame(".", "00" * 32, b"")


@pytest.fixture(scope="module")
def one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path_factory.mktemp("sync") / "data").start()
    with Client(s.url) as c:
        c.put_file("seed.txt", b"seed\n")
        c.commit(message="seed")
    yield s
    s.stop()


def post_stream(url: str, body: bytes) -> httpx.Response:
    return httpx.post(url + "/sync/objects", content=body, headers={"accept": "application/json"}, timeout=30)


def test_receiver_refuses_bad_streams_and_keeps_refs(one: ServerProc) -> None:
    with Client(one.url) as c:
        before = heads(c)
        ncommits = len(c.commits())
        good_key, good_blob = obj(b"a good object")
        bad_key, _ = obj(b"what the name promises")
        tree = orjson.dumps({"entries": [["f.bin", "f", "ab" * 32, 5, [["cd" * 32, 5]]]]})  # names a missing chunk
        tree_key, tree_blob = obj(tree)
        head = before["master"]
        assert head is not None
        root = c.inspect_commit(head).tree

        def commit_obj(tree: str, parents: list[str]) -> tuple[str, bytes]:
            body = {"tree": tree, "parents": parents, "branch": "master", "time": 1.0, "message": "x"}
            return obj(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))

        orphan_key, orphan_blob = commit_obj(root, ["ef" * 32])
        holey_key, holey_blob = commit_obj(tree_key, [head])
        cases: list[tuple[bytes, int, str]] = [
            (b"GARBAGE!" + END, 400, "bad_request"),
            (wire.MAGIC + frame("b", bad_key, encode(b"something else")) + END, 400, "bad_object"),
            (wire.MAGIC + frame("x", good_key, good_blob) + END, 400, "bad_request"),
            (wire.MAGIC + frame("b", good_key, good_blob)[:-3], 400, "bad_request"),  # cut inside an object
            (wire.MAGIC + frame("b", good_key, good_blob), 400, "bad_request"),  # no end frame
            (wire.MAGIC + END + b"trailing", 400, "bad_request"),
            (wire.MAGIC + b"b" + bytes(32) + (1 << 30).to_bytes(4, "big"), 413, "payload_too_large"),
            (wire.MAGIC + frame("c", good_key, good_blob) + END, 400, "bad_object"),  # not a commit
            (wire.MAGIC + frame("c", orphan_key, orphan_blob) + END, 400, "bad_object"),  # unknown parent
            (wire.MAGIC + frame("t", tree_key, tree_blob) + frame("c", holey_key, holey_blob) + END, 400, "bad_object"),
            (wire.MAGIC + frame("!", "00" * 32, b'{"message": "disk on fire"}') + END, 400, "bad_request"),
        ]
        # A zstd frame announcing 1 GiB (an empty last block follows) is refused before it is decompressed.
        bomb = b"Z\x28\xb5\x2f\xfd\xe0" + (1 << 30).to_bytes(8, "little") + b"\x01\x00\x00"
        assert zstandard.frame_content_size(bomb[1:]) == 1 << 30
        cases.append((wire.MAGIC + frame("b", good_key, bomb) + END, 400, "bad_object"))
        for body, status, code in cases:
            r = post_stream(one.url, body)
            assert (r.status_code, r.json()["error"]) == (status, code), (body[:60], r.text)
            assert "\n" not in r.json()["message"]
        msg = post_stream(one.url, wire.MAGIC + frame("c", holey_key, holey_blob) + END).json()["message"]
        assert "incomplete" in msg and "cd" * 32 in msg
        assert heads(c) == before and len(c.commits()) == ncommits
        assert c.fsck().ok
        # What arrived whole before a cut is kept (unreferenced), so a rerun need not resend it.
        assert c.sync_missing([("b", good_key), ("c", holey_key)]) == [("c", holey_key)]
        # And a well-formed stream is taken.
        k2, b2 = obj(b"another object")
        r = post_stream(one.url, wire.MAGIC + frame("b", k2, b2) + END)
        assert r.status_code == 200 and r.json() == {"objects": 1, "bytes": wire.HEADER_SIZE + len(b2), "commits": 0}


@pytest.mark.parametrize(
    ("route", "body", "status"),
    [
        ("/sync/missing", b"not json", 400),
        ("/sync/missing", b'{"objects": [["b", "../../etc/passwd"]]}', 400),
        ("/sync/missing", orjson.dumps({"objects": [["b", "AB" * 32]]}), 400),
        ("/sync/missing", orjson.dumps({"objects": [["q", "ab" * 32]]}), 400),
        ("/sync/missing", orjson.dumps({"objects": [["b", "ab" * 32]] * 10_001}), 413),
        ("/sync/missing", b"[" + b" " * (3 << 20) + b"]", 413),
        ("/sync/fetch", orjson.dumps({"objects": "ab"}), 400),
        ("/sync/ancestors", orjson.dumps({"commits": ["ab" * 32]}), 404),
        ("/sync/ancestors", orjson.dumps({"commits": []}), 400),
        ("/sync/ancestors", orjson.dumps({"commits": ["ab" * 31]}), 400),
        ("/sync/walk", orjson.dumps({"commits": ["ab" * 32]}), 404),
        ("/sync/walk", orjson.dumps({"commits": [1]}), 400),
    ],
)
def test_json_routes_refuse_bad_input(one: ServerProc, route: str, body: bytes, status: int) -> None:
    r = httpx.post(one.url + route, content=body, headers={"accept": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    assert r.json()["message"]


def test_ref_route_refuses_bad_input(one: ServerProc) -> None:
    with Client(one.url) as c:
        head = heads(c)["master"]
        assert head is not None
        for params, status in [
            ({"branch": "master"}, 400),
            ({"branch": "../x", "new": head}, 400),
            ({"branch": "master", "new": "xyz"}, 400),
            ({"branch": "master", "new": "ab" * 32}, 404),
            ({"branch": "master", "new": head, "old": "ab" * 32}, 409),
        ]:
            r = httpx.post(one.url + "/sync/ref", params=params, timeout=30)
            assert r.status_code == status, (params, r.text)
        assert heads(c)["master"] == head
        r = httpx.post(one.url + "/sync/ref", params={"branch": "copy", "new": head, "old": ""}, timeout=30)
        assert r.status_code == 200 and r.text == f"copy: created - -> {head}\n"
        c.delete_branch("copy")


def test_fetch_of_an_unknown_object_ends_the_stream_with_an_error_frame(one: ServerProc) -> None:
    r = httpx.post(one.url + "/sync/fetch", content=orjson.dumps({"objects": [["b", "ab" * 32]]}), timeout=30)
    assert r.status_code == 200 and r.content.startswith(wire.MAGIC + b"!")
    assert b"is missing" in r.content


def test_remote_urls_are_checked(one: ServerProc) -> None:
    for url, msg in [
        ("ftp://example.com", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("http://", "http:// or https://"),
        ("http://example.com:99999", "not a valid URL"),
        ("http://user:secret@example.com:99999", "not a valid URL: 'http://***@example.com:99999'"),
        ("ftp://user:secret@example.com", "not 'ftp://***@example.com'"),
        ("http://example.com/?a=1", "query"),
    ]:
        with pytest.raises(errors.BadRequest, match=re.escape(msg)) as exc:
            sync.pull(url, one.url)
        assert "secret" not in exc.value.message
    assert check_url("https://example.com:8443/") == "https://example.com:8443"
    # The command: one line, exit 1, no password echoed.
    r = pfs(one.url, "pull", "http://user:secret@example.com")
    err = r.stderr.decode()
    assert r.returncode == 1 and "credentials" in err and err.count("\n") == 1 and "secret" not in err
    with pytest.raises(errors.BranchNotFound):
        sync.pull(one.url, one.url, [("nope", "nope")])
    r = pfs(one.url, "pull", one.url, "-b", "bad:na me")
    assert r.returncode == 1 and "invalid branch name" in r.stderr.decode()


# ---- what sync asks of the repository and the object store (in-process) -------------------
@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "objects-root")
        return
    weed: SeaweedServer = request.getfixturevalue("seaweed")
    s3 = S3ObjectStore(f"s3://{weed.new_bucket('objects')}/repo", S3Config(**weed.config()))
    yield s3
    s3.close()


def test_store_hands_out_the_stored_form_verified_and_answers_many_lookups(store: ObjectStore) -> None:
    text = b"compressible " * 1000
    packed = store.put_bytes(text)
    raw = hash_bytes(text + b"!")
    store.put(raw, text + b"!", compress=False)  # stored raw although it would compress
    assert store.get_stored(packed)[:1] == b"Z" and decode(packed, store.get_stored(packed)) == text
    assert store.get_stored(raw) == b"R" + text + b"!"  # as stored: not recompressed on the way out
    with pytest.raises(MissingObject):
        store.get_stored("ab" * 32)
    absent = [hash_bytes(bytes([i])) for i in range(20)]
    keys = [packed, *absent[:10], raw, *absent[10:]]  # enough for the S3 store to ask in parallel
    assert store.has_many(keys) == [k in (packed, raw) for k in keys]
    assert store.has_many([]) == []
    if isinstance(store, LocalObjectStore):  # damage is caught before anything is sent
        path = Path(store.path(raw))
        path.write_bytes(path.read_bytes()[:-1] + b"?")
        with pytest.raises(CorruptObject):
            store.get_stored(raw)


def test_move_branch_checks_history_and_waits_for_the_branch_lock(tmp_path: Path) -> None:
    repo: Repository = Config(str(tmp_path / "data")).open()

    def commit(branch: str, path: str) -> str:
        w = repo.writer()
        w.write(path.encode())
        repo.stage_file(branch, path, w.finish())
        return repo.commit_branch(branch, path).id

    first = commit("master", "a")
    repo.create_branch("exp", first)
    second = commit("exp", "b")
    assert repo.is_ancestor(first, second) and repo.is_ancestor(second, second)
    assert not repo.is_ancestor(second, first)
    assert repo.move_branch("master", first, first) == "up-to-date"

    # A move waits for whatever holds the branch (a commit, a merge) and then still checks `old`.
    results: list[str] = []
    with repo._lock("master"):
        mover = threading.Thread(target=lambda: results.append(repo.move_branch("master", second, first)))
        mover.start()
        mover.join(0.3)
        assert mover.is_alive() and repo.branch_head("master") == first
    mover.join(10)
    assert results == ["fast-forward"] and repo.branch_head("master") == second
    assert repo.move_branch("master", first) == "ahead"
    commit("exp", "c")
    diverged = commit("master", "d")
    with pytest.raises(errors.NotFastForward):
        repo.move_branch("exp", diverged)
    assert repo.move_branch("copy", second, "") == "created"
    assert [c for c, _ in sorted(repo.branches())] == ["copy", "exp", "master"]


def test_wire_kinds_are_the_stored_object_kinds() -> None:
    """The wire format repeats the storage letters (to stay light for the client): they must agree."""
    assert {trees.COMMIT, trees.TREE, trees.MANIFEST, trees.BLOB} == wire.KINDS
    assert (wire.COMMIT, wire.TREE, wire.MANIFEST, wire.BLOB) == (trees.COMMIT, trees.TREE, trees.MANIFEST, trees.BLOB)


def test_the_server_side_loads_neither_the_driver_nor_the_client() -> None:
    """The driver needs pfs.client; the servers answer `sync` requests without it."""
    code = "import sys, pfs.http.api; print(sorted(m for m in ('pfs.client', 'pfs.sync.driver') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"
    assert callable(sync.clone) and sync.TransferReport().ok  # the public names still load on use
