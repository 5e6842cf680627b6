"""The console's compare part: the changes between two refs (paged from a cursor), a file's
line diff, a file's history (across merges and deletes); the console's own 404 and 405
pages; a deep log page that costs a page and stays right with merges and clock skew; and a
headless Chromium that walks to a compare page and a file history (marked `browser`)."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from html import unescape
from typing import Any

import httpx
import pytest
from conftest import AppServer, ServerProc, tar_of
from console_kit import follow, links, next_link, page, shoot, state

from pfs import Client
from pfs.http.console import compare, pages
from pfs.repository import repo as repo_module
from pfs.repository.repo import Repository
from pfs.storage.trees import TreeStore, tree_order

XSS_NAME = "x/<img src=x onerror=alert(1)>.txt"
XSS_NEW = "new<script>alert(1)</script>.txt"
XSS_MESSAGE = "<b>bold</b> & <script>document.title='pwned'</script>"
A_OLD = b"".join(b"line %d\n" % i for i in range(1, 31)) + b"<b>tag</b>\n"
A_NEW = A_OLD.replace(b"line 10\n", b"<i>ten</i>\n").replace(b"line 20\n", b"line 20\nline 20.5\n")
MANY = 1200  # files added under many/: with the rest, seven compare pages of 200


def populate(c: Client) -> dict[str, str]:
    """master: a first commit; feature: a commit changing files of every kind (and 1,200
    new ones) made before master goes on; master merges it, deletes h.txt, adds it back."""
    c.put_file("a.txt", A_OLD)
    c.put_file("dir/b.txt", b"b\n")
    c.put_file("bin.dat", bytes(range(256)))
    c.put_file("big.txt", b"x" * (300 << 10))
    c.put_file("same.txt", b"same\n")
    c.put_file("swap", b"a file, then a directory\n")
    c.put_file(XSS_NAME, b"x\n")
    c.put_file("h.txt", b"v1\n")
    made = {"c1": c.commit(message=XSS_MESSAGE).id}
    c.create_branch("feature")
    c.put_file("a.txt", A_NEW, branch="feature")
    c.delete_file("dir/b.txt", branch="feature")
    c.put_file("bin.dat", bytes(range(255, -1, -1)), branch="feature")
    c.put_file("big.txt", b"y" * (300 << 10), branch="feature")
    c.delete_file("swap", branch="feature")
    c.put_file("swap/inner.txt", b"inner\n", branch="feature")
    c.put_file(XSS_NAME, b"<script>document.title='pwned'</script>\n", branch="feature")
    c.put_file(XSS_NEW, b"new\n", branch="feature")
    c.put_file("h.txt", b"v2\n", branch="feature")
    c.put_tar("many", tar_of({f"f{i:05d}.txt": b"%d\n" % i for i in range(MANY)}), branch="feature")
    made["f1"] = c.commit(branch="feature", message="feature work").id
    c.put_file("m.txt", b"m\n")
    made["m1"] = c.commit(message="m1").id
    made["merge"] = c.merge("feature", "master").id
    c.delete_file("h.txt")
    made["m2"] = c.commit(message="delete h").id
    c.put_file("m3.txt", b"m3\n")
    made["m3"] = c.commit(message="m3").id
    c.put_file("h.txt", b"v3\n")
    made["m4"] = c.commit(message="h again").id
    return made


def skewed(r: Repository, times: list[float], side_first: bool) -> None:
    """A history whose clocks disagree: `times` for the commits, in the order made. A
    first commit, a second (`side_first`: none), a branch `side` from there, a commit on
    master, one on side, their merge; then one more if `times` has it."""
    clock = iter(times)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(repo_module, "time", types.SimpleNamespace(time=lambda: next(clock)))
        for i in range(1 if side_first else 2):
            r.put_file("master", f"base{i}", b"b")
            r.commit_branch("master", f"base {i}")
        r.create_branch("side")
        r.put_file("master", "m", b"m")
        r.commit_branch("master", "on master")
        r.put_file("side", "s", b"s")
        r.commit_branch("side", "on side")
        r.merge("side", "master")
        if len(times) > 4 + (not side_first):
            r.put_file("master", "z", b"z")
            r.commit_branch("master", "after merge")


SKEWS = {
    # the side commit is older than its parent, met after it: a continuation from the
    # frontier would queue that parent, already shown, again
    "skew-shown": ([100.0, 3000.0, 3500.0, 1000.0, 4000.0, 5000.0], False),
    # master's commit is older than its parent: a frontier taken after it would miss that parent
    "skew-missed": ([3000.0, 2000.0, 1000.0, 4000.0, 5000.0], True),
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    s = AppServer(tmp_path_factory.mktemp("compare") / "data").start()
    with s.client() as c:
        s.state["made"] = populate(c)
    for name, (times, side_first) in SKEWS.items():
        s.repos.create(name)
        skewed(s.repos.get(name), times, side_first)
    yield s
    s.stop()


def made(srv: AppServer, name: str) -> str:
    ids: dict[str, str] = srv.state["made"]
    return ids[name]


def rows(html: str) -> list[tuple[str, str]]:
    """(path, change) of each row of a compare page."""
    got = re.findall(r'<tr class="(\w+)"><td><a href="[^"]*">([^<]*)</a></td>', html)
    return [(unescape(path), status) for status, path in got]


def ids(html: str) -> list[str]:
    return re.findall(r'<a class="id" href="/ui/[^/]+/tree/([0-9a-f]{64})"', html)


# ---- compare ------------------------------------------------------------------------------


def test_compare_lists_changes_with_sizes_and_links(h: httpx.Client, srv: AppServer) -> None:
    c1 = made(srv, "c1")
    html = page(h, f"/ui/default/compare?base={c1}&head=feature")
    got = dict(rows(html))
    assert got["a.txt"] == "modified" and got["dir/b.txt"] == "deleted" and got["many/f00000.txt"] == "added"
    assert len(got) == compare.COMPARE_PAGE and "swap" not in got  # past the first page
    tail = dict(rows(page(h, f"/ui/default/compare?base={c1}&head=feature&after=many/f01199.txt")))
    assert tail == {"swap": "deleted", "swap/inner.txt": "added", XSS_NEW: "added", XSS_NAME: "modified"}
    assert "same.txt" not in got and "m.txt" not in got
    head = srv.repo.resolve("feature").id
    row = re.search(r'<tr class="modified"><td><a href="[^"]*">big\.txt</a>.*?</tr>', html, re.S)
    assert row and row.group(0).count("300.0 KiB") == 2
    assert f'<a href="/ui/default/blob/{head}/a.txt">a.txt</a>' in html  # the file at head
    assert f'<a href="/ui/default/blob/{c1}/dir/b.txt">dir/b.txt</a>' in html  # deleted: at base
    assert f'href="/ui/default/compare/a.txt?base={c1}&amp;head={head}">diff</a>' in html
    assert '<form class="compare" method="get" action="/ui/default/compare">' in html
    assert f'name="base" value="{c1}"' in html and 'name="head" value="feature"' in html
    assert '<option value="feature">' in html
    # no refs: the form alone
    html = page(h, "/ui/default/compare")
    assert "<form" in html and 'id="changes"' not in html and "Pick two" in html
    # the same ref twice
    assert 'id="same"' in page(h, "/ui/default/compare?base=feature&head=feature")


def test_compare_pages_follow_the_cursor_and_cover_the_diff_once(
    h: httpx.Client, srv: AppServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    c1 = made(srv, "c1")
    want = [
        (p, "added" if a is None else "deleted" if b is None else "modified")
        for p, a, b in srv.repo.diff(c1, "feature")
    ]
    assert len(want) == MANY + 9
    path: str | None = f"/ui/default/compare?base={c1}&head=feature"
    seen: list[tuple[str, str]] = []
    n = 0
    while path is not None:
        html = page(h, path)
        got = rows(html)
        assert 0 < len(got) <= compare.COMPARE_PAGE
        seen += got
        path = next_link(html)
        n += 1
    assert n == -(-len(want) // compare.COMPARE_PAGE) and sorted(seen) == sorted(want) and len(seen) == len(set(seen))
    assert [p for p, _ in seen] == sorted((p for p, _ in seen), key=tree_order)  # one order: the cursor's
    # small pages: every boundary, including a file that became a directory
    monkeypatch.setattr(compare, "COMPARE_PAGE", 3)
    small: list[tuple[str, str]] = []
    path = f"/ui/default/compare?base={c1}&head=feature&after=many/f01190.txt"
    while path is not None:
        html = page(h, path)
        small += rows(html)
        path = next_link(html)
    assert small == [x for x in seen if tree_order(x[0]) > tree_order("many/f01190.txt")]
    assert ("swap", "deleted") in small and ("swap/inner.txt", "added") in small


def test_a_deep_compare_page_reads_about_a_page(
    h: httpx.Client, srv: AppServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later page lists each directory from the cursor's name on: it does not go through
    the pages before it."""
    pulled = 0
    dir_stored = TreeStore.dir_stored

    def counting(self: TreeStore, key: str | None, start: str = "") -> Iterator[Any]:
        nonlocal pulled
        for item in dir_stored(self, key, start):
            pulled += 1
            yield item

    monkeypatch.setattr(TreeStore, "dir_stored", counting)
    c1 = made(srv, "c1")
    html = page(h, f"/ui/default/compare?base={c1}&head=feature&after=many/f01150.txt")
    assert rows(html)[0] == ("many/f01151.txt", "added")
    assert pulled < 200, pulled  # the 49 names left in many/, the root's names after it
    pulled = 0
    page(h, f"/ui/default/compare?base={c1}&head=feature")
    assert pulled > compare.COMPARE_PAGE


