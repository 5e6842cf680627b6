"""Several stateless pfs nodes on one PostgreSQL + one S3 store (SeaweedFS): one repository,
served by all of them, surviving the loss of a node or of a storage server."""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServerProc, Storage
from pg import PostgresServer
from seaweed import SeaweedServer, running_seaweed

from pfs import Client, errors

JOBSERVER = str(Path(__file__).parent / "jobimage" / "jobserver.py")
J = {"accept": "application/json"}


def cluster_storage(tmp_path: Path, postgres: PostgresServer, weed: SeaweedServer) -> Storage:
    return Storage(tmp_path / "unused", postgres, weed)


def start_nodes(tmp_path: Path, storage: Storage, n: int, env: dict[str, str] | None = None) -> list[ServerProc]:
    """n nodes, each with its own scratch directory, all on the same metadata and objects."""
    nodes = [ServerProc(tmp_path / f"node{i}", storage=storage, env=env) for i in range(n)]
    for node in nodes:
        node.start()
    return nodes


@pytest.fixture
def nodes(tmp_path: Path, postgres: PostgresServer, seaweed: SeaweedServer) -> Iterator[list[ServerProc]]:
    started = start_nodes(tmp_path, cluster_storage(tmp_path, postgres, seaweed), 3)
    yield started
    for node in started:
        node.stop()


def test_every_node_serves_the_same_repository(nodes: list[ServerProc]) -> None:
    a, b, c = (httpx.Client(base_url=n.url, timeout=30) for n in nodes)
    assert a.post("/file/data/x.txt", content=b"written via a").status_code == 201
    assert b.get("/file/data/x.txt").content == b"written via a"  # dirty write, at once
    cid = c.post("/commit", params={"message": "via c"}).text.strip()
    assert a.get("/file/data/x.txt", params={"commit": cid}).content == b"written via a"
    assert b.post("/branch", params={"branch": "exp", "commit": cid}).status_code == 201
    assert "exp" in c.get("/branch").text
    assert c.post("/file/data/y.txt", params={"branch": "exp"}, content=b"on exp").status_code == 201
    exp = a.post("/commit", params={"branch": "exp"}).text.strip()
    assert b.get("/diff", params={"from": cid, "to": exp}).text == "A\tdata/y.txt\n"
    assert [x["id"] for x in c.get("/log", params={"branch": "exp"}, headers=J).json()] == [exp, cid]
    assert a.get("/fsck", headers=J).json()["ok"] is True
    for h in (a, b, c):
        h.close()


def test_a_stale_expect_through_another_node_is_a_409(nodes: list[ServerProc]) -> None:
    a, b = Client(nodes[0].url), Client(nodes[1].url)
    a.put_file("x", b"1")
    head = a.commit().id
    a.put_file("y", b"2")
    a.commit(expect=head)  # node a moves master
    b.put_file("z", b"3")
    with pytest.raises(errors.BranchMoved):
        b.commit(expect=head)  # node b's expectation is stale: 409, nothing committed
    assert b.get_file("z") == b"3"  # its staged write is kept for the retry
    b.commit(expect=a.log()[0].id)
    assert {e.path for e in a.ls(commit="master")} == {"x", "y", "z"}
    a.close()
    b.close()


def test_branches_merged_from_three_nodes_lose_nothing(nodes: list[ServerProc]) -> None:
    """Writers on three nodes, each committing to its own branch and merging it into
    master: merges race on master's head, and every acknowledged file ends up there."""
    n_writers, rounds = 9, 3
    acked: list[str] = []
    lock = threading.Lock()
    failures: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            with Client(nodes[i % len(nodes)].url) as c:
                c.create_branch(f"w{i}")
                for r in range(rounds):
                    path = f"w{i}/r{r}"
                    c.put_file(path, f"{i}:{r}".encode(), branch=f"w{i}")
                    c.commit(branch=f"w{i}")
                    c.merge(f"w{i}", "master")
                    with lock:
                        acked.append(path)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n_writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not failures, failures
    assert len(acked) == n_writers * rounds
    with Client(nodes[2].url) as c:
        for path in acked:
            i, r = path[1:].split("/r")
            assert c.get_file(path, commit="master") == f"{i}:{r}".encode()


def test_plain_commits_from_three_nodes_to_one_branch_keep_every_write(nodes: list[ServerProc]) -> None:
    """No `expect`: a node that loses the race retries by itself; nothing staged is lost."""
    errors_seen: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with Client(nodes[i % 3].url) as c:
                for r in range(5):
                    c.put_file(f"p/{i}-{r}", b"x" * (i + r))
                    c.commit()
        except BaseException as exc:
            errors_seen.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    assert not errors_seen, errors_seen
    with Client(nodes[1].url) as c:
        c.commit()  # whatever a last commit did not take yet
        names = {e.path for e in c.ls("p", commit="master")}
    assert names == {f"p/{i}-{r}" for i in range(6) for r in range(5)}


class RetryingClient:
    """What a client behind a load balancer does: on a dead node, try the next one."""

    def __init__(self, urls: list[str]) -> None:
        self.clients = [httpx.Client(base_url=u, timeout=10) for u in urls]
        self.start = random.randrange(len(urls))

    def call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        last: Exception | None = None
        for attempt in range(30):
            c = self.clients[(self.start + attempt) % len(self.clients)]
            try:
                r = c.request(method, url, **kw)
            except httpx.TransportError as exc:  # killed node: connection refused or reset
                last = exc
                continue
            if r.status_code == 503:
                last = RuntimeError(r.text)
                time.sleep(0.2)
                continue
            return r
        raise AssertionError(f"no node answered: {last}")

    def close(self) -> None:
        for c in self.clients:
            c.close()


