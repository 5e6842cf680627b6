"""The console's jobs pages (`/ui/<repo>/jobs…`, `/ui/<repo>/runs/<id>`): the DAG as a
picture, a job's runs, one job run's progress, failed files and log, a run's jobs; live
refresh only while running; paging; stored text shown as text; bad input; permissions;
speed with many runs and failures. Jobs run as local processes (the `process` runtime) in
the app in this process (`AppServer`); then a real `pfs serve` and a headless Chromium."""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import orjson
import pytest
from conftest import AppServer, ServerProc
from console_kit import follow, links, next_link, page, shoot, state
from test_jobs import JOBSERVER, jobs_of, pspec, run_and_wait

from pfs import Client, errors
from pfs.http.console import jobs as jp
from pfs.storage.meta import JobState, RunState

BAD_NAME = "<img src=x onerror=alert(1)>.txt"  # a failed file whose name is markup
SHOUT = "<script>document.title='pwned'</script> & <b>loud</b>"  # a worker prints markup to its log
BAD_FILES = ("f02.txt", "f07.txt", BAD_NAME)
REFRESH = '<meta http-equiv="refresh"'


def shouting(mode: str, *args: str) -> list[str]:
    """The test job server, after printing markup to its log (stderr)."""
    code = (
        "import runpy, sys; "
        f"sys.stderr.write({SHOUT!r} + '\\n'); sys.stderr.flush(); "
        f"sys.argv = [{JOBSERVER!r}, *{list((mode, *args))!r}]; "
        f"runpy.run_path({JOBSERVER!r}, run_name='__main__')"
    )
    return [sys.executable, "-c", code]


def build(c: Client) -> dict[str, Any]:
    """Two chains: words (map) -> total (reduce), both succeed; picky (map, fails on three
    files) -> after-picky (reduce, skipped). A commit without a run, then two runs."""
    c.put_file("data/f00.txt", b"first\n")
    bare = c.commit(message="no run <i>here</i>").id
    for i in range(1, 12):
        c.put_file(f"data/f{i:02d}.txt", b"BAD line\n" if f"f{i:02d}.txt" in BAD_FILES else b"word %d\n" % i)
    c.put_file(f"data/{BAD_NAME}", b"BAD <b>markup</b>\n")
    c.put_job("words", pspec("map", "data", "wc"))
    c.put_job("total", pspec("reduce", "job/words", "wc"))
    c.put_job("picky", {**pspec("map", "data", "failbody", "BAD", retries=0), "command": shouting("failbody", "BAD")})
    c.put_job("after-picky", pspec("reduce", "job/picky", "cat"))
    first, status = run_and_wait(c)
    assert jobs_of(status)["picky"].state == "failed" and jobs_of(status)["total"].state == "succeeded", status
    c.put_file("data/f12.txt", b"one more\n")
    second, status = run_and_wait(c)
    assert jobs_of(status)["picky"].state == "failed", status
    return {"bare": bare, "first": first, "second": second}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    s = AppServer(tmp_path_factory.mktemp("console-jobs") / "data", env={"PFS_JOB_RUNTIME": "process"}).start()
    try:
        with s.client() as c:
            s.state["made"] = build(c)
        yield s
    finally:
        s.stop()


def everything(srv: AppServer) -> Any:
    """What a request could change, runs included."""
    meta = srv.repo.meta
    runs = [(r.commit, r.state) for r in meta.list_runs(1000)]
    return state(srv), runs, [(j.name, j.dumps()) for j in srv.app.state.node.jobs.of(srv.repo).specs()]


def svg(html: str) -> str:
    m = re.search(r'<svg id="dag".*?</svg>', html, re.S)
    assert m, html[:2000]
    return m.group(0)


def node(picture: str, key: str) -> str:
    m = re.search(rf'<g class="node ([^"]*)" data-key="{re.escape(key)}">(.*?)</g>', picture, re.S)
    assert m, key
    return m.group(0)


# ---- the DAG --------------------------------------------------------------------------------


