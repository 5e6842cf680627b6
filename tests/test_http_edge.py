"""The HTTP edge: HEAD never writes, one handler per method (405 + Allow), strict query
strings, bounded commit messages, one line per commit in plain text, request ids.

Against the server's app in this process (conftest's `AppServer`), except where the log of a
real `pfs serve` is the point."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import AppServer, ServerProc

ZERO = "0" * 64


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    s = AppServer(tmp_path_factory.mktemp("edge") / "data", env={"PFS_JOB_RUNTIME": "process"}).start()
    yield s
    s.stop()


def commits(h: httpx.Client) -> list[str]:
    return [c["id"] for c in h.get("/commit", headers={"accept": "application/json"}).json()]


def branches(h: httpx.Client) -> dict[str, str | None]:
    return {b["name"]: b["head"] for b in h.get("/branch", headers={"accept": "application/json"}).json()}


# ---- HEAD ---------------------------------------------------------------------------------


def test_head_reads_headers_and_never_writes(h: httpx.Client) -> None:
    assert h.post("/file/head/a.txt", content=b"hello\n").status_code == 201
    h.post("/commit", params={"message": "base"})
    before_commits, before_branches = commits(h), branches(h)
    get = h.get("/file/head/a.txt")

    r = h.head("/file/head/a.txt")  # curl -I: used to answer 201 and empty the file
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == "6"
    assert r.headers["etag"] == get.headers["etag"]
    assert h.get("/file/head/a.txt").content == b"hello\n"

    # used to commit, and to create a branch: now the GET's answer (or its 400), nothing written
    assert h.head("/commit", params={"message": "x"}).status_code == 400
    assert h.head("/commit").status_code == 200
    assert h.head("/branch", params={"branch": "b"}).status_code == 400
    assert h.head("/file/head/missing.txt").status_code == 404
    assert h.head("/merge", params={"from": "master", "into": "x"}).status_code == 405
    assert commits(h) == before_commits
    assert branches(h) == before_branches
    assert h.get("/file/head/a.txt").content == b"hello\n"


def test_head_on_a_listing_sends_no_body(h: httpx.Client) -> None:
    h.post("/file/list/a", content=b"a")
    r = h.head("/file/list/*", headers={"accept": "application/json"})
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-type"] == "application/json"


# ---- 405 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", "/file/a.txt", "DELETE, GET, HEAD, POST, PUT"),
        ("DELETE", "/commit", "GET, HEAD, POST"),
        ("POST", "/log", "GET, HEAD"),
        ("PUT", "/branch/master", "DELETE, GET, HEAD"),
        ("GET", "/merge", "POST"),
        ("HEAD", "/sync/ref", "POST"),
        ("OPTIONS", "/job/x", "DELETE, GET, HEAD, POST, PUT"),
        ("POST", "/run", "DELETE, GET, HEAD"),
    ],
)
def test_unlisted_method_is_405_with_allow(h: httpx.Client, method: str, path: str, allow: str) -> None:
    before = commits(h), branches(h)
    r = h.request(method, path, headers={"accept": "application/json"})
    assert r.status_code == 405
    assert r.headers["allow"] == allow
    if method != "HEAD":
        assert r.json()["error"] == "method_not_allowed"
    assert (commits(h), branches(h)) == before


def test_put_job_stores_the_spec_like_post(h: httpx.Client, tmp_path: Path) -> None:
    spec = b'{"type": "map", "input": "head", "command": ["true"], "runtime": "process"}'
    r = h.put("/job/viaput", content=spec)  # what `curl -T spec.json` sends
    assert r.status_code == 201, r.text
    assert h.get("/job/viaput", headers={"accept": "application/json"}).json()["command"] == ["true"]
    assert h.put("/job/viaput", content=spec).status_code == 200  # replaced
    assert h.delete("/job/viaput").status_code == 200


# ---- query strings ------------------------------------------------------------------------


def test_empty_branch_typo_and_foreign_parameters_are_400_and_write_nothing(h: httpx.Client) -> None:
    h.post("/branch", params={"branch": "test"})
    before = commits(h), branches(h)
    cases = [
        ("POST", "/file/q/a.txt", "branch=", "branch"),  # used to write master
        ("POST", "/file/q/a.txt", "brnach=test", "brnach"),  # a typo used to write master
        ("POST", "/file/q/a.txt", f"commit={ZERO}", "commit"),  # a commit is read-only
        ("POST", "/commit", "branch=", "branch"),  # used to commit master
        ("POST", "/commit", "brnach=test", "brnach"),
        ("POST", "/commit", "&".join(["branch=test"] * 200), "branch"),
        ("DELETE", "/file/q/a.txt", "branch=test&branch=master", "branch"),
        ("POST", "/branch", "branch=x&frm=master", "frm"),
        ("POST", "/discard", "branch=", "branch"),
        ("GET", "/log", "limit=1&limit=2", "limit"),
        ("GET", "/file/q/a.txt", "comit=master", "comit"),
        ("GET", "/commit", "branch=master", "branch"),
        ("GET", "/run/master", "wait=", "wait"),
        ("POST", "/sync/ref", "branch=master&new=x&evil=1", "evil"),
    ]
    for method, path, query, name in cases:
        r = h.request(method, f"{path}?{query}", content=b"data" if method == "POST" else None)
        assert r.status_code == 400, (method, path, query, r.text)
        assert name in r.text, (method, path, query, r.text)
    assert (commits(h), branches(h)) == before
    assert h.get("/file/q/a.txt").status_code == 404


def test_flags_take_presence_or_a_boolean(h: httpx.Client) -> None:
    h.post("/file/flags/d/a", content=b"a")
    assert h.delete("/file/flags/d?recursive").status_code == 200
    h.post("/file/flags/d/a", content=b"a")
    r = h.delete("/file/flags/d?recursive=maybe")
    assert r.status_code == 400 and "recursive" in r.text
    assert h.delete("/file/flags/d?recursive=0").status_code == 409  # a directory, not recursive
    assert h.delete("/file/flags/d?recursive=true").status_code == 200


def test_expect_may_be_empty(h: httpx.Client) -> None:
    h.post("/branch", params={"branch": "fresh-expect"})
    # expect= (empty): "the branch has no commits yet" is a meaning, not a mistake
    h.post("/branch", params={"branch": "empty-expect", "commit": commits(h)[-1]})
    r = h.post("/commit?branch=empty-expect&expect=")
    assert r.status_code == 409 and r.headers["x-pfs-error"] == "branch_moved"


def test_short_commit_prefix_says_it_needs_8_hex_digits(h: httpx.Client) -> None:
    h.post("/file/short.txt", content=b"x")
    cid = h.post("/commit").text.strip()
    for path in (f"/file/short.txt?commit={cid[:7]}", f"/log?commit={cid[:7]}", f"/commit/{cid[:5]}"):
        r = h.get(path)
        assert r.status_code == 404, path
        assert "at least 8 hex digits" in r.text, path
    assert h.get(f"/file/short.txt?commit={cid[:8]}").content == b"x"


# ---- commit messages ----------------------------------------------------------------------


def test_commit_message_is_bounded(h: httpx.Client) -> None:
    before = commits(h)
    r = h.post("/commit", params={"message": "x" * 60_000})
    assert r.status_code == 400 and "8192" in r.text
    r = h.post("/merge", params={"from": "master", "into": "master", "message": "y" * 9000})
    assert r.status_code == 400
    assert commits(h) == before
    assert h.post("/commit", params={"message": "z" * 8192}).status_code == 201


def test_plain_text_log_is_one_line_per_commit_whatever_the_message(h: httpx.Client) -> None:
    h.post("/branch", params={"branch": "forge"})
    evil = "real\nabcdef0123456789    2020-01-01T00:00:00+00:00    master    forged\r\x1b]0;pwned\x07\x1b[2J"
    cid = h.post("/commit", params={"branch": "forge", "message": evil}).text.strip()
    text = h.get("/log", params={"branch": "forge"}).text
    lines = text.splitlines()
    assert len(lines) == len(h.get("/log", params={"branch": "forge"}, headers={"accept": "application/json"}).json())
    assert all("forged" not in ln for ln in lines)
    assert "\x1b" not in text and "\r" not in text
    for route in (f"/commit/{cid}", "/commit"):
        body = h.get(route).text
        assert "\x1b" not in body and "forged" not in body
    # the JSON keeps the message as written
    got = h.get(f"/commit/{cid}", headers={"accept": "application/json"}).json()["message"]
    assert got == evil


# ---- request ids ----------------------------------------------------------------------------


def test_every_answer_carries_a_request_id(h: httpx.Client) -> None:
    a, b = h.get("/ping"), h.get("/ping")
    assert re.fullmatch(r"[0-9a-f]{32}", a.headers["x-request-id"])
    assert a.headers["x-request-id"] != b.headers["x-request-id"]
    r = h.get("/ping", headers={"x-request-id": "client-7.abc"})
    assert r.headers["x-request-id"] == "client-7.abc"  # a well-formed id carries through
    for bad in ("has space", "x" * 200, "new\nline"):
        r = h.get("/ping", headers={"x-request-id": bad.replace("\n", "%0A")})
        assert r.headers["x-request-id"] != bad
    r = h.get("/file/nope", headers={"accept": "application/json", "x-request-id": "err-1"})
    assert r.status_code == 404
    assert r.json()["request_id"] == "err-1" and r.headers["x-request-id"] == "err-1"


def test_a_5xx_names_its_request_in_the_answer_and_the_log(tmp_path: Path) -> None:
    # A real `pfs serve`: the point is its log (and uvicorn's, which must not log the error
    # a second time without the id); the failpoint is read from the server's environment.
    s = ServerProc(tmp_path / "data", env={"PFS_FAILPOINT": "stage.before:raise"}).start()
    try:
        r = httpx.post(s.url + "/file/a", content=b"x", headers={"x-request-id": "boom-42"})
        assert r.status_code == 500
        assert r.headers["x-request-id"] == "boom-42"
        assert "boom-42" in r.text and "Traceback" not in r.text
        rj = httpx.post(s.url + "/file/a", content=b"x", headers={"accept": "application/json"})
        rid = rj.headers["x-request-id"]
        assert rj.json()["request_id"] == rid
    finally:
        s.stop()
    log = s.log_path.read_text()
    assert "Exception in ASGI application" not in log  # logged once, with its id
    lines = [ln for ln in log.splitlines() if "[boom-42]" in ln]
    assert any("internal error" in ln for ln in lines), log
    assert any(f"[{rid}]" in ln for ln in log.splitlines()), log
