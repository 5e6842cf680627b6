"""The console's actions and access: signing in with an access key (session cookie, its
flags, its end, the throttle, the audit, `next=`), each action confirmed then done
(branch, upload and commit, merge with conflicts shown per path, revert), CSRF and
cross-site refusals, what a read-only user is shown and refused, oversized uploads, and
stored text shown as text; in process (`AppServer`), then a real `pfs serve` driven by a
headless Chromium (marked `browser`): sign in, branch, upload two files with the script
(progress to 100%), commit, merge into a conflict, revert."""

from __future__ import annotations

import contextlib
import io
import re
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from conftest import AppServer, ServerProc
from console_kit import page, shoot, state

from pfs import Client
from pfs.access.identity import NewKey
from pfs.http import auth
from pfs.http.console import session

LIMIT = 64 << 10  # the test servers' --max-file-size
XSS_FILE = "<img src=x onerror=alert(1)>.txt"
XSS_MESSAGE = "<script>document.title='pwned'</script> & <b>bold</b>"
ORIGIN = {"origin": AppServer.url}


def csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF token on the page"
    return unescape(m.group(1))


def form_of(html: str, form_id: str = "confirm") -> tuple[str, dict[str, str]]:
    """A form's action and its hidden fields, as a browser would post them."""
    m = re.search(rf'<form method="post" action="([^"]*)"[^>]*id="{form_id}">(.*?)</form>', html, re.S)
    assert m, f"no form {form_id}"
    fields = {unescape(n): unescape(v) for n, v in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', m[2])}
    return unescape(m[1]), fields


def confirm(h: httpx.Client, path: str, **extra: str) -> httpx.Response:
    """Open a confirm page and post its form, as a person who clicks the button."""
    action, fields = form_of(page(h, path))
    return h.post(action, data={**fields, **extra}, headers=ORIGIN)


def notice(h: httpx.Client, path: str) -> str:
    m = re.search(r'<p class="notice" id="notice" role="status">(.*?)</p>', page(h, path), re.S)
    return unescape(m.group(1)) if m else ""


def upload(h: httpx.Client, branch: str, files: dict[str, bytes], folder: str = "", **kw: Any) -> httpx.Response:
    token = csrf(page(h, f"/ui/default/upload/{branch}"))
    parts = [("files", (name, io.BytesIO(data), "application/octet-stream")) for name, data in files.items()]
    return h.post(
        f"/ui/default/upload/{branch}",
        data={"csrf": token, "dir": folder},
        files=parts,
        headers={**ORIGIN, **kw.pop("headers", {})},
        **kw,
    )


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """No access control (no users): every visitor may act, still only with a CSRF token."""
    s = AppServer(tmp_path_factory.mktemp("actions") / "data", env={"PFS_MAX_FILE_SIZE": str(LIMIT)}).start()
    with s.client() as c:
        c.put_file("a.txt", b"one\n")
        c.put_file("docs/readme.txt", b"hello\n")
        c.commit(message="first")
    yield s
    s.stop()


class Acl:
    """A server with access control on: a server admin, a writer and a reader of default."""

    def __init__(self, s: AppServer) -> None:
        self.s = s
        self.identity = s.app.state.node.access.identity
        self.audit = s.app.state.node.access.audit
        self.root = self.identity.init_admin("root")
        for user in ("writer", "reader"):
            self.identity.create_user(user)
        self.writer = self.identity.create_key("writer")
        self.reader = self.identity.create_key("reader")
        self.identity.grant("writer", s.repo.id, "write")
        self.identity.grant("reader", s.repo.id, "read")

    @contextlib.contextmanager
    def signed_in(self, key: NewKey, next_: str = "/ui") -> Iterator[httpx.Client]:
        with self.s.http(timeout=30) as h:
            r = self.sign_in(h, key.id, key.secret, next_)
            assert r.status_code == 303, r.text
            yield h

    @staticmethod
    def sign_in(h: httpx.Client, key_id: str, secret: str, next_: str = "/ui", **headers: str) -> httpx.Response:
        token = csrf(page(h, "/ui/_login?" + urlencode({"next": next_})))
        data = {"csrf": token, "key_id": key_id, "secret": secret, "next": next_}
        return h.post("/ui/_login", data=data, headers={**ORIGIN, **headers})  # headers: may replace the Origin


@pytest.fixture
def acl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Acl]:
    # a throttle that blocks soon (the default waits 100 failures, slowed to 5 s each)
    real = auth.Throttle
    monkeypatch.setattr(auth, "Throttle", lambda: real(free=3, block=6, window=60))
    s = AppServer(tmp_path / "data").start()
    with s.client() as c:
        c.put_file("a.txt", b"one\n")
        c.commit(message="first")
    yield Acl(s)
    s.stop()


# ---- signing in ---------------------------------------------------------------------