def test_the_dag_is_drawn_with_every_job_input_output_and_edge(h: httpx.Client, made: dict[str, str]) -> None:
    html = page(h, "/ui/default/jobs")
    picture = svg(html)
    assert "<script" not in html.lower().replace("&lt;script", "")
    edges = set(re.findall(r'<path class="edge" data-from="([^"]*)" data-to="([^"]*)"', picture))
    assert edges == {
        ("in:data", "job:words"),
        ("in:data", "job:picky"),
        ("job:words", "job:total"),
        ("job:picky", "job:after-picky"),
        ("job:total", "out:total"),
        ("job:after-picky", "out:after-picky"),
    }
    # boxes coloured by the last run's state, each job's box a link to its page
    assert 'class="node job ok"' in node(picture, "job:words") and "map · succeeded" in node(picture, "job:words")
    assert "node job ok" in node(picture, "job:total")
    assert "node job failed" in node(picture, "job:picky") and "map · failed" in node(picture, "job:picky")
    assert "node job failed" in node(picture, "job:after-picky") and "skipped" in node(picture, "job:after-picky")
    assert "node input" in node(picture, "in:data") and ">/data</text>" in node(picture, "in:data")
    for name in ("words", "total", "picky", "after-picky"):
        assert f'<a href="/ui/default/jobs/{name}"><g class="node job' in picture, name
    # layered left to right: input, then each job one column after what it reads
    xs = {k: int(x) for k, x in re.findall(r'data-key="([^"]*)">\n<title>[^<]*</title>\n<rect x="(\d+)"', picture)}
    assert xs["in:data"] < xs["job:words"] == xs["job:picky"] < xs["job:total"] == xs["job:after-picky"]
    assert xs["job:total"] < xs["out:total"]
    assert REFRESH not in html  # nothing is running
    # the table of jobs and the recent runs
    table = html[html.index('id="jobs"') : html.index("</table>", html.index('id="jobs"'))]
    row = re.search(r"<tr>\s*<td><a href=\"/ui/default/jobs/total\">total</a>.*?</tr>", table, re.S)
    assert row and '<a href="/ui/default/jobs/words">job/words</a>' in row.group(0) and ">succeeded</a>" in row.group(0)
    assert "job/total" in row.group(0) and re.search(r'<td class="time">\d{4}-\d\d-\d\d ', row.group(0))
    runs = html[html.index('id="runs"') :]
    newer, older = (runs.index(f'href="/ui/default/runs/{made[k]}"') for k in ("second", "first"))
    assert newer < older


@pytest.fixture
def made(srv: AppServer) -> dict[str, str]:
    """The commits `build` made: `bare` (no run), `first` and `second` (runs)."""
    return dict(srv.state["made"])


