"""A map job whose files fail: it maps all the others, fails at the end listing the bad
ones with reasons, and the next run maps only what changed and what failed; with
`skip_failed` it succeeds without them; a job broken as a whole stops early. Job servers
run as local processes (the server's operator enabled the process runtime)."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ServerProc
from test_jobs import jobs_of, pspec, run_and_wait

from pfs import Client, errors


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path / "data", env={"PFS_JOB_RUNTIME": "process"}).start()
    yield s
    s.stop()


@pytest.fixture
def c(srv: ServerProc) -> Iterator[Client]:
    with Client(srv.url) as client:
        yield client


def mapped_paths(log: str) -> list[str]:
    """The files the job's workers were asked to map, from their own request lines."""
    return sorted(set(re.findall(r'"POST /map/(\S+) HTTP', log)))


def put_inputs(c: Client, n: int, bad: set[int]) -> None:
    for i in range(n):
        c.put_file(f"d/f{i:02d}", (b"BAD line\n" if i in bad else f"file {i}\n".encode()))


def test_map_goes_on_past_failed_files_and_the_next_run_maps_only_those(c: Client, srv: ServerProc) -> None:
    put_inputs(c, 30, bad={3, 11, 27})
    c.put_job("up", pspec("map", "d", "failbody", "BAD", retries=1, parallelism=2, inflight=2))
    c.put_job("total", pspec("reduce", "job/up", "cat"))
    cid, status = run_and_wait(c)
    up = jobs_of(status)["up"]
    assert status.state == "failed" and up.state == "failed"
    assert (up.total, up.done, up.failed, up.reused) == (30, 27, 3, 0), up
    assert up.error.startswith("3 of 30 files failed") and "f03: failed after 2 attempt(s): HTTP 422" in up.error
    assert [f.path for f in up.failures] == ["f03", "f11", "f27"]
    assert all("HTTP 422" in f.error and "contains 'BAD'" in f.error for f in up.failures)
    assert jobs_of(status)["total"].state == "skipped"
    with pytest.raises(errors.JobNotReady, match="failed"):  # what did map is not readable as a result
        c.get_job_file("up", "f00", commit=cid)
    log = c.job_log("up", cid)
    assert "3 files failed" in log and "f11: failed after 2 attempt(s): HTTP 422" in log
    assert len(mapped_paths(log)) == 30  # every file was tried
    text = httpx.get(f"{srv.url}/run/{cid}").text
    assert "27/30 files mapped, 3 failed" in text and "failed: f27: failed after 2 attempt(s)" in text
    cli = subprocess.run(
        [sys.executable, "-m", "pfs.cli", "--url", srv.url, "job", "wait", cid], capture_output=True, timeout=60
    )
    assert cli.returncode == 1 and b"      failed: f11: failed after 2 attempt(s): HTTP 422" in cli.stdout

    # fix the bad files, change one good file, add one: only those five are mapped
    for i in (3, 11, 27):
        c.put_file(f"d/f{i:02d}", f"fixed {i}\n".encode())
    c.put_file("d/f05", b"edited\n")
    c.put_file("d/new", b"new\n")
    cid2, status2 = run_and_wait(c)
    up2 = jobs_of(status2)["up"]
    assert status2.state == "succeeded", status2
    assert (up2.total, up2.done, up2.failed, up2.reused) == (31, 5, 0, 26), up2
    assert mapped_paths(c.job_log("up", cid2)) == ["f03", "f05", "f11", "f27", "new"]
    assert c.get_job_file("up", "f11", commit=cid2) == b"FIXED 11\n"
    assert c.get_job_file("up", "f05", commit=cid2) == b"EDITED\n"
    assert c.get_job_file("up", "f00", commit=cid2) == b"FILE 0\n"  # mapped by the failed run, reused
    assert len(c.ls_job("up", commit=cid2)) == 31
    assert c.get_job_file("total", commit=cid2).count(b"\n") == 31


def test_files_that_fail_again_are_retried_each_run_and_nothing_else(c: Client) -> None:
    put_inputs(c, 12, bad={4})
    c.put_job("up", pspec("map", "d", "failbody", "BAD", retries=0))
    run_and_wait(c)
    c.put_file("d/f07", b"BAD again\n")  # a good file goes bad
    cid, status = run_and_wait(c)
    up = jobs_of(status)["up"]
    assert up.state == "failed" and (up.done, up.failed, up.reused) == (0, 2, 10), up
    assert [f.path for f in up.failures] == ["f04", "f07"]
    assert mapped_paths(c.job_log("up", cid)) == ["f04", "f07"]
    c.put_file("d/f04", b"good now\n")
    cid, status = run_and_wait(c)
    up = jobs_of(status)["up"]
    assert (up.done, up.failed, up.reused) == (1, 1, 10), up
    assert mapped_paths(c.job_log("up", cid)) == ["f04", "f07"]
    c.delete_file("d/f07")  # the last bad file goes: the job succeeds, mapping nothing
    cid, status = run_and_wait(c)
    up = jobs_of(status)["up"]
    assert up.state == "succeeded" and (up.done, up.failed, up.total) == (0, 0, 11), up
    assert "f07" not in [e.path for e in c.ls_job("up", commit=cid)]


