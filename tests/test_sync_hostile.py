"""A hostile sync peer: requests built by hand in the wire format (pfs.sync.wire framing,
pfs.storage encoders) and posted straight to `/sync/objects` of a real `pfs serve`.

The receiver holds everything it takes to what a local write could produce: file hashes
(streamed over the chunks), names, sizes, depth, tree shape, chunk and node bounds, commit
fields, and the server's own limits. Each refusal is a 400 `bad_object` naming the object;
nothing of a refused commit is indexed or stored, no branch moves, and what was checked
before it in the same stream stays. A clone from a server holding such objects (planted
in its storage behind its back) fails with one line naming the object, leaving the
destination clean.
"""

from __future__ import annotations

import binascii
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import zstandard
from conftest import ServerProc, Storage

from pfs import Client, errors, sync
from pfs.config import Config
from pfs.repository.fsck import fsck
from pfs.storage.chunking import MAX_CHUNK, MIN_CHUNK
from pfs.storage.objects import encode, hash_bytes
from pfs.storage.trees import Commit
from pfs.sync import wire

LIMIT = 32 << 20  # the module server's --max-file-size
Obj = tuple[str, str, bytes]  # (wire kind, key, plain bytes)


# ---- building objects by hand ---------------------------------------------------------------
def blob(data: bytes) -> Obj:
    return ("b", hash_bytes(data), data)


def node(raw: Any, kind: str = "t") -> Obj:
    data = orjson.dumps(raw)
    return (kind, hash_bytes(data), data)


def leaf(*entries: list[Any]) -> Obj:
    return node({"entries": [list(e) for e in entries]})


def inline(name: str, data: bytes, size: float | None = None, digest: str | None = None) -> list[Any]:
    b64 = binascii.b2a_base64(data, newline=False).decode()
    return [name, "i", digest or hash_bytes(data), len(data) if size is None else size, b64]


def chunked(name: str, chunks: list[Obj], size: int | None = None, digest: str | None = None) -> list[Any]:
    content = b"".join(c[2] for c in chunks)
    real = size if size is not None else len(content)
    return [name, "f", digest or hash_bytes(content), real, [[c[1], len(c[2])] for c in chunks]]


def subdir(name: str, tree: Obj, size: int) -> list[Any]:
    return [name, "d", tree[1], size]


def commit(tree: str, parents: list[str], **fields: Any) -> Obj:
    body = {"tree": tree, "parents": parents, "branch": "master", "time": 1.7e9, "message": "hostile", **fields}
    data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return ("c", hash_bytes(data), data)


def frame(kind: str, key: str, stored: bytes) -> bytes:
    return wire.frame(kind, bytes.fromhex(key), stored)


def stream(*objs: Obj) -> bytes:
    body = [wire.MAGIC]
    body += [frame(kind, key, encode(data)) for kind, key, data in objs]
    body.append(wire.frame(wire.END, wire.ZERO_KEY, b""))
    return b"".join(body)


def post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(url + "/sync/objects", content=body, headers={"accept": "application/json"}, timeout=60)


def heads(c: Client) -> dict[str, str | None]:
    return {b.name: b.head for b in c.branches()}


# ---- the server under attack ------------------------------------------------------------------
class Target:
    def __init__(self, server: ServerProc) -> None:
        self.server = server
        self.url = server.url
        self.client = Client(server.url)
        self.head = heads(self.client)["master"] or ""
        self.root = self.client.inspect_commit(self.head).tree

    def refused(self, objs: list[Obj], *expect: str) -> str:
        """Push `objs` (a commit last); it must be refused as a bad object whose message
        holds each of `expect`, leaving no trace: the commit is neither indexed nor stored
        (nothing names it: `GET /commit/<id>` is a 404), no branch moved."""
        before = heads(self.client)
        r = post(self.url, stream(*objs))
        assert (r.status_code, r.json().get("error")) == (400, "bad_object"), r.text
        msg = str(r.json()["message"])
        assert "\n" not in msg
        for part in expect:
            assert part in msg, (part, msg)
        kind, key, _ = objs[-1]
        if kind == "c":
            assert self.client.sync_missing([("c", key)]) == [("c", key)]
            assert httpx.get(f"{self.url}/commit/{key}", timeout=10).status_code == 404
            ref = httpx.post(self.url + "/sync/ref", params={"branch": "evil", "new": key, "old": ""}, timeout=10)
            assert ref.status_code == 404, ref.text
        assert heads(self.client) == before
        return msg

    def accepted(self, objs: list[Obj]) -> None:
        r = post(self.url, stream(*objs))
        assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    server = ServerProc(tmp_path_factory.mktemp("hostile") / "data", args=["--max-file-size", str(LIMIT)]).start()
    with Client(server.url) as c:
        c.put_file("seed.txt", b"seed\n")
        c.put_file("dir/inner.txt", b"inner\n")
        c.commit(message="seed")
    t = Target(server)
    yield t
    t.client.close()
    server.stop()


