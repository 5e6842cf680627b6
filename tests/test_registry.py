"""Job images from the cluster registry: a real Docker Distribution on SeaweedFS
(tests/registry.py), the real Docker Engine, and a real pfs server.

An image pushed to the registry and removed from the engine runs: each run pins its tag to
the digest it names when the run starts, the workers pull and run exactly that digest, and
incremental reuse keys on it. The registry dying mid-pull fails the run with the reason,
leaves no container, and the next run after it is back succeeds."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProc
from jobenv import docker_command, job_image_fixture  # noqa: F401
from registry import RegistryServer, build_variant, docker, forget_images, slow_link
from seaweed import SeaweedServer, seaweed_fixture  # noqa: F401
from test_jobs_docker import containers, eventually, instance_of

from pfs import Client, errors
from pfs.client import JobRun, Run
from pfs.jobs.registry import Pushed, push_image

pytestmark = [pytest.mark.docker, pytest.mark.cluster]


def push_and_forget(reg: RegistryServer, local: str) -> Pushed:
    """Push a local image to the registry, then remove it from the engine: only a pull can
    bring it back."""
    pushed = push_image(local, reg.address, {"username": reg.user, "password": reg.password})
    docker("rmi", "-f", local, pushed.image)
    assert not _present(pushed.image)
    return pushed


def _present(image: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode == 0


def spec(image: str, **kw: object) -> dict[str, object]:
    return {"type": "map", "input": "logs", "image": image, "command": docker_command("wc"), **kw}


def finished(c: Client, cid: str, timeout: float = 180) -> Run:
    status = c.wait_run(cid, timeout)
    assert status.over, status
    return status


def job(status: Run, name: str = "wc") -> JobRun:
    return status.job(name)


@pytest.fixture
def reg(tmp_path: Path, seaweed: SeaweedServer) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "registry", seaweed).start()
    try:
        yield server
    finally:
        server.kill()
        forget_images(server.address)


@pytest.fixture
def srv(tmp_path: Path, reg: RegistryServer, job_image: str) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path / "data", env=reg.env()).start()
    try:
        yield s
    finally:
        s.stop()
        left = [c["Id"] for c in containers(f"pfs.instance={instance_of(s)}")]
        if left:
            subprocess.run(["docker", "rm", "-f", *left], capture_output=True, check=False)


@pytest.mark.slow
def test_a_pushed_image_runs_by_digest_and_reuse_keys_on_it(
    srv: ServerProc, reg: RegistryServer, job_image: str
) -> None:
    name = f"pfs-regtest/wc-{uuid.uuid4().hex[:8]}"
    first = push_and_forget(reg, build_variant(job_image, f"{name}:v1"))
    image = f"{reg.address}/{name}:v1"
    assert first.image == image and first.digest.startswith("sha256:")
    with Client(srv.url) as c:
        listed = c.images()
        assert listed.registry == reg.address
        tags = {(i.repository, t.tag): t.digest for i in listed.images for t in i.tags}
        assert tags[(f"{reg.address}/{name}", "v1")] == first.digest
        ls = subprocess.run(
            [sys.executable, "-m", "pfs.cli", "--url", srv.url, "image", "ls"], capture_output=True, timeout=60
        )
        assert ls.returncode == 0, ls.stderr
        assert f"{reg.address}/{name}:v1\t{first.digest}" in ls.stdout.decode().splitlines()  # columns for cut -f

        for i in range(6):
            c.put_file(f"logs/day{i}.txt", f"line {i}\nmore\n".encode())
        c.commit()
        with pytest.raises(errors.ImageNotFound):  # the registry answers: no such tag
            c.put_job("wc", spec(f"{reg.address}/{name}:nope"))
        with pytest.raises(errors.ImageNotFound):  # nor such a digest
            c.put_job("wc", spec(f"{reg.address}/{name}@sha256:{'0' * 64}"))
        assert [j.name for j in c.jobs()] == []
        c.put_job("wc", spec(image, parallelism=2))
        cid = c.commit(run=True).id
        status = finished(c, cid)
        assert status.state == "succeeded", status
        assert job(status).pinned_image == f"{reg.address}/{name}@{first.digest}"
        assert job(status).done == 6
        assert c.get_job_file("wc", "day3.txt", commit=cid) == b"day3.txt 2 3 12\n"
        assert _present(f"{reg.address}/{name}@{first.digest}"), "the engine did not pull the pinned digest"

        # the same bytes pushed again under the tag: the next run reuses the output
        docker("tag", f"{reg.address}/{name}@{first.digest}", image)
        again = push_image(image, reg.address, {"username": reg.user, "password": reg.password})
        assert again.digest == first.digest
        c.put_file("other.txt", b"not an input\n")
        status = finished(c, c.commit(run=True).id)
        assert job(status).state == "reused", status

        # new bytes under the same tag: the next run maps again, with the new digest
        second = push_and_forget(reg, build_variant(job_image, f"{name}:v1"))
        assert second.digest != first.digest
        c.put_file("other.txt", b"still not an input\n")
        status = finished(c, c.commit(run=True).id)
        assert status.state == "succeeded", status
        assert job(status).state == "succeeded" and job(status).reused == 0 and job(status).done == 6
        assert job(status).pinned_image == f"{reg.address}/{name}@{second.digest}"
    assert eventually(lambda: containers(f"pfs.instance={instance_of(srv)}") == [], 20)


@pytest.mark.slow
def test_registry_killed_mid_pull_fails_the_run_cleanly_and_the_next_run_recovers(
    srv: ServerProc, reg: RegistryServer, job_image: str
) -> None:
    name = f"pfs-regtest/big-{uuid.uuid4().hex[:8]}"
    # a layer big enough that the pull is still under way when the registry dies
    local = build_variant(job_image, f"{name}:v1", "RUN head -c 150000000 /dev/urandom > /ballast")
    pushed = push_and_forget(reg, local)
    with Client(srv.url) as c:
        c.put_file("logs/a.txt", b"one line\n")
        c.put_job("wc", spec(pushed.image, start_timeout=6, retries=1))
        cid = c.commit(run=True).id

        def pulling() -> bool:  # the engine is downloading a layer (into its tmp dir)
            return any(Path("/var/lib/docker/tmp").glob("GetImageBlob*"))

        assert eventually(pulling, 60), "the engine never started pulling"
        reg.kill()
        status = finished(c, cid)
        assert status.state == "failed", status
        error = job(status).error or ""
        assert "pulling" in error and "start_timeout" in error and "does not answer" in error, error
        assert not _present(f"{reg.address}/{name}@{pushed.digest}")
        assert eventually(lambda: containers(f"pfs.instance={instance_of(srv)}") == [], 20)

        # while the registry is down a spec naming it is still stored (its run checks again)
        c.put_job("wc2", spec(pushed.image, start_timeout=6))
        c.delete_job("wc2")

        reg.start()  # back, same storage: the next run pulls and succeeds
        c.put_file("logs/b.txt", b"two\n")
        status = finished(c, c.commit(run=True).id)
        assert status.state == "succeeded", status
        assert job(status).pinned_image == f"{reg.address}/{name}@{pushed.digest}"


@pytest.mark.slow
def test_a_slow_pull_does_not_hold_up_another_jobs_workers(tmp_path: Path, reg: RegistryServer, job_image: str) -> None:
    """A big image crawling in over a slow link: a job with an image at hand, in the same
    run, starts, finishes and is done while the pull goes on."""
    link = slow_link(reg.port, rate=6 << 20)  # the engine pulls at 6 MiB/s
    name = f"pfs-regtest/slow-{uuid.uuid4().hex[:8]}"
    local = build_variant(job_image, f"{name}:v1", "RUN head -c 100000000 /dev/urandom > /ballast")
    pushed = push_image(local, link.address, {"username": reg.user, "password": reg.password})
    docker("rmi", "-f", local, pushed.image)
    # pfs asks the registry directly; images carry (and the engine pulls by) the link's address
    s = ServerProc(tmp_path / "data", env={**reg.env(), "PFS_REGISTRY_NAME": link.address}).start()
    try:
        with Client(s.url) as c:
            for i in range(3):
                c.put_file(f"logs/f{i}.txt", b"a b\n")
            c.put_job("big", spec(pushed.image, start_timeout=300))
            c.put_job("wc", spec(job_image))
            cid = c.commit(run=True).id
            assert eventually(lambda: job(c.run_status(cid)).state == "succeeded", 60), c.run_status(cid)
            during = c.run_status(cid)
            assert job(during, "big").state == "running" and job(during, "big").done == 0, during
            assert any(Path("/var/lib/docker/tmp").glob("GetImageBlob*")), "the big image is no longer being pulled"
            status = finished(c, cid, 300)
            assert status.state == "succeeded", status
            assert job(status, "big").pinned_image == f"{link.address}/{name}@{pushed.digest}"
    finally:
        s.stop()
        link.stop()
        forget_images(link.address)
        left = [c["Id"] for c in containers(f"pfs.instance={instance_of(s)}")]
        if left:
            subprocess.run(["docker", "rm", "-f", *left], capture_output=True, check=False)


def test_without_a_registry_the_server_says_so(tmp_path: Path) -> None:
    s = ServerProc(tmp_path / "data").start()
    try:
        with Client(s.url) as c, pytest.raises(errors.Conflict, match="no image registry"):
            c.images()
    finally:
        s.stop()


@pytest.mark.slow
def test_the_swarm_runtime_pulls_the_pinned_digest(tmp_path: Path, reg: RegistryServer, job_image: str) -> None:
    from test_swarm import ensure_swarm, service_ids

    ensure_swarm()
    name = f"pfs-regtest/swarm-{uuid.uuid4().hex[:8]}"
    pushed = push_and_forget(reg, build_variant(job_image, f"{name}:v1"))
    s = ServerProc(tmp_path / "data", env={**reg.env(), "PFS_JOB_RUNTIME": "swarm"}).start()
    try:
        with Client(s.url) as c:
            for i in range(3):
                c.put_file(f"logs/f{i}.txt", b"a b\n")
            c.put_job("wc", spec(pushed.image))
            status = finished(c, c.commit(run=True).id)
            assert status.state == "succeeded", status
            assert job(status).pinned_image == f"{reg.address}/{name}@{pushed.digest}"
            assert _present(f"{reg.address}/{name}@{pushed.digest}"), "the node did not pull the pinned digest"
        assert eventually(lambda: service_ids(f"pfs.instance={instance_of(s)}") == [], 30)
    finally:
        s.stop()
        left = service_ids(f"pfs.instance={instance_of(s)}")
        if left:
            subprocess.run(["docker", "service", "rm", *left], capture_output=True, check=False)


@pytest.mark.slow
def test_the_swarm_runtime_runs_a_local_image_by_id_though_it_was_pushed_elsewhere(
    reg: RegistryServer, job_image: str
) -> None:
    """A local image once pushed to some registry carries that registry's digest; the swarm
    must not send its nodes there (it may be gone) but run the image by its id."""
    from test_swarm import ensure_swarm

    from pfs.jobs.runtime.swarm import SwarmRuntime

    ensure_swarm()
    local = build_variant(job_image, f"pfs-regtest/local-{uuid.uuid4().hex[:8]}:v1")
    try:
        pushed = push_image(local, reg.address, {"username": reg.user, "password": reg.password})
        info = json.loads(docker("image", "inspect", local))[0]
        assert any(d.startswith(f"{reg.address}/") for d in info["RepoDigests"])  # the situation under test
        rt = SwarmRuntime("test-" + uuid.uuid4().hex[:8])  # no registry configured
        assert rt._image(local) == (info["Id"], info["Id"])
        docker("rmi", "-f", pushed.image)
    finally:
        docker("rmi", "-f", local, check=False)
