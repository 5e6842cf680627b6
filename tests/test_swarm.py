"""The swarm job runtime against a real one-node Docker Swarm (made by scripts/swarm-setup.sh
when the engine is not a swarm manager yet): each worker is a service, and it must behave
like the docker runtime (tests/test_runtime.py), then run a map job for a real pfs server.

A swarm that cannot be made to work fails these tests; they are never skipped."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServerProc
from jobenv import ROOT, docker_command, job_image_fixture  # noqa: F401
from test_runtime import Env, MiB, docker_ids, docker_inspect, eventually

from pfs import Client
from pfs.errors import BadRequest, JobError, Unavailable
from pfs.jobs.runtime import make_runtime
from pfs.jobs.runtime.swarm import SwarmRuntime, SwarmWorker

SETUP_SCRIPT = ROOT / "scripts" / "swarm-setup.sh"


def _swarm_state() -> tuple[str, str]:
    out = subprocess.run(
        ["docker", "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    state, _, manager = out.stdout.strip().partition(" ")
    return state, manager


def ensure_swarm() -> None:
    """This engine as a swarm manager, made so by scripts/swarm-setup.sh if need be; raises if impossible."""
    if _swarm_state() == ("active", "true"):
        return
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise RuntimeError(f"the engine is not a swarm manager and setting it up needs root: sudo bash {SETUP_SCRIPT}")
    proc = subprocess.run(["bash", str(SETUP_SCRIPT)], capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0 or _swarm_state() != ("active", "true"):
        raise RuntimeError(f"{SETUP_SCRIPT} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}")


@pytest.fixture(scope="session")
def swarm_image(job_image: str) -> str:
    """The test job image on an engine that is a swarm manager."""
    ensure_swarm()
    return job_image


def service_ids(label: str) -> list[str]:
    out = subprocess.run(
        ["docker", "service", "ls", "-q", "--filter", f"label={label}"], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def service_inspect(sid: str) -> dict[str, Any]:
    out = subprocess.run(["docker", "service", "inspect", sid], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout)[0])


@dataclass
class SwarmEnv(Env):
    """test_runtime's Env for the swarm runtime: leftovers are services, and cleanup removes them."""

    def command(self, mode: str, *args: str) -> list[str]:
        return docker_command(mode, *args)

    def leftovers(self, instance: str | None = None) -> list[Any]:
        """The instance's services, and any container of theirs still there."""
        label = f"pfs.instance={instance or self.instance}"
        return service_ids(label) + docker_ids(label)

    def cleanup(self) -> None:
        for rt in self.runtimes:
            rt.close()
        for instance in self.instances:
            ids = service_ids(f"pfs.instance={instance}")
            if ids:
                subprocess.run(["docker", "service", "rm", *ids], capture_output=True, check=False)
            label = f"pfs.instance={instance}"
            eventually(lambda: docker_ids(label) == [], 20)  # noqa: B023 (called at once)


@pytest.fixture
def senv(tmp_path: Path, swarm_image: str) -> Iterator[SwarmEnv]:
    e = SwarmEnv("swarm", tmp_path, swarm_image)
    try:
        yield e
    finally:
        e.cleanup()


def gone(run: str) -> bool:
    """No service and no container left of a run's workers."""
    return service_ids(f"pfs.run={run}") == [] and docker_ids(f"pfs.run={run}") == []


# ---- the runtime -----------------------------------------------------------------------


def test_start_and_round_trip(senv: SwarmEnv) -> None:
    rt = senv.runtime()
    w = rt.start(senv.spec("upper"))
    assert w.url.startswith("http://172.") and w.url.endswith(":80")  # the local bridge: nothing published
    assert w.alive() and w.exit_reason() is None
    r = httpx.post(w.url + "/map/dir/a%20b.txt", content=b"hello world\n")
    assert r.status_code == 200 and r.content == b"HELLO WORLD\n"
    r = httpx.post(w.url + "/reduce", content=b"as is\n")
    assert r.status_code == 200 and r.content == b"as is\n"
    pieces = [b"one two", b" three\n", b"x" * 300_000]  # chunked, streamed in pieces
    r = httpx.post(w.url + "/map/big", content=iter(pieces))
    assert r.status_code == 200 and r.content == b"".join(pieces).upper()
    assert eventually(lambda: "POST /map/dir/a%20b.txt" in w.logs())
    assert "GET /" in w.logs()  # the readiness probe
    assert len(w.logs(20)) <= 20
    w.stop()
    assert "POST /map/big" in w.logs()  # kept after the service is gone