def test_the_layout_puts_each_job_after_what_it_reads_without_overlaps() -> None:
    """Longest-path layers (a chain three deep, an S3 input, a fan-out), rows that do not
    overlap, long names cut in the box and whole in its tooltip."""
    from pfs.jobs.spec import JobSpec

    long = "a-very-long-job-name-" + "x" * 60

    def spec(name: str, input: str, kind: str = "map") -> JobSpec:
        return JobSpec(name=name, type=kind, input=input, command=["true"], runtime="process")

    specs = [
        spec("a", "in"),
        spec("b", "job/a"),
        spec("c", "job/b", "reduce"),
        spec(long, "job/a"),
        spec("s", "s3://bucket/prefix"),
    ]
    g = jp.draw("r", specs, {})
    at = {b.key: (b.x, b.y) for b in g["boxes"]}
    col = {k: (x - jp.PAD) // (jp.BOX_W + jp.GAP_X) for k, (x, _) in at.items()}
    assert col == {
        "in:in": 0,
        "in:s3://bucket/prefix": 0,
        "job:a": 1,
        "job:s": 1,
        "job:b": 2,
        f"job:{long}": 2,
        "job:c": 3,
        f"out:{long}": 3,
        "out:s": 2,
        "out:c": 4,
    }
    assert len(set(at.values())) == len(at)  # no two boxes in one place
    assert all(b.x + jp.BOX_W <= g["width"] and b.y + jp.BOX_H <= g["height"] for b in g["boxes"])
    named = next(b for b in g["boxes"] if b.key == f"job:{long}")
    assert named.label == long[: jp.LABEL - 1] + "…" and named.title.startswith(long) and named.look == "none"
    assert named.sub == "map · never run" and named.href == f"/ui/r/jobs/{long}"
    s3 = next(b for b in g["boxes"] if b.key == "in:s3://bucket/prefix")
    assert s3.sub == "S3 input" and s3.href == ""
    assert {(e.src, e.dst) for e in g["edges"]} >= {("job:a", "job:b"), ("job:a", f"job:{long}"), ("job:c", "out:c")}
    assert all(e.x1 < e.x2 for e in g["edges"])  # every arrow points right


def test_the_repository_page_links_to_the_jobs(h: httpx.Client) -> None:
    html = page(h, "/ui/default")
    assert '<a href="/ui/default/jobs" id="jobs-link">' in html


def test_a_repository_without_jobs(h: httpx.Client, srv: AppServer) -> None:
    if "empty" not in [r.name for r in srv.repos.list()]:
        srv.repos.create("empty")
    html = page(h, "/ui/empty/jobs")
    assert "No jobs in this repository." in html and "No runs yet" in html and '<svg id="dag"' not in html


# ---- a job ----------------------------------------------------------------------------------


def test_a_failed_job_says_why_at_the_top_and_lists_its_runs(h: httpx.Client, made: dict[str, str]) -> None:
    html = page(h, "/ui/default/jobs/picky")
    reason = re.search(r'<div class="error reason" id="reason">(.*?)</div>', html, re.S)
    assert reason, html
    text = unescape(re.sub(r"<[^>]+>", "", reason.group(1)))  # the markup of the page, not of the names
    assert "Last run failed: 3 of 4 files failed" in text  # the job's own summary (an incremental run)
    assert f"first failed file: {BAD_NAME}: failed after 1 attempt(s)" in text  # escaped, in path order
    assert "HTTP 422" in text
    run = f"/ui/default/jobs/picky/runs/{made['second']}"
    assert f'<a href="{run}">the run</a>' in reason.group(1) and f'href="{run}#failures"' in reason.group(1)
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;.txt" in html
    # the spec as text
    spec = unescape(re.search(r'<pre class="message" id="spec">(.*?)</pre>', html, re.S).group(1))  # type: ignore[union-attr]
    assert orjson.loads(spec)["input"] == "data" and orjson.loads(spec)["type"] == "map"
    # runs newest first, each with its input commit's tree and log, state, progress and reason
    rows = re.findall(r'<tr class="failed">(.*?)</tr>', html, re.S)
    assert len(rows) == 2
    assert (
        f'href="/ui/default/tree/{made["second"]}"' in rows[0] and f'href="/ui/default/log/{made["second"]}"' in rows[0]
    )
    assert f'href="/ui/default/tree/{made["first"]}"' in rows[1]
    # the second run maps the new file and those that failed, and reuses the other ten
    assert '<progress max="4" value="4">' in rows[0] and "1 / 4 · " in rows[0] and "3 failed" in rows[0]
    assert "10 reused" in rows[0]
    assert '<progress max="13" value="13">' in rows[1] and "10 / 13 · " in rows[1] and "reused" not in rows[1]
    assert 'class="why"' in rows[0] and "3 of 4 files failed" in unescape(rows[0])
    assert "3 of 13 files failed" in unescape(rows[1])
    assert REFRESH not in html


def test_a_successful_job_has_no_reason_and_links_its_output(h: httpx.Client, made: dict[str, str]) -> None:
    html = page(h, "/ui/default/jobs/words")
    assert 'id="reason"' not in html
    out = f"/repo/default/job/words/file/*?commit={made['second']}"  # the API's listing of a map's output
    assert out in links(html)
    listing = h.get(out)
    assert listing.status_code == 200 and "f01.txt" in listing.text
    out = f"/repo/default/job/total/file?commit={made['second']}"  # a reduce's one file
    assert out in links(page(h, "/ui/default/jobs/total"))
    assert re.fullmatch(r"\d+ \d+ \d+\n", h.get(out).text)
    html = page(h, "/ui/default/jobs/after-picky")  # skipped: its reason names the job it reads
    assert "job &#39;picky&#39; failed" in html and "Last run skipped:</strong>" in html


def test_a_jobs_runs_are_paged(h: httpx.Client, made: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jp, "RUNS_PAGE", 1)
    html = page(h, "/ui/default/jobs/words")
    assert made["second"][:12] in html and made["first"][:12] not in html
    nxt = next_link(html)
    assert nxt == f"/ui/default/jobs/words?before={made['second']}"
    html = page(h, nxt)
    assert made["first"][:12] in html and made["second"][:12] not in html and "older runs" in html
    assert next_link(html) is None
    html = page(h, f"/ui/default/jobs/words?before={made['first']}")
    assert "No runs of this job before that one." in html


# ---- one job run ----------------------------------------------------------------------------


def test_a_job_run_shows_progress_failed_files_and_the_log(h: httpx.Client, made: dict[str, str]) -> None:
    html = page(h, f"/ui/default/jobs/picky/runs/{made['second']}")
    assert re.search(r'<span class="state failed" id="state">failed</span>', html)
    reason = re.search(r'<p class="error reason oneline" id="reason" title="[^"]*">(.*?)</p>', html, re.S)
    assert reason and "3 of 4 files failed" in reason.group(1)
    assert '<progress max="4" value="4">' in html
    failed = re.findall(r'<tr><td class="id">(.*?)</td><td class="why-cell">(.*?)</td></tr>', html)
    assert [unescape(p) for p, _ in failed] == sorted(BAD_FILES)
    assert all("HTTP 422" in e and "contains &#39;BAD&#39;" in e for _, e in failed)
    log = re.search(r'<pre class="code logtext" id="logtext">(.*?)</pre>', html, re.S)
    assert log, html
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt; &amp; &lt;b&gt;loud&lt;/b&gt;" in log.group(1)
    assert "--- worker http://" in log.group(1) and "POST /map/" in log.group(1)
    assert "<script>" not in html and "<b>loud" not in html and "<img src=x" not in html
    assert REFRESH not in html  # over: no reload
    assert f'href="/ui/default/runs/{made["second"]}"' in html and f'href="/ui/default/tree/{made["second"]}"' in html
    # a succeeded job: its output, no failures
    html = page(h, f"/ui/default/jobs/words/runs/{made['first']}")
    assert "succeeded</span>" in html and 'id="reason"' not in html and '<p class="note">None.</p>' in html
    assert f"/repo/default/job/words/file/*?commit={made['first']}" in links(html)


def test_failed_files_and_the_log_are_paged(
    h: httpx.Client, made: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = f"/ui/default/jobs/picky/runs/{made['second']}"
    monkeypatch.setattr(jp, "FAILURES_PAGE", 2)
    seen: list[str] = []
    path: str | None = base
    while path is not None:
        html = page(h, path)
        seen += [unescape(p) for p in re.findall(r'<tr><td class="id">(.*?)</td>', html)]
        path = next_link(html)
        if path is not None:
            path = path.split("#")[0]
    assert seen == sorted(BAD_FILES)
    # the log: the newest window by default, earlier windows by character offset
    full = page(h, base)
    whole = unescape(re.search(r'id="logtext">(.*?)</pre>', full, re.S).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"characters 0–(\d+) of (\d+)", full).group(2))  # type: ignore[union-attr]
    monkeypatch.setattr(jp, "LOG_WINDOW", 100)
    html = page(h, base)
    assert f"characters {total - 100}–{total} of {total}" in html
    earlier = re.search(r'<a href="([^"]*)#log">earlier</a>', html)
    assert earlier and unescape(earlier.group(1)) == f"{base}?log={total - 200}"
    pieces = []
    for start in range(0, total, 100):
        html = page(h, f"{base}?log={start}")
        text = unescape(re.search(r'id="logtext">(.*?)</pre>', html, re.S).group(1))  # type: ignore[union-attr]
        pieces.append(re.sub(r'<span class="line">|</span>', "", text))
        assert ('#log">later</a>' in html) == (start + 100 < total)
    flat = re.sub(r'<span class="line">|</span>', "", whole)
    assert "".join(pieces).replace("\n", "") == flat.replace("\n", "")
    assert "No log." not in page(h, f"{base}?log={total + 10}")  # past the end: an empty window, no error


def test_a_runs_page_lists_its_jobs_in_order(h: httpx.Client, made: dict[str, str]) -> None:
    html = page(h, f"/ui/default/runs/{made['first']}")
    assert '<span class="state failed" id="state">failed</span>' in html
    names = re.findall(r'<td><a href="/ui/default/jobs/([^"]*)">', html)
    assert names.index("words") < names.index("total") and names.index("picky") < names.index("after-picky")
    assert f'href="/ui/default/jobs/picky/runs/{made["first"]}"' in html
    assert re.search(r'<a class="state ok" href="[^"]*/jobs/total/runs/', html)
    assert "job &#39;picky&#39; failed" in html
    assert f'title="{made["first"]}"' in page(h, f"/ui/default/runs/{made['first'][:12]}")  # a prefix names it too
    assert REFRESH not in html


# ---- live -------------------------------------------------------------------------------------


def test_a_running_job_reloads_its_page_until_it_ends(srv: AppServer, h: httpx.Client) -> None:
    """Refresh is on only while the job (or run) runs: its progress is live without script."""
    if "live" not in [r.name for r in srv.repos.list()]:
        srv.repos.create("live")
    with srv.client() as c:
        lc = c.repo("live")
        for i in range(3):
            lc.put_file(f"in/{i}.txt", b"x\n")
        lc.put_job("slowly", pspec("map", "in", "slow", "0.8", parallelism=1, inflight=1))
        cid = lc.commit(run=True).id
        url = f"/ui/live/jobs/slowly/runs/{cid}"
        seen_running = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            html = page(h, url)
            if 'id="state">running<' in html:
                seen_running = True
                assert f'{REFRESH} content="2">' in html and "this page reloads every 2 s" in html
                assert f'{REFRESH} content="2">' in page(h, f"/ui/live/runs/{cid}")
                assert f'{REFRESH} content="2">' in page(h, "/ui/live/jobs/slowly")
                assert f'{REFRESH} content="2">' in page(h, "/ui/live/jobs")
                assert "node job running" in svg(page(h, "/ui/live/jobs"))
                break
            time.sleep(0.1)
        assert seen_running
        assert lc.wait_run(cid, timeout=60).state == "succeeded"
        for path in (url, f"/ui/live/runs/{cid}", "/ui/live/jobs/slowly", "/ui/live/jobs"):
            assert REFRESH not in page(h, path), path
        assert '<progress max="3" value="3">' in page(h, url)


# ---- bad input --------------------------------------------------------------------------------

UNKNOWN = "ab" * 32


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/ui/nope-nope/jobs", 404, "repository 'nope-nope' not found"),
        ("/ui/default/jobs/nope", 404, "job 'nope' not found"),
        ("/ui/default/jobs/bad%20name", 400, "invalid job name"),
        ("/ui/default/jobs/%3Cb%3E", 400, "invalid job name"),
        ("/ui/default/jobs/picky?before=zzz", 400, "before must be the commit id of a run"),
        ("/ui/default/jobs/picky?before=" + UNKNOWN, 404, "no run on commit abababababab"),
        ("/ui/default/jobs/picky?page=2", 400, "unknown query parameter"),
        ("/ui/default/jobs?x=1", 400, "unknown query parameter"),
        ("/ui/default/jobs/picky/runs/" + UNKNOWN, 404, "no run on commit abababababab"),
        ("/ui/default/jobs/picky/runs/nobranch", 404, "branch 'nobranch' not found"),
        ("/ui/default/jobs/picky/runs/{bare}", 404, "no run on commit"),
        ("/ui/default/jobs/nope/runs/{first}", 404, "job 'nope' not found"),
        ("/ui/default/jobs/picky/runs/{first}?log=-1", 400, "log must be a character offset"),
        ("/ui/default/jobs/picky/runs/{first}?log=1e3", 400, "log must be a character offset"),
        ("/ui/default/jobs/picky/runs/{first}?after=a%00", 400, "NUL"),
        ("/ui/default/jobs/picky/runs/{first}?after=" + "x" * 5000, 400, "at most 4096 bytes"),
        ("/ui/default/runs/" + UNKNOWN, 404, "no run on commit abababababab"),
        ("/ui/default/runs/abababab", 404, "commit 'abababab' not found"),
        ("/ui/default/runs/{bare}", 404, "no run on commit"),
        ("/ui/default/runs/bad%00id", 400, ""),
    ],
)
def test_bad_input_is_an_html_error_page_and_changes_nothing(
    h: httpx.Client, srv: AppServer, made: dict[str, str], path: str, status: int, says: str
) -> None:
    before = everything(srv)
    r = h.get(path.format(**made))
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["x-frame-options"] == "DENY" and "default-src 'none'" in r.headers["content-security-policy"]
    assert f"<h1>{status} " in r.text and 'id="error"' in r.text
    assert unescape(says) in unescape(r.text)
    assert "<b>" not in r.text
    assert everything(srv) == before


