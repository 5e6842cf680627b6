"""Map/reduce end to end through a real pfs server, with job servers run by the `process`
runtime (the same stdlib job server the Docker tests put in an image)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from conftest import ServerProc, tar_of

from pfs import Client, errors
from pfs.client import JobRun, Run

JOBSERVER = str(Path(__file__).parent / "jobimage" / "jobserver.py")


def pspec(kind: str, input: str, mode: str, *args: str, **kw: Any) -> dict[str, Any]:
    """A spec for the process runtime running the test job server in `mode`."""
    return {
        "type": kind,
        "input": input,
        "runtime": "process",
        "command": [sys.executable, JOBSERVER, mode, *args],
        "start_timeout": 20,
        **kw,
    }


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path / "data", env={"PFS_JOB_RUNTIME": "process"}).start()
    yield s
    s.stop()


@pytest.fixture
def c(srv: ServerProc) -> Iterator[Client]:
    with Client(srv.url) as client:
        yield client


def run_and_wait(c: Client, timeout: float = 120) -> tuple[str, Run]:
    cid = c.commit(run=True).id
    status = c.wait_run(cid, timeout=timeout)
    assert status.state in ("succeeded", "failed"), status
    return cid, status


def jobs_of(status: Run) -> dict[str, JobRun]:
    return {j.job: j for j in status.jobs}


def workers_alive() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any(part == JOBSERVER for part in cmd):
            out.append(p)
    return out


def test_map_then_reduce_versioned_by_input_commit(c: Client) -> None:
    c.put_file("data/a.txt", b"alpha\n")
    c.put_file("data/sub/b.txt", b"beta gamma\n")
    c.put_file("other/x.txt", b"not an input\n")
    c.put_job("up", pspec("map", "data", "upper"))
    c.put_job("total", pspec("reduce", "job/up", "cat"))
    cid, status = run_and_wait(c)
    assert status.state == "succeeded", status
    assert [j.job for j in status.jobs] == ["up", "total"]  # DAG order
    assert jobs_of(status)["up"].done == 2
    assert c.get_job_file("up", "a.txt", commit=cid) == b"ALPHA\n"
    assert c.get_job_file("up", "sub/b.txt", commit=cid[:12]) == b"BETA GAMMA\n"
    assert [e.path for e in c.ls_job("up", commit=cid)] == ["a.txt", "sub"]
    # reduce: the concatenation of its input files in path order, as one output file
    assert c.get_job_file("total", commit=cid) == b"ALPHA\nBETA GAMMA\n"
    # a later commit changes the output of that commit, never the old one's
    c.put_file("data/a.txt", b"changed\n")
    cid2, status2 = run_and_wait(c)
    assert status2.state == "succeeded"
    assert c.get_job_file("up", "a.txt", commit=cid2) == b"CHANGED\n"
    assert c.get_job_file("up", "a.txt", commit=cid) == b"ALPHA\n"
    assert c.get_job_file("up", "a.txt") == b"CHANGED\n"  # default: master's head
    # plain curl-style reads work too
    r = httpx.get(f"{c.url}/job/total/file?commit={cid2}")
    assert r.status_code == 200 and r.content == b"CHANGED\nBETA GAMMA\n"
    r = httpx.get(f"{c.url}/job/up/file/*?commit={cid2}")
    assert r.content == b"CHANGED\n"  # the files directly in the directory, concatenated


def test_commit_run_returns_at_once_and_reports_progress(c: Client) -> None:
    for i in range(6):
        c.put_file(f"in/{i}", b"x")
    c.put_job("slow", pspec("map", "in", "slow", "0.5", parallelism=1, inflight=1))
    t = time.monotonic()
    cid = c.commit(run=True).id
    assert time.monotonic() - t < 2.0
    with pytest.raises(errors.JobNotReady):
        c.get_job_file("slow", "0", commit=cid)
    seen = []
    status = c.wait_run(cid, timeout=60, on_status=lambda s: seen.append(jobs_of(s)["slow"].done))
    assert status.state == "succeeded"
    assert jobs_of(status)["slow"].done == 6
    assert seen[-1] == 6


def test_incremental_maps_only_what_changed(c: Client) -> None:
    for i in range(40):
        c.put_file(f"d/f{i:02d}", f"file {i}\n".encode())
    c.put_job("up", pspec("map", "d", "upper"))
    _, s1 = run_and_wait(c)
    j1 = jobs_of(s1)["up"]
    assert (j1.total, j1.done, j1.reused) == (40, 40, 0)

    c.put_file("d/f07", b"edited\n")
    c.put_file("d/new", b"new\n")
    c.delete_file("d/f08")
    cid2, s2 = run_and_wait(c)
    j2 = jobs_of(s2)["up"]
    assert (j2.total, j2.done, j2.reused) == (40, 2, 38)
    names = [e.path for e in c.ls_job("up", commit=cid2)]
    assert "f08" not in names and "new" in names and len(names) == 40
    assert c.get_job_file("up", "f07", commit=cid2) == b"EDITED\n"
    assert c.get_job_file("up", "f09", commit=cid2) == b"FILE 9\n"

    c.put_file("elsewhere", b"input of no job")
    _, s3 = run_and_wait(c)
    assert jobs_of(s3)["up"].state == "reused" and jobs_of(s3)["up"].done == 0

    # a new spec (another command) maps everything again
    c.put_job("up", pspec("map", "d", "cat"))
    cid4, s4 = run_and_wait(c)
    assert jobs_of(s4)["up"].done == 40
    assert c.get_job_file("up", "f07", commit=cid4) == b"edited\n"


def test_failed_job_has_no_output_and_stops_downstream(c: Client) -> None:
    c.put_file("d/good", b"ok\n")
    c.put_file("d/bad", b"no\n")
    c.put_job("m", pspec("map", "d", "failon", "bad", retries=1))
    c.put_job("r", pspec("reduce", "job/m", "cat"))
    cid, status = run_and_wait(c)
    assert status.state == "failed"
    jobs = jobs_of(status)
    assert jobs["m"].state == "failed"
    assert "HTTP 500" in jobs["m"].error and "bad" in jobs["m"].error
    assert jobs["r"].state == "skipped" and "'m' failed" in jobs["r"].error
    with pytest.raises(errors.JobNotReady, match="failed"):
        c.get_job_file("m", "good", commit=cid)  # even the files that did map
    with pytest.raises(errors.JobNotReady):
        c.get_job_file("r", commit=cid)
    log = c.job_log("m", cid)
    assert "HTTP 500" in log and "/map/bad" in log  # the error and the worker's own log lines
    assert not workers_alive()


def test_jobs_that_read_no_other_job_run_together(c: Client, tmp_path: Path) -> None:
    """Two maps of one run each answer only once the other has started: they must run at
    the same time (one after the other, the first would give up after 20 s and fail). Their
    reduce waits for its own upstream only."""
    a, b = tmp_path / "a-started", tmp_path / "b-started"
    c.put_file("d/x", b"hi\n")
    c.put_job("a", pspec("map", "d", "meet", f"{a}:{b}", timeout=60, retries=1))
    c.put_job("b", pspec("map", "d", "meet", f"{b}:{a}", timeout=60, retries=1))
    c.put_job("r", pspec("reduce", "job/a", "cat"))
    cid, status = run_and_wait(c)
    assert status.state == "succeeded", status
    assert c.get_job_file("a", "x", commit=cid) == b"HI\n" and c.get_job_file("b", "x", commit=cid) == b"HI\n"
    jobs = jobs_of(status)
    assert jobs["a"].started is not None and jobs["b"].started is not None
    assert jobs["r"].started is not None and jobs["a"].finished is not None
    assert jobs["r"].started >= jobs["a"].finished  # after its upstream, not before


def test_jobs_at_once_1_runs_the_jobs_of_a_run_one_after_the_other(tmp_path: Path) -> None:
    srv = ServerProc(tmp_path / "data", env={"PFS_JOB_RUNTIME": "process", "PFS_JOBS_AT_ONCE": "1"}).start()
    try:
        with Client(srv.url) as c:
            c.put_file("d/x", b"hi\n")
            for name in ("a", "b"):
                c.put_job(name, pspec("map", "d", "slow", "0.3"))
            cid, status = run_and_wait(c)
            assert status.state == "succeeded", status
            first, second = sorted(status.jobs, key=lambda j: j.started or "")
            assert first.finished is not None and second.started is not None
            assert second.started >= first.finished
    finally:
        srv.stop()


def test_old_runs_are_pruned_but_heads_and_the_incremental_base_stay(c: Client, srv: ServerProc) -> None:
    c.put_file("d/x", b"one\n")
    c.put_job("m", pspec("map", "d", "upper"))
    cids = []
    for i in range(3):
        c.put_file(f"d/f{i}", f"file {i}\n".encode())
        cid, status = run_and_wait(c)
        assert status.state == "succeeded"
        cids.append(cid)
    c.create_branch("old", cids[0])  # a branch head keeps its run
    for bad in ({}, {"older_than": "soon"}, {"older_than": ""}):
        r = httpx.delete(f"{srv.url}/run", params=bad)
        assert r.status_code == 400, (bad, r.text)
    assert c.prune_runs("1h") == 0  # nothing ended that long ago
    assert c.prune_runs("0") == 1  # the middle run: neither a head nor the newest base
    assert {r.commit for r in c.runs()} == {cids[0], cids[2]}
    with pytest.raises(errors.RunNotFound):
        c.get_job_file("m", "x", commit=cids[1])
    assert c.get_job_file("m", "x", commit=cids[0]) == b"ONE\n"
    # the next run still builds on the newest one: only the new file is mapped
    c.put_file("d/new", b"new\n")
    _, status = run_and_wait(c)
    assert status.job("m").reused == 4 and status.job("m").done == 1, status
    res = subprocess.run(
        [sys.executable, "-m", "pfs.cli", "--url", srv.url, "job", "prune", "--older-than", "0"],
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 0 and res.stdout == b"Dropped 1 run(s).\n", res  # cids[2]: no longer the base


def test_crashing_worker_is_replaced_then_the_job_fails(c: Client) -> None:
    c.put_file("d/x", b"1")
    c.put_job("crash", pspec("map", "d", "crash", retries=2))
    _, status = run_and_wait(c)
    job = jobs_of(status)["crash"]
    assert job.state == "failed" and "failed after 3 attempt(s)" in job.error
    assert "exited with code 3" in job.error or "exited with code 3" in c.job_log("crash")


def test_flaky_worker_succeeds_within_retries(c: Client) -> None:
    c.put_file("d/x", b"hi")
    c.put_job("flaky", pspec("map", "d", "flaky", "2", retries=3, parallelism=1, inflight=1))
    cid, status = run_and_wait(c)
    assert status.state == "succeeded"
    assert c.get_job_file("flaky", "x", commit=cid) == b"HI"


def test_hanging_worker_times_out(c: Client) -> None:
    c.put_file("d/x", b"1")
    c.put_job("hang", pspec("map", "d", "hang", timeout=1, retries=1))
    _, status = run_and_wait(c)
    job = jobs_of(status)["hang"]
    assert job.state == "failed" and "no answer within 1 s" in job.error
    assert not workers_alive()


@pytest.mark.parametrize("mode, words", [("noserve", "did not"), ("exit", "boom")])
def test_worker_that_never_starts_fails_the_job(c: Client, mode: str, words: str) -> None:
    c.put_file("d/x", b"1")
    c.put_job("bad", pspec("map", "d", mode, start_timeout=1.5, retries=1))
    _, status = run_and_wait(c)
    job = jobs_of(status)["bad"]
    assert job.state == "failed"
    assert words in (job.error + c.job_log("bad")).lower() or words in c.job_log("bad")
    assert not workers_alive()


def test_map_streams_a_large_file_and_output(c: Client) -> None:
    big = os.urandom(1 << 20) * 24  # 24 MiB, several chunks each way
    c.put_file("big/blob", big)
    c.put_job("copy", pspec("map", "big", "cat"))
    cid, status = run_and_wait(c)
    assert status.state == "succeeded"
    assert c.get_job_file("copy", "blob", commit=cid) == big


def test_missing_input_directory_at_run_time_gives_empty_output(c: Client) -> None:
    c.put_file("d/x", b"1")
    c.put_job("m", pspec("map", "d", "upper"))
    c.delete_file("d", recursive=True)
    c.put_file("keep", b"so the commit is not empty")
    cid, status = run_and_wait(c)
    assert status.state == "succeeded"
    assert c.ls_job("m", commit=cid) == []


def test_job_routes_and_errors(c: Client, srv: ServerProc) -> None:
    c.put_file("d/x", b"1")
    u = srv.url
    assert httpx.post(f"{u}/job/j", content=b"{oops").status_code == 400
    r = httpx.post(f"{u}/job/j", json={"type": "sort", "input": "d", "command": ["c"], "runtime": "process"})
    assert r.status_code == 400 and "type" in r.text
    r = httpx.post(f"{u}/job/j", json=pspec("map", "nowhere", "upper"))
    assert r.status_code == 400 and "does not exist" in r.text
    r = httpx.post(f"{u}/job/j", json=pspec("map", "d/x", "upper"))
    assert r.status_code == 400 and "is a file" in r.text
    r = httpx.post(f"{u}/job/j", json=pspec("reduce", "job/ghost", "cat"))
    assert r.status_code == 400 and "does not exist" in r.text
    r = httpx.post(f"{u}/job/j", content=b"{" + b" " * (1 << 20) + b"}")
    assert r.status_code == 413
    assert httpx.post(f"{u}/job/..", json=pspec("map", "d", "upper")).status_code in (400, 404)
    assert httpx.post(f"{u}/job/a%00b", json=pspec("map", "d", "upper")).status_code == 400
    assert c.jobs() == []  # none of that stored anything

    assert httpx.post(f"{u}/job/a", json=pspec("map", "d", "upper")).status_code == 201
    assert httpx.post(f"{u}/job/a", json=pspec("map", "d", "cat")).status_code == 200  # replaced
    assert httpx.post(f"{u}/job/b", json=pspec("map", "job/a", "cat")).status_code == 201
    r = httpx.post(f"{u}/job/a", json=pspec("map", "job/b", "cat"))  # would close a cycle
    assert r.status_code == 400 and "cycle" in r.text
    assert c.get_job("a").command[-1] == "cat"
    assert [j.name for j in c.jobs()] == ["a", "b"]
    assert "a    map    d" in httpx.get(f"{u}/job").text
    with pytest.raises(errors.Conflict, match="input of b"):
        c.delete_job("a")
    with pytest.raises(errors.JobNotFound):
        c.get_job("ghost")
    with pytest.raises(errors.JobNotFound):
        c.delete_job("ghost")
    cid = c.commit().id  # no ?run
    with pytest.raises(errors.RunNotFound):
        c.get_job_file("a", "x", commit=cid)
    with pytest.raises(errors.RunNotFound):
        c.run_status(cid)
    with pytest.raises(errors.CommitNotFound):
        c.get_job_file("a", "x", commit="0" * 64)
    with pytest.raises(errors.JobNotFound):
        c.get_job_file("ghost", "x", commit=cid)
    assert httpx.get(f"{u}/run/{cid}?wait=soon").status_code in (400, 404)
    c.put_file("d/y", b"2")
    ran = c.commit(run=True).id
    for bad in ("soon", "-1", "nan", "inf"):
        r = httpx.get(f"{u}/run/{ran}?wait={bad}")
        assert r.status_code == 400 and "wait must be" in r.text, bad
    assert httpx.get(f"{u}/run/{ran}?wait=1e9").status_code == 200  # capped, and the run is short
    c.delete_job("b")
    c.delete_job("a")
    assert c.jobs() == []


def test_runs_are_listed_per_job(c: Client, srv: ServerProc) -> None:
    c.put_file("d/x", b"1")
    c.put_job("m", pspec("map", "d", "upper"))
    cid1, _ = run_and_wait(c)
    c.put_file("d/y", b"2")
    cid2, _ = run_and_wait(c)
    assert [r.commit for r in c.job_runs("m")] == [cid2, cid1]
    assert [r.commit for r in c.runs()][:2] == [cid2, cid1]
    text = httpx.get(f"{srv.url}/run/{cid2}").text
    assert text.startswith(f"run {cid2} on master: succeeded") and "m    map    succeeded" in text
    # The JSON answers, field by field, in order: what clients (pfs.client's records) read.
    js = {"accept": "application/json"}
    run = httpx.get(f"{srv.url}/run/{cid2}", headers=js).json()
    run_fields = ["commit", "branch", "state", "error", "created", "started", "finished"]
    job_fields = ["commit", "job", "state", "total", "done", "reused", "failed", "error", "output_tree", "type"]
    job_fields += ["input", "image", "pinned_image", "skip_failed", "failures", "started", "finished"]
    job_fields += ["seconds", "progress"]
    assert list(run) == [*run_fields, "jobs"] and list(run["jobs"][0]) == job_fields
    assert (run["state"], run["jobs"][0]["state"], run["jobs"][0]["progress"]) == (
        "succeeded",
        "succeeded",
        "1/1 files mapped, 1 reused",
    )
    assert list(httpx.get(f"{srv.url}/run", headers=js).json()[0]) == run_fields
    assert list(httpx.get(f"{srv.url}/job/m/runs", headers=js).json()[0]) == job_fields
    status = c.run_status(cid2)
    assert (status.state, status.job("m").progress, status.job("m").failures) == (
        "succeeded",
        run["jobs"][0]["progress"],
        (),
    )
    spec = httpx.get(f"{srv.url}/job/m", headers=js).json()
    assert list(spec) == ["name", *sorted(k for k in spec if k != "name")]  # as stored: keys sorted
    assert c.get_job("m").spec() == {k: v for k, v in spec.items() if k != "name"}


def test_kill9_during_a_run_resumes_and_leaves_no_workers(tmp_path: Path) -> None:
    srv = ServerProc(tmp_path / "data", env={"PFS_JOB_RUNTIME": "process"}).start()
    try:
        with Client(srv.url) as c:
            for i in range(8):
                c.put_file(f"d/{i}", f"{i}".encode())
            c.put_job("slow", pspec("map", "d", "slow", "0.5", parallelism=2, inflight=1))
            cid = c.commit(run=True).id
            deadline = time.monotonic() + 30
            while not workers_alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert workers_alive()
        srv.kill9()
        srv.start()
        with Client(srv.url) as c:
            status = c.wait_run(cid, timeout=60)
            assert status.state == "succeeded", status
            assert c.get_job_file("slow", "3", commit=cid) == b"3"
        # the restarted node reaped the killed one's workers; the new ones were stopped
        deadline = time.monotonic() + 10
        while workers_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not workers_alive()
    finally:
        srv.stop()


def test_a_stop_interrupts_every_job_running_together_and_the_run_resumes(tmp_path: Path) -> None:
    """SIGTERM while two jobs of one run work side by side: both are interrupted, their
    workers stopped, the run queued again; the next start finishes both."""
    srv = ServerProc(tmp_path / "data", env={"PFS_JOB_RUNTIME": "process"}).start()
    try:
        with Client(srv.url) as c:
            for i in range(6):
                c.put_file(f"d/{i}", f"{i}".encode())
            for name in ("a", "b"):
                c.put_job(name, pspec("map", "d", "slow", "0.5", parallelism=1, inflight=1))
            cid = c.commit(run=True).id
            deadline = time.monotonic() + 30
            while len(workers_alive()) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert len(workers_alive()) == 2, "the two jobs did not run together"
            assert {j.state for j in c.run_status(cid).jobs} == {"running"}
        srv.stop()  # SIGTERM: both jobs interrupted, the run queued to resume
        assert not workers_alive()
        srv.start()
        with Client(srv.url) as c:
            status = c.wait_run(cid, timeout=60)
            assert status.state == "succeeded", status
            assert [c.get_job_file(n, "5", commit=cid) for n in ("a", "b")] == [b"5", b"5"]
    finally:
        srv.stop()
    assert not workers_alive()


def test_cli_job_verbs(srv: ServerProc, tmp_path: Path) -> None:
    def pfs(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "pfs.cli", "--url", srv.url, *args], input=input, capture_output=True, timeout=120
        )

    import orjson

    assert pfs("put", "-", "data/a", input=b"hello\n").returncode == 0
    spec = tmp_path / "up.json"
    spec.write_bytes(orjson.dumps(pspec("map", "data", "upper")))
    assert pfs("job", "put", "up", str(spec)).returncode == 0
    assert b"up" in pfs("job", "ls").stdout
    assert b'"type": "map"' in pfs("job", "get", "up").stdout
    cid = pfs("commit", "--run").stdout.decode().strip()
    assert len(cid) == 64
    w = pfs("job", "wait", cid)
    assert w.returncode == 0 and b"succeeded" in w.stdout
    assert pfs("job", "cat", "up", "a", "-c", cid).stdout == b"HELLO\n"
    assert b"succeeded" in pfs("job", "status", cid).stdout
    assert cid[:12].encode() in pfs("job", "runs", "up").stdout
    assert pfs("job", "log", "up", "-c", cid).returncode == 0
    bad = pfs("job", "cat", "ghost")
    assert bad.returncode == 1 and b"not found" in bad.stderr and b"Traceback" not in bad.stderr
    assert pfs("job", "rm", "up").returncode == 0
    assert pfs("job", "ls").stdout == b""


def test_changing_1_of_10000_files_maps_1(c: Client, tmp_path: Path) -> None:
    c.put_tar("big", tar_of((f"d{i % 10}/f{i:05d}", f"{i}\n".encode()) for i in range(10_000)))
    c.put_job("cp", pspec("map", "big", "cat", parallelism=4, inflight=8))
    _, s1 = run_and_wait(c, timeout=300)
    assert s1.state == "succeeded", s1
    assert (jobs_of(s1)["cp"].done, jobs_of(s1)["cp"].total) == (10_000, 10_000)
    c.put_file("big/d7/f00017", b"changed\n")
    cid2, s2 = run_and_wait(c, timeout=120)
    j2 = jobs_of(s2)["cp"]
    assert (j2.state, j2.done, j2.reused, j2.total) == ("succeeded", 1, 9_999, 10_000)
    assert c.get_job_file("cp", "d7/f00017", commit=cid2) == b"changed\n"
    assert c.get_job_file("cp", "d3/f09993", commit=cid2) == b"9993\n"


def test_s3_input_through_a_job(tmp_path: Path) -> None:
    from seaweed import running_seaweed

    with running_seaweed(tmp_path / "weed") as weed:
        bucket = weed.new_bucket("in")
        s3 = weed.client()
        for key, body in {"raw/a.txt": b"alpha\n", "raw/sub/b.txt": b"beta\n", "other/x": b"not input\n"}.items():
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        allowed = f"{bucket}/raw,{bucket}-missing"  # the operator's choice of what jobs may read
        env = {"PFS_JOB_RUNTIME": "process", "PFS_JOB_S3_INPUTS": allowed, **weed.env()}
        srv = ServerProc(tmp_path / "data", env=env).start()
        try:
            with Client(srv.url) as c:
                r = httpx.post(f"{srv.url}/job/bad", json=pspec("map", f"s3://{bucket}-missing/raw", "upper"))
                assert r.status_code == 400 and "does not exist" in r.text.lower()
                c.put_job("up", pspec("map", f"s3://{bucket}/raw", "upper"))
                c.put_file("trigger", b"1")
                cid, status = run_and_wait(c)
                assert status.state == "succeeded", status
                assert [e.path for e in c.ls_job("up", commit=cid)] == ["a.txt", "sub"]
                assert c.get_job_file("up", "sub/b.txt", commit=cid) == b"BETA\n"
                # a replaced object is mapped again, the rest reused
                s3.put_object(Bucket=bucket, Key="raw/a.txt", Body=b"alpha two\n")
                c.put_file("trigger", b"2")
                cid2, status2 = run_and_wait(c)
                up = jobs_of(status2)["up"]
                assert (up.done, up.reused) == (1, 1), up
                assert c.get_job_file("up", "a.txt", commit=cid2) == b"ALPHA TWO\n"
                assert c.get_job_file("up", "a.txt", commit=cid) == b"ALPHA\n"  # the old run's output stays
                for text in (c.job_log("up", cid2), str(c.run_status(cid2)), str(c.get_job("up"))):
                    assert weed.secret_key not in text
            assert weed.secret_key not in srv.log()
        finally:
            srv.stop()


def test_incremental_run_when_a_directory_becomes_a_file_and_back(c: Client) -> None:
    c.put_file("d/sub/f", b"in a dir\n")
    c.put_file("d/g", b"g\n")
    c.put_job("up", pspec("map", "d", "upper"))
    run_and_wait(c)
    c.delete_file("d/sub", recursive=True)
    c.put_file("d/sub", b"now a file\n")
    cid, status = run_and_wait(c)
    assert status.state == "succeeded", status
    assert c.get_job_file("up", "sub", commit=cid) == b"NOW A FILE\n"
    c.delete_file("d/sub")
    c.put_file("d/sub/f", b"a dir again\n")
    cid, status = run_and_wait(c)
    assert status.state == "succeeded", status
    assert [e.path for e in c.ls_job("up", "sub", commit=cid)] == ["sub/f"]
    assert c.get_job_file("up", "sub/f", commit=cid) == b"A DIR AGAIN\n"
    assert jobs_of(status)["up"].done == 1
