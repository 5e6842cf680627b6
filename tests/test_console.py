"""The web console (`/ui`): every page, its paging and previews, its security headers, the
escaping of stored text, its errors, and its permissions, in process (`AppServer`); then a
real `pfs serve` driven by a headless Chromium (marked `browser`), which also shows that a
stored script never runs and, with PFS_CONSOLE_SCREENSHOTS=docs/console, takes the README's
screenshots."""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from conftest import AppServer, ServerProc, tar_of
from console_kit import follow, next_link, page, shoot, state

from pfs import Client
from pfs.http.console import pages
from pfs.http.console import preview as pv

XSS_DIR = "<script>alert(1)</script>.txt"  # "/" is the separator: a directory `<script>alert(1)<`, a file in it
XSS_NAME = "<img src=x onerror=alert(1)>.txt"
XSS_MESSAGE = "<b>bold</b> & <script>document.title='pwned'</script>\n\nsecond <i>line</i>"
STATIONS = (b"Oslo Blindern", b"Bergen Florida", b"Troms\xc3\xb8 Holt", b'"Kautokeino, Finnmark"', b"Svalbard Lufthavn")
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2b4b8760000000049454e44ae426082"
)


def populate(c: Client) -> dict[str, Any]:
    """A repository with files of each kind, a merge, a big directory and a long history."""
    c.put_file("docs/readme.txt", b"hello\nworld\n")
    c.put_file(
        "data/table.csv",
        b"id,station,temperature\n"
        + b"".join(
            b"%d,%s,%d.%d\n" % (i, STATIONS[i % 5] if i != 3 else b"<b>n3</b>", i % 31, i % 10) for i in range(500)
        ),
    )
    c.put_file("data/table.tsv", b"a\tb\n1\t2\n")
    c.put_file("data/doc.json", b'{"k": [1, 2, {"x": "<y>"}], "z": null}')
    c.put_file("img/pixel.png", PNG)
    c.put_file("bin/blob.bin", bytes(range(256)) * 4)
    c.put_file("big.txt", b"".join(b"line %06d\n" % i for i in range(40_000)))  # 480 KB: cut at 256 KiB
    c.put_file("empty.txt", b"")
    c.put_file("page.html", b"<html><script>document.title='pwned'</script></html>")
    c.put_file("vector.svg", b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>')
    c.put_file(f"x/{XSS_DIR}", b"<script>document.title='pwned'</script>\n")
    c.put_file(f"x/{XSS_NAME}", b"x\n")
    first = c.commit(message=XSS_MESSAGE).id
    c.put_tar("many", tar_of({f"f{i:05d}.txt": b"%d" % i for i in range(1234)}))
    c.commit(message="many files")
    c.create_branch("feature")
    c.put_file("feature.txt", b"f", branch="feature")
    c.commit(branch="feature", message="on feature")
    c.put_file("master.txt", b"m")
    c.commit(message="on master")
    merge = c.merge("feature", "master").id
    for i in range(7):
        c.put_file("counter.txt", b"%d" % i)
        c.commit(message=f"count {i}")
    return {"first": first, "merge": merge}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    s = AppServer(tmp_path_factory.mktemp("console") / "data").start()
    with s.client() as c:
        s.state["made"] = populate(c)
        c.create_repo("images")
    yield s
    s.stop()


# ---- pages --------------------------------------------------------------------------------


def test_repositories_page_lists_each_with_the_default_marked(h: httpx.Client) -> None:
    html = page(h, "/ui")
    assert '<a href="/ui/default">default</a>' in html and '<a href="/ui/images">images</a>' in html
    row = re.search(r"<tr><td><a href=\"/ui/default\">.*?</tr>", html, re.S)
    assert row and "default</span>" in row.group(0)
    assert "default</span>" not in re.search(r"<tr><td><a href=\"/ui/images\">.*?</tr>", html, re.S).group(0)  # type: ignore[union-attr]
    assert h.get("/ui/", follow_redirects=True).url.path == "/ui"


def test_repository_page_shows_branches_with_their_heads(h: httpx.Client, srv: AppServer) -> None:
    html = page(h, "/ui/default")
    for name in ("master", "feature"):
        head = srv.repo.branch_head(name)
        assert head is not None
        assert f'<a href="/ui/default/log/{name}">{name}</a>' in html
        assert f'title="{head}">{head[:12]}</a>' in html
        assert f'<a href="/ui/default/tree/{name}">tree</a>' in html
    assert "count 6" in html and "on feature" in html  # each head's message, first line
    assert "no commits yet" not in html
    html = page(h, "/ui/images")  # a new repository: master, without a commit
    assert '<a href="/ui/images/log/master">master</a>' in html and "no commits yet" in html


def test_log_is_newest_first_paged_and_shows_both_parents_of_a_merge(
    h: httpx.Client, srv: AppServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = [c.id for c in srv.repo.log("master")]
    html = page(h, "/ui/default/log/master")
    ids = re.findall(r'<a class="id" href="/ui/default/tree/([0-9a-f]{64})"', html)
    assert ids == expected  # fewer than a page
    assert next_link(html) is None
    merge = srv.repo.get_commit(srv.state["made"]["merge"])
    item = next(li for li in html.split('<li class="commit">') if f'/ui/default/tree/{merge.id}"' in li)
    assert "merge</span>" in item and len(merge.parents) == 2 and "parents:" in item
    for parent in merge.parents:
        assert f'href="/ui/default/log/{parent}"' in item

    crumbs = html[html.index('class="crumbs"') : html.index("</nav>")]
    assert '<a href="/ui/default">default</a>' in crumbs and "<span>log</span>" in crumbs
    assert '<a href="/ui/default/tree/master">master</a>' in crumbs

    monkeypatch.setattr(pages, "LOG_PAGE", 4)
    seen: list[str] = []
    path: str | None = "/ui/default/log/master"
    pages_read = 0
    while path is not None:
        html = page(h, path)
        got = re.findall(r'<a class="id" href="/ui/default/tree/([0-9a-f]{64})"', html)
        assert 0 < len(got) <= 4
        seen += got
        path = next_link(html)
        pages_read += 1
    assert seen == expected and pages_read == -(-len(expected) // 4)
    # a commit's log, and the log of the first commit: its only entry
    first = srv.state["made"]["first"]
    html = page(h, f"/ui/default/log/{first}")
    assert re.findall(r'<a class="id" href="/ui/default/tree/([0-9a-f]{64})"', html) == [first]
    assert "no parent" in html


def test_tree_lists_a_directory_a_page_at_a_time_with_breadcrumbs(
    h: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    html = page(h, "/ui/default/tree/master")
    for name in ("docs/", "data/", "many/", "big.txt", "empty.txt"):
        assert f">{name}</a>" in html
    assert '<a href="/ui/default/tree/master/docs">docs/</a>' in html
    assert '<a href="/ui/default/blob/master/big.txt">big.txt</a>' in html

    seen: list[str] = []
    path: str | None = "/ui/default/tree/master/many"
    n = 0
    while path is not None:
        html = page(h, path)
        seen += re.findall(r">(f\d{5}\.txt)</a>", html)
        path = next_link(html)
        n += 1
    assert seen == [f"f{i:05d}.txt" for i in range(1234)] and n == 3  # 500 a page

    monkeypatch.setattr(pages, "TREE_PAGE", 100)
    html = page(h, "/ui/default/tree/master/many?after=f00099.txt")
    assert re.findall(r">(f\d{5}\.txt)</a>", html) == [f"f{i:05d}.txt" for i in range(100, 200)]
    assert next_link(html) == "/ui/default/tree/master/many?after=f00199.txt"

    html = page(h, "/ui/default/tree/master/data")
    crumbs = html[html.index('class="crumbs"') : html.index("</nav>")]
    assert '<a href="/ui/default">default</a>' in crumbs and '<a href="/ui/default/tree/master">master</a>' in crumbs
    assert "<span>data</span>" in crumbs  # where we are: not a link
    assert '<a href="/ui/default/tree/master">..</a>' in html
    # a tree of a commit by id; a file's tree URL leads to its page
    first = h.get("/ui/default/tree/master/docs/readme.txt")
    assert first.status_code == 303 and first.headers["location"] == "/ui/default/blob/master/docs/readme.txt"
    commit = page(h, "/ui/default/log/master")
    cid = re.findall(r"/ui/default/tree/([0-9a-f]{64})", commit)[-1]  # the oldest: no `many/` yet
    assert "many/" not in page(h, f"/ui/default/tree/{cid}") and "docs/" in page(h, f"/ui/default/tree/{cid[:12]}")


def test_file_pages_preview_text_tables_json_images_and_binaries(h: httpx.Client) -> None:
    html = page(h, "/ui/default/blob/master/docs/readme.txt")
    assert '<span class="line">hello</span>\n<span class="line">world</span>' in html
    assert "Only the first" not in html

    html = page(h, "/ui/default/blob/master/big.txt")
    assert "Only the first 256.0 KiB are shown." in html
    lines = re.findall(r'<span class="line">(line \d{6})</span>', html)
    assert lines[0] == "line 000000" and len(lines) == (256 << 10) // 12  # whole lines only

    html = page(h, "/ui/default/blob/master/data/table.csv")
    assert "<th>id</th><th>station</th><th>temperature</th>" in html
    assert html.count("<tr><td>") == 200 and "<td>199</td>" in html and "<td>200</td>" not in html
    assert "<td>&lt;b&gt;n3&lt;/b&gt;</td>" in html
    assert "Only the first 200 rows are shown." in html
    assert "<th>a</th><th>b</th>" in page(h, "/ui/default/blob/master/data/table.tsv")

    html = page(h, "/ui/default/blob/master/data/doc.json")
    assert '<span class="line">  &#34;k&#34;: [</span>' in html and "&#34;&lt;y&gt;&#34;" in html

    html = page(h, "/ui/default/blob/master/img/pixel.png")
    assert '<img class="preview" src="/ui/default/raw/master/img/pixel.png"' in html

    html = page(h, "/ui/default/blob/master/bin/blob.bin")
    assert "Binary file, 1.0 KiB (1024 bytes)" in html
    assert 'href="/ui/default/raw/master/bin/blob.bin?download=1"' in html
    assert "Empty file." in page(h, "/ui/default/blob/master/empty.txt")
    r = h.get("/ui/default/blob/master/data")  # a directory: its listing
    assert r.status_code == 303 and r.headers["location"] == "/ui/default/tree/master/data"


def test_a_parquet_file_shows_its_schema_and_first_rows(tmp_path: Path) -> None:
    """Read through byte ranges of the stored file (its footer, then its first row group):
    several chunks here, so the ranges cross them. Values and names with markup are text;
    what pyarrow cannot read is a binary file with the reason."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 120_000
    table = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "<b>name</b>": pa.array([f"<i>row {i}</i>" if i == 1 else f"row {i}" for i in range(n)]),
            "noise": pa.array([os.urandom(40).hex() for _ in range(n)]),  # incompressible: a file of ~10 MB
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=50_000, compression="none")
    data = buf.getvalue()
    assert len(data) > 8 << 20
    s = AppServer(tmp_path / "data").start()
    try:
        with s.client() as c, s.http(timeout=30) as h:
            c.put_file("t.parquet", data)
            c.put_file("fake.parquet", b"not parquet at all, just text that is long enough")
            c.put_file("huge-footer.parquet", b"x" * 100 + (50 << 20).to_bytes(4, "little") + b"PAR1")
            c.commit(message="parquet")
            html = page(h, "/ui/default/blob/master/t.parquet")
            assert "Parquet: 120000 rows in 3 row group(s), 3 columns." in html
            assert '<td>&lt;b&gt;name&lt;/b&gt;</td><td class="id">string</td>' in html
            assert "<th>id</th><th>&lt;b&gt;name&lt;/b&gt;</th><th>noise</th>" in html
            assert "<td>1</td><td>&lt;i&gt;row 1&lt;/i&gt;</td>" in html
            assert html.count("<tr><td>") == 3 + pv.PARQUET_ROWS  # the schema's rows and the data's
            assert f"Only the first {pv.PARQUET_ROWS} rows are shown." in html
            html = page(h, "/ui/default/blob/master/fake.parquet")
            assert "Binary file" in html and "Not a Parquet file (no PAR1 footer)." in html
            html = page(h, "/ui/default/blob/master/huge-footer.parquet")
            assert "is not shown (limit" in html
    finally:
        s.stop()


def test_raw_streams_bytes_under_a_type_that_never_runs(h: httpx.Client) -> None:
    cases = {
        "docs/readme.txt": "text/plain; charset=utf-8",
        "page.html": "text/plain; charset=utf-8",
        "vector.svg": "text/plain; charset=utf-8",
        "img/pixel.png": "image/png",
        "bin/blob.bin": "application/octet-stream",
        "big.txt": "text/plain; charset=utf-8",
    }
    for path, media in cases.items():
        r = h.get(f"/ui/default/raw/master/{path}")
        assert r.status_code == 200, path
        assert r.headers["content-type"] == media, path
        assert r.headers["x-content-type-options"] == "nosniff"
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "sandbox" in csp and "script-src" not in csp
        assert r.headers["content-disposition"].startswith("inline;")
        assert r.content == h.get(f"/file/{path}").content
    r = h.get("/ui/default/raw/master/bin/blob.bin?download")
    assert r.headers["content-disposition"] == "attachment; filename*=UTF-8''blob.bin"
    r = h.head("/ui/default/raw/master/big.txt")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == "480000"
    r = h.get("/ui/default/raw/master/x/" + XSS_NAME)
    assert "%3Cimg%20src%3Dx%20onerror%3Dalert%281%29%3E.txt" in r.headers["content-disposition"]


def test_every_page_sends_the_security_headers(h: httpx.Client) -> None:
    for path in (
        "/ui",
        "/ui/default",
        "/ui/default/log/master",
        "/ui/default/tree/master",
        "/ui/default/blob/master/docs/readme.txt",
        "/ui/nope-nope",
        "/ui/default/tree/master/nothing-here",
        "/ui/_static/console.css",
    ):
        r = h.get(path)
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, path
        assert "script-src" not in csp and "unsafe-inline" not in csp, path  # no script at all
        assert r.headers["x-frame-options"] == "DENY", path
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert "<script" not in r.text.lower().replace("&lt;script", ""), path


def test_stored_names_and_messages_are_shown_as_text(h: httpx.Client) -> None:
    html = page(h, "/ui/default/tree/master/x")
    assert "&lt;script&gt;alert(1)&lt;/" in html and "&lt;img src=x onerror=alert(1)&gt;.txt" in html
    assert "<script>" not in html and "<img src=x" not in html
    html = page(h, "/ui/default/blob/master/x/" + XSS_DIR.replace("<", "%3C").replace(">", "%3E"))
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in html and "<script>" not in html
    crumbs = html[html.index('class="crumbs"') : html.index("</nav>")]
    assert "&lt;script&gt;alert(1)&lt;" in crumbs and "<script>" not in crumbs
    html = page(
        h, "/ui/default/log/master?after=" + h.get("/commit", headers={"accept": "application/json"}).json()[1]["id"]
    )
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in html
    assert "second &lt;i&gt;line&lt;/i&gt;" in html and "<b>bold" not in html and "<i>line" not in html


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/ui/nope-nope", 404, "repository 'nope-nope' not found"),
        ("/ui/No_Such", 400, ""),
        ("/ui/default/log/nope", 404, "branch 'nope' not found"),
        ("/ui/images/log/master", 404, "no commits yet"),
        ("/ui/images/tree/master", 404, "no commits yet"),
        ("/ui/default/log/" + "ab" * 32, 404, "not found"),
        ("/ui/default/log/bad%00ref", 400, ""),
        ("/ui/default/log/master?after=zzz", 400, "after must be a commit id"),
        ("/ui/default/log/master?after=" + "cd" * 32, 404, "not found"),
        ("/ui/default/log/master?page=2", 400, "unknown query parameter"),
        ("/ui/default/tree/master/no/such/dir", 404, "'no/such/dir' not found"),
        ("/ui/default/tree/master/%2e%2e/etc", 400, "'..' is not allowed"),
        ("/ui/default/tree/master/docs/%2e%2e/%2e%2e/x", 400, "'..' is not allowed"),
        ("/ui/default/blob/master/docs/%00x", 400, "NUL"),
        ("/ui/default/blob/master/docs/%ff.txt", 400, "not valid UTF-8"),
        ("/ui/default/blob/master/missing.txt", 404, "'missing.txt' not found"),
        ("/ui/default/raw/master/missing.txt", 404, "'missing.txt' not found"),
        ("/ui/default/raw/master/docs", 400, "is a directory"),
        ("/ui/default/tree/master?after=a%00", 400, "NUL"),
        ("/ui/_static/nothing.js", 404, "no static file"),
    ],
)
def test_bad_input_is_an_html_error_page_and_changes_nothing(
    h: httpx.Client, srv: AppServer, path: str, status: int, says: str
) -> None:
    before = state(srv)
    r = h.get(path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["x-frame-options"] == "DENY"
    assert f"<h1>{status} " in r.text and 'id="error"' in r.text
    assert unescape(says) in unescape(r.text)
    assert state(srv) == before


def test_other_methods_are_405_and_head_reads_nothing(h: httpx.Client, srv: AppServer) -> None:
    before = state(srv)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        r = h.request(method, "/ui/default/tree/master/docs")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    r = h.head("/ui/default/blob/master/big.txt")
    assert r.status_code == 200 and r.content == b"" and r.headers["x-frame-options"] == "DENY"
    assert state(srv) == before


def test_json_clients_get_the_api_error(h: httpx.Client) -> None:
    r = h.get("/ui/nope-nope", headers={"accept": "application/json"})
    assert r.status_code == 404 and r.json()["error"] == "repository_not_found" and r.json()["request_id"]


def test_pages_read_only_what_they_show(srv: AppServer, monkeypatch: pytest.MonkeyPatch, h: httpx.Client) -> None:
    """A directory page reads a page of names, not the directory; a log page stops its walk."""
    from pfs.repository.reader import Reader

    pulled = 0
    listdir = Reader.listdir

    def counting(self: Reader, path: str, start: str = "") -> Iterator[Any]:
        nonlocal pulled
        for item in listdir(self, path, start):
            pulled += 1
            yield item

    monkeypatch.setattr(Reader, "listdir", counting)
    page(h, "/ui/default/tree/master/many")
    assert pulled == 501
    pulled = 0
    page(h, "/ui/default/tree/master/many?after=f01000.txt")
    assert pulled == 234  # from f01000 on: the name itself, then the 233 after it

    walked = 0
    log = type(srv.repo).log

    def counting_log(self: Any, ref: str, limit: int | None = None) -> Iterator[Any]:
        nonlocal walked
        for c in log(self, ref, limit):
            walked += 1
            yield c

    monkeypatch.setattr(pages, "LOG_PAGE", 3)
    monkeypatch.setattr(type(srv.repo), "log", counting_log)
    page(h, "/ui/default/log/master")
    assert walked == 4


@pytest.mark.slow
def test_a_directory_of_100000_files_pages_quickly(tmp_path: Path) -> None:
    """A page of a huge directory costs a page: the first and a deep one, both fast."""
    s = AppServer(tmp_path / "data").start()
    try:
        with s.client() as c:
            c.put_tar("huge", tar_of({f"{i:06d}.txt": b"" for i in range(100_000)}))
            c.commit(message="huge")
        with s.http() as h:
            for path, first in (("/ui/default/tree/master/huge", "000000.txt"), ("?after=099000.txt", "099001.txt")):
                url = path if path.startswith("/") else "/ui/default/tree/master/huge" + path
                t0 = time.monotonic()
                html = page(h, url)
                took = time.monotonic() - t0
                names = re.findall(r">(\d{6}\.txt)</a>", html)
                assert names[0] == first and len(names) == min(500, 100_000 - int(first[:6]))
                assert took < 2.0, (url, took)
    finally:
        s.stop()


def test_every_page_on_each_backend(app: AppServer, client: Client) -> None:
    """The console over each storage backend (the cluster one: PostgreSQL and S3)."""
    client.put_file("d/a.csv", b"x,y\n1,2\n")
    client.commit(message="one")
    with app.http() as h:
        assert "default" in page(h, "/ui")
        assert "one" in page(h, "/ui/default/log/master")
        assert "a.csv" in page(h, "/ui/default/tree/master/d")
        assert "<th>x</th><th>y</th>" in page(h, "/ui/default/blob/master/d/a.csv")
        assert h.get("/ui/default/raw/master/d/a.csv").content == b"x,y\n1,2\n"


def test_with_access_control_pages_need_read_on_their_repository(tmp_path: Path) -> None:
    s = AppServer(tmp_path / "data").start()
    try:
        identity = s.app.state.node.access.identity
        root = identity.init_admin("root")
        s.repos.create("shared")
        identity.create_user("reader")
        reader = identity.create_key("reader")
        identity.grant("reader", s.repos.get("shared").id, "read")
        with s.http() as anon:
            assert anon.get("/repo").status_code == 401
            for path in ("/ui", "/ui/default", "/ui/nope-nope", "/ui/default/tree/master"):
                r = anon.get(path)  # to the login page, not the Basic prompt; not even whether it exists
                assert r.status_code == 303, path
                assert r.headers["location"] == "/ui/_login?" + urlencode({"next": path}), path
                assert "www-authenticate" not in r.headers
            assert anon.get("/ui/_static/console.css").status_code == 200
            r = anon.get("/ui/default", headers={"accept": "application/json"})  # a JSON client: the API's 401
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic realm=")
        with s.http() as h:
            h.auth = (reader.id, reader.secret)
            html = page(h, "/ui")
            assert "/ui/shared" in html and "/ui/default" not in html
            assert "master" in page(h, "/ui/shared")
            assert "needs read permission" in page(h, "/ui/default", status=403)
            assert page(h, "/ui/nope-nope", status=404)
            h.auth = (root.id, root.secret)
            assert "/ui/default" in page(h, "/ui")
    finally:
        s.stop()


def test_preview_rules() -> None:
    assert pv.raw_type("a.png", b"", True) == "image/png"
    assert pv.raw_type("a.svg", b"<svg/>", True) == "text/plain; charset=utf-8"
    assert pv.raw_type("a.html", b"<html>", True) == "text/plain; charset=utf-8"
    assert pv.raw_type("a", b"\x00\x01", True) == "application/octet-stream"
    assert pv.raw_type("a", "é".encode()[:1], False) == "text/plain; charset=utf-8"  # a character cut by the read
    assert pv.raw_type("a", "é".encode()[:1], True) == "application/octet-stream"
    assert pv.preview("a.json", 5, b"{oops").kind == "text"
    assert pv.preview("a.json", 10**6, b'{"a": 1}').kind == "text"  # cut: not parsed
    table = pv.preview("a.csv", 9, b'"a\nb",c\n')  # a quoted field may hold a newline
    assert table.kind == "table" and table.rows == [["a\nb", "c"]]
    assert pv.preview("a.csv", 10**6, b"a,b\n1,2\n3,").rows == [["a", "b"], ["1", "2"]]  # cut: no partial row
    deep = b"[" * 100_000 + b"]" * 100_000
    assert pv.preview("a.json", len(deep), deep).kind == "text"


# ---- a real browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path_factory.mktemp("console-live") / "data").start()
    try:
        with Client(s.url) as c:
            populate(c)
            c.create_repo("images")
        yield s
    finally:
        s.stop()


@pytest.mark.browser
@pytest.mark.slow  # a server process and a browser: seconds to start
def test_a_browser_walks_repository_branch_log_tree_and_file(browser: Any, live: ServerProc) -> None:
    from selenium.webdriver.common.by import By

    browser.get(live.url + "/ui")
    assert browser.title == "repositories · pfs"
    shoot(browser, "repositories")
    follow(browser, browser.find_element(By.LINK_TEXT, "default"))
    assert browser.find_element(By.ID, "branches").is_displayed()
    follow(browser, browser.find_element(By.LINK_TEXT, "master"))  # the branch: its log
    assert browser.title == "log of master · pfs"
    subjects = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "li.commit .subject")]
    assert subjects[0] == "count 6" and subjects[-1] == XSS_MESSAGE.split("\n")[0]  # shown as text
    # the commit graph: one drawing per commit, as tall as its row, so the lines meet
    rows = browser.execute_script(
        "return [...document.querySelectorAll('li.commit')].map(li => [li.getBoundingClientRect(),"
        " li.querySelector('svg.graph').getBoundingClientRect()].map(r => [r.top, r.bottom, r.width]))"
    )
    assert len(rows) == len(subjects)
    for (top, bottom, _), (svg_top, svg_bottom, width) in rows:
        assert svg_top == top and abs(svg_bottom - bottom) <= 1 and width > 0
    shoot(browser, "log")
    follow(browser, browser.find_elements(By.CSS_SELECTOR, "li.commit a.id")[0])  # the newest commit's files
    assert "big.txt" in browser.find_element(By.ID, "tree").text
    shoot(browser, "tree")
    follow(browser, browser.find_element(By.LINK_TEXT, "data/"))
    follow(browser, browser.find_element(By.LINK_TEXT, "table.csv"))
    header = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#csv thead th")]
    assert header == ["id", "station", "temperature"]
    cells = browser.find_elements(By.CSS_SELECTOR, "#csv tbody tr:first-child td")
    assert [c.text for c in cells] == ["0", "Oslo Blindern", "0.0"]
    assert browser.find_element(By.CSS_SELECTOR, "#csv tbody tr:nth-child(4) td:nth-child(2)").text == "<b>n3</b>"
    shoot(browser, "csv")
    # the console's own stylesheet applies (same-origin CSS is allowed by its CSP)
    assert browser.find_element(By.TAG_NAME, "header").value_of_css_property("display") == "flex"


@pytest.mark.browser
@pytest.mark.slow  # a server process and a browser: seconds to start
def test_a_browser_never_runs_stored_scripts(browser: Any, live: ServerProc) -> None:
    from selenium.webdriver.common.by import By

    for path in (
        "/ui/default/tree/master/x",
        "/ui/default/blob/master/x/%3Cscript%3Ealert(1)%3C/script%3E.txt",
        "/ui/default/blob/master/page.html",
        "/ui/default/log/master?after="
        + httpx.get(live.url + "/log", headers={"accept": "application/json"}).json()[-2]["id"],
    ):
        browser.get(live.url + path)
        assert browser.title != "pwned" and browser.title.endswith("· pfs"), path
        assert not browser.execute_script("return window.__pwned || null")
    code = browser.find_element(By.CSS_SELECTOR, "li.commit .subject").text
    assert code == XSS_MESSAGE.split("\n")[0]
    # raw: the stored page is text, and its script does not run either
    for path in ("/ui/default/raw/master/page.html", "/ui/default/raw/master/vector.svg"):
        browser.get(live.url + path)
        time.sleep(0.1)
        assert browser.title != "pwned"
        assert "<script>" in browser.find_element(By.TAG_NAME, "body").text, path
    browser.get(live.url + "/ui/default/blob/master/img/pixel.png")
    assert browser.execute_script("return document.querySelector('img.preview').naturalWidth") == 1