def test_only_get_and_head_and_head_changes_nothing(h: httpx.Client, srv: AppServer, made: dict[str, str]) -> None:
    before = everything(srv)
    for path in ("/ui/default/jobs", "/ui/default/jobs/picky", f"/ui/default/jobs/picky/runs/{made['first']}"):
        for method in ("POST", "PUT", "DELETE"):
            r = h.request(method, path)
            assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD", (method, path)
        r = h.head(path)
        assert r.status_code == 200 and r.content == b"" and r.headers["x-frame-options"] == "DENY"
    assert everything(srv) == before


def test_every_jobs_page_sends_the_security_headers_and_no_script(h: httpx.Client, made: dict[str, str]) -> None:
    for path in (
        "/ui/default/jobs",
        "/ui/default/jobs/picky",
        f"/ui/default/jobs/picky/runs/{made['first']}",
        f"/ui/default/runs/{made['first']}",
    ):
        r = h.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert (
            "script-src" not in csp and "unsafe-inline" not in csp and r.headers["x-content-type-options"] == "nosniff"
        )
        assert "<script" not in r.text.lower().replace("&lt;script", ""), path
        assert " style=" not in r.text and "<style" not in r.text, path  # the CSP would block inline styles
        assert all(u == "/ui" or u.startswith(("/ui/", "/repo/", "#")) for u in links(r.text)), path