# ---- 1. file hashes ------------------------------------------------------------------------------
def test_a_forged_file_hash_is_refused_and_a_true_one_taken(target: Target) -> None:
    data = os.urandom(5000)  # over the inline limit: a chunked file
    chunk = blob(data)
    forged = hash_bytes(b"what a reader would trust")
    root = leaf(chunked("f.bin", [chunk], digest=forged))
    c = commit(root[1], [target.head])
    target.refused([chunk, root, c], "f.bin", "does not match its hash", forged)
    # Split over two chunks (the first of MIN_CHUNK bytes), each fine, the whole forged:
    first, second = blob(os.urandom(MIN_CHUNK)), blob(os.urandom(100))
    root = leaf(chunked("two.bin", [first, second], digest=forged))
    target.refused([first, second, root, commit(root[1], [target.head])], "two.bin", "does not match its hash")
    # The same chunks swapped: every chunk present, the sizes add up, the hash does not.
    content = first[2] + second[2]
    swapped = ["two.bin", "f", hash_bytes(content), len(content), [[second[1], 100], [first[1], MIN_CHUNK]]]
    root = leaf(swapped)
    target.refused([root, commit(root[1], [target.head])], "two.bin")

    # The honest file goes in, and reads back with its hash as ETag.
    root = leaf(chunked("f.bin", [chunk]))
    good = commit(root[1], [target.head], message="honest")
    target.accepted([chunk, root, good])
    assert target.client.sync_missing([("c", good[1])]) == []
    r = httpx.get(f"{target.url}/file/f.bin", params={"commit": good[1]}, timeout=10)
    assert r.content == data and hash_bytes(data) in r.headers["etag"]


def test_a_missing_chunk_still_says_the_commit_is_incomplete(target: Target) -> None:
    absent = blob(os.urandom(3000))
    root = leaf(chunked("f.bin", [absent]))
    target.refused([root, commit(root[1], [target.head])], "incomplete", absent[1])


# ---- 2. names, sizes, depth, tree shape, commit fields -------------------------------------------
BAD_NAMES = ["", ".", "..", "a/b", "../etc", "x\x1b]0;pwned\x07", "new\nline", "nul\x00", "a\\b", "a*b", "é" * 128]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_entry_names_follow_the_rules_of_a_local_path(target: Target, name: str) -> None:
    root = leaf(inline(name, b"x"))
    msg = target.refused([root, commit(root[1], [target.head])], root[1], "not a valid name")
    assert "\x1b" not in msg and "\x07" not in msg  # shown escaped
    tree = leaf(inline("ok.txt", b"x"))
    root = leaf(subdir(name, tree, 1))
    target.refused([tree, root, commit(root[1], [target.head])], "not a valid name")