def test_crash_is_seen_with_its_exit_code(senv: SwarmEnv) -> None:
    w = senv.runtime().start(senv.spec("crash"))
    with pytest.raises(httpx.TransportError):
        httpx.post(w.url + "/map/x", content=b"x", timeout=10)
    assert eventually(lambda: not w.alive())
    reason = w.exit_reason()
    assert reason is not None and "exited with code 3" in reason
    assert eventually(lambda: "crashing on POST /map/x" in w.logs())
    w.stop()
    assert w.exit_reason() == reason  # stop() keeps the verdict
    assert senv.leftovers() == []


@pytest.mark.parametrize(("mode", "words"), [("exit", ["boom", "exited with code 2"]), ("noserve", ["did not answer"])])
def test_worker_that_never_serves_fails_to_start(senv: SwarmEnv, mode: str, words: list[str]) -> None:
    rt = senv.runtime()
    spec = senv.spec(mode, start_timeout=1.5)
    t0 = time.monotonic()
    with pytest.raises(JobError) as info:
        rt.start(spec)
    assert time.monotonic() - t0 < 15
    for w in words:
        assert w in info.value.message
    assert senv.leftovers() == [] and gone(spec.run)


def test_stop_removes_the_service_and_is_idempotent(senv: SwarmEnv) -> None:
    rt = senv.runtime()
    spec = senv.spec("upper")
    w = rt.start(spec)
    assert len(service_ids(f"pfs.run={spec.run}")) == 1 and len(docker_ids(f"pfs.run={spec.run}")) == 1
    t0 = time.monotonic()
    w.stop()
    assert time.monotonic() - t0 < 10
    assert gone(spec.run)  # at once: stop() waits until the swarm removed the container
    assert not w.alive() and w.exit_reason() == "stopped by pfs"
    w.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(w.url + "/", timeout=2)


def test_reap_removes_a_killed_pfs_services_only(senv: SwarmEnv) -> None:
    other_instance = "test-other-" + uuid.uuid4().hex[:8]
    other = senv.runtime(other_instance)
    keep = other.start(senv.spec("upper"))

    dead = senv.runtime(track=False)  # a pfs that will be "killed": its runtime dropped, nothing stopped
    old = [dead.start(senv.spec("upper")), dead.start(senv.spec("hang"))]
    assert len(service_ids(f"pfs.instance={senv.instance}")) == 2
    del dead, old
    gc.collect()

    fresh = senv.runtime()
    mine = fresh.start(senv.spec("upper"))  # started before reap: not a leftover
    assert fresh.reap() == 2
    assert len(service_ids(f"pfs.instance={senv.instance}")) == 1  # `mine`
    assert len(docker_ids(f"pfs.instance={senv.instance}")) == 1  # the leftovers' containers went too
    assert mine.alive() and httpx.post(mine.url + "/map/x", content=b"b").content == b"B"
    assert keep.alive() and httpx.post(keep.url + "/map/x", content=b"c").content == b"C"
    assert len(service_ids(f"pfs.instance={other_instance}")) == 1
    assert fresh.reap() == 0


def test_reap_removes_the_services_of_a_pfs_task_that_ended(senv: SwarmEnv) -> None:
    # A pfs replica of a stack is a swarm task with no lasting instance id; a worker's task
    # stands in for one here.
    stand_in = senv.runtime().start(senv.spec("upper"))
    assert isinstance(stand_in, SwarmWorker)
    task = stand_in._task()
    assert task
    replica = SwarmRuntime("test-replica-" + uuid.uuid4().hex[:8], owner_task=str(task["ID"]))
    survivor = SwarmRuntime("test-survivor-" + uuid.uuid4().hex[:8], owner_task="another-task")
    senv.runtimes += [replica, survivor]
    senv.instances |= {replica.instance, survivor.instance}
    spec = senv.spec("upper")
    orphan = replica.start(spec)
    (sid,) = service_ids(f"pfs.run={spec.run}")
    assert service_inspect(sid)["Spec"]["Labels"]["pfs.owner-task"] == task["ID"]
    assert survivor.reap() == 0  # its pfs is alive
    stand_in.stop()  # the replica "dies"
    assert survivor.reap() == 1
    assert gone(spec.run) and orphan.exit_reason() == "the service was removed"