def test_json_clients_get_the_api_error(h: httpx.Client) -> None:
    r = h.get("/ui/default/jobs/nope", headers={"accept": "application/json"})
    assert r.status_code == 404 and r.json()["error"] == "job_not_found"


# ---- permissions ------------------------------------------------------------------------------


def test_with_access_control_the_jobs_pages_need_read(tmp_path: Path) -> None:
    s = AppServer(tmp_path / "data", env={"PFS_JOB_RUNTIME": "process"}).start()
    try:
        identity = s.app.state.node.access.identity
        root = identity.init_admin("root")
        s.repos.create("shared")
        identity.create_user("reader")
        reader = identity.create_key("reader")
        identity.grant("reader", s.repos.get("shared").id, "read")
        s.repos.get("shared").meta.put_job("j", orjson.dumps(pspec("map", "d", "upper")).decode())
        pages = ("/ui/{}/jobs", "/ui/{}/jobs/j", "/ui/{}/jobs/j/runs/master", "/ui/{}/runs/" + UNKNOWN)
        with s.http() as anon:
            for path in pages:
                r = anon.get(path.format("shared"))
                assert r.status_code == 303, path  # to the sign-in page, back here after it
                assert r.headers["location"] == "/ui/_login?" + urlencode({"next": path.format("shared")}), path
        with s.http() as hh:
            hh.auth = (reader.id, reader.secret)
            assert 'data-key="job:j"' in page(hh, "/ui/shared/jobs")
            assert "never run" in page(hh, "/ui/shared/jobs")
            assert "No runs of this job." in page(hh, "/ui/shared/jobs/j")
            for path in pages:
                assert "needs read permission" in page(hh, path.format("default"), status=403), path
            hh.auth = (root.id, root.secret)
            assert "No jobs in this repository." in page(hh, "/ui/default/jobs")
    finally:
        s.stop()