def test_sign_in_sets_a_strict_session_cookie_without_the_secret_and_sign_out_ends_it(acl: Acl) -> None:
    with acl.s.http() as h:
        r = h.get("/ui/default/log/master")
        assert r.status_code == 303 and r.headers["location"] == "/ui/_login?next=%2Fui%2Fdefault%2Flog%2Fmaster"
        html = page(h, r.headers["location"])
        assert 'type="password"' in html and 'action="/ui/_login"' in html
        login_cookie = h.cookies.get("pfs_csrf")
        assert login_cookie  # the login form's CSRF nonce, set before anyone is signed in
        r = acl.sign_in(h, acl.writer.id, acl.writer.secret, "/ui/default/log/master")
        assert r.status_code == 303 and r.headers["location"] == "/ui/default/log/master"
        cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("pfs_session="))
        flags = {f.strip().split("=")[0].lower() for f in cookie.split(";")[1:]}
        assert {"httponly", "path", "samesite", "max-age"} <= flags and "secure" not in flags  # plain http here
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert "Path=/ui;" in cookie + ";" and "Max-Age=43200" in cookie
        value = h.cookies["pfs_session"]
        assert acl.writer.secret not in value and value.startswith(acl.writer.id + ".")
        html = page(h, "/ui/default/log/master")
        assert "signed in as writer" in html and 'id="logout"' in html
        assert "Signed in as writer." in html  # the notice, once
        assert "Signed in as writer." not in page(h, "/ui/default/log/master")
        # signing out: with the page's token, then the pages send to the login page again
        r = h.post("/ui/_logout", data={"csrf": csrf(html)}, headers=ORIGIN)
        assert r.status_code == 303 and r.headers["location"] == "/ui/_login"
        assert "pfs_session" not in h.cookies
        assert h.get("/ui").status_code == 303
        # the old cookie, kept by someone, still names an enabled key until it expires: the
        # key is what ends it (see the disabled-key test); it never names a secret
    audit = [e for e in acl.audit.entries(limit=50) if e.action == "/ui/_login"]
    assert [(e.user, e.key, e.status) for e in audit] == [("writer", acl.writer.id, 303)]
    assert all(acl.writer.secret not in e.target for e in acl.audit.entries(limit=100))


def test_over_https_the_cookies_are_secure_and_the_api_ignores_them(acl: Acl) -> None:
    with httpx.Client(base_url="https://pfs.test", transport=acl.s.transport) as h:
        r = acl.sign_in(h, acl.writer.id, acl.writer.secret, origin="https://pfs.test")
        assert r.status_code == 303
        cookies = [v for k, v in r.headers.multi_items() if k == "set-cookie"]
        assert cookies and all("; Secure" in c for c in cookies)
        assert "signed in as writer" in page(h, "/ui/default")
        r = acl.sign_in(h, acl.writer.id, acl.writer.secret, origin="http://pfs.test")  # the same host, not https
        assert r.status_code == 403
        # the JSON API keeps its own sign-in: a console cookie is no credential there
        assert h.get("/repo").status_code == 401 and h.get("/file/a.txt").status_code == 401


def test_basic_still_works_and_a_wrong_basic_key_is_asked_again(acl: Acl) -> None:
    with acl.s.http() as h:
        h.auth = (acl.writer.id, acl.writer.secret)
        html = page(h, "/ui/default")
        assert "signed in as writer" in html and 'id="logout"' not in html  # Basic: the browser holds it
        h.auth = (acl.writer.id, "x" * 40)
        r = h.get("/ui/default")
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic realm=")