def test_line_diff_of_a_text_file(h: httpx.Client, srv: AppServer) -> None:
    c1 = made(srv, "c1")
    html = page(h, f"/ui/default/compare/a.txt?base={c1}&head=feature")
    table = html[html.index('<table class="diff"') : html.index("</table>")]
    assert '<tr class="del"><td class="ln">10</td><td class="ln"></td><td class="text">line 10</td></tr>' in table
    assert (
        '<tr class="add"><td class="ln"></td><td class="ln">10</td><td class="text">&lt;i&gt;ten&lt;/i&gt;</td>'
        in table
    )
    assert '<td class="ln"></td><td class="ln">21</td><td class="text">line 20.5</td>' in table
    assert '<tr class="ctx"><td class="ln">7</td><td class="ln">7</td><td class="text">line 7</td></tr>' in table
    assert "line 1</td>" not in table  # beyond the context of 3 lines
    assert table.count('<tr class="hunk">') == 2 and "@@ -7,7 +7,7 @@" in table
    assert "<i>ten" not in html
    # a file that is only on one side: every line added (or removed)
    html = page(h, f"/ui/default/compare/swap/inner.txt?base={c1}&head=feature")
    assert '<tr class="add"><td class="ln"></td><td class="ln">1</td><td class="text">inner</td>' in html
    assert "added" in html
    html = page(h, f"/ui/default/compare/dir/b.txt?base={c1}&head=feature")
    assert '<tr class="del"><td class="ln">1</td><td class="ln"></td><td class="text">b</td>' in html
    # binary, too large, unchanged: said, not diffed
    assert "Binary file: no line diff." in page(h, f"/ui/default/compare/bin.dat?base={c1}&head=feature")
    assert "Too large for a line diff" in page(h, f"/ui/default/compare/big.txt?base={c1}&head=feature")
    html = page(h, f"/ui/default/compare/same.txt?base={c1}&head=feature")
    assert "The file is the same at both." in html and 'id="diff"' not in html