def test_sizes_must_match_the_bytes(target: Target) -> None:
    data = b"twelve bytes"
    for entry in (inline("big", data, size=10**15), inline("neg", data, size=-1), inline("flt", data, size=12.0)):
        root = leaf(entry)
        target.refused([root, commit(root[1], [target.head])], root[1])
    chunk = blob(os.urandom(3000))
    # 10^15 bytes over one 3000-byte chunk: more than --max-file-size, and more than the chunks hold.
    for size, why in ((10**15, "limit"), (LIMIT - 1, "hold 3000 bytes")):
        root = leaf(chunked("f.bin", [chunk], size=size))
        target.refused([chunk, root, commit(root[1], [target.head])], why)
    # A directory entry's size is the total of the files below it.
    tree = leaf(inline("a.txt", b"abc"))
    for size in (4, 10**15):
        root = leaf(subdir("d", tree, size))
        target.refused([tree, root, commit(root[1], [target.head])], "says", "hold 3")
    # ... also for a directory the parent has as it is (same tree), under a wrong size.
    seed_dir = leaf(inline("inner.txt", b"inner\n"))  # the seed's `dir`, built as a local write builds it
    root = leaf(subdir("dir", seed_dir, 7), inline("seed.txt", b"seed\n"))
    target.refused([root, commit(root[1], [target.head])], "directory 'dir'", "says 7 bytes", "hold 6")
    root = leaf(subdir("dir", seed_dir, 6), inline("seed.txt", b"seed\n"))
    assert root[1] == target.root  # so the check above did compare against the parent's own tree


def test_directories_go_no_deeper_than_a_local_path(target: Target) -> None:
    def nested(levels: int) -> list[Obj]:
        objs = [leaf(inline("f", b"deep"))]
        for _ in range(levels):
            objs.append(leaf(subdir("d", objs[-1], 4)))
        return objs

    objs = nested(256)  # d/d/.../f: 257 segments
    target.refused([*objs, commit(objs[-1][1], [target.head])], "deeper than 256")
    objs = nested(255)  # 256 segments: the deepest a local write makes
    target.accepted([*objs, commit(objs[-1][1], [target.head], message="deep")])


def test_tree_nodes_have_the_shape_a_local_write_gives_them(target: Target) -> None:
    a, b = inline("a", b"1"), inline("b", b"2")
    cases: list[tuple[Obj, str]] = [
        (leaf(b, a), "order"),
        (leaf(a, a), "order"),
        (leaf(*[inline(f"n{i:05}", b"x") for i in range(1025)]), "1025 entries"),
        (node({"entries": [a], "extra": 1}), "not a tree node"),
        (node([a]), "not a tree node"),
        (leaf(["x", "f", "ab" * 32, 5, "not a manifest"]), "manifest"),
        (leaf(["x", "f", "ab" * 32, 5, [["cd" * 32, 5]] * 9]), "1 to 8 chunks"),
        (leaf(["x", "q", "ab" * 32, 5]), "neither a file nor a directory"),
        (leaf(["x", "i", "ab" * 32, 1, "!!"]), "inline content"),
        (leaf(["x", "d", "AB" * 32, 1]), "malformed"),
    ]
    for root, why in cases:
        target.refused([root, commit(root[1], [target.head])], why)
    # An empty directory (local writes drop them).
    empty = leaf()
    root = leaf(subdir("e", empty, 0))
    target.refused([empty, root, commit(root[1], [target.head])], "empty")
    # Index nodes: counts, sizes and first names must describe their children; bounds hold.
    left, right = leaf(inline("a", b"1")), leaf(inline("m", b"22"))
    good = [["a", left[1], 1, 1], ["m", right[1], 1, 2]]
    for index, why in [
        ({"index": [["a", left[1], 2, 1], good[1]], "level": 1}, "wrongly"),
        ({"index": [["a", left[1], 1, 5], good[1]], "level": 1}, "wrongly"),
        ({"index": [["b", left[1], 1, 1], good[1]], "level": 1}, "wrongly"),
        ({"index": good, "level": 2}, "wrongly"),
        ({"index": [good[1], good[0]], "level": 1}, "not in order across"),
        ({"index": [good[0]] * 257, "level": 1}, "not a valid index node"),
        ({"index": good, "level": 1, "x": 0}, "not a tree node"),
    ]:
        root = node(index)
        target.refused([left, right, root, commit(root[1], [target.head])], why)
    # Names must not overlap across leaves: "z" in the first leaf sorts after the second's first.
    overlap = leaf(inline("a", b"1"), inline("z", b"1"))
    root = node({"index": [["a", overlap[1], 2, 2], ["m", right[1], 1, 2]], "level": 1})
    target.refused([overlap, right, root, commit(root[1], [target.head])], "not in order across")
    root = node({"index": good, "level": 1})
    target.accepted([left, right, root, commit(root[1], [target.head], message="indexed")])