def test_skip_failed_succeeds_without_the_failed_files_and_shows_them(c: Client, srv: ServerProc) -> None:
    put_inputs(c, 10, bad={2, 6})
    c.put_job("up", pspec("map", "d", "failbody", "BAD", retries=0, skip_failed=True))
    c.put_job("total", pspec("reduce", "job/up", "cat"))
    assert c.get_job("up").skip_failed is True
    cid, status = run_and_wait(c)
    up = jobs_of(status)["up"]
    assert status.state == "succeeded" and up.state == "succeeded", status
    assert (up.done, up.failed) == (8, 2) and up.skip_failed is True
    assert [f.path for f in up.failures] == ["f02", "f06"]
    names = [e.path for e in c.ls_job("up", commit=cid)]
    assert len(names) == 8 and "f02" not in names and "f06" not in names
    with pytest.raises(errors.FileNotFound):
        c.get_job_file("up", "f02", commit=cid)
    assert c.get_job_file("total", commit=cid).count(b"\n") == 8  # downstream sees the output without them
    assert "f06: failed after 1 attempt(s): HTTP 422" in c.job_log("up", cid)
    text = httpx.get(f"{srv.url}/run/{cid}").text
    assert "8/10 files mapped, 2 failed (skipped)" in text
    # the next run maps the two again (they may work now), and reuses the rest
    c.put_file("d/f02", b"fine\n")
    cid2, status2 = run_and_wait(c)
    up2 = jobs_of(status2)["up"]
    assert (up2.state, up2.done, up2.failed, up2.reused) == ("succeeded", 1, 1, 8), up2
    assert c.get_job_file("up", "f02", commit=cid2) == b"FINE\n"


def test_skip_failed_still_fails_when_every_file_failed(c: Client) -> None:
    put_inputs(c, 3, bad={0, 1, 2})
    c.put_job("up", pspec("map", "d", "failbody", "BAD", retries=0, skip_failed=True))
    cid, status = run_and_wait(c)
    up = jobs_of(status)["up"]
    assert up.state == "failed" and up.failed == 3 and "every file failed" in up.error
    with pytest.raises(errors.JobNotReady):
        c.ls_job("up", commit=cid)


def test_a_job_broken_as_a_whole_stops_early(c: Client) -> None:
    for i in range(200):
        c.put_file(f"d/{i:03d}", b"x")
    c.put_job("broken", pspec("map", "d", "fail500", retries=1, parallelism=2, inflight=2))
    t = time.monotonic()
    cid, status = run_and_wait(c)
    job = jobs_of(status)["broken"]
    assert job.state == "failed" and "the first 20 files all failed and none mapped" in job.error, job
    assert 20 <= job.failed < 40 and job.done == 0, job
    assert time.monotonic() - t < 60
    assert len(mapped_paths(c.job_log("broken", cid))) < 40
    # it recorded no tree: the next run maps from scratch (not from a run that stopped half way)
    c.put_job("broken", pspec("map", "d", "upper"))
    _, status = run_and_wait(c)
    assert jobs_of(status)["broken"].done == 200


def test_skip_failed_is_checked(srv: ServerProc, c: Client) -> None:
    c.put_file("d/x", b"1")
    for spec, words in [
        (pspec("map", "d", "upper", skip_failed="yes"), "skip_failed must be true or false"),
        (pspec("reduce", "d", "cat", skip_failed=True), "map jobs only"),
    ]:
        r = httpx.post(f"{srv.url}/job/j", json=spec)
        assert r.status_code == 400 and words in r.text, r.text
    assert c.jobs() == []


def test_files_that_kill_their_worker_fail_alone(c: Client) -> None:
    """Each crash costs a worker, which is replaced as often as it takes: worker starts are
    capped only when they fail in a row, so two deadly files do not stop the other 18."""
    for i in range(20):
        c.put_file(f"d/{'boom' if i in (5, 14) else 'ok'}{i:02d}", b"x\n")
    c.put_job("m", pspec("map", "d", "crashon", "boom", retries=1, parallelism=2, inflight=1))
    _, status = run_and_wait(c)
    m = jobs_of(status)["m"]
    assert m.state == "failed" and (m.done, m.failed) == (18, 2), m
    assert [f.path for f in m.failures] == ["boom05", "boom14"]
    assert all("exited with code 3" in f.error for f in m.failures)


