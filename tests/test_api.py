"""Every HTTP route as a client sees it: plain text for curl, JSON with `Accept: application/json`.

The requests go to the server's app in this process (conftest's `http`: the app `pfs serve`
runs, on each backend, with streamed bodies both ways); `storage` is the backdoor to the
stored bytes and rows."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import blake3
import httpx
from conftest import Storage, tar_of

from pfs.http.web import FILE_BATCH, pump_file

J = {"accept": "application/json"}
ID = re.compile(r"^[0-9a-f]{64}$")


# ---- helpers -------------------------------------------------------------------------
def put(h: httpx.Client, path: str, data: bytes, branch: str | None = None) -> dict[str, Any]:
    r = h.post(f"/file/{path}", content=data, params={"branch": branch} if branch else None, headers=J)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def get(h: httpx.Client, path: str, **params: str) -> bytes:
    r = h.get(f"/file/{path}", params=params)
    assert r.status_code == 200, r.text
    return r.content


def status(h: httpx.Client, path: str, **params: str) -> int:
    return h.get(f"/file/{path}", params=params).status_code


def commit(h: httpx.Client, branch: str = "master", message: str = "", **extra: str) -> str:
    r = h.post("/commit", params={"branch": branch, "message": message, **extra})
    assert r.status_code == 201, r.text
    cid = r.text.strip()
    assert ID.match(cid), r.text
    return cid


def branch(h: httpx.Client, name: str, at: str | None = None) -> None:
    r = h.post("/branch", params={"branch": name, **({"commit": at} if at else {})})
    assert r.status_code == 201, r.text


def head(h: httpx.Client, name: str = "master") -> str | None:
    r = h.get(f"/branch/{name}", headers=J)
    assert r.status_code == 200, r.text
    return r.json()["head"]  # type: ignore[no-any-return]


def ls(h: httpx.Client, directory: str = "", **params: str) -> list[dict[str, Any]]:
    r = h.get(f"/file/{directory}/*" if directory else "/file/*", params=params, headers=J)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def names(h: httpx.Client, directory: str = "", **params: str) -> list[str]:
    return [e["name"] for e in ls(h, directory, **params)]


def files_tree(h: httpx.Client, directory: str = "", **params: str) -> dict[str, bytes]:
    """Every file below a directory with its content, as a reader sees it."""
    out: dict[str, bytes] = {}
    for e in ls(h, directory, **params):
        if e["type"] == "dir":
            out.update(files_tree(h, e["path"], **params))
        else:
            out[e["path"]] = get(h, e["path"], **params)
    return out


def staged_count(storage: Storage, branch: str = "master") -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(storage.sql_url())
    try:
        with engine.connect() as db:
            q = sa.text("SELECT count(*) FROM staging WHERE branch = :b")
            return int(db.execute(q, {"b": branch}).scalar_one())
    finally:
        engine.dispose()


def n_objects(storage: Storage) -> int:
    return len(storage.object_sizes())


def stored_bytes(storage: Storage) -> int:
    return sum(storage.object_sizes().values())


def one_line(text: str) -> bool:
    return text.endswith("\n") and text.count("\n") == 1


# ---- ping, files -----------------------------------------------------------------------
def test_ping(http: httpx.Client) -> None:
    r = http.get("/ping")
    assert r.status_code == 200 and r.text == "pong\n"


def test_write_read_replace_file_plain_and_json(http: httpx.Client) -> None:
    r = http.post("/file/a.txt", content=b"hello\n")
    assert r.status_code == 201
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == "Created master/a.txt, size: 6.\n"

    r = http.get("/file/a.txt")
    assert r.status_code == 200 and r.content == b"hello\n"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-length"] == "6"

    # JSON on write: path, size and the BLAKE3 of the content
    data = os.urandom(5000)
    r = http.post("/file/dir/b.bin", content=data, headers=J, params={"branch": "master"})
    assert r.status_code == 201
    assert r.json() == {"branch": "master", "path": "dir/b.bin", "size": 5000, "hash": blake3.blake3(data).hexdigest()}
    assert http.get("/file/dir/b.bin").content == data
    assert http.get("/file/dir/b.bin").headers["etag"] == f'"{blake3.blake3(data).hexdigest()}"'

    # PUT is a synonym; a second write replaces
    assert http.put("/file/a.txt", content=b"bye\n").status_code == 201
    assert get(http, "a.txt") == b"bye\n"
    # an empty file is a file
    put(http, "empty", b"")
    assert get(http, "empty") == b""
    assert [e for e in ls(http) if e["name"] == "empty"][0]["size"] == 0


def test_unicode_and_odd_but_valid_names(http: httpx.Client) -> None:
    valid = [
        "ünïcödé.txt",
        "with space.txt",
        "a+b=c&d.txt",
        "x%y.txt",
        "-dash",
        "..hidden",
        "a.",
        "#hash",
        "?q",
        "x" * 255,
    ]
    for name in valid:
        r = http.post("/file/" + quote(name, safe=""), content=name.encode())
        assert r.status_code == 201, (name, r.text)
    assert sorted(names(http)) == sorted(valid)
    for name in valid:
        assert get(http, quote(name, safe="")) == name.encode()
    commit(http)
    assert get(http, "*") == b"".join(n.encode() for n in sorted(valid))


def test_missing_file_is_404(http: httpx.Client) -> None:
    r = http.get("/file/nope.txt")
    assert r.status_code == 404 and one_line(r.text) and "nope.txt" in r.text
    assert r.headers["x-pfs-error"] == "file_not_found"  # the type, for clients reading plain text
    r = http.get("/file/nope.txt", headers=J)
    assert r.status_code == 404 and r.json()["error"] == "file_not_found"


def test_delete_file_is_dirty_until_commit(http: httpx.Client) -> None:
    put(http, "a.txt", b"a")
    put(http, "b.txt", b"b")
    c1 = commit(http)
    r = http.delete("/file/a.txt")
    assert r.status_code == 200 and r.text == "Deleted master/a.txt.\n"
    assert status(http, "a.txt") == 404
    assert get(http, "a.txt", commit=c1) == b"a"  # committed state untouched
    assert names(http) == ["b.txt"]
    c2 = commit(http)
    assert status(http, "a.txt", commit=c2) == 404
    assert get(http, "a.txt", commit=c1) == b"a"

    # deleting a file that was only ever staged
    put(http, "tmp.txt", b"t")
    r = http.delete("/file/tmp.txt", headers=J)
    assert r.json() == {"branch": "master", "path": "tmp.txt", "deleted": 1}
    assert status(http, "tmp.txt") == 404


def test_delete_directory_needs_recursive(http: httpx.Client) -> None:
    for p in ["d/x", "d/y", "d/sub/z", "keep"]:
        put(http, p, p.encode())
    commit(http)
    r = http.delete("/file/d")
    assert r.status_code == 409 and one_line(r.text)
    assert names(http, "d") == ["sub", "x", "y"]
    r = http.delete("/file/d", params={"recursive": "1"}, headers=J)
    assert r.status_code == 200 and r.json()["deleted"] == 3
    assert names(http) == ["keep"]
    assert status(http, "d/*") == 404
    c = commit(http)
    assert names(http, commit=c) == ["keep"]


# ---- directories -----------------------------------------------------------------------
def test_dir_star_concatenates_regular_files_sorted_by_name(http: httpx.Client) -> None:
    big = os.urandom(700_000)  # several chunks: streamed from the object store
    for p, d in [("d/c", b"C"), ("d/a", b"A"), ("d/b", big), ("d/sub/x", b"X"), ("top", b"T")]:
        put(http, p, d)
    r = http.get("/file/d/*")
    assert r.status_code == 200
    assert r.content == b"A" + big + b"C"  # sorted, not in write order; subdir skipped
    assert get(http, "*") == b"T"  # the root: only its own files
    assert http.get("/file", headers=J).json() == ls(http)  # the root itself, as a listing
    assert http.get("/file").status_code == 400  # ... but not as a file

    listing = ls(http, "d")
    assert [(e["name"], e["type"]) for e in listing] == [("a", "file"), ("b", "file"), ("c", "file"), ("sub", "dir")]
    assert listing[1] == {
        "path": "d/b",
        "name": "b",
        "type": "file",
        "size": len(big),
        "hash": blake3.blake3(big).hexdigest(),
    }
    assert listing[3] == {"path": "d/sub", "name": "sub", "type": "dir"}
    assert [e["path"] for e in ls(http, "d/sub")] == ["d/sub/x"]
    # a directory without * in JSON is its listing too; in plain text it is refused
    assert http.get("/file/d", headers=J).json() == listing
    r = http.get("/file/d")
    assert r.status_code == 400 and "d/*" in r.text

    # committed and dirty listings differ once more writes are staged
    c = commit(http)
    put(http, "d/0", b"0")
    assert get(http, "d/*") == b"0A" + big + b"C"
    assert get(http, "d/*", commit=c) == b"A" + big + b"C"
    assert names(http, "d", commit=c) == ["a", "b", "c", "sub"]


def test_many_files_listing_is_complete_and_sorted(http: httpx.Client) -> None:
    wanted = [f"f{i:04d}" for i in range(1200)]  # more than one streamed batch
    archive = tar_of((n, n.encode()) for n in reversed(wanted))
    r = http.post("/tar/many", content=archive.getvalue(), headers=J)
    assert r.status_code == 201 and r.json()["files"] == 1200
    assert names(http, "many") == wanted
    assert get(http, "many/*") == "".join(wanted).encode()
    c = commit(http)
    assert names(http, "many", commit=c) == wanted


# ---- dirty reads, commit and branch selectors ------------------------------------------
def test_dirty_reads_on_master_versus_commit(http: httpx.Client) -> None:
    put(http, "a.txt", b"v1")
    assert get(http, "a.txt") == b"v1"  # visible before any commit
    r = http.get("/file/a.txt", params={"commit": "master"})
    assert r.status_code == 404  # master has no commit yet
    c1 = commit(http)
    put(http, "a.txt", b"v2")
    put(http, "new.txt", b"new")
    assert get(http, "a.txt") == b"v2"  # default: master including dirty writes
    assert get(http, "a.txt", branch="master") == b"v2"
    assert get(http, "a.txt", commit=c1) == b"v1"
    assert get(http, "a.txt", commit="master") == b"v1"  # a branch name as commit: its head
    assert get(http, "a.txt", commit=c1[:12]) == b"v1"  # a unique prefix
    assert status(http, "new.txt", commit=c1) == 404
    assert names(http) == ["a.txt", "new.txt"]
    assert names(http, commit=c1) == ["a.txt"]
    c2 = commit(http)
    assert get(http, "a.txt", commit=c2) == b"v2"
    assert get(http, "new.txt", commit=c2) == b"new"
    assert get(http, "a.txt", commit=c1) == b"v1"  # history is immutable


def test_branch_reads_and_writes(http: httpx.Client) -> None:
    put(http, "a.txt", b"master")
    c1 = commit(http)
    branch(http, "exp", c1)
    put(http, "a.txt", b"exp", branch="exp")
    put(http, "only-exp", b"x", branch="exp")
    assert get(http, "a.txt", branch="exp") == b"exp"
    assert get(http, "a.txt") == b"master"
    assert status(http, "only-exp") == 404
    assert names(http, branch="exp") == ["a.txt", "only-exp"]
    c2 = commit(http, "exp")
    assert head(http, "exp") == c2 and head(http) == c1
    assert get(http, "a.txt", commit="exp") == b"exp"
    assert http.delete("/file/a.txt", params={"branch": "exp"}).status_code == 200
    assert status(http, "a.txt", branch="exp") == 404
    assert get(http, "a.txt") == b"master"


# ---- commits ------------------------------------------------------------------------------
def test_commit_create_list_inspect(http: httpx.Client) -> None:
    put(http, "a", b"1")
    r = http.post("/commit", params={"branch": "master", "message": "first one\nsecond line"})
    assert r.status_code == 201 and r.headers["content-type"].startswith("text/plain")
    c1 = r.text.strip()
    assert r.text == c1 + "\n" and ID.match(c1)
    put(http, "a", b"2")
    r = http.post("/commit", params={"message": "second"}, headers=J)
    assert r.status_code == 201
    j2 = r.json()
    assert ID.match(j2["id"]) and j2["parents"] == [c1] and j2["branch"] == "master"
    assert j2["message"] == "second" and ID.match(j2["tree"])
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", j2["time"])
    assert head(http) == j2["id"]

    listing = http.get("/commit", headers=J).json()
    assert [c["id"] for c in listing] == [c1, j2["id"]]  # oldest first
    assert listing[0]["parents"] == [] and listing[0]["message"] == "first one\nsecond line"
    lines = http.get("/commit").text.splitlines()
    assert [ln.split()[0] for ln in lines] == [c1, j2["id"]]
    assert lines[0].split()[2] == "master" and lines[0].endswith("first one")  # first line of the message

    one = http.get(f"/commit/{c1}", headers=J).json()
    assert one == listing[0]
    assert http.get(f"/commit/{c1[:10]}", headers=J).json()["id"] == c1
    assert http.get("/commit/master", headers=J).json()["id"] == j2["id"]
    r = http.get(f"/commit/{c1}")
    assert one_line(r.text) and r.text.startswith(c1)


def test_commit_with_nothing_staged_keeps_the_tree(http: httpx.Client) -> None:
    put(http, "a", b"1")
    c1 = http.post("/commit", headers=J).json()
    c2 = http.post("/commit", headers=J).json()
    assert c2["parents"] == [c1["id"]] and c2["tree"] == c1["tree"]


def test_commit_compare_and_swap(http: httpx.Client, storage: Storage) -> None:
    put(http, "a", b"1")
    c1 = commit(http)
    put(http, "b", b"2")
    c2 = commit(http, expect=c1)  # expected head matches: fine
    put(http, "c", b"3")
    r = http.post("/commit", params={"expect": c1}, headers=J)  # stale: the branch moved
    assert r.status_code == 409 and r.json()["error"] == "branch_moved"
    assert head(http) == c2
    assert get(http, "c") == b"3" and staged_count(storage) == 1  # the staged write survives
    assert [c["id"] for c in http.get("/commit", headers=J).json()] == [c1, c2]
    c3 = commit(http, expect=c2)
    assert get(http, "c", commit=c3) == b"3" and staged_count(storage) == 0


# ---- branches -----------------------------------------------------------------------------
def test_branch_create_list_get_delete(http: httpx.Client) -> None:
    r = http.post("/branch", params={"branch": "early"})  # no commit yet: an empty branch
    assert r.status_code == 201 and r.text == "Created branch. (-) -> early.\n"
    put(http, "a", b"1")
    c1 = commit(http)
    r = http.post("/branch", params={"commit": c1, "branch": "exp"})
    assert r.status_code == 201 and r.text == f"Created branch. ({c1}) -> exp.\n"
    r = http.post("/branch", params={"branch": "b2"}, headers=J)  # default: master's head
    assert r.status_code == 201 and r.json() == {"name": "b2", "head": c1}
    r = http.post("/branch", params={"branch": "b3", "commit": "exp"}, headers=J)  # from a branch name
    assert r.json() == {"name": "b3", "head": c1}

    assert http.get("/branch", headers=J).json() == [
        {"name": "b2", "head": c1},
        {"name": "b3", "head": c1},
        {"name": "early", "head": None},
        {"name": "exp", "head": c1},
        {"name": "master", "head": c1},
    ]
    assert http.get("/branch").text.splitlines()[2].split() == ["early", "-"]
    assert http.get("/branch/exp").text == f"exp    {c1}\n"
    assert http.get("/branch/exp", headers=J).json() == {"name": "exp", "head": c1}

    r = http.post("/branch", params={"branch": "exp"}, headers=J)
    assert r.status_code == 409 and r.json()["error"] == "already_exists"

    put(http, "dirty", b"x", branch="exp")
    r = http.delete("/branch/exp")
    assert r.status_code == 200 and r.text == "Deleted branch exp.\n"
    assert http.get("/branch/exp").status_code == 404
    assert http.delete("/branch/exp").status_code == 404
    assert http.get(f"/commit/{c1}").status_code == 200  # its commits stay
    # a new branch of the same name starts clean: the old dirty writes went with it
    branch(http, "exp", c1)
    assert status(http, "dirty", branch="exp") == 404


def test_branch_is_copy_on_write_and_copies_nothing(http: httpx.Client, storage: Storage) -> None:
    for i in range(30):
        put(http, f"data/f{i:02d}", os.urandom(3000 + i))  # each stored as an object
    c1 = commit(http)
    before_objects = n_objects(storage)
    branch(http, "exp", c1)
    assert n_objects(storage) == before_objects  # no data copied, not even a tree

    # the branch sees everything master had
    assert files_tree(http, branch="exp") == files_tree(http, commit=c1)
    assert get(http, "data/f07", branch="exp") == get(http, "data/f07")

    # writes on the branch do not reach master, dirty or committed
    put(http, "data/f07", b"changed on exp", branch="exp")
    put(http, "data/new", b"new on exp", branch="exp")
    http.delete("/file/data/f08", params={"branch": "exp"})
    assert get(http, "data/f07") != b"changed on exp"
    assert status(http, "data/new") == 404 and status(http, "data/f08") == 200
    e1 = commit(http, "exp")
    assert head(http) == c1
    assert files_tree(http) == files_tree(http, commit=c1)

    # and writes on master do not reach the branch
    put(http, "data/f09", b"changed on master")
    commit(http)
    assert get(http, "data/f09", branch="exp") == get(http, "data/f09", commit=c1)
    assert get(http, "data/f07", commit=e1) == b"changed on exp"
    assert status(http, "data/f08", commit=e1) == 404


# ---- history ------------------------------------------------------------------------------
def test_log_newest_first_with_limit(http: httpx.Client) -> None:
    ids = []
    for i in range(4):
        put(http, "f", str(i).encode())
        ids.append(commit(http, message=f"m{i}"))
    log = http.get("/log", headers=J).json()
    assert [c["id"] for c in log] == ids[::-1]
    assert [c["message"] for c in log] == ["m3", "m2", "m1", "m0"]
    assert [c["id"] for c in http.get("/log", params={"limit": "2"}, headers=J).json()] == ids[:1:-1]
    assert http.get("/log", params={"limit": "0"}, headers=J).json() == []
    assert [c["id"] for c in http.get("/log", params={"commit": ids[1]}, headers=J).json()] == [ids[1], ids[0]]
    text = http.get("/log", params={"branch": "master", "limit": "3"}).text.splitlines()
    assert [ln.split()[0] for ln in text] == ids[:0:-1]
    # a branch's log includes the history it was created from
    branch(http, "exp", ids[1])
    put(http, "g", b"g", branch="exp")
    e = commit(http, "exp")
    assert [c["id"] for c in http.get("/log", params={"branch": "exp"}, headers=J).json()] == [e, ids[1], ids[0]]


def test_log_of_empty_branch_is_empty(http: httpx.Client) -> None:
    r = http.get("/log", headers=J)
    assert r.status_code == 200 and r.json() == []
    assert http.get("/log").text == ""


def test_diff_added_modified_deleted(http: httpx.Client) -> None:
    for p in ["a", "b", "c", "keep/x"]:
        put(http, p, p.encode())
    c1 = commit(http)
    put(http, "b", b"B2")
    http.delete("/file/c")
    put(http, "d", b"d")
    put(http, "new/deep/e", b"e")
    c2 = commit(http)
    items = http.get("/diff", params={"from": c1, "to": c2}, headers=J).json()
    assert [(i["status"], i["path"]) for i in items] == [("M", "b"), ("D", "c"), ("A", "d"), ("A", "new/deep/e")]
    by = {i["path"]: i for i in items}
    assert by["b"]["old"] == blake3.blake3(b"b").hexdigest() and by["b"]["new"] == blake3.blake3(b"B2").hexdigest()
    assert by["c"]["new"] is None and by["d"]["old"] is None
    text = http.get("/diff", params={"from": c1, "to": c2})
    assert text.text == "M\tb\nD\tc\nA\td\nA\tnew/deep/e\n"
    back = http.get("/diff", params={"from": c2, "to": c1}, headers=J).json()
    assert [(i["status"], i["path"]) for i in back] == [("M", "b"), ("A", "c"), ("D", "d"), ("D", "new/deep/e")]
    # branch names and prefixes work as ends; equal ends differ in nothing
    branch(http, "old", c1)
    assert http.get("/diff", params={"from": "old", "to": "master"}, headers=J).json() == items
    assert http.get("/diff", params={"from": c1[:8], "to": "master"}, headers=J).json() == items
    assert http.get("/diff", params={"from": c2, "to": "master"}, headers=J).json() == []


# ---- merge --------------------------------------------------------------------------------
def _diverge(http: httpx.Client) -> tuple[str, str, str]:
    """master and exp from one base; returns (base, master head, exp head)."""
    for p in ["shared.txt", "dir/a", "dir/b", "gone"]:
        put(http, p, b"base " + p.encode())
    base = commit(http, message="base")
    branch(http, "exp", base)
    put(http, "dir/a", b"master's a")
    put(http, "master-only", b"m")
    m = commit(http, message="on master")
    put(http, "dir/b", b"exp's b", branch="exp")
    put(http, "exp-only/x", b"e", branch="exp")
    http.delete("/file/gone", params={"branch": "exp"})
    e = commit(http, "exp", message="on exp")
    return base, m, e


def test_merge_fast_forward(http: httpx.Client) -> None:
    put(http, "a", b"1")
    base = commit(http)
    branch(http, "exp", base)
    put(http, "b", b"2", branch="exp")
    e = commit(http, "exp")
    r = http.post("/merge", params={"from": "exp", "into": "master"}, headers=J)
    assert r.status_code == 201
    assert r.json()["kind"] == "fast-forward" and r.json()["id"] == e
    assert head(http) == e
    assert get(http, "b") == b"2"
    # plain text: the commit id
    put(http, "c", b"3", branch="exp")
    e2 = commit(http, "exp")
    r = http.post("/merge", params={"from": "exp", "into": "master"})
    assert r.status_code == 201 and r.text == e2 + "\n"


def test_merge_up_to_date(http: httpx.Client) -> None:
    put(http, "a", b"1")
    c1 = commit(http)
    put(http, "a", b"2")
    c2 = commit(http)
    branch(http, "old", c1)
    n = len(http.get("/commit", headers=J).json())
    for source in ["old", c1, c2, "master"]:
        r = http.post("/merge", params={"from": source, "into": "master"}, headers=J)
        assert r.status_code == 200, r.text
        assert r.json()["kind"] == "up-to-date" and r.json()["id"] == c2
    assert head(http) == c2
    assert len(http.get("/commit", headers=J).json()) == n


def test_merge_three_way(http: httpx.Client) -> None:
    base, m, e = _diverge(http)
    r = http.post("/merge", params={"from": "exp", "into": "master"}, headers=J)
    assert r.status_code == 201, r.text
    res = r.json()
    assert res["kind"] == "merge" and res["parents"] == [m, e]
    assert res["message"] == "Merge exp into master" and res["branch"] == "master"
    assert head(http) == res["id"]
    assert files_tree(http, commit=res["id"]) == {
        "shared.txt": b"base shared.txt",
        "dir/a": b"master's a",
        "dir/b": b"exp's b",
        "master-only": b"m",
        "exp-only/x": b"e",
    }
    assert head(http, "exp") == e  # the source branch does not move
    log = [c["id"] for c in http.get("/log", headers=J).json()]
    assert log[0] == res["id"] and {m, e, base} <= set(log)
    # merging again is a no-op
    r = http.post("/merge", params={"from": "exp", "into": "master"}, headers=J)
    assert r.status_code == 200 and r.json()["kind"] == "up-to-date"


def test_merge_custom_message_and_branch_param(http: httpx.Client) -> None:
    _diverge(http)
    r = http.post("/merge", params={"from": "exp", "branch": "master", "message": "combine"}, headers=J)
    assert r.status_code == 201 and r.json()["message"] == "combine"


def _conflict(http: httpx.Client) -> tuple[str, str]:
    put(http, "c.txt", b"base")
    put(http, "other", b"base")
    put(http, "f", b"a file")
    base = commit(http)
    branch(http, "exp", base)
    put(http, "c.txt", b"master")
    http.delete("/file/f")
    put(http, "f/inside", b"now a dir on master")
    m = commit(http)
    put(http, "c.txt", b"exp", branch="exp")
    put(http, "other", b"exp changed this", branch="exp")
    put(http, "f", b"changed file on exp", branch="exp")
    e = commit(http, "exp")
    return m, e


def test_merge_conflict_applies_nothing(http: httpx.Client, storage: Storage) -> None:
    m, e = _conflict(http)
    commits_before = http.get("/commit", headers=J).json()
    tree_before = files_tree(http)
    r = http.post("/merge", params={"from": "exp", "into": "master"})
    assert r.status_code == 409
    lines = r.text.splitlines()
    assert "conflict" in lines[0] and sorted(lines[1:]) == ["CONFLICT c.txt", "CONFLICT f"]
    r = http.post("/merge", params={"from": "exp", "into": "master"}, headers=J)
    body = r.json()
    assert r.status_code == 409 and body["error"] == "merge_conflict"
    assert sorted(c["path"] for c in body["conflicts"]) == ["c.txt", "f"]
    c_txt = next(c for c in body["conflicts"] if c["path"] == "c.txt")
    assert c_txt["ours"] == blake3.blake3(b"master").hexdigest()
    assert c_txt["theirs"] == blake3.blake3(b"exp").hexdigest()
    # nothing applied: head, history, content and staging all as before
    assert head(http) == m and head(http, "exp") == e
    assert http.get("/commit", headers=J).json() == commits_before
    assert files_tree(http) == tree_before
    assert get(http, "other") == b"base"  # the non-conflicting change was not half-applied
    assert staged_count(storage) == 0


def test_merge_strategy_ours_and_theirs(http: httpx.Client) -> None:
    m, e = _conflict(http)
    branch(http, "m2", m)
    r = http.post("/merge", params={"from": "exp", "into": "master", "strategy": "ours"}, headers=J)
    assert r.status_code == 201 and r.json()["kind"] == "merge" and r.json()["parents"] == [m, e]
    ours = files_tree(http, commit=r.json()["id"])
    assert ours["c.txt"] == b"master"  # conflict: ours wins
    assert ours["f/inside"] == b"now a dir on master"
    assert ours["other"] == b"exp changed this"  # no conflict: their change is taken

    r = http.post("/merge", params={"from": "exp", "into": "m2", "strategy": "theirs"}, headers=J)
    assert r.status_code == 201 and r.json()["parents"] == [m, e]
    theirs = files_tree(http, commit=r.json()["id"])
    assert theirs["c.txt"] == b"exp"
    assert theirs["f"] == b"changed file on exp" and "f/inside" not in theirs
    assert theirs["other"] == b"exp changed this"


def test_merge_into_dirty_branch_is_refused(http: httpx.Client, storage: Storage) -> None:
    _, m, _ = _diverge(http)
    put(http, "wip", b"uncommitted")
    r = http.post("/merge", params={"from": "exp", "into": "master"}, headers=J)
    assert r.status_code == 409 and r.json()["error"] == "dirty_branch"
    assert head(http) == m and get(http, "wip") == b"uncommitted" and staged_count(storage) == 1


# ---- revert, discard ----------------------------------------------------------------------
def test_revert_makes_a_new_commit_with_the_old_content(http: httpx.Client) -> None:
    put(http, "a", b"1")
    put(http, "b", b"b")
    c1 = commit(http)
    put(http, "a", b"2")
    http.delete("/file/b")
    put(http, "c", b"c")
    c2 = commit(http)
    put(http, "d/e", b"e")
    c3 = commit(http)
    r = http.post("/revert", params={"branch": "master", "commit": c1}, headers=J)
    assert r.status_code == 201
    c4 = r.json()
    assert c4["parents"] == [c3]
    assert c4["tree"] == http.get(f"/commit/{c1}", headers=J).json()["tree"]
    assert c4["message"].startswith("Revert master to")
    assert head(http) == c4["id"]
    assert files_tree(http) == files_tree(http, commit=c1) == {"a": b"1", "b": b"b"}
    assert [c["id"] for c in http.get("/log", headers=J).json()] == [c4["id"], c3, c2, c1]
    assert get(http, "c", commit=c2) == b"c"  # history kept
    # plain text, default branch, custom message, and reverting forward again
    r = http.post("/revert", params={"commit": c3, "message": "redo"})
    assert r.status_code == 201 and ID.match(r.text.strip())
    assert http.get(f"/commit/{r.text.strip()}", headers=J).json()["message"] == "redo"
    assert files_tree(http) == files_tree(http, commit=c3)


def test_revert_of_dirty_branch_is_refused(http: httpx.Client, storage: Storage) -> None:
    put(http, "a", b"1")
    c1 = commit(http)
    put(http, "a", b"2")
    c2 = commit(http)
    put(http, "wip", b"w")
    r = http.post("/revert", params={"commit": c1}, headers=J)
    assert r.status_code == 409 and r.json()["error"] == "dirty_branch"
    assert head(http) == c2 and staged_count(storage) == 1


def test_discard_drops_only_that_branchs_dirty_writes(http: httpx.Client, storage: Storage) -> None:
    put(http, "a", b"1")
    put(http, "b", b"b")
    c1 = commit(http)
    branch(http, "exp", c1)
    put(http, "a", b"2")
    put(http, "new", b"n")
    http.delete("/file/b")
    put(http, "x", b"x", branch="exp")
    r = http.post("/discard")
    assert r.status_code == 200 and r.text == "Discarded 3 uncommitted change(s) on master.\n"
    assert files_tree(http) == {"a": b"1", "b": b"b"}
    assert head(http) == c1
    assert get(http, "x", branch="exp") == b"x"
    r = http.post("/discard", params={"branch": "exp"}, headers=J)
    assert r.json() == {"discarded": 1}
    assert http.post("/discard", headers=J).json() == {"discarded": 0}
    assert staged_count(storage, "master") == staged_count(storage, "exp") == 0


# ---- fsck -----------------------------------------------------------------------------------
def test_fsck_reports_ok(http: httpx.Client) -> None:
    put(http, "a", os.urandom(400_000))
    put(http, "d/b", b"small")
    commit(http)
    put(http, "staged", os.urandom(10_000))
    r = http.get("/fsck")
    assert r.status_code == 200
    assert r.text.startswith("ok: 1 commits") and "3 files" in r.text
    j = http.get("/fsck", headers=J).json()
    assert j["ok"] is True and j["problems"] == [] and j["commits"] == 1 and j["files"] == 3 and j["chunks"] >= 2
    assert http.get("/fsck", params={"quick": "1"}, headers=J).json()["ok"] is True


def test_fsck_finds_a_damaged_object(http: httpx.Client, storage: Storage) -> None:
    data = os.urandom(400_000)
    put(http, "a", data)
    commit(http)
    sizes = storage.object_sizes()
    storage.corrupt(max(sizes, key=lambda name: sizes[name]))
    j = http.get("/fsck", headers=J)
    assert j.status_code == 500 and j.json()["ok"] is False and j.json()["problems"]
    assert http.get("/fsck").text.splitlines()[-1].startswith("FAILED")
    # a corrupt chunk is never served as if it were good: the response is cut short
    try:
        r = http.get("/file/a")
        served = r.status_code == 200 and len(r.content) == len(data)
    except httpx.TransportError:
        served = False
    assert not served


def test_a_damaged_chunk_deep_in_a_big_file_cuts_its_download_short(http: httpx.Client, storage: Storage) -> None:
    """Downloads read a few MiB of chunks per worker-thread call (`pump_file`): a damaged
    chunk in a later batch still ends the body early, after the good bytes before it."""
    data = random.Random(3).randbytes(24 << 20)
    put(http, "big.bin", data)
    commit(http)
    sizes = storage.object_sizes()
    chunks = sorted((n for n in sizes if sizes[n] > 200_000), key=lambda n: sizes[n])
    storage.corrupt(chunks[len(chunks) // 2])
    got = bytearray()
    with contextlib.suppress(httpx.TransportError), http.stream("GET", "/file/big.bin") as r:
        for piece in r.iter_bytes():
            got += piece
    assert len(got) < len(data) and data.startswith(bytes(got))


def test_a_download_holds_a_few_mib_of_chunks_at_a_time() -> None:
    """`pump_file` pulls chunks in batches of at least 4 MiB, in order, every one of them,
    and holds no more than a batch and one chunk before they are sent."""
    piece = 1 << 20
    pulled = 0

    def chunks() -> Iterator[bytes]:
        nonlocal pulled
        for i in range(19):
            pulled += 1
            yield bytes([i]) * piece

    async def drain() -> list[tuple[int, bytes]]:
        return [(pulled, p) async for p in pump_file(chunks())]

    seen = asyncio.run(drain())
    assert [p[0] for _, p in seen] == list(range(19)) and all(len(p) == piece for _, p in seen)
    held = [n - i for i, (n, _) in enumerate(seen)]  # pulled but not yet sent, at each send
    assert held[0] == 4 and max(held) <= (FILE_BATCH + piece) // piece
    assert len({n for n, _ in seen}) == 5  # 19 chunks: five worker-thread calls, not 19


# ---- large files and dedupe -----------------------------------------------------------------
def _stream(data: bytes, piece: int = 1 << 20) -> Iterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


def test_large_file_round_trips_byte_exact(http: httpx.Client) -> None:
    data = random.Random(7).randbytes(20 << 20)
    r = http.post("/file/big/blob.bin", content=_stream(data), headers=J)  # chunked upload
    assert r.status_code == 201
    assert r.json()["size"] == len(data) and r.json()["hash"] == blake3.blake3(data).hexdigest()
    r = http.get("/file/big/blob.bin")
    assert r.headers["content-length"] == str(len(data))
    assert r.content == data
    c = commit(http)
    with http.stream("GET", "/file/big/blob.bin", params={"commit": c}) as s:
        got = b"".join(s.iter_bytes())
    assert got == data
    assert get(http, "big/*", commit=c) == data


def test_edited_versions_of_a_file_are_deduplicated(http: httpx.Client, storage: Storage) -> None:
    rnd = random.Random(11)
    data = bytearray(rnd.randbytes(12 << 20))
    put(http, "v.bin", bytes(data))
    commit(http)
    before = stored_bytes(storage)
    versions = [bytes(data)]
    for i in range(9):
        at = rnd.randrange(len(data) - 100)
        data[at : at + 16] = rnd.randbytes(16)
        versions.append(bytes(data))
        put(http, "v.bin", versions[-1])
        commit(http, message=f"v{i + 2}")
    growth = stored_bytes(storage) - before
    # 9 more versions stored whole would be 108 MiB; each small edit costs a chunk or two
    assert growth < 9 * (8 << 20) // 2, growth
    assert growth < 3 * len(data)
    log = http.get("/log", headers=J).json()
    assert len(log) == 10
    for c, want in zip(reversed(log), versions, strict=True):
        assert get(http, "v.bin", commit=c["id"]) == want


def test_names_differing_in_case_are_different_paths(http: httpx.Client) -> None:
    """SQLite's LIKE ignores case unless told: a staged "A/x" once made "a" a directory."""
    put(http, "A/x", b"upper dir")
    put(http, "a", b"lower file")
    assert get(http, "a") == b"lower file" and get(http, "A/x") == b"upper dir"
    assert http.post("/commit").status_code == 201
    assert get(http, "a") == b"lower file"


