"""The web console's pages on a repository of 100,000 files, against `GET /ping` on the
same server in the same run: each page must answer in under 200 ms.

The repository (`pfs serve`, embedded backend): 100 directories of 1,000 small files each
(one tar upload per directory, one commit), a text file and a CSV file; then a branch
`feature` changing 10 files in every directory (1,000 in all) and the text file; then 200
commits on master, each changing a file in one directory and every other one a tracked
file (its history: 100 changes). Then the server is restarted (every cache cold, as after
a deploy) and each page is visited once, in the order of the table, as a user clicking
through would: its first view. Then each page is fetched WARM times, then timed RUNS times,
one request at a time: median and worst.

    python bench/console.py                 # prints the table (~2 minutes)
    python bench/run.py --only console
"""

from __future__ import annotations

import io
import re
import statistics
import sys
import tempfile
import time
from html import unescape
from pathlib import Path

import httpx

from pfs import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Rows, start_pfs, tar_of  # noqa: E402

DIRS, PER_DIR = 100, 1000
CHANGED_PER_DIR = 10
COMMITS = 200
WARM, RUNS = 3, 25
GOAL = 0.200  # seconds


def text(version: int) -> bytes:
    """A 2,000-line text file; `version` changes every 50th line."""
    return b"".join(
        b"line %d%s\n" % (i, b" changed %d" % version if version and i % 50 == 0 else b"") for i in range(2000)
    )


def build(c: Client) -> str:
    """The repository; returns the commit `feature` branched from."""
    for d in range(DIRS):
        files = {f"f{i:04d}.txt": b"file %d of directory %d\n" % (i, d) for i in range(PER_DIR)}
        c.put_tar(f"d{d:03d}", io.BytesIO(tar_of(files)))
    c.put_file("text/readme.txt", text(0))
    c.put_file("data/table.csv", b"id,name,value\n" + b"".join(b"%d,name %d,%d.5\n" % (i, i, i) for i in range(1000)))
    c.put_file("hist/tracked.txt", b"0\n")
    base = c.commit(message=f"{DIRS * PER_DIR} files").id
    c.create_branch("feature", base)
    for d in range(DIRS):
        files = {f"f{i:04d}.txt": b"changed %d\n" % i for i in range(0, PER_DIR, PER_DIR // CHANGED_PER_DIR)}
        c.put_tar(f"d{d:03d}", io.BytesIO(tar_of(files)), branch="feature")
    c.put_file("text/readme.txt", text(1), branch="feature")
    c.commit(branch="feature", message="1000 changed files")
    for i in range(COMMITS):
        c.put_file(f"d{i % DIRS:03d}/f{i:04d}.txt", b"commit %d\n" % i)
        if i % 2 == 0:
            c.put_file("hist/tracked.txt", b"%d\n" % i)
        c.commit(message=f"commit {i}")
    return base


def latency(h: httpx.Client, path: str, warm: int = WARM, runs: int = RUNS) -> tuple[float, float]:
    """(median, worst) seconds of GET `path`, after `warm` untimed requests."""
    for _ in range(warm):
        r = h.get(path)
        if r.status_code != 200:
            raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:300]}")
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = h.get(path)
        times.append(time.perf_counter() - t0)
        assert r.status_code == 200, path
    return statistics.median(times), max(times)


def next_link(h: httpx.Client, path: str) -> str:
    m = re.search(r'<a rel="next" href="([^"]*)"', h.get(path).text)
    if m is None:
        raise RuntimeError(f"{path} has no next page")
    return unescape(m.group(1))


def pages(h: httpx.Client, base: str) -> list[tuple[str, str]]:
    log = "/ui/default/log/master"
    deep = log
    while True:  # the last page of the log: 4 pages on
        try:
            deep = next_link(h, deep)
        except RuntimeError:
            break
    compare = f"/ui/default/compare?base={base}&head=feature"
    return [
        ("repositories", "/ui"),
        ("repository", "/ui/default"),
        ("log, first page", log),
        (f"log, last page ({COMMITS + 2} commits)", deep),
        (f"tree, root ({DIRS + 3} names)", "/ui/default/tree/master"),
        (f"tree, a directory of {PER_DIR} files", "/ui/default/tree/master/d050"),
        ("blob, text (2,000 lines)", "/ui/default/blob/master/text/readme.txt"),
        ("blob, CSV (1,000 rows)", "/ui/default/blob/master/data/table.csv"),
        (f"compare, page 1 ({DIRS * CHANGED_PER_DIR + 1} changes)", compare),
        ("compare, page 2", next_link(h, compare)),
        ("line diff (2,000 lines)", f"/ui/default/compare/text/readme.txt?base={base}&head=feature"),
        (f"file history ({COMMITS // 2 + 1} changes)", "/ui/default/history/master/hist/tracked.txt"),
    ]


def bench_console(work: Path, rows: Rows) -> list[tuple[str, float, float, float]]:
    """Time every page kind; append a row each to `rows`; return (page, first view, median,
    worst)."""
    server = start_pfs(work / "console-data")
    try:
        t0 = time.perf_counter()
        with Client(server.url, timeout=600) as c:
            base = build(c)
        print(f"built in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        with httpx.Client(base_url=server.url, timeout=60) as h:
            visits = pages(h, base)
    finally:
        server.stop()
    server = start_pfs(work / "console-data")  # caches cold
    try:
        with httpx.Client(base_url=server.url, timeout=60) as h:
            first = {name: latency(h, path, warm=0, runs=1)[0] for name, path in visits}
            ping, ping_worst = latency(h, "/ping")
            out = []
            for name, path in visits:
                median, worst = latency(h, path)
                out.append((name, first[name], median, worst))
                rows.append(
                    (
                        f"console: {name}",
                        f"{median * 1e3:.1f} ms (first view {first[name] * 1e3:.1f}, worst {worst * 1e3:.1f})",
                        f"{ping * 1e3:.2f} ms (GET /ping)",
                        f"{median / ping:.1f}x",
                    )
                )
            out.insert(0, ("baseline: GET /ping", ping, ping, ping_worst))
            return out
    finally:
        server.stop()


def table(results: list[tuple[str, float, float, float]]) -> str:
    ping = results[0][2]
    lines = [
        "| page | first view (cold) | median | worst | median / ping | under 200 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, first, median, worst in results:
        ok = "yes" if max(first, worst) < GOAL else "median only" if median < GOAL else "**no**"
        lines.append(
            f"| {name} | {first * 1e3:.1f} ms | {median * 1e3:.1f} ms | {worst * 1e3:.1f} ms "
            f"| {median / ping:.1f}x | {ok} |"
        )
    return "\n".join(lines)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pfs-bench-console-") as work:
        print(table(bench_console(Path(work), [])))


if __name__ == "__main__":
    main()
