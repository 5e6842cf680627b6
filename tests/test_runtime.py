"""Job runtimes against the real thing: containers on the local Docker Engine and local
processes, both running the test job server (tests/jobimage/jobserver.py)."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobenv import docker_command, job_image_fixture, process_command  # noqa: F401

from pfs.errors import BadRequest, JobError, Unavailable
from pfs.jobs.runtime import Runtime, Worker, WorkerSpec, make_runtime

MiB = 1 << 20
KINDS = ["docker", "process"]


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def docker_ids(label: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label={label}"], capture_output=True, text=True, check=True
    )
    return out.stdout.split()


def docker_inspect(cid: str) -> dict[str, Any]:
    out = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout)[0])


def worker_pids(instance: str) -> list[int]:
    """Live (not zombie) processes started by a process runtime of `instance`."""
    prefix = f"PFS_WORKER={instance}/".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if any(var.startswith(prefix) for var in env.split(b"\0")):
            pids.append(int(entry))
    return pids


@dataclass
class Env:
    """One runtime kind under test, with cleanup of whatever a test leaves behind."""

    kind: str
    tmp: Path
    image: str | None
    instance: str = field(default_factory=lambda: "test-" + uuid.uuid4().hex[:10])
    runtimes: list[Runtime] = field(default_factory=list)
    instances: set[str] = field(default_factory=set)

    def state_dir(self, instance: str) -> str:
        return str(self.tmp / f"state-{instance}")

    def runtime(self, instance: str | None = None, track: bool = True) -> Runtime:
        instance = instance or self.instance
        self.instances.add(instance)
        rt = make_runtime(self.kind, instance, self.state_dir(instance))
        if track:
            self.runtimes.append(rt)
        return rt

    def command(self, mode: str, *args: str) -> list[str]:
        return docker_command(mode, *args) if self.kind == "docker" else process_command(mode, *args)

    def spec(self, mode: str, *args: str, **kw: Any) -> WorkerSpec:
        values: dict[str, Any] = {
            "job": "job-" + mode,
            "run": uuid.uuid4().hex,
            "image": self.image,
            "command": self.command(mode, *args),
            "env": {},
            "memory": 256 * MiB,
            "cpus": 1.0,
            "pids": 64,
            "start_timeout": 30.0,
        }
        values.update(kw)
        return WorkerSpec(**values)

    def leftovers(self, instance: str | None = None) -> list[Any]:
        instance = instance or self.instance
        if self.kind == "docker":
            return docker_ids(f"pfs.instance={instance}")
        return worker_pids(instance)

    def cleanup(self) -> None:
        for rt in self.runtimes:
            rt.close()
        for instance in self.instances:
            if self.kind == "docker":
                ids = docker_ids(f"pfs.instance={instance}")
                if ids:
                    subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)
            else:
                for pid in worker_pids(instance):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(os.getpgid(pid), 9)


@pytest.fixture(params=KINDS)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    image = request.getfixturevalue("job_image") if request.param == "docker" else None
    e = Env(request.param, tmp_path, image)
    try:
        yield e
    finally:
        e.cleanup()


@pytest.fixture(params=[*KINDS, "swarm"])
def any_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """`env`, and the swarm runtime too, for the behaviours every runtime shares."""
    e: Env
    if request.param == "swarm":
        from test_swarm import SwarmEnv, ensure_swarm  # it imports this module: not at the top

        image = request.getfixturevalue("job_image")
        ensure_swarm()
        e = SwarmEnv("swarm", tmp_path, image)
    else:
        image = request.getfixturevalue("job_image") if request.param == "docker" else None
        e = Env(request.param, tmp_path, image)
    try:
        yield e
    finally:
        e.cleanup()


@pytest.fixture
def docker_env(tmp_path: Path, job_image: str) -> Iterator[Env]:
    e = Env("docker", tmp_path, job_image)
    try:
        yield e
    finally:
        e.cleanup()


def gone(e: Env, w: Worker, run: str) -> bool:
    """No trace left of a stopped worker: container removed / process group dead."""
    if e.kind == "docker":
        return docker_ids(f"pfs.run={run}") == []
    assert hasattr(w, "proc") and w.proc is not None
    try:
        os.killpg(w.proc.pid, 0)
    except ProcessLookupError:
        return True
    return False


# ---- both runtimes -------------------------------------------------------------------


def test_start_and_round_trip(env: Env) -> None:
    rt = env.runtime()
    w = rt.start(env.spec("upper"))
    assert w.url.startswith("http://127.0.0.1:" if env.kind == "process" else "http://")  # docker: the jobs network
    assert w.alive() and w.exit_reason() is None
    r = httpx.post(w.url + "/map/dir/a%20b.txt", content=b"hello world\n")
    assert r.status_code == 200 and r.content == b"HELLO WORLD\n"
    r = httpx.post(w.url + "/reduce", content=b"as is\n")
    assert r.status_code == 200 and r.content == b"as is\n"
    # a chunked body, streamed in pieces, answered in pieces
    pieces = [b"one two", b" three\n", b"x" * 300_000]
    r = httpx.post(w.url + "/map/big", content=iter(pieces))
    assert r.status_code == 200 and r.content == b"".join(pieces).upper()
    w.stop()


def test_wc_mode_counts_across_pieces(env: Env) -> None:
    w = env.runtime().start(env.spec("wc"))
    body = [b"alpha be", b"ta\ngamma ", b"\n\ndelta"]
    r = httpx.post(w.url + "/map/a file", content=iter(body))
    assert r.text == "a file 3 4 24\n"
    r = httpx.post(w.url + "/reduce", content=b"x 1 2 3\ny z 10 20 30\n5 5 5")
    assert r.text == "16 27 38\n"


def test_logs_have_the_request_lines(env: Env) -> None:
    w = env.runtime().start(env.spec("cat"))
    httpx.post(w.url + "/map/some/path.txt", content=b"x")
    assert eventually(lambda: "POST /map/some/path.txt" in w.logs())
    assert "GET /" in w.logs()  # the readiness probe
    assert len(w.logs(20)) <= 20
    w.stop()
    assert "POST /map/some/path.txt" in w.logs()  # kept after the worker is gone


def test_crash_is_seen_with_its_exit_code(env: Env) -> None:
    w = env.runtime().start(env.spec("crash"))
    with pytest.raises(httpx.TransportError):
        httpx.post(w.url + "/map/x", content=b"x", timeout=10)
    assert eventually(lambda: not w.alive())
    reason = w.exit_reason()
    assert reason is not None and "exited with code 3" in reason
    assert "crashing on POST /map/x" in w.logs()
    w.stop()
    assert w.exit_reason() == reason  # stop() keeps the verdict


@pytest.mark.parametrize(("mode", "words"), [("exit", ["boom", "exited with code 2"]), ("noserve", ["did not answer"])])
def test_worker_that_never_serves_fails_to_start(env: Env, mode: str, words: list[str]) -> None:
    rt = env.runtime()
    spec = env.spec(mode, start_timeout=1.5)
    t0 = time.monotonic()
    with pytest.raises(JobError) as info:
        rt.start(spec)
    assert time.monotonic() - t0 < 10
    for w in words:
        assert w in info.value.message
    assert env.leftovers() == []
    if env.kind == "docker":
        assert docker_ids(f"pfs.run={spec.run}") == []
    else:
        assert list((Path(env.state_dir(env.instance)) / "workers").iterdir()) == []


def test_stop_removes_everything_and_is_idempotent(env: Env) -> None:
    rt = env.runtime()
    spec = env.spec("upper")
    w = rt.start(spec)
    if env.kind == "docker":
        assert len(docker_ids(f"pfs.run={spec.run}")) == 1
    w.stop()
    assert gone(env, w, spec.run)
    assert not w.alive()
    assert w.exit_reason() == "stopped by pfs"
    w.stop()
    assert env.leftovers() == []
    with pytest.raises(httpx.TransportError):
        httpx.get(w.url + "/", timeout=2)


def test_slowstart_is_waited_for(env: Env) -> None:
    w = env.runtime().start(env.spec("slowstart", "1"))
    assert httpx.post(w.url + "/map/x", content=b"a").content == b"A"


def test_reap_removes_a_killed_pfs_workers_only(env: Env) -> None:
    other_instance = "test-other-" + uuid.uuid4().hex[:8]
    other = env.runtime(other_instance)
    keep = other.start(env.spec("upper"))

    dead = env.runtime(track=False)  # a pfs that will be "killed": its runtime dropped, nothing stopped
    old = [dead.start(env.spec("upper")), dead.start(env.spec("hang"))]
    assert len(env.leftovers()) >= 2
    del dead, old
    gc.collect()

    fresh = env.runtime()
    mine = fresh.start(env.spec("upper"))  # started before reap: not a leftover
    assert fresh.reap() == 2
    remaining = env.leftovers()
    if env.kind == "docker":
        assert len(remaining) == 1  # `mine`
    else:
        assert mine.alive() and remaining
        assert all(os.getpgid(p) == mine.proc.pid for p in remaining)  # type: ignore[attr-defined]
    assert mine.alive() and httpx.post(mine.url + "/map/x", content=b"b").content == b"B"
    assert keep.alive() and httpx.post(keep.url + "/map/x", content=b"c").content == b"C"
    assert len(env.leftovers(other_instance)) >= 1
    assert fresh.reap() == 0


def test_concurrent_starts_and_stops(any_env: Env) -> None:
    env = any_env
    rt = env.runtime()
    results: list[Worker] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            w = rt.start(env.spec("upper"))
            assert httpx.post(w.url + f"/map/{i}", content=b"q%d" % i).content == b"Q%d" % i
            results.append(w)
            w.stop()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert errors == [] and len(results) == 4
    assert len({w.url for w in results}) == 4
    assert env.leftovers() == []


def test_close_stops_what_is_left(any_env: Env) -> None:
    env = any_env
    rt = env.runtime(track=False)
    rt.start(env.spec("upper"))
    rt.close()
    assert env.leftovers() == []


def test_image_id_and_unknown_runtime(env: Env) -> None:
    rt = env.runtime()
    if env.kind == "docker":
        assert env.image is not None
        assert rt.image_id(env.image).startswith("sha256:")
        with pytest.raises(BadRequest, match="not found locally"):
            rt.image_id("pfs-no-such-image:nope")
        with pytest.raises(BadRequest, match="not found locally"):
            rt.start(env.spec("upper", image="pfs-no-such-image:nope"))
        assert env.leftovers() == []
    else:
        assert rt.image_id(None) == "" and rt.image_id("whatever") == ""
    with pytest.raises(BadRequest):
        make_runtime("kubernetes", env.instance, str(env.tmp))


# ---- process runtime only ------------------------------------------------------------


def test_process_memory_is_bounded(tmp_path: Path) -> None:
    rt = make_runtime("process", "test-mem-" + uuid.uuid4().hex[:8], str(tmp_path))
    try:
        spec = WorkerSpec(
            job="hog",
            run="r",
            image=None,
            command=["python3", "-c", "x = b'x' * (512 << 20)"],
            env={"GREETING": "hi"},
            memory=64 * MiB,
            cpus=1.0,
            pids=64,
            start_timeout=20,
        )
        with pytest.raises(JobError, match="MemoryError"):
            rt.start(spec)
        code = (
            "import os; print('env', os.environ['GREETING'], os.environ['PORT'], 'AWS_SECRET_ACCESS_KEY' in os.environ)"
        )
        with pytest.raises(JobError) as info:
            rt.start(WorkerSpec(**{**spec.__dict__, "command": ["python3", "-c", code]}))
        assert "env hi " in info.value.message and "False" in info.value.message
    finally:
        rt.close()


# ---- docker runtime only -------------------------------------------------------------


@pytest.mark.parametrize("image", ["Busybox", "$(id)", "busybox:", "a//b", "busybox@sha256:12", "x" * 256])
def test_a_malformed_image_is_a_400_before_the_engine_is_asked(
    image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")  # any question to it would fail
    rt = make_runtime("docker", "test-" + uuid.uuid4().hex[:8], str(tmp_path))
    try:
        with pytest.raises(BadRequest, match="not a valid Docker image reference|longer than"):
            rt.image_id(image)
        with pytest.raises(Unavailable, match="Docker Engine did not answer"):
            rt.image_id("pfs-test-job:local")  # a good name: only then is the engine asked, and it is down
    finally:
        rt.close()


def test_an_images_volumes_go_with_its_container(docker_env: Env, tmp_path: Path) -> None:
    """An image's VOLUME makes an anonymous volume on the host for each container: removing
    the container must remove it too, or every worker leaves one behind."""
    assert docker_env.image is not None
    (tmp_path / "Dockerfile").write_text(f"FROM {docker_env.image}\nVOLUME /scratch\n")
    image = "pfs-test-job-volume:local"
    subprocess.run(["docker", "build", "-q", "-t", image, str(tmp_path)], capture_output=True, check=True, timeout=300)
    spec = docker_env.spec("upper", image=image)
    w = docker_env.runtime().start(spec)
    (cid,) = docker_ids(f"pfs.run={spec.run}")
    volumes = [m["Name"] for m in docker_inspect(cid)["Mounts"] if m["Type"] == "volume"]
    assert volumes
    w.stop()
    for v in volumes:
        assert subprocess.run(["docker", "volume", "inspect", v], capture_output=True).returncode != 0, v


def test_container_is_bounded_and_isolated(docker_env: Env) -> None:
    spec = docker_env.spec("upper", memory=96 * MiB, cpus=0.5, pids=48, env={"X": "1"})
    w = docker_env.runtime().start(spec)
    (cid,) = docker_ids(f"pfs.run={spec.run}")
    info = docker_inspect(cid)
    hc = info["HostConfig"]
    assert hc["Memory"] == 96 * MiB and hc["MemorySwap"] == 96 * MiB
    assert hc["PidsLimit"] == 48
    assert hc["NanoCpus"] == 500_000_000
    assert hc["Privileged"] is False
    assert hc["CapDrop"] == ["ALL"] and not hc.get("CapAdd")
    assert "no-new-privileges" in hc["SecurityOpt"]
    assert hc["Init"] is True
    assert not hc.get("Binds") and not info["Mounts"]
    assert not hc.get("PortBindings")  # publishes nothing: pfs reaches it on the jobs network
    assert hc["NetworkMode"] == "pfs-jobs" and list(info["NetworkSettings"]["Networks"]) == ["pfs-jobs"]
    ip = info["NetworkSettings"]["Networks"]["pfs-jobs"]["IPAddress"]
    assert w.url == f"http://{ip}:80"
    assert info["Config"]["User"] == "65534:65534"  # not root
    labels = info["Config"]["Labels"]
    assert labels["pfs"] == "1" and labels["pfs.instance"] == docker_env.instance
    assert labels["pfs.job"] == spec.job and labels["pfs.run"] == spec.run
    assert "PORT=80" in info["Config"]["Env"] and "X=1" in info["Config"]["Env"]
    assert "docker.sock" not in json.dumps(info)


def test_out_of_memory_is_reported(docker_env: Env) -> None:
    hog = (
        "import http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "    def do_POST(self):\n"
        "        self.hog = b'x' * (256 << 20)\n"
        "h.HTTPServer(('0.0.0.0', 80), H).serve_forever()\n"
    )
    w = docker_env.runtime().start(docker_env.spec("upper", command=["python3", "-c", hog], memory=64 * MiB))
    with pytest.raises(httpx.TransportError):
        httpx.post(w.url + "/map/x", content=b"x", timeout=20)
    assert eventually(lambda: not w.alive())
    assert w.exit_reason() == "killed: out of memory (limit 64 MiB)"
