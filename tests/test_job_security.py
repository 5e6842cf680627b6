"""What a job spec may reach outside its container: only what the operator allowed when
starting pfs. A spec cannot switch on the process runtime (host processes) nor read an S3
bucket the operator did not list, and pfs's own bucket is never an input. Each refusal is
a clear 4xx when the spec is stored, checked again when it runs, and nothing runs or is
read. A malformed image name is a 400 before any Docker Engine is asked; an engine that
does not answer is a 503, never a fallback to host processes."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServerProc
from jobenv import JOBSERVER, docker_command, job_image_fixture  # noqa: F401
from seaweed import SeaweedServer, seaweed_fixture  # noqa: F401
from test_jobs import jobs_of, pspec, run_and_wait

from pfs import Client, errors


def touching(marker: Path) -> list[str]:
    """A job server command that first leaves `marker` on the host: proof that it ran there."""
    return ["sh", "-c", f'touch "{marker}" && exec "$0" "$@"', sys.executable, JOBSERVER, "upper"]


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path / "data")  # no PFS_JOB_RUNTIME: the operator chose nothing
    yield s.start()
    s.stop()


# ---- 0a: the process runtime -----------------------------------------------------------


def test_a_spec_cannot_switch_on_the_process_runtime(srv: ServerProc, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with Client(srv.url) as c:
        c.put_file("d/x", b"1")
        spec = {"type": "map", "input": "d", "runtime": "process", "command": touching(marker)}
        for body in (spec, {**spec, "image": "pfs-test-job:local"}):
            for method in ("POST", "PUT"):
                r = httpx.request(method, f"{srv.url}/job/x", json=body)
                assert r.status_code == 400, (method, r.text)
                assert "only the operator enables it" in r.text
        assert c.jobs() == []
        assert c.commit(run=True).jobs == ()
    assert not marker.exists()


def test_a_stored_process_spec_fails_once_the_operator_withdraws_the_runtime(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    srv = ServerProc(tmp_path / "data", env={"PFS_JOB_RUNTIME": "process"}).start()
    try:
        with Client(srv.url) as c:
            c.put_file("d/x", b"hello\n")
            c.put_job("x", {"type": "map", "input": "d", "runtime": "process", "command": touching(marker)})
        srv.stop()
        srv.start(env={"PFS_JOB_RUNTIME": ""})  # restarted without the operator's choice
        with Client(srv.url) as c:
            assert [j.name for j in c.jobs()] == ["x"]  # still listed, just not run
            c.put_file("d/y", b"more\n")
            cid, status = run_and_wait(c)
            x = jobs_of(status)["x"]
            assert status.state == "failed" and x.state == "failed"
            assert "only the operator enables it" in x.error and x.done == 0
            with pytest.raises(errors.JobNotReady):
                c.get_job_file("x", "x", commit=cid)
        assert not marker.exists()
        srv.stop()
        srv.start(env={"PFS_JOB_RUNTIME": "process"})  # the marker does prove a run
        with Client(srv.url) as c:
            c.put_file("d/z", b"z\n")
            _, status = run_and_wait(c)
            assert status.state == "succeeded", status
        assert marker.exists()
    finally:
        srv.stop()


def test_no_engine_is_a_503_and_never_a_fallback_to_processes(tmp_path: Path) -> None:
    srv = ServerProc(tmp_path / "data", env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}).start()
    try:
        with Client(srv.url) as c:
            c.put_file("d/x", b"1")
            good = {"type": "map", "input": "d", "image": "pfs-test-job:local", "command": docker_command("upper")}
            r = httpx.post(f"{srv.url}/job/m", json=good)
            assert r.status_code == 503 and "Docker Engine did not answer" in r.text, r.text
            for image in ("Busybox", "$(id)", "busybox:", "a" * 256):  # a 400 before the engine is asked
                r = httpx.post(f"{srv.url}/job/m", json={**good, "image": image})
                assert r.status_code == 400 and "image" in r.text, (image, r.text)
            r = httpx.post(f"{srv.url}/job/m", json=pspec("map", "d", "upper"))
            assert r.status_code == 400 and "only the operator enables it" in r.text
            assert c.jobs() == []
    finally:
        srv.stop()


def test_a_stored_docker_spec_without_an_engine_fails_clearly(tmp_path: Path, job_image: str) -> None:
    srv = ServerProc(tmp_path / "data").start()
    try:
        with Client(srv.url) as c:
            c.put_file("d/x", b"1")
            c.put_job("m", {"type": "map", "input": "d", "image": job_image, "command": docker_command("upper")})
        srv.stop()
        srv.start(env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
        with Client(srv.url) as c:
            c.put_file("d/y", b"2")
            _, status = run_and_wait(c)
            m = jobs_of(status)["m"]
            assert m.state == "failed" and "Docker Engine did not answer" in m.error, m
    finally:
        srv.stop()


# ---- 0b: S3 inputs -------------------------------------------------------------------------


class CountingRelay:
    """A TCP relay in front of SeaweedFS's S3 port that counts the bytes clients send: any
    request pfs makes to S3 shows, and none is changed (it only observes)."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.sent = 0
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if count:
                    with self.lock:
                        self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.server.close()