# ---- the jobs layer's pages ---------------------------------------------------------------------


def fake_runs(
    meta: Any, job: str, created: list[float], logs: dict[int, str | None] | None = None, **fields: Any
) -> list[str]:
    """Finished runs of one job, recorded in bulk as the scheduler leaves them (a queued
    run would be claimed by the app's scheduler); their commits, oldest first."""
    spec = orjson.dumps(pspec("map", "d", "upper")).decode()
    meta.put_job(job, spec)
    commits = [hashlib.sha256(b"%s %d" % (job.encode(), i)).hexdigest() for i in range(len(created))]
    with meta._write() as c:  # noqa: SLF001
        c.execute(
            meta.t.runs.insert(),
            [
                {"commit": cid, "branch": "master", "state": RunState.FAILED, "created": t, "finished": t}
                for cid, t in zip(commits, created, strict=True)
            ],
        )
        c.execute(
            meta.t.job_runs.insert(),
            [
                {"commit": cid, "job": job, "seq": 0, "spec": spec, "state": JobState.FAILED, "error": f"run {i}"}
                | {"log": (logs or {}).get(i, f"log of run {i}\n"), **fields}
                for i, cid in enumerate(commits)
            ],
        )
    return commits


def test_the_store_pages_a_jobs_runs_and_reads_a_log_in_pieces(app: AppServer) -> None:
    """`job_run_page` and `job_log` on each backend: newest first, ties broken by commit,
    no log read with a page; a log read by characters, not bytes."""
    meta = app.repo.meta
    commits = fake_runs(meta, "j", [100.0, 101.0, 102.0, 102.0, 103.0], {2: "héllo\nwörld\n", 3: None})
    expected = sorted(zip([100.0, 101.0, 102.0, 102.0, 103.0], commits, strict=True), reverse=True)
    walked: list[str] = []
    cursor = None
    while True:
        got = meta.job_run_page("j", 2, cursor)
        assert len(got) <= 2 and all(jr.log is None and jr.job == "j" and r.commit == jr.commit for r, jr in got)
        walked += [r.commit for r, _ in got]
        if len(got) < 2:
            break
        cursor = (got[-1][0].created, got[-1][0].commit)
    assert walked == [cid for _, cid in expected]
    assert meta.job_run_page("nope", 10) == [] and meta.job_run_page("j", 10, (100.0, commits[0])) == []
    assert meta.job_log(commits[2], "j", 0, 100) == ("héllo\nwörld\n", 12)
    assert meta.job_log(commits[2], "j", 1, 4) == ("éllo", 12)  # characters
    assert meta.job_log(commits[2], "j", 7, 100) == ("örld\n", 12)
    assert meta.job_log(commits[2], "j", 50, 10) == ("", 12)
    assert meta.job_log(commits[3], "j", 0, 10) == ("", 0)  # no log
    assert meta.job_log(commits[3], "nope", 0, 10) is None
    whole = meta.get_job_run(commits[2], "j")
    bare = meta.get_job_run(commits[2], "j", log=False)
    assert whole.log == "héllo\nwörld\n" and bare.log is None and bare == replace(whole, log=None)
    assert [jr.log for jr in meta.job_runs(commits[2], log=False)] == [None]
    jobs = app.app.state.node.jobs.of(app.repo)
    assert [jr.commit for _, jr in jobs.job_run_page("j", 2, commits[4])] == [cid for _, cid in expected][1:3]
    assert jobs.log_piece(jobs.job_run(commits[2], "j", log=False), 6, 3) == ("wör", 12)
    with pytest.raises(errors.JobNotFound):
        jobs.job_run_page("nope", 2)
    with pytest.raises(errors.RunNotFound):
        jobs.job_run_page("j", 2, "ab" * 32)