def test_line_diff_shows_stored_markup_as_text(h: httpx.Client, srv: AppServer) -> None:
    c1 = made(srv, "c1")
    quoted = XSS_NAME.replace("<", "%3C").replace(">", "%3E").replace(" ", "%20")
    html = page(h, f"/ui/default/compare/{quoted}?base={c1}&head=feature")
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in html
    assert "<h1>x/&lt;img src=x onerror=alert(1)&gt;.txt</h1>" in html
    assert "<script" not in html and "<img src" not in html


def test_compare_shows_names_and_messages_as_text(h: httpx.Client, srv: AppServer) -> None:
    c1 = made(srv, "c1")
    html = page(h, f"/ui/default/compare?base={c1}&head=feature&after=many/f01199.txt")
    assert "new&lt;script&gt;alert(1)&lt;/script&gt;.txt</a>" in html
    assert "x/&lt;img src=x onerror=alert(1)&gt;.txt</a>" in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; &lt;script&gt;" in html  # base's message
    assert "<script" not in html and "<img src" not in html and "<b>bold" not in html
    hrefs = links(html)
    assert f"/ui/default/compare/new%3Cscript%3Ealert%281%29%3C/script%3E.txt?base={c1}&head=" in "".join(hrefs)


# ---- history ------------------------------------------------------------------------------


