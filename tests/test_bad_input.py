"""Every name-bearing or malformed input gets an exact 4xx, a one-line plain-text message
(no traceback, no server path) and changes nothing: branches, commits, staged writes,
listings and stored objects are identical before and after.

Requests go out over a raw socket so the request target reaches the server byte for byte
(HTTP clients normalise `..` and `.` segments away). So these tests talk to a real `pfs serve`
(one per group of tests, not per test): what its HTTP parser makes of a literal target, a
chunked body or one over the limit is part of what they check.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import socket
import sqlite3
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import AppServer, ServerProc

from pfs import Client

J = {"accept": "application/json"}
HEX64 = "ab" * 32


# ---- raw HTTP ----------------------------------------------------------------------
def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


def raw(
    url: str,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    chunked: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    """Send exactly `target` as the request target; return (status, headers, body)."""
    port = int(url.rsplit(":", 1)[1])
    hdrs = {"Host": "127.0.0.1", "Connection": "close", **(headers or {})}
    if chunked:
        hdrs["Transfer-Encoding"] = "chunked"
        payload = b"".join(
            b"%x\r\n%s\r\n" % (min(4096, len(body) - i), body[i : i + 4096]) for i in range(0, len(body), 4096)
        )
        payload += b"0\r\n\r\n"
    else:
        hdrs["Content-Length"] = str(len(body))
        payload = body
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.encode("latin-1"))
        # The server may answer (413) and close before reading the whole body.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(payload)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    head_b, _, resp_body = out.partition(b"\r\n\r\n")
    lines = head_b.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    resp_headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if resp_headers.get("transfer-encoding") == "chunked":
        resp_body = _dechunk(resp_body)
    return status, resp_headers, resp_body


# ---- state of the whole repository ---------------------------------------------------
def _walk(h: httpx.Client, branch: str, directory: str = "") -> list[tuple[str, str, Any]]:
    target = f"/file/{directory}/*" if directory else "/file/*"
    r = h.get(target, params={"branch": branch}, headers=J)
    assert r.status_code == 200, r.text
    out: list[tuple[str, str, Any]] = []
    for e in r.json():
        out.append((e["path"], e["type"], e.get("hash")))
        if e["type"] == "dir":
            out.extend(_walk(h, branch, e["path"]))
    return out


def snapshot(srv: ServerProc) -> dict[str, Any]:
    with httpx.Client(base_url=srv.url, timeout=30) as h:
        branches = h.get("/branch", headers=J).json()
        commits = h.get("/commit", headers=J).json()
        # Dirty views; committed ones follow from the heads, as commits and trees are immutable.
        listings = {b["name"]: _walk(h, b["name"]) for b in branches}
    db = sqlite3.connect(os.path.join(srv.data_dir, "meta.sqlite"))
    try:
        staging = db.execute("SELECT branch, path, seq, entry FROM staging ORDER BY branch, path").fetchall()
        refs = db.execute("SELECT name, head, seq FROM refs ORDER BY name").fetchall()
        commit_rows = db.execute("SELECT id FROM commits ORDER BY id").fetchall()
    finally:
        db.close()
    objects_dir = Path(srv.data_dir) / "objects"
    objects = sorted(str(p.relative_to(objects_dir)) for p in objects_dir.rglob("*") if p.is_file())
    tmp = sorted(os.listdir(Path(srv.data_dir) / "tmp"))
    return {
        "branches": branches,
        "commits": commits,
        "listings": listings,
        "staging": staging,
        "refs": refs,
        "commit_rows": commit_rows,
        "objects": objects,
        "tmp": tmp,
    }


def assert_clean_error(status: int, headers: dict[str, str], body: bytes, srv: ServerProc, lines: int = 1) -> None:
    text = body.decode("utf-8", "replace")
    assert headers.get("content-type", "").startswith("text/plain"), headers
    assert text.endswith("\n") and text.count("\n") == lines, repr(text)
    assert text.strip(), "an error needs a message"
    assert "Traceback" not in text and 'File "' not in text
    assert "internal error" not in text
    for secret in (str(srv.data_dir), str(Path(srv.data_dir).parent), "/work/", "site-packages"):
        assert secret not in text, f"server path leaked: {text!r}"


# ---- fixtures ------------------------------------------------------------------------
class Seeded:
    def __init__(self, srv: ServerProc, c1: str, c2: str, left: str, right: str) -> None:
        self.srv, self.c1, self.c2, self.left, self.right = srv, c1, c2, left, right
        self.baseline = snapshot(srv)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """master: two commits plus dirty writes (a new file and a deletion); `exp` at the
    first commit with a dirty write of its own; `left`/`right` diverged on one file."""
    srv = ServerProc(tmp_path_factory.mktemp("bad") / "data").start()
    try:
        with Client(srv.url) as c:
            c.put_file("a.txt", b"alpha\n")
            c.put_file("dir/b.txt", b"bravo\n")
            c.put_file("dir/sub/c.txt", b"charlie\n")
            c.put_file("big.bin", os.urandom(300_000))  # chunked, not inline
            c1 = c.commit(message="one").id
            c.put_file("dir/d.txt", b"delta\n")
            c2 = c.commit(message="two").id
            c.create_branch("exp", c1)
            c.put_file("exp-only.txt", b"on exp\n", branch="exp")
            c.create_branch("left", c1)
            c.put_file("dir/b.txt", b"left\n", branch="left")
            left = c.commit("left").id
            c.create_branch("right", c1)
            c.put_file("dir/b.txt", b"right\n", branch="right")
            right = c.commit("right").id
            c.put_file("staged.txt", b"dirty\n")
            c.delete_file("a.txt")
        yield Seeded(srv, c1, c2, left, right)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProc, dict[str, Any]]]:
    srv = ServerProc(tmp_path_factory.mktemp("limit") / "data", args=["--max-file-size", "4096"]).start()
    try:
        with Client(srv.url) as c:
            c.put_file("keep.txt", b"kept\n")
            c.commit(message="base")
            c.put_file("dirty.txt", b"dirty\n")
        yield srv, snapshot(srv)
    finally:
        srv.stop()


def tar_bytes(members: list[tuple[str, bytes | None]], symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.SYMTYPE
                info.linkname = symlink or "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# ---- the cases -----------------------------------------------------------------------
def C(method: str, target: str, status: int, lines: int = 1, *, id: str) -> Any:  # noqa: A002
    """One refused request; `lines`: lines of the plain-text message (conflicts add one each)."""
    return pytest.param(method, target, status, lines, id=id)


P = pytest.param
# {c1} {c2} {left} {right} in a target are filled in with the seeded commit ids.
CASES = [
    # dot segments, literal and percent-encoded, in every verb
    C("POST", "/file/../x", 400, id="post-dotdot"),
    C("GET", "/file/../a.txt", 400, id="get-dotdot"),
    C("DELETE", "/file/../a.txt", 400, id="delete-dotdot"),
    C("POST", "/file/%2e%2e/x", 400, id="post-dotdot-encoded"),
    C("POST", "/file/%2E%2E/x", 400, id="post-dotdot-encoded-upper"),
    C("GET", "/file/dir/../dir/b.txt", 400, id="get-dotdot-middle"),
    C("GET", "/file/dir/%2e%2e/%2e%2e/etc/passwd", 400, id="get-dotdot-escape"),
    C("GET", "/file/..%2f..%2fetc%2fpasswd", 400, id="get-dotdot-encoded-slash"),
    C("POST", "/file/a%2F..%2Fb", 400, id="post-encoded-slash-dotdot"),
    C("POST", "/file/..", 400, id="post-dotdot-alone"),
    C("POST", "/file/./x", 400, id="post-dot"),
    C("GET", "/file/dir/./b.txt", 400, id="get-dot-middle"),
    C("POST", "/file/%2e", 400, id="post-dot-encoded"),
    C("DELETE", "/file/dir/.", 400, id="delete-dot-last"),
    # absolute paths and empty segments
    C("POST", "/file//etc/passwd", 400, id="post-absolute"),
    C("GET", "/file//etc/passwd", 400, id="get-absolute"),
    C("DELETE", "/file//a.txt", 400, id="delete-absolute"),
    C("POST", "/file/%2fetc%2fpasswd", 400, id="post-absolute-encoded"),
    C("POST", "/file/a//b", 400, id="post-empty-segment"),
    # forbidden characters
    C("POST", "/file/a%00b", 400, id="post-nul"),
    C("GET", "/file/dir/b.txt%00.png", 400, id="get-nul"),
    C("DELETE", "/file/a.txt%00", 400, id="delete-nul"),
    C("POST", "/file/a%5Cb", 400, id="post-backslash-encoded"),
    C("POST", "/file/a\\b", 400, id="post-backslash-literal"),
    C("GET", "/file/..%5C..%5Cwindows", 400, id="get-backslash-traversal"),
    C("POST", "/file/a*b", 400, id="post-star"),
    C("POST", "/file/dir/*", 400, id="post-to-wildcard"),
    C("DELETE", "/file/*", 400, id="delete-wildcard"),
    C("GET", "/file/a*", 400, id="get-star-not-last-segment"),
    C("GET", "/file/*/x", 400, id="get-star-in-middle"),
    C("GET", "/file/dir/**", 400, id="get-double-star"),
    C("POST", "/file/a%0Ab", 400, id="post-newline"),
    C("POST", "/file/zz%0A", 400, id="post-trailing-newline"),
    C("POST", "/file/a%0Db", 400, id="post-carriage-return"),
    C("POST", "/file/a%09b", 400, id="post-tab"),
    C("POST", "/file/a%01b", 400, id="post-control"),
    C("POST", "/file/a%7Fb", 400, id="post-del-char"),
    C("POST", "/file/x%FF", 400, id="post-invalid-utf8"),
    C("POST", "/file/x%ED%A0%80", 400, id="post-utf8-surrogate"),
    # empty and overlong
    C("POST", "/file/", 400, id="post-empty"),
    C("DELETE", "/file/", 400, id="delete-empty"),
    C("POST", "/file/" + "x" * 256, 400, id="post-segment-256"),
    C("GET", "/file/" + "x" * 300, 400, id="get-segment-300"),
    C("POST", "/file/" + "/".join(["abcdefg"] * 520), 400, id="post-path-4160-bytes"),
    C("POST", "/file/" + "%C3%A9" * 128, 400, id="post-segment-256-utf8-bytes"),
    # reading the wrong kind of thing
    C("GET", "/file/dir", 400, id="get-dir-without-star"),
    C("GET", "/file/dir/", 400, id="get-dir-trailing-slash"),
    C("GET", "/file/", 400, id="get-root-without-star"),
    C("GET", "/file/dir/b.txt/*", 400, id="get-file-as-dir"),
    C("GET", "/file/nope.txt", 404, id="get-missing"),
    C("GET", "/file/a.txt", 404, id="get-dirty-deleted"),
    C("GET", "/file/nope/*", 404, id="list-missing-dir"),
    C("GET", "/file/dir/b.txt/x", 404, id="get-below-file"),
    # file-vs-directory conflicts and deletes
    C("POST", "/file/dir/b.txt/x", 409, id="post-below-file"),
    C("POST", "/file/dir", 409, id="post-over-dir"),
    C("POST", "/file/dir/sub", 409, id="post-over-subdir"),
    C("POST", "/file/staged.txt/x", 409, id="post-below-dirty-file"),
    C("DELETE", "/file/nope.txt", 404, id="delete-missing"),
    C("DELETE", "/file/a.txt", 404, id="delete-already-deleted"),
    C("DELETE", "/file/dir", 409, id="delete-dir-not-recursive"),
    C("DELETE", "/file/dir/b.txt/x", 404, id="delete-below-file"),
    # branch and commit selectors on file routes
    C("GET", "/file/dir/b.txt?commit=nope", 404, id="read-unknown-branch-as-commit"),
    C("GET", "/file/dir/b.txt?commit=deadbeef", 404, id="read-unknown-prefix"),
    C("GET", f"/file/dir/b.txt?commit={'0' * 64}", 404, id="read-unknown-commit"),
    C("GET", "/file/dir/b.txt?commit=DEADBEEF", 404, id="read-uppercase-hex"),
    C("GET", f"/file/dir/b.txt?commit={'a' * 65}", 404, id="read-65-hex"),
    C("GET", "/file/dir/b.txt?commit=..%2Fx", 400, id="read-commit-dotdot"),
    C("GET", "/file/dir/b.txt?commit=", 400, id="read-commit-empty"),
    C("GET", "/file/dir/b.txt?commit=%00", 400, id="read-commit-nul"),
    C("GET", "/file/dir/b.txt?commit=deadbeef%0A", 400, id="read-commit-newline"),
    C("GET", "/file/dir/b.txt?commit={c1}&branch=master", 400, id="read-commit-and-branch"),
    C("GET", "/file/dir/b.txt?branch=nope", 404, id="read-unknown-branch"),
    C("GET", "/file/dir/b.txt?branch=..%2Fx", 400, id="read-branch-dotdot"),
    C("GET", "/file/*?branch=a%20b", 400, id="list-branch-space"),
    C("GET", f"/file/*?branch={HEX64}", 400, id="list-branch-64hex"),
    C("POST", "/file/new.txt?branch=nope", 404, id="write-unknown-branch"),
    C("POST", "/file/newdir/", 400, id="write-trailing-slash"),
    C("PUT", "/file/dir/b.txt/", 400, id="put-trailing-slash"),
    C("POST", "/file/new.txt?branch=..%2Fx", 400, id="write-branch-dotdot"),
    C("POST", "/file/new.txt?branch=x%0A", 400, id="write-branch-newline"),
    C("DELETE", "/file/dir/b.txt?branch=nope", 404, id="delete-unknown-branch"),
    # branches
    C("POST", "/branch?branch=..%2Fx", 400, id="branch-dotdot"),
    C("POST", "/branch?branch=a%20b", 400, id="branch-space"),
    C("POST", f"/branch?branch={HEX64}", 400, id="branch-64hex"),
    C("POST", "/branch?branch=deadbeef", 400, id="branch-8hex"),
    C("POST", "/branch?branch=x.lock", 400, id="branch-lock-suffix"),
    C("POST", "/branch?branch=-x", 400, id="branch-leading-dash"),
    C("POST", "/branch?branch=.x", 400, id="branch-leading-dot"),
    C("POST", "/branch?branch=a..b", 400, id="branch-double-dot"),
    C("POST", "/branch?branch=a%2Fb", 400, id="branch-slash"),
    C("POST", "/branch?branch=abc%0A", 400, id="branch-trailing-newline"),
    C("POST", "/branch?branch=%C3%A9", 400, id="branch-non-ascii"),
    C("POST", "/branch?branch=" + "b" * 101, 400, id="branch-too-long"),
    C("POST", "/branch?branch=x%00", 400, id="branch-nul"),
    C("POST", "/branch?branch=", 400, id="branch-empty"),
    C("POST", "/branch", 400, id="branch-missing"),
    C("POST", "/branch?branch=new&commit=nope", 404, id="branch-from-unknown-branch"),
    C("POST", "/branch?branch=new&commit=deadbeefdeadbeef", 404, id="branch-from-unknown-commit"),
    C("POST", "/branch?branch=new&commit=a%20b", 400, id="branch-from-bad-name"),
    C("POST", "/branch?branch=master", 409, id="branch-exists-master"),
    C("POST", "/branch?branch=exp&commit={c2}", 409, id="branch-exists-exp"),
    C("GET", "/branch/nope", 404, id="get-unknown-branch"),
    C("GET", "/branch/a%20b", 400, id="get-branch-space"),
    C("GET", "/branch/..%2Fx", 400, id="get-branch-dotdot-slash"),
    C("GET", "/branch/abc%0A", 400, id="get-branch-newline"),
    C("DELETE", "/branch/nope", 404, id="delete-unknown-branch-ref"),
    C("DELETE", "/branch/..", 400, id="delete-branch-dotdot"),
    C("DELETE", f"/branch/{HEX64}", 400, id="delete-branch-64hex"),
    C("DELETE", "/branch/master", 409, id="delete-master"),
    # commits
    C("POST", "/commit?branch=nope", 404, id="commit-unknown-branch"),
    C("POST", "/commit?branch=..%2Fx", 400, id="commit-bad-branch"),
    C("POST", "/commit?branch=master&expect={c1}", 409, id="commit-expect-stale"),
    C("POST", "/commit?branch=master&expect=abc", 400, id="commit-expect-malformed"),
    C("POST", "/commit?branch=master&expect=", 409, id="commit-expect-empty-branch-but-has-commits"),
    C("POST", f"/commit?branch=master&expect={'A' * 64}", 400, id="commit-expect-uppercase"),
    C("POST", f"/commit?branch=master&expect={'0' * 64}", 409, id="commit-expect-unknown"),
    C("GET", "/commit/nope", 404, id="inspect-unknown-branch"),
    C("GET", "/commit/deadbeef", 404, id="inspect-unknown-prefix"),
    C("GET", f"/commit/{'0' * 64}", 404, id="inspect-unknown-commit"),
    C("GET", "/commit/a%20b", 400, id="inspect-bad-name"),
    C("GET", "/commit/..", 400, id="inspect-dotdot"),
    # log
    C("GET", "/log?limit=abc", 400, id="log-limit-abc"),
    C("GET", "/log?limit=-1", 400, id="log-limit-negative"),
    C("GET", "/log?limit=1.5", 400, id="log-limit-float"),
    C("GET", "/log?limit=", 400, id="log-limit-empty"),
    C("GET", "/log?branch=nope", 404, id="log-unknown-branch"),
    C("GET", "/log?commit=deadbeef", 404, id="log-unknown-commit"),
    C("GET", "/log?branch=..%2Fx", 400, id="log-bad-branch"),
    # diff
    C("GET", "/diff", 400, id="diff-no-params"),
    C("GET", "/diff?from=master", 400, id="diff-no-to"),
    C("GET", "/diff?to=master", 400, id="diff-no-from"),
    C("GET", "/diff?from=master&to=nope", 404, id="diff-unknown-to"),
    C("GET", "/diff?from=deadbeef&to=master", 404, id="diff-unknown-from"),
    C("GET", "/diff?from=..%2Fx&to=master", 400, id="diff-bad-name"),
    # merge
    C("POST", "/merge", 400, id="merge-no-params"),
    C("POST", "/merge?from=exp", 400, id="merge-no-into"),
    C("POST", "/merge?into=master", 400, id="merge-no-from"),
    C("POST", "/merge?from=left&into=right&strategy=bogus", 400, id="merge-bad-strategy"),
    C("POST", "/merge?from=left&into=right&strategy=", 400, id="merge-empty-strategy"),
    C("POST", "/merge?from=nope&into=left", 404, id="merge-unknown-source"),
    C("POST", "/merge?from=left&into=nope", 404, id="merge-unknown-target"),
    C("POST", "/merge?from=left&into=..%2Fx", 400, id="merge-bad-target"),
    C("POST", "/merge?from={c2}&into=master", 409, id="merge-into-dirty"),
    C("POST", "/merge?from=left&into=right", 409, 2, id="merge-conflict"),
    # revert, discard
    C("POST", "/revert", 400, id="revert-no-commit"),
    C("POST", "/revert?commit=nope&branch=left", 404, id="revert-unknown-target"),
    C("POST", "/revert?commit=deadbeef&branch=left", 404, id="revert-unknown-prefix"),
    C("POST", "/revert?commit={c1}&branch=nope", 404, id="revert-unknown-branch"),
    C("POST", "/revert?commit={c1}&branch=..%2Fx", 400, id="revert-bad-branch"),
    C("POST", "/revert?commit={c1}", 409, id="revert-dirty"),
    C("POST", "/discard?branch=nope", 404, id="discard-unknown-branch"),
    C("POST", "/discard?branch=..%2Fx", 400, id="discard-bad-branch"),
    # routes and methods that do not exist
    C("GET", "/nope", 404, id="unknown-route"),
    C("PATCH", "/file/dir/b.txt", 405, id="unknown-method"),
    C("DELETE", "/commit", 405, id="delete-commit-list"),
]


@pytest.mark.parametrize(("method", "target", "status", "lines"), CASES)
def test_bad_input_is_refused_and_changes_nothing(
    seeded: Seeded, method: str, target: str, status: int, lines: int
) -> None:
    target = target.format(c1=seeded.c1, c2=seeded.c2, left=seeded.left, right=seeded.right)
    body = b"payload" if method == "POST" and target.startswith("/file") else b""
    got, headers, text = raw(seeded.srv.url, method, target, body)
    assert got == status, (target, got, text)
    assert_clean_error(got, headers, text, seeded.srv, lines)
    assert snapshot(seeded.srv) == seeded.baseline


TAR_CASES = [
    P("/tar/in", [("../evil", b"x")], 400, id="tar-member-dotdot"),
    P("/tar/in", [("ok.txt", b"x"), ("a/../../evil", b"x")], 400, id="tar-member-dotdot-after-good"),
    P("/tar/in", [("/etc/evil", b"x")], 400, id="tar-member-absolute"),
    P("/tar", [("a\\b", b"x")], 400, id="tar-member-backslash"),
    P("/tar", [("a*", b"x")], 400, id="tar-member-star"),
    P("/tar", [("bad\udcff", b"x")], 400, id="tar-member-invalid-utf8"),
    P("/tar", [("ctl\x01", b"x")], 400, id="tar-member-control-char"),
    P("/tar/in", [("link", None)], 400, id="tar-member-symlink"),
    P("/tar/../x", [("ok.txt", b"x")], 400, id="tar-prefix-dotdot"),
    P("/tar/in?branch=..%2Fx", [("ok.txt", b"x")], 400, id="tar-bad-branch"),
    P("/tar/in?branch=nope", [("ok.txt", b"x")], 404, id="tar-unknown-branch"),
    P("/tar/dir/b.txt", [("x", b"x")], 409, id="tar-below-file"),
    P("/tar", [("dir", b"x")], 409, id="tar-over-directory"),
    P("/tar/in", [("f", b"x"), ("f/g", b"y")], 409, id="tar-file-and-dir-clash"),
]


@pytest.mark.parametrize(("target", "members", "status"), TAR_CASES)
def test_bad_archive_is_refused_whole(
    seeded: Seeded, target: str, members: list[tuple[str, bytes | None]], status: int
) -> None:
    got, headers, text = raw(seeded.srv.url, "POST", target, tar_bytes(members))
    assert got == status, (target, got, text)
    assert_clean_error(got, headers, text, seeded.srv)
    assert snapshot(seeded.srv) == seeded.baseline


def test_garbage_archive_is_refused(seeded: Seeded) -> None:
    got, headers, text = raw(seeded.srv.url, "POST", "/tar/in", b"this is not a tar archive" * 50)
    assert got == 400
    assert_clean_error(got, headers, text, seeded.srv)
    assert snapshot(seeded.srv) == seeded.baseline


@pytest.mark.parametrize(
    ("method", "target", "code"),
    [
        ("POST", "/file/%2e%2e/x", "invalid_path"),
        ("GET", "/file/nope.txt", "file_not_found"),
        ("POST", "/branch?branch=a%20b", "invalid_name"),
        ("GET", "/branch/nope", "branch_not_found"),
        ("GET", "/commit/deadbeef", "commit_not_found"),
        ("POST", "/branch?branch=master", "already_exists"),
        ("POST", "/file/dir", "path_conflict"),
        ("POST", "/merge?from=left&into=right", "merge_conflict"),
        ("POST", "/revert?commit=master", "dirty_branch"),
        ("GET", "/log?limit=abc", "bad_request"),
    ],
)
def test_json_errors_carry_a_stable_code(seeded: Seeded, method: str, target: str, code: str) -> None:
    with httpx.Client(base_url=seeded.srv.url) as h:
        r = h.request(method, target, headers=J, content=b"x" if method == "POST" else None)
    assert 400 <= r.status_code < 500
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["error"] == code and body["message"]
    assert "\n" not in body["message"]
    assert snapshot(seeded.srv) == seeded.baseline


def test_merge_conflict_lists_the_path(seeded: Seeded) -> None:
    got, _, text = raw(seeded.srv.url, "POST", "/merge?from=left&into=right", headers=J)
    assert got == 409
    body = json.loads(text)
    assert [c["path"] for c in body["conflicts"]] == ["dir/b.txt"]
    got, _, plain = raw(seeded.srv.url, "POST", "/merge?from=left&into=right")
    assert plain.decode().splitlines()[1:] == ["CONFLICT dir/b.txt"]
    assert snapshot(seeded.srv) == seeded.baseline


def test_literal_dotdot_through_http_client(seeded: Seeded) -> None:
    """http.client sends the target as given: the server sees a literal `..`."""
    port = int(seeded.srv.url.rsplit(":", 1)[1])
    for method, target in [("GET", "/file/../a.txt"), ("POST", "/file/../x"), ("POST", "/file/dir/../../x")]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(method, target, body=b"x" if method == "POST" else None)
            resp = conn.getresponse()
            body = resp.read()
        finally:
            conn.close()
        assert resp.status == 400, (target, body)
        assert_clean_error(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body, seeded.srv)
    assert snapshot(seeded.srv) == seeded.baseline


def test_percent_encoded_dotdot_through_httpx(seeded: Seeded) -> None:
    """httpx drops literal dot segments but keeps `%2e%2e`; the server still refuses it."""
    with httpx.Client(base_url=seeded.srv.url) as h:
        for method in ("GET", "POST", "DELETE"):
            r = h.request(method, "/file/%2e%2e/a.txt", content=b"x" if method == "POST" else None)
            assert r.status_code == 400, r.text
            assert r.text.count("\n") == 1 and ".." in r.text
    assert snapshot(seeded.srv) == seeded.baseline


def test_ambiguous_commit_prefix(tmp_path: Path) -> None:
    """Two commits sharing a prefix: the prefix is refused as ambiguous (400), a longer
    unique one still works. Real ids never collide on 8+ hex digits in a test, so the
    second entry is planted in the commit index."""
    srv = AppServer(tmp_path / "data").start()
    try:
        with srv.client() as c:
            c.put_file("a", b"a")
            real = c.commit().id
        twin = real[:10] + ("0" if real[10] != "0" else "1") * 54
        db = sqlite3.connect(os.path.join(srv.data_dir, "meta.sqlite"))
        with db:
            db.execute(
                "INSERT INTO commits (id, tree, branch, parents, time, message) VALUES (?, ?, 'master', '[]', 0, '')",
                (twin, "0" * 64),
            )
        db.close()
        with srv.http() as h:
            for prefix in (real[:8], real[:10]):
                r = h.get(f"/commit/{prefix}")
                assert r.status_code == 400, r.text
                assert "ambiguous" in r.text and r.text.count("\n") == 1
                r = h.get("/file/a", params={"commit": prefix})
                assert r.status_code == 400
            assert h.get(f"/commit/{real[:11]}", headers=J).json()["id"] == real
    finally:
        srv.stop()


# ---- size limit ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "size", "chunked"),
    [
        P("/file/big.bin", 4097, False, id="declared-one-over"),
        P("/file/big.bin", 200_000, False, id="declared-far-over"),
        P("/file/big.bin", 4097, True, id="chunked-one-over"),
        P("/file/big.bin", 3_000_000, True, id="chunked-far-over"),
        P("/file/keep.txt", 10_000, True, id="replace-existing"),
        P("/file/big.bin?branch=master", 5000, False, id="explicit-branch"),
    ],
)
def test_body_over_the_limit_is_413(
    limited: tuple[ServerProc, dict[str, Any]], target: str, size: int, chunked: bool
) -> None:
    srv, baseline = limited
    got, headers, text = raw(srv.url, "POST", target, os.urandom(size), chunked=chunked)
    assert got == 413, text
    assert_clean_error(got, headers, text, srv)
    assert snapshot(srv) == baseline
    assert httpx.get(srv.url + "/file/keep.txt").content == b"kept\n"


def test_archive_member_over_the_limit_is_413(limited: tuple[ServerProc, dict[str, Any]]) -> None:
    srv, baseline = limited
    archive = tar_bytes([("small.txt", b"fine"), ("huge.bin", os.urandom(5000))])
    got, headers, text = raw(srv.url, "POST", "/tar/in", archive)
    assert got == 413, text
    assert_clean_error(got, headers, text, srv)
    assert snapshot(srv) == baseline


def test_body_at_the_limit_is_accepted(limited: tuple[ServerProc, dict[str, Any]]) -> None:
    """Positive control, run last in this group: exactly the limit is fine."""
    srv, _ = limited
    data = os.urandom(4096)
    got, _, text = raw(srv.url, "POST", "/file/exact.bin?branch=master", data, chunked=True)
    assert got == 201, text
    assert httpx.get(srv.url + "/file/exact.bin").content == data