def test_tree_nodes_and_manifests_are_bounded_in_bytes(target: Target) -> None:
    # A 5 MiB tree node: more than a leaf of 1024 entries can hold, under any kind (on this
    # server even a manifest may not be that big: --max-file-size bounds it too).
    big = node({"entries": [["a", "d", "ab" * 32, 0]], "pad": "x" * (5 << 20)})
    for kind in ("t", "m"):
        root = leaf(subdir("d", big, 0))
        target.refused([(kind, big[1], big[2]), root, commit(root[1], [target.head])], big[1], "larger than")
    # A manifest longer than a file of its size can need (every chunk but the last >= MIN_CHUNK).
    chunk = blob(os.urandom(MIN_CHUNK))
    manifest = node({"chunks": [[chunk[1], MIN_CHUNK]] * 9 + [["ab" * 32, 1]] * 1000}, kind="m")
    entry = ["f.bin", "f", "ab" * 32, 9 * MIN_CHUNK + 1000, manifest[1]]
    root = leaf(entry)
    target.refused([chunk, manifest, root, commit(root[1], [target.head])], "manifest")
    # A manifest of 8 chunks or fewer (a local write keeps those inline).
    manifest = node({"chunks": [[chunk[1], MIN_CHUNK]] * 2}, kind="m")
    root = leaf(["f.bin", "f", hash_bytes(chunk[2] * 2), 2 * MIN_CHUNK, manifest[1]])
    target.refused([chunk, manifest, root, commit(root[1], [target.head])], "8 chunks or fewer")
    # Chunks below MIN_CHUNK (but the last) or above MAX_CHUNK in a list.
    small = blob(b"s" * 3000)
    root = leaf(chunked("f.bin", [small, small]))
    target.refused([small, root, commit(root[1], [target.head])], "outside 262144")


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"time": 1e300}, "between 1970 and 9999"),
        ({"time": -5}, "between 1970 and 9999"),
        ({"time": None}, "between 1970 and 9999"),
        ({"time": True}, "between 1970 and 9999"),
        ({"message": "m" * 8193}, "longer than 8192"),
        ({"message": "nul\x00"}, "NUL"),
        ({"message": 5}, "strings"),
        ({"branch": "../x"}, "invalid branch name"),
        ({"branch": "deadbeefcafe"}, "looks like a commit id"),
        ({"extra": "field"}, "not one"),
        ({"tree": "xyz"}, "not an object id"),
    ],
)
def test_commit_fields_are_held_to_a_local_commits_bounds(target: Target, fields: dict[str, Any], why: str) -> None:
    root = leaf(inline("f", b"x"))
    c = commit(fields.pop("tree", root[1]), [target.head], **fields)
    target.refused([root, c], c[1], why)


def test_commit_parents_are_indexed_and_distinct(target: Target) -> None:
    root = leaf(inline("f", b"x"))
    target.refused([root, commit(root[1], [target.head, target.head])], "distinct")
    target.refused([root, commit(root[1], ["ab" * 32])], "not here")


# ---- 3. decompression and object bounds ----------------------------------------------------------
def zero_bomb(size: int, with_size: bool = True) -> bytes:
    """`size` zero bytes, zstd-compressed (a few KB): the stored form of a decompression bomb."""
    return b"Z" + zstandard.ZstdCompressor(level=3, write_content_size=with_size).compress(bytes(size))


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {"sized": zero_bomb(256 << 20), "unsized": zero_bomb(256 << 20, with_size=False)}