def test_kill9_one_of_three_nodes_under_load_loses_no_acknowledged_write(
    tmp_path: Path, postgres: PostgresServer, seaweed: SeaweedServer
) -> None:
    storage = cluster_storage(tmp_path, postgres, seaweed)
    nodes = start_nodes(tmp_path, storage, 3, env={"PFS_JOB_RUNTIME": "process", "PFS_JOB_STALE_SECONDS": "3"})
    try:
        with Client(nodes[0].url) as c:
            c.put_file("in/seed", b"seed\n")
            spec = {
                "type": "map",
                "input": "in",
                "runtime": "process",
                "command": [sys.executable, JOBSERVER, "slow", "0.05"],
                "parallelism": 2,
                "inflight": 2,
                "start_timeout": 20,
            }
            c.put_job("up", spec)
        acked_files: dict[str, bytes] = {}
        acked_commits: list[str] = []
        runs: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()
        failures: list[BaseException] = []

        def load(i: int) -> None:
            rc = RetryingClient([n.url for n in nodes])
            try:
                n = 0
                while not stop.is_set():
                    path, body = f"in/w{i}-{n}", f"writer {i} file {n}\n".encode()
                    r = rc.call("POST", f"/file/{path}", content=body)
                    assert r.status_code == 201, r.text
                    with lock:
                        acked_files[path] = body
                    if n % 4 == 3:
                        params = {"run": "1"} if n % 8 == 7 else {}
                        r = rc.call("POST", "/commit", params=params)
                        if r.status_code == 201:
                            with lock:
                                acked_commits.append(r.text.strip())
                                if params:
                                    runs.append(r.text.strip())
                        else:
                            assert r.status_code == 409, r.text  # a retried commit that had nothing left
                    n += 1
            except BaseException as exc:
                failures.append(exc)
            finally:
                rc.close()

        threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while not runs and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runs, "no run was started under load"
        time.sleep(1.0)
        nodes[1].kill9()  # mid-load, maybe mid-run
        time.sleep(3.0)
        stop.set()
        for t in threads:
            t.join(60)
        assert not failures, failures
        assert len(acked_files) > 50 and len(runs) >= 2  # a real load, across the kill
        survivors = [nodes[0], nodes[2]]
        with Client(survivors[0].url) as c:
            c.commit()  # everything acknowledged but not yet committed
            for path, body in acked_files.items():
                assert c.get_file(path, commit="master") == body, path
            for cid in acked_commits:
                c.inspect_commit(cid)  # every acknowledged commit exists
            assert c.fsck().ok is True
        # every run finishes on a surviving node, even one the killed node was driving
        with Client(survivors[1].url) as c:
            for cid in runs:
                status = c.wait_run(cid, timeout=120)
                assert status.state == "succeeded", status
            last = runs[-1]
            assert c.get_job_file("up", "seed", commit=last) == b"SEED\n"
    finally:
        reap(nodes[1])
        for node in nodes:
            node.stop()


def reap(node: ServerProc) -> None:
    """Start a killed node again and stop it: its start removes the job workers it left."""
    if node.proc is not None and node.proc.poll() is not None:
        node.start()
        node.stop()


def test_job_run_resumes_on_another_node_when_its_driver_dies(
    tmp_path: Path, postgres: PostgresServer, seaweed: SeaweedServer
) -> None:
    storage = cluster_storage(tmp_path, postgres, seaweed)
    env = {"PFS_JOB_RUNTIME": "process", "PFS_JOB_STALE_SECONDS": "3"}
    a = ServerProc(tmp_path / "a", storage=storage, env=env).start()
    b: ServerProc | None = None
    try:
        with Client(a.url) as c:
            for i in range(8):
                c.put_file(f"d/{i}", f"v{i}".encode())
            spec = {
                "type": "map",
                "input": "d",
                "runtime": "process",
                "command": [sys.executable, JOBSERVER, "slow", "0.5"],
                "parallelism": 1,
                "inflight": 1,
            }
            c.put_job("slow", spec)
            cid = c.commit(run=True).id
            deadline = time.monotonic() + 30
            while c.run_status(cid).jobs[0].done < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
        a.kill9()  # the driver dies mid-job; only then does a second node exist
        b = ServerProc(tmp_path / "b", storage=storage, env=env).start()
        with Client(b.url) as c:
            status = c.wait_run(cid, timeout=120)
            assert status.state == "succeeded", status
            assert c.get_job_file("slow", "7", commit=cid) == b"V7"
    finally:
        reap(a)
        a.stop()
        if b is not None:
            b.stop()


def test_replicated_seaweedfs_survives_the_loss_of_a_volume_server(tmp_path: Path, postgres: PostgresServer) -> None:
    with running_seaweed(tmp_path / "weed", volumes=3, replication="001") as weed:
        storage = cluster_storage(tmp_path, postgres, weed)
        (node,) = start_nodes(tmp_path, storage, 1)
        try:
            rnd = random.Random(3)
            files = {f"f/{i}": rnd.randbytes(rnd.randrange(10, 3 << 20)) for i in range(24)}
            with Client(node.url) as c:
                for path, data in files.items():
                    c.put_file(path, data)
                cid = c.commit().id
                held = [sum(p.stat().st_size for p in d.glob("*.dat")) for d in weed.volume_dirs()]
                victim = max(range(len(held)), key=lambda i: held[i])
                assert held[victim] > 0  # the server we kill holds data
                weed.kill_volume(victim)
                for path, data in files.items():
                    assert c.get_file(path, commit=cid) == data, path
                assert c.fsck().ok is True
                c.put_file("after", b"still writable")  # new volumes go to the live servers
                assert c.get_file("after") == b"still writable"
        finally:
            node.stop()