def test_an_engine_outside_a_swarm_is_a_clear_error(senv: SwarmEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = senv.runtime()
    assert isinstance(rt, SwarmRuntime)
    monkeypatch.setattr(rt.api, "info", lambda: {"Swarm": {"LocalNodeState": "inactive", "NodeID": ""}})
    with pytest.raises(Unavailable, match="docker swarm init"):
        rt.image_id(senv.image)
    with pytest.raises(Unavailable, match="docker swarm init"):
        rt.start(senv.spec("upper"))
    assert senv.leftovers() == []


def test_service_is_bounded_labelled_and_isolated(senv: SwarmEnv) -> None:
    spec = senv.spec("upper", memory=96 * MiB, cpus=0.5, pids=48, env={"X": "1"})
    rt = senv.runtime()
    w = rt.start(spec)
    assert isinstance(w, SwarmWorker) and isinstance(rt, SwarmRuntime)
    (sid,) = service_ids(f"pfs.run={spec.run}")
    svc = service_inspect(sid)["Spec"]
    labels = svc["Labels"]
    assert labels["pfs"] == "1" and labels["pfs.instance"] == senv.instance
    assert labels["pfs.job"] == spec.job and labels["pfs.run"] == spec.run and labels["pfs.session"] == rt.session
    task = svc["TaskTemplate"]
    assert task["Resources"]["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 96 * MiB, "Pids": 48}
    assert task["RestartPolicy"]["Condition"] == "none"
    cs = task["ContainerSpec"]
    assert cs["Image"] == rt.image_id(senv.image)  # run by id: no node pulls a tag
    assert cs["CapabilityDrop"] == ["ALL"] and not cs.get("CapabilityAdd") and cs["Init"] is True
    assert not cs.get("Mounts") and "docker.sock" not in json.dumps(svc)
    assert "PORT=80" in cs["Env"] and "X=1" in cs["Env"]
    assert svc["Mode"] == {"Replicated": {"Replicas": 1}}
    assert not svc["EndpointSpec"].get("Ports")  # no port published, on any interface
    assert task["Placement"]["Constraints"] == [f"node.id=={rt.node_id()}"]  # on pfs's own node

    (cid,) = docker_ids(f"pfs.run={spec.run}")
    info = docker_inspect(cid)
    hc = info["HostConfig"]
    assert hc["Memory"] == 96 * MiB and hc["PidsLimit"] == 48 and hc["NanoCpus"] == 500_000_000
    assert hc["Privileged"] is False and hc["CapDrop"] == ["ALL"] and hc["Init"] is True
    assert not hc.get("Binds") and not info["Mounts"]
    clabels = info["Config"]["Labels"]
    assert clabels["pfs.instance"] == senv.instance and clabels["pfs.run"] == spec.run
    assert "pfs" not in clabels  # the docker runtime's reap must leave swarm tasks alone
    published = [b for bs in (info["NetworkSettings"]["Ports"] or {}).values() for b in (bs or [])]
    assert published == []
    bridge_ip = info["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    assert w.url == f"http://{bridge_ip}:80"


def test_out_of_memory_is_reported(senv: SwarmEnv) -> None:
    hog = (
        "import http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "    def do_POST(self):\n"
        "        self.hog = b'x' * (256 << 20)\n"
        "h.HTTPServer(('0.0.0.0', 80), H).serve_forever()\n"
    )
    w = senv.runtime().start(senv.spec("upper", command=["python3", "-c", hog], memory=64 * MiB))
    with pytest.raises(httpx.TransportError):
        httpx.post(w.url + "/map/x", content=b"x", timeout=20)
    assert eventually(lambda: not w.alive())
    assert w.exit_reason() == "killed: out of memory (limit 64 MiB)"


def test_image_must_be_local(senv: SwarmEnv) -> None:
    rt = senv.runtime()
    assert senv.image is not None
    assert rt.image_id(senv.image).startswith("sha256:")
    with pytest.raises(BadRequest, match="not found locally"):
        rt.image_id("pfs-no-such-image:nope")
    with pytest.raises(BadRequest, match="not found locally"):
        rt.start(senv.spec("upper", image="pfs-no-such-image:nope"))
    assert senv.leftovers() == []
    with pytest.raises(BadRequest, match="swarm"):
        make_runtime("kubernetes", senv.instance, str(senv.tmp))


# ---- a pfs server whose jobs run on the swarm ------------------------------------------------


@pytest.fixture
def swarm_srv(tmp_path: Path, swarm_image: str) -> Iterator[ServerProc]:
    """A pfs whose jobs run on the swarm; whatever services of its instance a failed test
    leaves are removed."""
    srv = ServerProc(tmp_path / "data", env={"PFS_JOB_RUNTIME": "swarm"}).start()
    try:
        yield srv
    finally:
        srv.stop()
        left = service_ids(f"pfs.instance={instance_of(srv)}")
        if left:
            subprocess.run(["docker", "service", "rm", *left], capture_output=True, check=False)


def instance_of(srv: ServerProc) -> str:
    return (srv.data_dir / "instance").read_text().strip()


def test_map_reduce_on_the_swarm_leaves_nothing_behind(swarm_srv: ServerProc, swarm_image: str) -> None:
    srv = swarm_srv
    instance = instance_of(srv)
    with Client(srv.url) as c:
        for i in range(9):
            c.put_file(f"logs/day{i}.txt", f"line one {i}\nline two\n".encode())
        wc = {"type": "map", "input": "logs", "image": swarm_image, "command": docker_command("wc")}
        c.put_job("wc", {**wc, "parallelism": 3, "inflight": 2})
        c.put_job("sum", {**wc, "type": "reduce", "input": "job/wc"})
        seen: set[str] = set()
        cid = c.commit(run=True).id
        deadline = time.monotonic() + 180
        status = c.run_status(cid)
        while status.state not in ("succeeded", "failed") and time.monotonic() < deadline:
            seen.update(service_ids(f"pfs.instance={instance}"))
            status = c.run_status(cid, wait=0.3)
        assert status.state == "succeeded", (status, srv.log())
        assert c.get_job_file("wc", "day3.txt", commit=cid) == b"day3.txt 2 5 20\n"
        assert c.get_job_file("sum", commit=cid) == f"{9 * 2} {9 * 5} {9 * 20}\n".encode()
        assert seen, "no swarm service was ever seen"
        assert eventually(lambda: service_ids(f"pfs.instance={instance}") == [], 20)
        assert docker_ids(f"pfs.instance={instance}") == []
    srv.stop()
    assert service_ids(f"pfs.instance={instance}") == []  # and a stop leaves none either


def test_kill9_leaves_services_that_the_next_start_removes(swarm_srv: ServerProc, swarm_image: str) -> None:
    srv = swarm_srv
    instance = instance_of(srv)
    with Client(srv.url) as c:
        for i in range(6):
            c.put_file(f"d/{i}", f"v{i}".encode())
        spec = {"type": "map", "input": "d", "image": swarm_image, "command": docker_command("slow", "1")}
        c.put_job("slow", {**spec, "parallelism": 2, "inflight": 1})
        cid = c.commit(run=True).id
        assert eventually(lambda: len(service_ids(f"pfs.instance={instance}")) == 2, 60)
    before = set(service_ids(f"pfs.instance={instance}"))
    srv.kill9()
    assert set(service_ids(f"pfs.instance={instance}")) == before  # nobody cleaned up
    srv.start()
    assert eventually(lambda: not before & set(service_ids(f"pfs.instance={instance}")), 30)
    with Client(srv.url) as c:
        status = c.wait_run(cid, timeout=180)
        assert status.state == "succeeded", status
        assert c.get_job_file("slow", "4", commit=cid) == b"V4"
    assert eventually(lambda: service_ids(f"pfs.instance={instance}") == [], 20)