def test_no_object_bigger_than_its_kind_allows_gets_in(target: Target, bombs: dict[str, bytes]) -> None:
    """A 256 MiB zero chunk is 8 KB on the wire: once stored, every reader and every fetch of
    it paid for 256 MiB. No kind of object takes it now, under its true name or not."""
    key = hash_bytes(bytes(256 << 20))
    for kind in ("b", "t", "m", "c"):
        for stored in bombs.values():
            assert len(stored) < 64 << 10
            t0 = time.monotonic()
            r = post(target.url, wire.MAGIC + frame(kind, key, stored) + wire.frame(wire.END, wire.ZERO_KEY, b""))
            assert (r.status_code, r.json()["error"]) == (400, "bad_object"), r.text
            assert "larger than" in r.json()["message"] and key in r.json()["message"], r.text
            assert time.monotonic() - t0 < 5
    assert target.client.sync_missing([("b", key)]) == [("b", key)]  # not stored
    fetched = httpx.post(target.url + "/sync/fetch", content=orjson.dumps({"objects": [["b", key]]}), timeout=10)
    assert fetched.content.startswith(wire.MAGIC + b"!") and b"is missing" in fetched.content
    # The chunker's maximum itself is fine (a file of zeros is made of such chunks).
    top = bytes(MAX_CHUNK)
    assert post(target.url, stream(blob(top))).status_code == 200
    over = bytes(MAX_CHUNK + 1)
    r = post(target.url, stream(blob(over)))
    assert r.status_code == 400 and f"larger than the {MAX_CHUNK} bytes a chunk may have" in r.json()["message"]


def rss(server: ServerProc, field: str) -> int:
    """VmRSS (now) or VmHWM (the peak since `reset_peak`) of the server process, in bytes."""
    assert server.proc is not None
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    found = re.search(rf"{field}:\s+(\d+) kB", status)
    assert found is not None
    return int(found.group(1)) << 10


def reset_peak(server: ServerProc) -> None:
    assert server.proc is not None
    Path(f"/proc/{server.proc.pid}/clear_refs").write_text("5")