def test_range_reads(http: httpx.Client) -> None:
    data = os.urandom(3 << 20)  # several chunks: a range reads only those it covers
    put(http, "r.bin", data)
    put(http, "tiny", b"0123456789")
    for path, body in (("r.bin", data), ("tiny", b"0123456789")):
        n = len(body)
        for spec, (a, b) in {"bytes=0-0": (0, 0), "bytes=5-": (5, n - 1), "bytes=-4": (n - 4, n - 1),
                             f"bytes=3-{n + 100}": (3, n - 1), "bytes=2-8": (2, 8)}.items():  # fmt: skip
            r = http.get(f"/file/{path}", headers={"range": spec})
            assert r.status_code == 206, (path, spec, r.text)
            assert r.content == body[a : b + 1] and r.headers["content-range"] == f"bytes {a}-{b}/{n}"
            h = http.head(f"/file/{path}", headers={"range": spec})
            assert h.status_code == 206 and h.headers["content-length"] == str(b - a + 1)
        mid = (1 << 20) + 5
        if n > mid + 10:
            r = http.get(f"/file/{path}", headers={"range": f"bytes={mid}-{mid + 9}"})
            assert r.content == body[mid : mid + 10]
        r = http.get(f"/file/{path}", headers={"range": f"bytes={n}-", **J})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{n}"
        assert r.json()["error"] == "range_not_satisfiable"
        for ignored in ("bytes=5-2", "bytes=0-1,3-4", "items=0-1", "bytes=x-"):
            r = http.get(f"/file/{path}", headers={"range": ignored})
            assert r.status_code == 200 and r.content == body, ignored
    assert http.get("/file/r.bin").headers["accept-ranges"] == "bytes"