def history(h: httpx.Client, path: str) -> tuple[list[tuple[str, str]], int]:
    """(commit id, change) of every page of a file's history, and the pages read."""
    out: list[tuple[str, str]] = []
    n = 0
    url: str | None = path
    while url is not None:
        html = page(h, url)
        for item in html.split('<li class="commit">')[1:]:
            status = re.search(r'<span class="status (\w+)">', item)
            cid = re.search(r'<a class="id" href="/ui/default/tree/([0-9a-f]{64})"', item)
            assert status and cid
            out.append((cid.group(1), status.group(1)))
        url = next_link(html)
        n += 1
    return out, n


def test_history_of_a_file_across_a_merge_and_a_delete(
    h: httpx.Client, srv: AppServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = [
        (made(srv, "m4"), "added"),
        (made(srv, "m2"), "deleted"),
        (made(srv, "f1"), "modified"),  # on feature, reached through the merge, which is not listed
        (made(srv, "c1"), "added"),
    ]
    got, n = history(h, "/ui/default/history/master/h.txt")
    assert got == want and n == 1
    html = page(h, "/ui/default/history/master/h.txt")
    m4, m3, f1 = made(srv, "m4"), made(srv, "m3"), made(srv, "f1")
    f1_parent = srv.repo.get_commit(f1).parents[0]
    assert f'<a class="file" href="/ui/default/blob/{m4}/h.txt">file</a>' in html
    assert f'<a class="diff" href="/ui/default/compare/h.txt?base={m3}&amp;head={m4}">diff against parent</a>' in html
    assert f'href="/ui/default/compare/h.txt?base={f1_parent}&amp;head={f1}"' in html
    assert f'href="/ui/default/blob/{made(srv, "m2")}/h.txt"' not in html  # deleted there: no file
    # one change a page: the cursor carries the walk across the merge, each change once
    monkeypatch.setattr(compare, "HISTORY_PAGE", 1)
    got, n = history(h, "/ui/default/history/master/h.txt")
    assert got == want and n >= 4
    # two commits looked at a page: pages without a change say so and go on
    monkeypatch.setattr(compare, "HISTORY_PAGE", 50)
    monkeypatch.setattr(compare, "HISTORY_SCAN", 2)
    got, n = history(h, "/ui/default/history/master/h.txt")
    assert got == want and n == 4  # 8 commits on master's history
    assert "look further back" in page(h, "/ui/default/history/master/h.txt?after=" + made(srv, "m2"))
    # at feature and at the first commit
    assert history(h, "/ui/default/history/feature/h.txt")[0] == want[2:]
    assert history(h, f"/ui/default/history/{made(srv, 'c1')}/h.txt")[0] == want[3:]


def test_history_is_linked_from_the_file_page_and_diffs_from_the_log(h: httpx.Client, srv: AppServer) -> None:
    html = page(h, "/ui/default/blob/master/a.txt")
    assert '<a href="/ui/default/history/master/a.txt">history</a>' in html
    html = page(h, "/ui/default/log/master")
    m4, m3 = made(srv, "m4"), made(srv, "m3")
    assert f'<a class="diff" href="/ui/default/compare?base={m3}&amp;head={m4}">diff against parent</a>' in html
    assert html.count("diff against parent") == len(ids(html)) - 1  # all but the first commit
    assert '<a href="/ui/default/compare">compare branches or commits</a>' in page(h, "/ui/default")
    got = history(h, "/ui/default/history/master/a.txt")[0]
    assert got == [(made(srv, "f1"), "modified"), (made(srv, "c1"), "added")]
    # a message with markup, on a history page
    html = page(h, "/ui/default/history/master/a.txt")
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold" not in html


def test_history_reads_a_page_and_looks_each_directory_up_once(
    h: httpx.Client, srv: AppServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked = 0
    dir_get = TreeStore.dir_get

    def counting(self: TreeStore, key: str | None, name: str) -> Any:
        nonlocal looked
        looked += 1
        return dir_get(self, key, name)

    monkeypatch.setattr(TreeStore, "dir_get", counting)
    page(h, "/ui/default/history/master/many/f00001.txt")
    roots = len({c.tree for c in srv.repo.log("master")})
    assert looked <= roots + 4, (looked, roots)  # a root each; many/ itself once or twice


# ---- the log's later pages --------------------------------------------------------------


def log_pages(h: httpx.Client, first: str) -> tuple[list[str], list[str]]:
    seen: list[str] = []
    urls: list[str] = []
    path: str | None = first
    while path is not None:
        html = page(h, path)
        seen += ids(html)
        path = next_link(html)
        if path:
            urls.append(path)
    return seen, urls


def test_a_deep_log_page_costs_a_page_and_keeps_merges_right(
    h: httpx.Client, srv: AppServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "LOG_PAGE", 2)
    expected = [c.id for c in srv.repo.log("master")]
    seen, urls = log_pages(h, "/ui/default/log/master")
    assert seen == expected and len(seen) == len(set(seen))  # the feature commit once
    assert all("walk=" in u for u in urls)
    # the page after the merge continues both lines: the frontier holds two commits
    merge = expected.index(made(srv, "merge"))
    after_merge = next(u for u in urls if f"after={expected[merge]}" in u or f"after={expected[merge + 1]}" in u)
    assert "%2C" in after_merge or "," in after_merge
    walked = 0
    walk_log = Repository.walk_log

    def counting(self: Repository, starts: list[Any], limit: int | None = None) -> Iterator[Any]:
        nonlocal walked
        for c in walk_log(self, starts, limit):
            walked += 1
            yield c

    monkeypatch.setattr(Repository, "walk_log", counting)
    for u in urls:
        walked = 0
        page(h, u)
        assert walked <= 3, (u, walked)  # the page and one more: nothing before it
    # a cursor without its frontier (an old link) still gives the right page, walking again
    walked = 0
    html = page(h, f"/ui/default/log/master?after={expected[4]}")
    assert ids(html) == expected[5:7] and walked > 3


@pytest.mark.parametrize("name", sorted(SKEWS))
def test_log_pages_are_right_when_clocks_disagree(
    h: httpx.Client, srv: AppServer, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    skew = srv.repos.get(name)
    expected = [c.id for c in skew.log("master")]
    commits = [skew.get_commit(i) for i in expected]
    assert any(skew.get_commit(p).time > c.time for c in commits for p in c.parents)  # a parent newer than its child
    for size in range(1, len(expected) + 1):
        monkeypatch.setattr(pages, "LOG_PAGE", size)
        seen, _ = log_pages(h, f"/ui/{name}/log/master")
        assert seen == expected, size


# ---- errors -------------------------------------------------------------------------------

C = "c" * 64


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/ui/nope-nope/compare?base=master&head=feature", 404, "repository 'nope-nope' not found"),
        ("/ui/default/compare?base=master&head=nope", 404, "branch 'nope' not found"),
        (f"/ui/default/compare?base={C}&head=master", 404, "not found"),
        ("/ui/default/compare?base=%3Cb%3E&head=master", 400, "invalid branch name '<b>'"),
        ("/ui/default/compare?base=master", 400, "give both base and head"),
        ("/ui/default/compare?base=master&head=feature&after=..%2Fx", 400, "'..' is not allowed"),
        ("/ui/default/compare?base=master&head=feature&after=a%00", 400, "NUL"),
        ("/ui/default/compare?base=master&head=feature&page=2", 400, "unknown query parameter"),
        ("/ui/default/compare/nothing.txt?base=master&head=feature", 404, "'nothing.txt' is at neither"),
        ("/ui/default/compare/many?base=master&head=feature", 400, "is a directory"),
        ("/ui/default/compare/a.txt?head=feature", 400, "give both base and head"),
        ("/ui/default/compare/%ff.txt?base=master&head=feature", 400, "not valid UTF-8"),
        ("/ui/default/history/master/never.txt", 404, "'never.txt' is not at master"),
        ("/ui/default/history/nope/a.txt", 404, "branch 'nope' not found"),
        ("/ui/default/history/master/a.txt?after=zzz", 400, "after must be a commit id"),
        (f"/ui/default/history/master/a.txt?after={C}", 404, "not found"),
        (f"/ui/default/history/master/a.txt?walk={C}", 400, "needs after"),
        ("/ui/default/log/master?after=MASTER&walk=x", 400, "after must be a commit id"),
        (f"/ui/default/log/master?after={C}&walk=nothex", 400, "walk must be up to 16"),
        (f"/ui/default/log/master?after={C}&walk=" + ",".join([C] * 2), 400, "distinct"),
        ("/ui/default/log/master?after={first}&walk={first}", 400, "does not continue the log"),
        ("/ui/default/log/master?after={first}&walk=" + "d" * 64, 404, "not found"),
        ("/ui/default/nonsense/x", 404, "no console page at this address"),
        ("/ui/default/compare/a.txt/%2e%2e/b?base=master&head=feature", 400, "'..' is not allowed"),
    ],
)
def test_bad_input_is_an_html_error_page_and_changes_nothing(
    h: httpx.Client, srv: AppServer, path: str, status: int, says: str
) -> None:
    path = path.format(first=made(srv, "c1"))
    before = state(srv)
    r = h.get(path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["x-frame-options"] == "DENY" and "default-src 'none'" in r.headers["content-security-policy"]
    assert f"<h1>{status} " in r.text and 'id="error"' in r.text
    assert unescape(says) in unescape(r.text), r.text
    assert state(srv) == before


def test_unknown_console_addresses_and_methods_are_console_pages(h: httpx.Client, srv: AppServer) -> None:
    before = state(srv)
    for path in ("/ui/default/nonsense/x", "/ui/default/tree", "/ui/_static/a/b", "/ui/default/blobs/master/x"):
        r = h.get(path)
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "text/html; charset=utf-8", path
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
        assert "<h1>404 Not Found</h1>" in r.text and 'href="/ui/_static/console.css"' in r.text
    r = h.get("/ui/default/nonsense/x", headers={"accept": "application/json"})
    assert r.status_code == 404 and r.json()["error"] == "not_found" and r.json()["request_id"]
    for method, path in (
        ("POST", "/ui/default/compare"),
        ("DELETE", "/ui/default/history/master/a.txt"),
        ("PUT", "/ui"),
    ):
        r = h.request(method, path)
        assert r.status_code == 405, (method, path)
        assert r.headers["allow"] == "GET, HEAD" and r.headers["content-type"] == "text/html; charset=utf-8"
        assert "<h1>405 Method Not Allowed</h1>" in r.text and r.headers["x-frame-options"] == "DENY"
    r = h.post("/ui/default/compare", headers={"accept": "application/json"})
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    # the API outside /ui answers as it did
    r = h.get("/nonsense/x")
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/plain") and "<h1>" not in r.text
    r = h.post("/ping")
    assert r.status_code == 405 and r.headers["content-type"].startswith("text/plain")
    assert h.get("/ui/", follow_redirects=True).url.path == "/ui"
    assert state(srv) == before


def test_head_sends_the_headers_and_no_body(h: httpx.Client, srv: AppServer) -> None:
    c1 = made(srv, "c1")
    for path in (f"/ui/default/compare?base={c1}&head=feature", f"/ui/default/compare/a.txt?base={c1}&head=feature"):
        r = h.head(path)
        assert r.status_code == 200 and r.content == b"" and r.headers["x-frame-options"] == "DENY"


def test_line_diff_rules() -> None:
    hunks = compare.line_diff(["a", "b", "c"], ["a", "B", "c", "d"])
    assert [r[0] for r in hunks[0]["rows"]] == ["ctx", "del", "add", "ctx", "add"]
    assert hunks[0]["header"] == "@@ -1,3 +1,4 @@"
    assert compare.line_diff(["same"], ["same"]) == []


# ---- a real browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path_factory.mktemp("compare-live") / "data").start()
    try:
        with Client(s.url) as c:
            populate(c)
        yield s
    finally:
        s.stop()


@pytest.mark.browser
@pytest.mark.slow  # a server process and a browser: seconds to start
def test_a_browser_compares_two_branches_and_reads_a_file_history(browser: Any, live: ServerProc) -> None:
    from selenium.webdriver.common.by import By

    browser.get(live.url + "/ui/default")
    follow(browser, browser.find_element(By.LINK_TEXT, "compare branches or commits"))
    first = httpx.get(live.url + "/log", headers={"accept": "application/json"}).json()[-1]["id"]
    browser.find_element(By.NAME, "base").send_keys(first)
    browser.find_element(By.NAME, "head").send_keys("feature")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form.compare button"))
    assert browser.title.startswith("compare ")
    assert "a.txt" in browser.find_element(By.ID, "changes").text
    assert browser.find_element(By.CSS_SELECTOR, "tr.deleted .status").text == "deleted"
    shoot(browser, "compare")
    while more := browser.find_elements(By.CSS_SELECTOR, "a[rel=next]"):  # to the last page
        follow(browser, more[0])
    changes = browser.find_element(By.ID, "changes").text
    assert XSS_NEW in changes and XSS_NAME in changes and "swap/inner.txt" in changes  # names with markup: text
    follow(browser, browser.find_element(By.CSS_SELECTOR, "tr.modified td.links a"))  # x/<img …>.txt's line diff
    assert [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#diff tr.del td.text")] == ["x"]
    added = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#diff tr.add td.text")]
    assert added == ["<script>document.title='pwned'</script>"]
    colour = browser.find_element(By.CSS_SELECTOR, "#diff tr.add").value_of_css_property("background-color")
    assert colour == "rgba(230, 255, 236, 1)"  # the stylesheet's colour for an added line
    assert browser.title != "pwned" and not browser.execute_script("return window.__pwned || null")
    follow(browser, browser.find_element(By.LINK_TEXT, "history"))
    assert browser.title.startswith("history of x/<img")
    subjects = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#history .subject")]
    assert subjects == ["feature work", XSS_MESSAGE]
    assert browser.title != "pwned"
    shoot(browser, "history")