def test_concurrent_bombs_under_a_wrong_name_cost_little_memory(target: Target, bombs: dict[str, bytes]) -> None:
    """Each frame announces (or holds) 256 MiB of zeros under a wrong key: all are refused,
    none decompressed past its kind's bound, whatever runs at once (before: 16 of them took
    4.1 GB of RSS)."""
    wrong = "ab" * 32
    bodies = [
        wire.MAGIC + frame(kind, wrong, stored) + wire.frame(wire.END, wire.ZERO_KEY, b"")
        for kind in ("b", "m", "t", "c")
        for stored in bombs.values()
    ]
    reset_peak(target.server)
    before = rss(target.server, "VmRSS")
    results: list[int] = []

    def attack(body: bytes) -> None:
        results.append(post(target.url, body).status_code)

    threads = [threading.Thread(target=attack, args=(b,)) for b in bodies * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [400] * len(threads)
    assert rss(target.server, "VmHWM") - before < 200 << 20


# ---- 4. the server's limits --------------------------------------------------------------------
def test_max_file_size_and_message_bounds_hold_on_push(target: Target) -> None:
    zero = blob(bytes(MAX_CHUNK))
    over = (LIMIT // MAX_CHUNK) + 1  # chunks: LIMIT + 4 MiB bytes, all present, 8 KB on the wire
    manifest = node({"chunks": [[zero[1], MAX_CHUNK]] * over}, kind="m")
    entry = ["zeros.bin", "f", hash_bytes(bytes(MAX_CHUNK * over)), MAX_CHUNK * over, manifest[1]]
    root = leaf(entry)
    target.refused([zero, manifest, root, commit(root[1], [target.head])], "zeros.bin", f"limit of {LIMIT}")
    # At the limit it goes in (the file of zeros is hashed as it is: one chunk read once).
    at = LIMIT // MAX_CHUNK
    assert at == 8  # the most chunks listed inline, without a manifest
    root = leaf(["zeros.bin", "f", hash_bytes(bytes(LIMIT)), LIMIT, [[zero[1], MAX_CHUNK]] * at])
    target.accepted([zero, root, commit(root[1], [target.head], message="at the limit")])

    # A 200 MiB commit message is a few KB compressed: refused after at most 64 KiB.
    leaf_obj = leaf(inline("f", b"x"))
    c = commit(leaf_obj[1], [target.head], message="m" * (200 << 20))
    stored = b"Z" + zstandard.ZstdCompressor(level=3).compress(c[2])
    assert len(stored) < 64 << 10
    body = wire.MAGIC + frame("t", leaf_obj[1], encode(leaf_obj[2])) + frame("c", c[1], stored)
    r = post(target.url, body + wire.frame(wire.END, wire.ZERO_KEY, b""))
    assert (r.status_code, r.json()["error"]) == (400, "bad_object") and "a commit may have" in r.json()["message"]


# ---- 5. what was checked before a refusal stays -------------------------------------------------
def test_a_refused_commit_keeps_the_checked_ones_before_it(target: Target) -> None:
    ok_root = leaf(inline("good.txt", b"good"))
    ok = commit(ok_root[1], [target.head], message="checked")
    bad_root = leaf(inline("..", b"bad"))
    bad = commit(bad_root[1], [ok[1]], message="refused")
    target.refused([ok_root, ok, bad_root, bad], bad[1], "'..'")
    assert target.client.sync_missing([("c", ok[1])]) == []  # indexed
    r = httpx.post(target.url + "/sync/ref", params={"branch": "kept", "new": ok[1], "old": ""}, timeout=10)
    assert r.status_code == 200
    assert target.client.get_file("good.txt", branch="kept") == b"good"
    target.client.delete_branch("kept")
    assert target.client.fsck().ok


# ---- clone from a server holding bad objects ------------------------------------------------------
def plant(repo: Any, objs: list[Obj], fields: dict[str, Any], parent: str) -> str:
    """Store raw objects and an indexed commit on them, behind the server's back."""
    with repo.objects.batch() as b:
        for _, key, data in objs:
            b.put(key, data)
        body: dict[str, Any] = {"tree": objs[-1][1], "parents": [parent], "branch": "master", "time": 1.7e9}
        body.update({"message": "planted", **fields})
        data = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        b.put(hash_bytes(data), data)
    c = Commit(hash_bytes(data), body["tree"], (parent,), body["branch"], body["time"], body["message"])
    repo.index_commit(c)
    return c.id


def test_clone_from_a_server_holding_bad_objects_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    src = ServerProc(tmp_path / "src" / "data").start()
    with Client(src.url) as a:
        a.put_file("seed.txt", b"seed\n")
        a.commit(message="seed")
        head = heads(a)["master"]
    assert head
    src.stop()
    repo = Config(str(src.data_dir)).open()
    data = os.urandom(5000)
    chunk = blob(data)
    inner = leaf(inline("a", b"abc"))
    zero = bytes(MAX_CHUNK + 1)
    cases: dict[str, tuple[list[Obj], dict[str, Any], str]] = {}

    def case(name: str, objs: list[Obj], why: str, **fields: Any) -> None:
        cases[name] = (objs, fields, why)

    case("forged hash", [chunk, leaf(chunked("f.bin", [chunk], digest="ab" * 32))], "does not match its hash")
    case("bad name", [leaf(inline("..", b"x"))], "not a valid name")
    case("inline size", [leaf(inline("f", b"twelve bytes", size=10**15))], "inline content")
    case("chunked size", [chunk, leaf(chunked("f.bin", [chunk], size=10**15))], "bytes, not the")
    case("directory size", [inner, leaf(subdir("d", inner, 99))], "says 99 bytes")
    case("chunk too big", [blob(zero), leaf(chunked("z.bin", [blob(zero)]))], f"larger than the {MAX_CHUNK} bytes")
    case("time", [leaf(inline("f", b"t"))], "between 1970 and 9999", time=1e300)
    case("message", [leaf(inline("f", b"m"))], "longer than 8192", message="m" * 9000)
    case("branch", [leaf(inline("f", b"b"))], "invalid branch name", branch="../x")
    deep = [leaf(inline("f", b"deep"))]
    for _ in range(256):
        deep.append(leaf(subdir("d", deep[-1], 4)))
    case("depth", deep, "deeper than 256")
    planted = {name: plant(repo, objs, fields, head) for name, (objs, fields, _) in cases.items()}
    # Full fsck notices a forged file hash, which only reading the content can show (a quick
    # one, which reads no content, cannot).
    forged = "file f.bin: content does not match its hash " + "ab" * 32
    assert forged in fsck(repo).problems
    assert forged not in fsck(repo, verify_data=False).problems
    del repo
    src.start()
    dst = ServerProc(tmp_path / "dst" / "data").start()
    env = {k: v for k, v in os.environ.items() if k not in ("PFS_DATA_DIR", "PFS_URL")}
    try:
        with Client(src.url) as a, Client(dst.url) as b:
            # Without --max-file-size a manifest may be big, so a 5 MiB "tree node" gets in as
            # one (unreferenced); named as a tree node it is refused, without being decompressed.
            big = node({"entries": [["a", "d", "ab" * 32, 0]], "pad": "x" * (5 << 20)}, kind="m")
            root = leaf(subdir("d", big, 0))
            r = post(dst.url, stream(big, root, commit(root[1], [])))
            assert r.status_code == 400 and f"{big[1]} of directory 'd' is larger than 4194304" in r.json()["message"]
            for name, cid in planted.items():
                r = httpx.post(src.url + "/sync/ref", params={"branch": "master", "new": cid, "force": "1"}, timeout=10)
                assert r.status_code == 200, r.text
                why = cases[name][2]
                with pytest.raises(errors.BadObject, match=re.escape(why)) as exc:
                    sync.clone(src.url, dst.url)
                assert f"{dst.url} refused what {src.url} sent" in exc.value.message
                assert heads(b) == {"master": None}, name
                if name in ("forged hash", "time", "depth"):  # and the command: one line, exit 1
                    cmd = [sys.executable, "-m", "pfs.cli", "--url", dst.url, "clone", src.url]
                    res = subprocess.run(cmd, capture_output=True, timeout=120, env=env)
                    err = res.stderr.decode()
                    assert res.returncode == 1 and err.count("\n") == 1 and why in err, err
                assert heads(b) == {"master": None}
            rep = b.fsck()
            assert rep.ok, rep.problems
            # And the source's good history still clones.
            httpx.post(src.url + "/sync/ref", params={"branch": "master", "new": head, "force": "1"}, timeout=10)
            assert sync.clone(src.url, dst.url).ok
            assert b.get_file("seed.txt") == b"seed\n" and a.get_file("seed.txt") == b"seed\n"
            assert b.fsck().ok
    finally:
        src.stop()
        dst.stop()


def test_only_indexed_commits_resolve(target: Target) -> None:
    """An object that merely looks like a commit (any chunk: a pushed one, or a file a user
    uploaded) names trees nobody checked: it must not be readable as a commit."""
    chunk = blob(os.urandom(3000))
    tree = leaf(chunked("f.bin", [chunk], digest="ab" * 32))  # stored as garbage: no commit names it
    fake = {"tree": tree[1], "parents": [], "branch": "master", "time": 1e300, "message": "not a commit"}
    disguised = blob(orjson.dumps(fake, option=orjson.OPT_SORT_KEYS))
    target.accepted([chunk, tree, disguised])
    assert httpx.get(f"{target.url}/commit/{disguised[1]}", timeout=10).status_code == 404
    r = httpx.get(f"{target.url}/file/f.bin", params={"commit": disguised[1]}, timeout=10)
    assert r.status_code == 404, r.headers


def test_checks_read_back_bounded_on_every_backend(storage: Storage) -> None:
    """The checks read objects back from the store (a file's chunks, a node sent as another
    kind) through `get_bounded`, on local disk and on S3 alike."""
    server = ServerProc(storage.data_dir, storage=storage).start()
    try:
        with Client(server.url) as c:
            c.put_file("seed.txt", b"seed\n")
            head = c.commit(message="seed").id
            first, second = blob(os.urandom(MIN_CHUNK)), blob(os.urandom(5000))
            t = Target(server)
            root = leaf(chunked("two.bin", [first, second], digest="ab" * 32))
            t.refused([first, second, root, commit(root[1], [head])], "two.bin", "does not match its hash")
            big = node({"entries": [["a", "d", "ab" * 32, 0]], "pad": "x" * (5 << 20)}, kind="m")
            root = leaf(subdir("d", big, 0))
            t.refused([big, root, commit(root[1], [head])], "larger than 4194304")
            root = leaf(chunked("two.bin", [first, second]))
            t.accepted([root, commit(root[1], [head], message="true")])
            assert c.fsck().ok
            t.client.close()
    finally:
        server.stop()
