"""Map/reduce end to end through a real pfs server and the real Docker Engine: the test job
server (tests/jobimage) runs in containers built FROM the locally built base image."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServerProc
from jobenv import docker_command, job_image_fixture  # noqa: F401

from pfs import Client, errors
from pfs.client import JobRun, Run


def dspec(image: str, kind: str, input: str, mode: str, *args: str, **kw: Any) -> dict[str, Any]:
    return {"type": kind, "input": input, "image": image, "command": docker_command(mode, *args), **kw}


def containers(label: str, all: bool = True) -> list[dict[str, Any]]:
    ids = subprocess.run(
        ["docker", "ps", "-q", *(["-a"] if all else []), "--filter", f"label={label}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not ids:
        return []
    out = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=False).stdout
    return list(json.loads(out or "[]"))


def instance_of(srv: ServerProc) -> str:
    return (srv.data_dir / "instance").read_text().strip()


def eventually(check: Any, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture
def srv(tmp_path: Path, job_image: str) -> Iterator[ServerProc]:
    # No PFS_JOB_RUNTIME: with an engine answering, docker is the default.
    s = ServerProc(tmp_path / "data").start()
    try:
        yield s
    finally:
        s.stop()
        if (s.data_dir / "instance").exists():
            left = [c["Id"] for c in containers(f"pfs.instance={instance_of(s)}")]
            if left:
                subprocess.run(["docker", "rm", "-f", *left], capture_output=True, check=False)


@pytest.fixture
def c(srv: ServerProc) -> Iterator[Client]:
    with Client(srv.url) as client:
        yield client


def jobs_of(status: Run) -> dict[str, JobRun]:
    return {j.job: j for j in status.jobs}


def test_map_reduce_in_containers_leaves_nothing_behind(c: Client, srv: ServerProc, job_image: str) -> None:
    for i in range(12):
        c.put_file(f"logs/day{i:02d}.txt", f"line one {i}\nline two\n".encode())
    c.put_job("wc", dspec(job_image, "map", "logs", "wc", parallelism=3, inflight=2))
    c.put_job("sum", dspec(job_image, "reduce", "job/wc", "wc"))
    seen: list[dict[str, Any]] = []

    def watch() -> None:
        seen.extend(containers(f"pfs.instance={instance_of(srv)}", all=False))

    cid = c.commit(run=True).id
    deadline = time.monotonic() + 120
    status = c.run_status(cid)
    while status.state not in ("succeeded", "failed") and time.monotonic() < deadline:
        watch()
        status = c.run_status(cid, wait=0.3)
    assert status.state == "succeeded", status
    assert [j.job for j in status.jobs] == ["wc", "sum"]
    assert c.get_job_file("wc", "day03.txt", commit=cid) == b"day03.txt 2 5 20\n"
    assert c.get_job_file("sum", commit=cid) == f"{12 * 2} {12 * 5} {12 * 20 + 2}\n".encode()
    # the containers that ran were pfs's, bounded and on the isolated jobs network; none is left
    assert seen, "no job container was ever seen running"
    for info in seen:
        labels = info["Config"]["Labels"]
        assert labels["pfs"] == "1" and labels["pfs.run"] == cid and labels["pfs.job"] in ("wc", "sum")
        hc = info["HostConfig"]
        assert hc["Memory"] > 0 and hc["PidsLimit"] > 0 and hc["NanoCpus"] > 0
        assert not hc.get("PortBindings") and hc["NetworkMode"] == "pfs-jobs"  # reached only by pfs
        assert info["Config"]["User"] == "65534:65534" and not info["Mounts"]
    assert eventually(lambda: containers(f"pfs.instance={instance_of(srv)}") == [], 10)


def test_crashing_container_fails_the_job_with_its_log(c: Client, srv: ServerProc, job_image: str) -> None:
    c.put_file("d/ok", b"fine\n")
    c.put_file("d/boom", b"fatal\n")
    c.put_job("m", dspec(job_image, "map", "d", "crashon", "boom", retries=1, parallelism=1))
    c.put_job("r", dspec(job_image, "reduce", "job/m", "cat"))
    cid = c.commit(run=True).id
    status = c.wait_run(cid, timeout=120)
    assert status.state == "failed"
    jobs = jobs_of(status)
    assert jobs["m"].state == "failed" and "exited with code 3" in jobs["m"].error
    assert jobs["r"].state == "skipped"
    log = c.job_log("m", cid)
    assert "crashing on POST /map/boom" in log  # the container's own stderr
    with pytest.raises(errors.JobNotReady):
        c.get_job_file("m", "ok", commit=cid)
    assert eventually(lambda: containers(f"pfs.instance={instance_of(srv)}") == [], 10)


def test_unknown_image_is_refused_when_stored(c: Client, srv: ServerProc) -> None:
    c.put_file("d/x", b"1")
    r = httpx.post(f"{srv.url}/job/m", json=dspec("pfs-no-such-image:local", "map", "d", "upper"))
    assert r.status_code == 400 and "not found locally" in r.text
    assert c.jobs() == []


def _slow_run(c: Client, srv: ServerProc, image: str) -> str:
    for i in range(6):
        c.put_file(f"d/{i}", f"v{i}".encode())
    c.put_job("slow", dspec(image, "map", "d", "slow", "1", parallelism=2, inflight=1))
    cid = c.commit(run=True).id
    assert eventually(lambda: len(containers(f"pfs.instance={instance_of(srv)}", all=False)) == 2, 60)
    return str(cid)


def test_kill9_leaves_containers_that_the_next_start_removes(c: Client, srv: ServerProc, job_image: str) -> None:
    cid = _slow_run(c, srv, job_image)
    inst = instance_of(srv)
    before = {x["Id"] for x in containers(f"pfs.instance={inst}")}
    srv.kill9()
    assert {x["Id"] for x in containers(f"pfs.instance={inst}")} == before  # nobody cleaned up
    srv.start()
    assert eventually(lambda: not before & {x["Id"] for x in containers(f"pfs.instance={inst}")}, 30)
    with Client(srv.url) as c2:
        status = c2.wait_run(cid, timeout=120)
        assert status.state == "succeeded", status
        assert c2.get_job_file("slow", "4", commit=cid) == b"V4"
    assert eventually(lambda: containers(f"pfs.instance={inst}") == [], 10)


def test_sigterm_stops_containers_at_once_and_the_run_resumes(c: Client, srv: ServerProc, job_image: str) -> None:
    cid = _slow_run(c, srv, job_image)
    inst = instance_of(srv)
    assert srv.proc is not None
    t = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    srv.proc.wait(timeout=30)
    assert time.monotonic() - t < 15
    assert containers(f"pfs.instance={inst}") == []  # removed before pfs exited
    assert "interrupted by shutdown; queued to resume" in srv.log()
    srv.start()
    with Client(srv.url) as c2:
        status = c2.wait_run(cid, timeout=120)
        assert status.state == "succeeded", status
        assert c2.get_job_file("slow", "0", commit=cid) == b"V0"