def test_a_bad_key_is_refused_counted_and_throttled_with_basic(acl: Acl, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "W" * 40
    with acl.s.http() as h:
        for key_id, secret in ((acl.writer.id, wrong), ("PFSNOSUCHKEY0000000", wrong), (wrong, acl.writer.secret)):
            r = acl.sign_in(h, key_id, secret)
            assert r.status_code == 401 and "pfs_session" not in h.cookies
            assert "www-authenticate" not in r.headers  # a page, not the browser's prompt
            assert "unknown or disabled access key" in unescape(r.text)
            assert wrong not in r.text and acl.writer.secret not in r.text
        statuses = [acl.sign_in(h, acl.writer.id, wrong).status_code for _ in range(3)]
        assert statuses == [401, 401, 401]
        r = acl.sign_in(h, acl.writer.id, acl.writer.secret)  # the right key, but the address is blocked
        assert r.status_code == 429 and "retry-after" in r.headers and "pfs_session" not in h.cookies
        r = h.get("/repo", auth=(acl.writer.id, acl.writer.secret))  # the same throttle as Basic
        assert r.status_code == 429
    entries = [e for e in acl.audit.entries(limit=50) if e.action == "/ui/_login"]
    assert [e.status for e in entries][::-1] == [401] * 6 + [429]
    assert all(e.user is None and e.key is None for e in entries)
    for text in [e.target for e in entries] + [r.getMessage() for r in caplog.records]:
        assert wrong not in text and acl.writer.secret not in text


def test_a_disabled_rotated_or_deleted_key_ends_its_session(acl: Acl) -> None:
    for end in ("disable", "rotate", "delete"):
        key = acl.identity.create_key("writer")
        with acl.signed_in(key) as h:
            assert "signed in as writer" in page(h, "/ui/default")
            if end == "disable":
                acl.identity.set_key_disabled(key.id, True)
            elif end == "rotate":
                acl.identity.rotate_key(key.id)
            else:
                acl.identity.delete_key(key.id)
            r = h.get("/ui/default")
            assert r.status_code == 303 and r.headers["location"].startswith("/ui/_login?"), end
            assert "pfs_session" not in h.cookies  # cleared
            assert "Your session has ended" in notice(h, r.headers["location"])


def test_forged_and_expired_sessions_are_anonymous(acl: Acl, monkeypatch: pytest.MonkeyPatch) -> None:
    with acl.signed_in(acl.writer) as h:
        value = h.cookies["pfs_session"]
    key_id, expires, nonce, mac = value.split(".")
    forged = [
        f"{key_id}.{int(expires) + 10**6}.{nonce}.{mac}",  # a longer life
        f"{acl.root.id}.{expires}.{nonce}.{mac}",  # another user's key
        f"{key_id}.{expires}.{nonce}.{mac[:-1]}A"
        if not mac.endswith("A")
        else f"{key_id}.{expires}.{nonce}.{mac[:-1]}B",
        "garbage",
        value + "." + value,
    ]
    with acl.s.http() as anon:
        for v in forged:
            r = anon.get("/ui/default", headers={"cookie": f"pfs_session={v}"})
            assert r.status_code == 303, v
        assert anon.get("/ui/default", headers={"cookie": f"pfs_session={value}"}).status_code == 200
    monkeypatch.setattr(session, "SESSION_TTL", 1)
    with acl.signed_in(acl.writer) as h:
        short = h.cookies["pfs_session"]
    time.sleep(2.1)
    with acl.s.http() as anon:
        assert anon.get("/ui/default", headers={"cookie": f"pfs_session={short}"}).status_code == 303


@pytest.mark.parametrize(
    ("given", "lands"),
    [
        ("/ui/default/log/master?after=x", "/ui/default/log/master?after=x"),
        ("https://evil.example/ui/", "/ui"),
        ("//evil.example/ui/", "/ui"),
        ("/\\evil.example", "/ui"),
        ("/ui//evil.example", "/ui"),
        ("/ui/\\evil.example", "/ui"),
        ("javascript:alert(1)", "/ui"),
        ("/uix", "/ui"),
        ("/ui/\r\nlocation: https://evil.example", "/ui"),
        ("", "/ui"),
    ],
)
def test_next_goes_only_to_console_pages(acl: Acl, given: str, lands: str) -> None:
    with acl.s.http() as h:
        r = acl.sign_in(h, acl.writer.id, acl.writer.secret, given)
        assert r.status_code == 303 and r.headers["location"] == lands


def test_the_login_form_needs_its_token_and_the_same_site(acl: Acl) -> None:
    with acl.s.http() as h:
        token = csrf(page(h, "/ui/_login"))
        good = {"csrf": token, "key_id": acl.writer.id, "secret": acl.writer.secret}
        for data, headers in (
            ({k: v for k, v in good.items() if k != "csrf"}, ORIGIN),
            ({**good, "csrf": "x" * 43}, ORIGIN),
            (good, {"origin": "https://evil.example"}),
            (good, {"origin": "null"}),
            (good, {"sec-fetch-site": "cross-site"}),
            (good, {"sec-fetch-site": "same-site"}),
        ):
            r = h.post("/ui/_login", data=data, headers=headers)
            assert r.status_code == 403 and "pfs_session" not in h.cookies, (data, headers)
        with acl.s.http() as other:  # another browser's token does not fit this browser's cookie
            r = other.post("/ui/_login", data=good, headers=ORIGIN)
            assert r.status_code == 403
        assert h.post("/ui/_login", data=good, headers={"sec-fetch-site": "same-origin"}).status_code == 303


# ---- what a role is shown and allowed -----------------------------------------------


def test_a_reader_sees_no_action_and_is_refused_every_action(acl: Acl) -> None:
    with acl.signed_in(acl.writer) as w:
        html = page(w, "/ui/default")
        assert 'id="new-branch"' in html and 'id="merge"' in html and "/ui/default/upload/master" in html
        assert "read and write</footer>" in html
        writer_token = csrf(html)
    with acl.signed_in(acl.reader) as h:
        for path in ("/ui/default", "/ui/default/log/master", "/ui/default/tree/master"):
            html = page(h, path)
            assert "read only</footer>" in html, path
            for form in ('id="new-branch"', 'id="merge"', "/upload/", "/commit/", "/revert/", "revert"):
                assert form not in html, (path, form)
        token = csrf(page(h, "/ui/default"))
        before = state(acl.s)
        head = acl.s.repo.branch_head("master")
        gets = [
            "/ui/default/branch?name=x",
            "/ui/default/upload/master",
            "/ui/default/commit/master",
            "/ui/default/merge?from=master&into=master",
            f"/ui/default/revert/master?commit={head}",
        ]
        for path in gets:
            assert "needs write permission" in page(h, path, status=403), path
        posts = [
            ("/ui/default/branch", {"name": "x"}),
            ("/ui/default/commit/master", {"message": "m"}),
            ("/ui/default/merge", {"from": "master", "into": "master"}),
            ("/ui/default/revert/master", {"commit": str(head)}),
        ]
        for path, data in posts:
            for t in (token, writer_token):
                r = h.post(path, data={"csrf": t, **data}, headers=ORIGIN)
                assert r.status_code == 403 and "needs write permission" in r.text, path
        r = h.post(
            "/ui/default/upload/master",
            data={"csrf": token},
            files=[("files", ("a.txt", b"x"))],
            headers=ORIGIN,
        )
        assert r.status_code == 403
        assert state(acl.s) == before
    with acl.signed_in(acl.root) as a:
        assert "server admin</footer>" in page(a, "/ui/default")


def test_a_writer_acts_through_a_session(acl: Acl) -> None:
    with acl.signed_in(acl.writer) as h:
        r = confirm(h, "/ui/default/branch?name=work&from=master")
        assert r.status_code == 303 and acl.s.repo.branch_head("work") == acl.s.repo.branch_head("master")
        entries = [e for e in acl.audit.entries(limit=20) if e.action == "/ui/{repo}/branch"]
        assert [(e.user, e.method, e.status, e.repo) for e in entries] == [("writer", "POST", 303, "default")]


# ---- actions, confirmed then done ---------------------------------------------------


def test_create_a_branch_confirmed_then_done(h: httpx.Client, srv: AppServer) -> None:
    html = page(h, "/ui/default")
    assert 'id="new-branch"' in html and "access control off</footer>" in html
    before = state(srv)
    html = page(h, "/ui/default/branch?name=topic&from=master")
    head = srv.repo.branch_head("master")
    assert head is not None
    assert f"A new branch topic from master, at commit {head[:12]} (first)." in unescape(html)
    assert h.head("/ui/default/branch?name=topic&from=master").status_code == 200
    assert state(srv) == before  # the confirm page changes nothing
    r = confirm(h, "/ui/default/branch?name=topic&from=master")
    assert r.status_code == 303 and r.headers["location"] == "/ui/default"
    assert srv.repo.branch_head("topic") == head
    assert notice(h, "/ui/default") == f"Created branch topic at {head[:12]}."
    assert notice(h, "/ui/default") == ""  # once
    assert "exists already" in page(h, "/ui/default/branch?name=topic", status=409)
    r = confirm(h, f"/ui/default/branch?name=frozen&from={head}")  # from a commit id
    assert r.status_code == 303 and srv.repo.branch_head("frozen") == head


def test_upload_without_script_then_commit(h: httpx.Client, srv: AppServer) -> None:
    srv.repo.create_branch("up")
    r = h.get("/ui/default/upload/up")
    assert r.status_code == 200
    assert r.headers["content-security-policy"].endswith("; script-src 'self'; connect-src 'self'")  # this page only
    assert "'unsafe" not in r.headers["content-security-policy"]
    assert '<script src="/ui/_static/upload.js" defer></script>' in r.text and 'enctype="multipart/form-data"' in r.text
    js = h.get("/ui/_static/upload.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in js.text and "eval(" not in js.text
    assert "script-src" not in h.get("/ui/default").headers["content-security-policy"]

    r = upload(h, "up", {"x.csv": b"a,b\n1,2\n", XSS_FILE: b"<b>not bold</b>"}, folder="in")
    assert r.status_code == 303 and r.headers["location"] == "/ui/default/commit/up"
    staged = sorted(s.path for s in srv.repo.meta.staged("up"))
    assert staged == sorted(["in/x.csv", f"in/{XSS_FILE}"])
    html = page(h, "/ui/default/commit/up")
    assert "Staged 2 file(s), 23 bytes, on up: commit them below." in unescape(html)
    assert "in/&lt;img src=x onerror=alert(1)&gt;.txt" in html and "<img src=x" not in html
    assert "Commit 2 change(s) to up" in html
    before = state(srv)
    action, fields = form_of(html)
    r = h.post(action, data={**fields, "message": XSS_MESSAGE}, headers=ORIGIN)
    assert r.status_code == 303 and r.headers["location"] == "/ui/default/log/up"
    assert state(srv) != before
    head = srv.repo.resolve("up")
    assert head.message == XSS_MESSAGE and srv.repo.view(commit=head.id).lookup("in/x.csv") is not None
    html = page(h, "/ui/default/log/up")
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    assert "<script>" not in html and "<b>bold" not in html
    assert f"Committed {head.id[:12]} to up." in unescape(html)
    html = page(h, "/ui/default/tree/up/in")
    assert "&lt;img src=x onerror=alert(1)&gt;.txt" in html and "/ui/default/upload/up?dir=in" in html


def test_upload_from_the_script_answers_json(h: httpx.Client, srv: AppServer) -> None:
    srv.repo.create_branch("js")
    r = upload(h, "js", {"one.txt": b"1", "two.txt": b"22"}, headers={"accept": "application/json"})
    assert r.status_code == 201
    assert r.json() == {
        "branch": "js",
        "staged": 2,
        "size": 3,
        "paths": ["one.txt", "two.txt"],
        "next": "/ui/default/commit/js",
    }
    token = csrf(page(h, "/ui/default/upload/js"))  # the token may come as a header instead
    r = h.post(
        "/ui/default/upload/js",
        files=[("files", ("three.txt", b"333"))],
        headers={**ORIGIN, "x-csrf-token": token, "accept": "application/json"},
    )
    assert r.status_code == 201 and r.json()["paths"] == ["three.txt"]


def test_an_oversized_upload_is_a_413_page_and_stages_nothing(h: httpx.Client, srv: AppServer) -> None:
    srv.repo.create_branch("big")
    before = state(srv)
    for files in (
        {"big.bin": b"x" * (LIMIT + 1)},
        {"small.txt": b"fine", "big.bin": b"x" * (LIMIT * 3)},  # the first was stored: still not staged
    ):
        r = upload(h, "big", files)
        assert r.status_code == 413 and r.headers["content-type"] == "text/html; charset=utf-8"
        assert f"file larger than the limit of {LIMIT} bytes" in r.text and "<h1>413 " in r.text
        assert state(srv) == before
    r = upload(h, "big", {"big.bin": b"x" * (LIMIT + 1)}, headers={"accept": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    assert upload(h, "big", {"edge.bin": b"x" * LIMIT}).status_code == 303  # the limit itself is fine


@pytest.mark.parametrize(
    ("files", "folder", "status", "says"),
    [
        ({"../escape.txt": b"x"}, "", 400, "'..' is not allowed"),
        ({"a.txt": b"x"}, "../up", 400, "'..' is not allowed"),
        ({"a.txt": b"x"}, "a.txt", 409, "is a file"),  # a file above the upload
    ],
)
def test_bad_uploads_change_nothing(
    h: httpx.Client, srv: AppServer, files: dict[str, bytes], folder: str, status: int, says: str
) -> None:
    before = state(srv)
    r = upload(h, "master", files, folder=folder)
    assert r.status_code == status, r.text
    assert says in unescape(r.text) and 'id="error"' in r.text
    assert state(srv) == before


def test_a_hand_made_multipart_body_is_checked(h: httpx.Client, srv: AppServer) -> None:
    token = csrf(page(h, "/ui/default/upload/master"))
    before = state(srv)
    boundary = "XyZ"

    def body(*parts: str) -> bytes:
        return ("".join(f"--{boundary}\r\n{p}\r\n" for p in parts) + f"--{boundary}--\r\n").encode()

    field = 'Content-Disposition: form-data; name="{}"\r\n\r\n{}'
    file = 'Content-Disposition: form-data; name="files"; filename="{}"\r\n\r\n{}'
    headers = {**ORIGIN, "content-type": f"multipart/form-data; boundary={boundary}"}
    cases = [
        (body(file.format("f.txt", "x"), field.format("csrf", token)), 403),  # a file before the token
        (body(field.format("csrf", token), file.format("f.txt", "x"), field.format("dir", "d")), 400),
        (body(field.format("csrf", token), field.format("other", "1"), file.format("f.txt", "x")), 400),
        (body(field.format("csrf", token), file.format("f.txt", "x"), file.format("f.txt", "y")), 400),
        (body(field.format("csrf", token), field.format("csrf", token), file.format("f.txt", "x")), 400),
        (body(field.format("csrf", token), field.format("dir", "d" * 20_000), file.format("f.txt", "x")), 400),
        (body(field.format("csrf", token), file.format("f.txt", "x"))[:-10], 400),  # cut short
        (b"--XyZ\r\nnot a part", 400),
        (body(field.format("csrf", token), file.format("nul\x00.txt", "x")), 400),
        (body(field.format("csrf", token), file.format("{}", "x")).replace(b"{}", b"\xff.txt"), 400),  # not UTF-8
        (body(field.format("csrf", token), file.format("", "")), 400),  # the file input left empty
    ]
    for raw, status in cases:
        r = h.post("/ui/default/upload/master", content=raw, headers=headers)
        assert r.status_code == status, (raw[:200], r.text)
        assert 'id="error"' in r.text
    assert "choose at least one file" in r.text
    r = h.post("/ui/default/upload/master", content=b"a=b", headers={**ORIGIN, "content-type": "text/plain"})
    assert r.status_code == 400
    assert state(srv) == before


def _conflicting(srv: AppServer, c: Client) -> tuple[str, str]:
    """Branches `left` and `right` that both change shared.txt, a file named with HTML,
    and a directory/file clash; right also adds a file of its own."""
    c.create_branch("left")
    c.create_branch("right")
    for branch, body in (("left", b"L"), ("right", b"R")):
        c.put_file("shared.txt", body, branch=branch)
        c.put_file(f"x/{XSS_FILE}", body, branch=branch)
        c.commit(branch=branch, message=f"{branch} side")
    c.put_file("only-right.txt", b"r", branch="right")
    c.commit(branch="right", message="more on right")
    return "left", "right"


def test_a_merge_conflict_is_shown_per_path_and_changes_nothing(h: httpx.Client, srv: AppServer) -> None:
    with srv.client() as c:
        _conflicting(srv, c)
    before = state(srv)
    html = page(h, "/ui/default/merge?from=right&into=left")
    text = unescape(html)
    assert "Merge right into left: 3 file(s) change." in text and "a merge commit" in text
    assert f"x/{XSS_FILE}".replace("<", "&lt;").replace(">", "&gt;") in html and "<img src=x" not in html
    r = confirm(h, "/ui/default/merge?from=right&into=left")
    assert r.status_code == 409 and r.headers["content-type"] == "text/html; charset=utf-8"
    m = re.search(r'<pre class="paths" id="conflicts">(.*?)</pre>', r.text, re.S)
    assert m and unescape(m.group(1)).splitlines() == ["shared.txt", f"x/{XSS_FILE}"]
    assert "<img src=x" not in r.text and "Nothing was changed." in r.text
    assert state(srv) == before


def test_a_merge_fast_forwards_or_commits_and_says_so(h: httpx.Client, srv: AppServer) -> None:
    with srv.client() as c:
        c.create_branch("ff")
        c.put_file("ff.txt", b"f", branch="ff")
        c.commit(branch="ff", message="ff")
    r = confirm(h, "/ui/default/merge?from=master&into=ff")
    assert r.status_code == 303 and "already up to date" in notice(h, r.headers["location"])
    html = page(h, "/ui/default/merge?from=ff&into=master")
    assert "a fast-forward" in html and "Merge ff into master: 1 file(s) change." in unescape(html)
    r = confirm(h, "/ui/default/merge?from=ff&into=master")
    assert r.status_code == 303 and r.headers["location"] == "/ui/default/log/master"
    assert srv.repo.branch_head("master") == srv.repo.branch_head("ff")
    assert "(fast-forward)" in notice(h, "/ui/default/log/master")
    with srv.client() as c:  # both sides move: a merge commit, with the message given
        c.put_file("m1.txt", b"1")
        c.commit(message="m1")
        c.put_file("f1.txt", b"1", branch="ff")
        c.commit(branch="ff", message="f1")
    r = confirm(h, "/ui/default/merge?from=ff&into=master", message="<i>joined</i>")
    assert r.status_code == 303
    head = srv.repo.resolve("master")
    assert len(head.parents) == 2 and head.message == "<i>joined</i>"
    assert "&lt;i&gt;joined&lt;/i&gt;" in page(h, "/ui/default/log/master")


def test_revert_confirmed_then_done(h: httpx.Client, srv: AppServer) -> None:
    with srv.client() as c:
        c.create_branch("rv")
        first = srv.repo.resolve("rv")
        c.put_file("later.txt", b"l", branch="rv")
        c.put_file("a.txt", b"changed", branch="rv")
        c.commit(branch="rv", message="later")
    html = page(h, "/ui/default/log/rv")
    assert f'href="/ui/default/revert/rv?commit={first.id}"' in html
    assert "/ui/default/revert/" not in page(h, f"/ui/default/log/{first.id}")  # a commit's log: no branch to revert
    before = state(srv)
    html = page(h, f"/ui/default/revert/rv?commit={first.id}")
    assert f"Revert rv to {first.id[:12]} ({first.message.splitlines()[0]}): 2 file(s) change." in unescape(html)
    assert "a.txt\nlater.txt\n" in html
    assert state(srv) == before
    r = confirm(h, f"/ui/default/revert/rv?commit={first.id[:12]}")
    assert r.status_code == 303 and r.headers["location"] == "/ui/default/log/rv"
    head = srv.repo.resolve("rv")
    assert head.tree == first.tree and head.message == f"Revert rv to {first.id[:12]}" and len(head.parents) == 1
    assert f"Reverted rv to {first.id[:12]}: {head.id[:12]}." in notice(h, "/ui/default/log/rv")


# ---- CSRF and bad input -------------------------------------------------------------


def token_of(h: httpx.Client) -> str:
    """This browser's CSRF token, from a page with a form that posts."""
    return csrf(page(h, "/ui/default/upload/master"))


def test_posts_without_a_valid_token_or_from_another_site_are_403_and_change_nothing(
    h: httpx.Client, srv: AppServer
) -> None:
    head = srv.repo.branch_head("master")
    srv.repo.put_file("master", "staged.txt", b"s")  # something to commit
    token = token_of(h)
    posts = [
        ("/ui/default/branch", {"name": "csrf-test"}),
        ("/ui/default/commit/master", {"message": "m"}),
        ("/ui/default/merge", {"from": "master", "into": "master"}),
        ("/ui/default/revert/master", {"commit": str(head)}),
    ]
    with srv.http() as other:
        foreign = token_of(other)  # another browser's token
    before = state(srv)
    for path, data in posts:
        for fields, headers in (
            (data, ORIGIN),  # no token
            ({**data, "csrf": ""}, ORIGIN),
            ({**data, "csrf": token[:-1] + ("A" if token[-1] != "A" else "B")}, ORIGIN),
            ({**data, "csrf": foreign}, ORIGIN),
            ({**data, "csrf": token}, {"origin": "https://evil.example"}),
            ({**data, "csrf": token}, {"origin": "http://pfs.test.evil.example"}),
            ({**data, "csrf": token}, {"sec-fetch-site": "cross-site"}),
        ):
            r = h.post(path, data=fields, headers=headers)
            assert r.status_code == 403, (path, fields, headers)
            assert r.headers["content-type"] == "text/html; charset=utf-8" and "refused" in r.text
    r = upload(h, "master", {"u.txt": b"u"}, headers={"origin": "https://evil.example"})
    assert r.status_code == 403
    r = h.post("/ui/default/upload/master", data={"csrf": "nope"}, files=[("files", ("u.txt", b"u"))], headers=ORIGIN)
    assert r.status_code == 403
    with srv.http() as fresh:  # no cookie at all: no token can be right
        r = fresh.post("/ui/default/branch", data={"name": "csrf-test", "csrf": token}, headers=ORIGIN)
        assert r.status_code == 403
    assert state(srv) == before
    r = h.post("/ui/default/branch", data={"name": "csrf-test", "csrf": token}, headers=ORIGIN)
    assert r.status_code == 303  # the same request with its token, from the same site
    srv.repo.discard("master")


@pytest.mark.parametrize(
    ("method", "path", "data", "status", "says"),
    [
        ("GET", "/ui/default/branch?name=%3Cb%3Ex%3C/b%3E", None, 400, "invalid branch name '<b>x</b>'"),
        ("GET", "/ui/default/branch?name=ok&from=nope", None, 404, "nope"),
        ("GET", "/ui/default/branch?nmae=x", None, 400, "unknown query parameter"),
        ("GET", "/ui/nope-nope/branch?name=x", None, 404, "repository 'nope-nope' not found"),
        ("GET", "/ui/default/upload/nope", None, 404, "branch 'nope' not found"),
        ("GET", "/ui/default/upload/master?dir=../x", None, 400, "'..' is not allowed"),
        ("GET", "/ui/default/commit/%3Cscript%3E", None, 400, "invalid branch name '<script>'"),
        ("GET", "/ui/default/merge?from=nope&into=master", None, 404, "nope"),
        ("GET", "/ui/default/merge?from=master", None, 400, "merge needs"),
        ("GET", "/ui/default/revert/master?commit=" + "ab" * 32, None, 404, "not found"),
        ("GET", "/ui/default/revert/master", None, 400, "revert needs"),
        ("POST", "/ui/default/branch", {"name": "<img src=x>"}, 400, "invalid branch name '<img src=x>'"),
        ("POST", "/ui/default/branch", {"name": "n", "extra": "1"}, 400, "unknown form field 'extra'"),
        ("POST", "/ui/default/merge", {"from": "nope", "into": "master"}, 404, "nope"),
        ("POST", "/ui/default/commit/master", {"message": "x" * 9000}, 400, "commit message longer"),
        ("POST", "/ui/default/commit/master", {"message": "a\x00b"}, 400, "NUL"),
        ("POST", "/ui/default/revert/nope", {"commit": "master"}, 404, "branch 'nope' not found"),
        ("POST", "/ui/default/branch", {"name": "n" * 70_000}, 413, "form larger than"),
    ],
)
def test_bad_input_is_a_clear_page_and_changes_nothing(
    h: httpx.Client, srv: AppServer, method: str, path: str, data: dict[str, str] | None, status: int, says: str
) -> None:
    before = state(srv)
    if method == "POST":
        r = h.post(path, data={"csrf": token_of(h), **(data or {})}, headers=ORIGIN)
    else:
        r = h.request(method, path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8" and 'id="error"' in r.text
    assert says in unescape(r.text)
    assert "<img src=x>" not in r.text and "<b>x</b>" not in r.text and "<script>" not in r.text
    assert state(srv) == before


def test_other_methods_are_405(h: httpx.Client) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        r = h.request(method, "/ui/default/branch")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, POST"
    r = h.get("/ui/_logout")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_safe_next() -> None:
    assert session.safe_next("/ui/a/log/b?after=c") == "/ui/a/log/b?after=c"
    for bad in (None, "", "/", "/uia", "http://x/ui/", "//x", "/ui//x", "/ui/\\x", "/ui/\x00", "/ui/" + "a" * 3000):
        assert session.safe_next(bad) == "/ui", bad


# ---- a real browser ---------------------------------------------------------------------

ADMIN = ("PFSBROWSERADMIN00000", "browser-test-secret-0123456789abcdefghij")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    root = tmp_path_factory.mktemp("actions-live")
    key_file = root / "admin.key"
    key_file.write_text(":".join(ADMIN))
    s = ServerProc(root / "data", env={"PFS_ADMIN_KEY_FILE": str(key_file)}).start()
    try:
        with Client(s.url.replace("://", f"://{ADMIN[0]}:{ADMIN[1]}@")) as c:
            c.put_file("shared.txt", b"base\n")
            c.put_file("readme.txt", b"hello\n")
            c.commit(message="first")
        yield s
    finally:
        s.stop()


@pytest.mark.browser
@pytest.mark.slow  # a server process and a browser: seconds to start
def test_a_browser_signs_in_branches_uploads_commits_merges_and_reverts(
    browser: Any, live: ServerProc, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def wait_for(check: Any) -> Any:
        return WebDriverWait(browser, 10).until(lambda _: check())

    def click(element: Any, lands: str) -> None:
        """Click, and wait for the page it leads to (a form's submit returns before that)."""
        before = browser.current_url
        element.click()
        wait_for(lambda: browser.current_url != before and lands in browser.current_url)

    browser.delete_all_cookies()
    browser.get(live.url + "/ui/default")
    assert browser.current_url.startswith(live.url + "/ui/_login?next=")  # not the Basic prompt
    browser.find_element(By.ID, "key_id").send_keys(ADMIN[0])
    shoot(browser, "login")
    browser.find_element(By.ID, "secret").send_keys(ADMIN[1])
    click(browser.find_element(By.ID, "sign-in"), "/ui/default")
    assert browser.current_url == live.url + "/ui/default"
    assert browser.find_element(By.ID, "user").text == "signed in as admin"
    assert browser.find_element(By.ID, "notice").text == "Signed in as admin."

    # a branch, from the repository page's form, confirmed
    form = browser.find_element(By.ID, "new-branch")
    form.find_element(By.NAME, "name").send_keys("feature")
    click(form.find_element(By.TAG_NAME, "button"), "/ui/default/branch?")
    assert "A new branch feature from master" in browser.find_element(By.ID, "summary").text
    click(browser.find_element(By.ID, "do"), "/ui/default")
    assert browser.find_element(By.ID, "notice").text.startswith("Created branch feature at ")

    # upload: a drop goes through the input's change handler; then two files chosen, sent by the script
    browser.get(live.url + "/ui/default/upload/feature")
    browser.execute_script(
        """const dt = new DataTransfer();
        dt.items.add(new File(["dropped"], "dropped <b>.txt"));
        document.getElementById("drop").dispatchEvent(
            new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));"""
    )
    chosen = browser.find_elements(By.CSS_SELECTOR, "#chosen li")
    assert [li.text for li in chosen] == ["dropped <b>.txt (7 bytes)"]  # as text
    assert browser.find_element(By.ID, "send").is_enabled()
    paths = []
    for name, body in (("shared.txt", b"feature side\n"), ("data.csv", b"a,b\n" + b"1,2\n" * 200_000)):
        (tmp_path / name).write_bytes(body)
        paths.append(str(tmp_path / name))
    browser.find_element(By.ID, "files").send_keys("\n".join(paths))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chosen li")) == 2
    browser.find_element(By.ID, "send").click()
    try:
        wait_for(lambda: browser.find_elements(By.ID, "commit-link"))
    except Exception:
        raise AssertionError(
            browser.find_element(By.ID, "status").text + " / " + str(browser.get_log("browser"))
        ) from None
    assert browser.find_element(By.ID, "progress").get_attribute("value") == "100"
    assert browser.find_element(By.ID, "percent").text == "100%"
    assert browser.find_element(By.ID, "status").text.startswith("Staged 2 file(s), 800017 bytes, on feature.")
    assert not browser.find_element(By.ID, "uncommitted").is_displayed()  # listed before the upload: stale
    shoot(browser, "upload")
    click(browser.find_element(By.ID, "commit-link"), "/ui/default/commit/feature")
    staged = browser.find_element(By.ID, "staged").text
    assert "shared.txt" in staged and "data.csv" in staged
    browser.find_element(By.ID, "message").send_keys("from the browser")
    click(browser.find_element(By.ID, "do"), "/ui/default/log/feature")
    assert browser.find_element(By.ID, "notice").text.startswith("Committed ")
    assert browser.find_element(By.CSS_SELECTOR, "li.commit .subject").text == "from the browser"

    # master changes shared.txt too: merging feature into master conflicts there, and only there
    with Client(live.url.replace("://", f"://{ADMIN[0]}:{ADMIN[1]}@")) as c:
        c.put_file("shared.txt", b"master side\n")
        c.commit(message="master side")
        first = [x for x in c.log() if x.message == "first"][0].id
    browser.get(live.url + "/ui/default")
    form = browser.find_element(By.ID, "merge")
    form.find_element(By.NAME, "from").send_keys("feature")
    click(form.find_element(By.TAG_NAME, "button"), "/ui/default/merge?")
    assert "Merge feature into master: 2 file(s) change." in browser.find_element(By.ID, "summary").text
    browser.find_element(By.ID, "do").click()
    wait_for(lambda: browser.find_elements(By.ID, "conflicts"))
    assert browser.find_element(By.ID, "conflicts").text.splitlines() == ["shared.txt"]
    shoot(browser, "merge-conflict")

    # revert master to its first commit, from the log
    browser.get(live.url + "/ui/default/log/master")
    click(browser.find_element(By.CSS_SELECTOR, f'a.revert[href$="commit={first}"]'), "/ui/default/revert/master")
    assert "1 file(s) change" in browser.find_element(By.ID, "summary").text
    click(browser.find_element(By.ID, "do"), "/ui/default/log/master")
    assert browser.find_element(By.ID, "notice").text.startswith(f"Reverted master to {first[:12]}")
    with Client(live.url.replace("://", f"://{ADMIN[0]}:{ADMIN[1]}@")) as c:
        assert c.get_file("shared.txt") == b"base\n"

    # signing out
    click(browser.find_element(By.ID, "logout"), "/ui/_login")
    assert browser.current_url == live.url + "/ui/_login"
    assert browser.find_element(By.ID, "notice").text == "Signed out."
    browser.get(live.url + "/ui")
    assert "/ui/_login" in browser.current_url