def test_failed_files_are_kept_in_the_store_not_in_memory(tmp_path: Path) -> None:
    from pfs.jobs.execution import FAILURE_BATCH, _Failures, _LogTail
    from pfs.storage.meta import Failure, SqlMetaStore, sqlite_url

    meta = SqlMetaStore(sqlite_url(str(tmp_path)))
    try:
        f = _Failures(meta, "c" * 64, "j")
        peak = 0
        n = 5 * FAILURE_BATCH + 7
        for i in range(n):
            f.add(f"p{i:05d}", "reason\nover two lines", fresh=True)
            peak = max(peak, len(f.pending))
        f.flush()
        assert peak < FAILURE_BATCH and f.count == n and not f.pending
        rows = list(meta.iter_job_failures("c" * 64, "j", page=100))
        assert len(rows) == n and rows[0] == Failure("p00000", "reason over two lines")
        assert meta.job_failures("c" * 64, "j", 2, after="p00003") == [
            Failure(f"p{i:05d}", rows[0].error) for i in (4, 5)
        ]
    finally:
        meta.close()
    logs = _LogTail(1000)
    for i in range(1000):
        logs.append(f"--- worker {i}\n" + "x" * 100)
    assert len(logs.text()) <= 1000 and logs.size <= 1000 + 200 and "worker 999" in logs.text()


def test_a_database_from_before_failed_files_is_upgraded(tmp_path: Path) -> None:
    """job_runs of an older pfs lacks the columns for failed files: they are added at start."""
    import sqlite3

    from pfs.storage.meta import SqlMetaStore, sqlite_url

    url = sqlite_url(str(tmp_path))
    with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
        db.execute(
            'CREATE TABLE job_runs ("commit" VARCHAR(64), job VARCHAR(100), seq INTEGER NOT NULL, spec TEXT NOT NULL,'
            " state VARCHAR(16) NOT NULL, spec_key VARCHAR(64), input_tree VARCHAR(64), output_tree VARCHAR(64),"
            " total INTEGER DEFAULT 0 NOT NULL, done INTEGER DEFAULT 0 NOT NULL, reused INTEGER DEFAULT 0 NOT NULL,"
            ' started FLOAT, finished FLOAT, error TEXT, log TEXT, PRIMARY KEY ("commit", job))'
        )
        db.execute(
            'INSERT INTO job_runs ("commit", job, seq, spec, state, spec_key, output_tree, input_tree, finished)'
            " VALUES ('c1', 'j', 0, '{}', 'succeeded', 'k', 'out', 'in', 1.0)"
        )
        db.commit()
    meta = SqlMetaStore(url)
    try:
        base = meta.job_run_base("j", "k")
        assert base is not None and (base.failed, base.partial_tree, base.output_tree) == (0, None, "out")
    finally:
        meta.close()
    SqlMetaStore(url).close()  # and again: nothing left to add


def test_an_index_added_since_a_database_was_made_is_created_at_start(tmp_path: Path) -> None:
    """runs(created) came with the console's jobs page (the newest runs, a page of them):
    create_all adds missing tables, not missing indexes, so start adds it, to every repository."""
    import sqlite3

    from pfs.storage.meta import Database, sqlite_url

    url = sqlite_url(str(tmp_path))
    db = Database(url)
    db.create_repo("other")
    db.close()
    path = url.removeprefix("sqlite:///")
    names = "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE '%runs_created'"
    with contextlib.closing(sqlite3.connect(path)) as raw:
        assert sorted(r[0] for r in raw.execute(names)) == ["r1_runs_created", "runs_created"]
        for (name,) in raw.execute(names).fetchall():
            raw.execute(f"DROP INDEX {name}")
        raw.commit()
    Database(url).close()
    with contextlib.closing(sqlite3.connect(path)) as raw:
        assert sorted(r[0] for r in raw.execute(names)) == ["r1_runs_created", "runs_created"]


def test_what_a_job_prints_cannot_forge_lines_or_drive_a_terminal(c: Client, srv: ServerProc) -> None:
    """A worker's error answer and its log hold escape sequences, CR and line separators:
    plain-text answers keep one record per line and show them escaped; JSON keeps them."""
    c.put_file("e/a.txt", b"x")
    c.put_job("evil", pspec("map", "e", "evil", retries=0, parallelism=1))
    cid, status = run_and_wait(c)
    assert status.state == "failed"
    raw = jobs_of(status)["evil"].failures[0].error
    assert "\x1b" in raw or "pwned" in raw  # the JSON keeps what the job said (one-lined by pfs)
    for route in (f"/run/{cid}", f"/job/evil/log?commit={cid}", "/job/evil/runs"):
        text = httpx.get(srv.url + route, headers={"accept": "text/plain"}).text
        assert "\x1b" not in text and "\r" not in text and "\x07" not in text and "\u2028" not in text, route
        if "/log" not in route:  # a log is the job's own lines; records are pfs's, one per line
            assert not any(line.startswith("2026-01-01 forged") for line in text.splitlines()), route