# ---- many runs, many failures -----------------------------------------------------------------


def test_many_runs_and_failures_page_quickly(srv: AppServer, h: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 runs and 20,000 failed files: each page reads one page of them (one query a
    page, never every run), and answers fast."""
    if "busy" not in [r.name for r in srv.repos.list()]:
        srv.repos.create("busy")
    meta = srv.repos.get("busy").meta
    now = time.time()
    log = "".join(f"line {n} of the newest run\n" for n in range(3000))
    counts = {"total": 30000, "done": 10000, "failed": 20000, "started": now - 10, "finished": now}
    commits = fake_runs(meta, "big", [now - 5000 + i for i in range(5000)], {4999: log}, **counts)
    with meta._write() as c:  # noqa: SLF001
        c.execute(
            meta.t.job_failures.insert(),
            [{"commit": commits[-1], "job": "big", "path": f"d/{n:06d}", "error": f"bad {n}"} for n in range(20000)],
        )

    reads: list[int] = []
    real = type(meta).job_run_page

    def counting(self: Any, job: str, limit: int, before: Any = None) -> Any:
        out = real(self, job, limit, before)
        reads.append(len(out))
        return out

    monkeypatch.setattr(type(meta), "job_run_page", counting)
    timings = {}
    for path in (
        "/ui/busy/jobs",
        "/ui/busy/jobs/big",
        f"/ui/busy/jobs/big?before={commits[100]}",
        f"/ui/busy/jobs/big/runs/{commits[-1]}",
        f"/ui/busy/jobs/big/runs/{commits[-1]}?after=d/019000",
        f"/ui/busy/jobs/big/runs/{commits[-1]}?log=0",
        f"/ui/busy/runs/{commits[-1]}",
    ):
        page(h, path)  # warm
        t0 = time.monotonic()
        html = page(h, path)
        timings[path] = time.monotonic() - t0
        assert "line" in html or "big" in html
    assert max(timings.values()) < 0.5, timings  # 5-20 ms each on a quiet machine
    assert reads and max(reads) <= jp.RUNS_PAGE + 1
    html = page(h, f"/ui/busy/jobs/big?before={commits[100]}")
    assert commits[99][:12] in html and commits[100][:12] not in html and commits[75][:12] in html  # 25 a page
    assert commits[74][:12] not in html and next_link(html) == f"/ui/busy/jobs/big?before={commits[75]}"
    html = page(h, f"/ui/busy/jobs/big/runs/{commits[-1]}")
    assert html.count('<td class="why-cell">') == jp.FAILURES_PAGE and "more failed files" in html
    assert "line 2999 of the newest run" in html and "line 0 of the newest run" not in html  # the log's tail
    html = page(h, f"/ui/busy/jobs/big/runs/{commits[-1]}?after=d/019950")
    assert re.findall(r'<td class="id">(d/\d+)</td>', html) == [f"d/{n:06d}" for n in range(19951, 20000)]


# ---- a real browser ---------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow  # a server process, jobs and a browser: seconds
def test_a_browser_walks_from_the_dag_to_a_failed_run(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    s = ServerProc(tmp_path / "data", env={"PFS_JOB_RUNTIME": "process"}).start()
    try:
        with Client(s.url) as c:
            made = build(c)
        browser.get(s.url + "/ui/default")
        follow(browser, browser.find_element(By.ID, "jobs-link"))
        assert browser.title == "jobs of default · pfs"
        dag = browser.find_element(By.ID, "dag")
        assert dag.size["width"] > 600 and dag.size["height"] > 100
        boxes = browser.find_elements(By.CSS_SELECTOR, "#dag g.node.job")
        assert len(boxes) == 4
        red = browser.find_element(By.CSS_SELECTOR, '#dag g[data-key="job:picky"] rect')
        assert red.value_of_css_property("fill") == "rgb(255, 235, 233)"  # the stylesheet's failed colour
        shoot(browser, "jobs")
        follow(browser, browser.find_element(By.CSS_SELECTOR, '#dag a[href="/ui/default/jobs/picky"]'))
        assert browser.title == "job picky · pfs"
        reason = browser.find_element(By.ID, "reason").text
        assert "Last run failed: 3 of 4 files failed" in reason and f"first failed file: {BAD_NAME}" in reason
        follow(browser, browser.find_element(By.LINK_TEXT, "the run"))
        assert browser.title == f"picky on {made['second'][:12]} · pfs"
        assert browser.find_element(By.ID, "state").text == "failed"
        paths = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#failed tbody td.id")]
        assert paths == sorted(BAD_FILES)
        assert SHOUT in browser.find_element(By.ID, "logtext").text  # the markup a worker printed, as text
        assert browser.title != "pwned" and not browser.execute_script("return window.__pwned || null")
        shoot(browser, "run")
    finally:
        s.stop()