def test_s3_inputs_only_where_the_operator_allows(tmp_path: Path, seaweed: SeaweedServer) -> None:
    bucket = seaweed.new_bucket("in")
    s3 = seaweed.client()
    for key in ("raw/a.txt", "rawdata/b.txt", "secret/c.txt"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    relay = CountingRelay(seaweed.s3_port)
    env = {"PFS_JOB_RUNTIME": "process", **seaweed.env(), "PFS_S3_ENDPOINT": relay.url}
    srv = ServerProc(tmp_path / "data", env=env).start()
    try:

        def post(url: str) -> httpx.Response:
            return httpx.post(f"{srv.url}/job/up", json=pspec("map", url, "upper"))

        r = post(f"s3://{bucket}/raw")  # nothing allowed
        assert r.status_code == 400 and "not allowed on this server (it allows none)" in r.text
        assert relay.sent == 0
        srv.stop()
        srv.start(env={"PFS_JOB_S3_INPUTS": f"{bucket}/raw, other-bucket"})
        for url in (f"s3://{bucket}/secret", f"s3://{bucket}", f"s3://{bucket}/", f"s3://{bucket}/rawdata"):
            r = post(url)
            assert r.status_code == 400 and "not allowed on this server" in r.text, (url, r.text)
        assert relay.sent == 0  # refused before any S3 request
        with Client(srv.url) as c:
            assert c.jobs() == []
            c.put_job("up", pspec("map", f"s3://{bucket}/raw", "upper"))
            assert relay.sent > 0  # the allowed one is listed when stored
            c.put_file("trigger", b"1")
            cid, status = run_and_wait(c)
            assert status.state == "succeeded" and c.get_job_file("up", "a.txt", commit=cid) == b"RAW/A.TXT"
        srv.stop()
        srv.start(env={"PFS_JOB_S3_INPUTS": ""})  # the operator withdraws it: the stored spec must not read
        before = relay.sent
        with Client(srv.url) as c:
            c.put_file("trigger", b"2")
            cid, status = run_and_wait(c)
            up = jobs_of(status)["up"]
            assert up.state == "failed" and "not allowed on this server" in up.error, up
            assert (up.total, up.done) == (0, 0)
            with pytest.raises(errors.JobNotReady):
                c.get_job_file("up", "a.txt", commit=cid)
        assert relay.sent == before
    finally:
        srv.stop()
        relay.close()


def test_pfs_own_bucket_is_never_a_job_input(tmp_path: Path, seaweed: SeaweedServer) -> None:
    own = seaweed.new_bucket("pfs")
    env: dict[str, Any] = {
        "PFS_JOB_RUNTIME": "process",
        **seaweed.env(),
        "PFS_OBJECTS_URL": f"s3://{own}/repo",
        "PFS_JOB_S3_INPUTS": f"{own},{own}/repo",  # listed, and still refused
    }
    srv = ServerProc(tmp_path / "data", env=env).start()
    try:
        with Client(srv.url) as c:
            c.put_file("d/x", b"secret data")
            c.commit()
            for url in (f"s3://{own}", f"s3://{own}/repo", f"s3://{own}/repo/objects"):
                r = httpx.post(f"{srv.url}/job/steal", json=pspec("map", url, "cat"))
                assert r.status_code == 400 and "holds pfs's own objects" in r.text, r.text
            assert c.jobs() == []
        assert "PFS_JOB_S3_INPUTS lists bucket" in srv.log()  # the operator is told it is ignored
    finally:
        srv.stop()


# ---- resources: what one job may book on this machine ---------------------------------------


def test_specs_beyond_the_operators_limits_are_refused(tmp_path: Path) -> None:
    """On a 2-core host, `memory: 256g`, `cpus: 256` and `parallelism: 64` were accepted.
    Now each is a 400 naming what is over and the limit; the operator sets the limits."""
    env = {"PFS_JOB_RUNTIME": "process", "PFS_JOB_MAX_MEMORY": "1g", "PFS_JOB_MAX_CPUS": "2"}
    srv = ServerProc(tmp_path / "data", env=env, args=["--job-max-parallelism", "4"]).start()
    try:
        with Client(srv.url) as c:
            c.put_file("d/x", b"1")
            for extra, names in (
                ({"memory": "256g"}, ["memory 256g (at most 1g)"]),
                ({"cpus": 256}, ["cpus 256 (at most 2)"]),
                ({"parallelism": 64}, ["parallelism 64 (at most 4)"]),
                ({"memory": "2g", "parallelism": 5}, ["memory 2g", "parallelism 5"]),
            ):
                with pytest.raises(errors.BadRequest) as exc:
                    c.put_job("big", pspec("map", "d", "upper", **extra))
                assert all(n in exc.value.message for n in names), exc.value.message
            assert c.jobs() == []
            c.put_job("ok", pspec("map", "d", "upper", memory="1g", cpus=2, parallelism=4))  # at the limits
        srv.stop()
        srv.args = []  # the operator lowers a limit: restarted with 2 instead of 4
        srv.start(env={"PFS_JOB_MAX_PARALLELISM": "2"})
        with Client(srv.url) as c:
            c.put_file("d/y", b"2")
            _, status = run_and_wait(c)
            ok = jobs_of(status)["ok"]
            assert ok.state == "failed" and "parallelism 4 (at most 2)" in (ok.error or "")
    finally:
        srv.stop()


def test_the_default_limits_follow_the_host() -> None:
    import os

    import psutil

    from pfs.jobs.runtime import JobLimits

    limits = JobLimits.of_host()
    assert limits.memory == psutil.virtual_memory().total // 2
    assert limits.cpus == (os.cpu_count() or 1)
    assert limits.parallelism == max(4, 4 * (os.cpu_count() or 1))
    with pytest.raises(errors.BadRequest):
        limits.check(256 << 30, 1, 1)


# ---- where a docker worker runs: cut off from the host, other jobs and the world -----------


def _listen_all() -> tuple[socket.socket, int]:
    """A host service on every address (as a pfs API on 0.0.0.0 would be)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 0))
    s.listen(64)
    threading.Thread(target=lambda: [s.accept()[0].close() for _ in iter(int, 1)], daemon=True).start()
    return s, s.getsockname()[1]


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def _probe(targets: list[str], network: str, image: str) -> dict[str, str]:
    """Run the probe as a plain container on `network` (not through pfs): the control."""
    out = _docker(
        "run", "--rm", "--network", network, "-e", "PROBE_TARGETS=" + ",".join(targets), "--entrypoint", "python3",
        image, "-c", "import sys; sys.path.insert(0, '/'); import jobserver; print(jobserver.probe("
        "__import__('os').environ['PROBE_TARGETS']), end='')",
    )  # fmt: skip
    return dict(line.rsplit(" ", 1) for line in out.splitlines() if not line.startswith("uid "))


def test_a_docker_job_reaches_no_host_service_no_other_job_and_runs_as_non_root(tmp_path: Path, job_image: str) -> None:
    listener, port = _listen_all()
    others: list[str] = []
    srv = ServerProc(tmp_path / "data").start()  # docker, the default runtime
    try:
        with Client(srv.url) as c:
            c.put_file("p/x", b"probe")
            spec = {"type": "map", "input": "p", "image": job_image, "command": docker_command("probe"), "retries": 0}
            c.put_job("probe", spec)  # storing a docker spec makes the jobs network
            gateway = _docker("network", "inspect", "pfs-jobs", "--format", "{{(index .IPAM.Config 0).Gateway}}")
            addr = subprocess.run(["ip", "-4", "-o", "addr", "show", "docker0"], capture_output=True, text=True)
            docker0 = addr.stdout.split()[3].split("/")[0]  # the host's address on Docker's default bridge
            for network in ("pfs-jobs", "bridge"):  # another job's worker, and any other container
                cid = _docker("run", "-d", "--rm", "--network", network, "--label", "pfs.test=probe-victim",
                              job_image, *docker_command("upper"))  # fmt: skip
                others.append(cid)
            ips = [
                _docker("inspect", cid, "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
                for cid in others
            ]
            targets = [f"{gateway}:{port}", f"{docker0}:{port}", f"{gateway}:2377", f"{gateway}:7946"]
            targets += [f"{ip}:80" for ip in ips] + ["1.1.1.1:53"]
            c.put_job("probe", {**spec, "env": {"PROBE_TARGETS": ",".join(targets)}})
            cid, status = run_and_wait(c)
            assert status.state == "succeeded", status
            lines = c.get_job_file("probe", "x", commit=cid).decode().splitlines()
        results = dict(line.rsplit(" ", 1) for line in lines[:-1])
        assert set(results) == set(targets)
        assert all(r != "connected" for r in results.values()), results
        assert lines[-1].startswith("uid ") and lines[-1] != "uid 0"
        # the control: the same probe on Docker's default bridge reaches the host and a container
        control = _probe([f"{docker0}:{port}", f"{ips[1]}:80"], "bridge", job_image)
        assert set(control.values()) == {"connected"}, control
    finally:
        srv.stop()
        listener.close()
        for cid in others:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
