"""Garbage collection against real servers: kill -9 at each point of a collection leaves a
repository fsck passes, and the next collection finishes the work; and a collection
repeated while 16 writers commit, a map job runs and a peer pushes keeps every
acknowledged write readable."""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProc, Storage, tar_of
from test_jobs import pspec

from pfs import Client, errors, sync

KiB, MiB = 1 << 10, 1 << 20
SIZES = (3 * KiB, 40 * KiB, 300 * KiB, 1536 * KiB)
FAST_NODES = {"PFS_GC_NODE_TTL": "2"}  # a killed node stops counting as live after 2 s


def _gc_after_restart(c: Client) -> None:
    """The next collection: it takes the dead one's lease over once its node is gone."""
    deadline = time.monotonic() + 30
    while True:
        try:
            r = c.gc(grace="0")
            break
        except errors.Conflict:
            assert time.monotonic() < deadline, "the killed collection's lease was never taken over"
            time.sleep(0.5)
    assert r.problems == ()


@pytest.mark.parametrize("point", ["gc-acknowledged", "gc-forgot-commits", "gc-deleting", "gc-batch"])
def test_kill9_during_gc_then_the_next_gc_finishes(tmp_path: Path, point: str) -> None:
    server = ServerProc(tmp_path / "data", env=FAST_NODES).start()
    try:
        keep = {f"keep/{i:04d}.bin": os.urandom(3 * KiB) for i in range(300)}
        gone = {f"gone/{i:04d}.bin": os.urandom(3 * KiB) for i in range(1500)}  # > 1 sweep batch
        with Client(server.url) as c:
            c.put_tar("", tar_of(keep))
            c.commit()
            c.create_branch("old")
            c.put_tar("", tar_of(gone), branch="old")
            c.commit(branch="old")
            c.delete_branch("old")
            time.sleep(2.5)
        server.stop()

        server.start(env={"PFS_FAILPOINT": point})
        with Client(server.url, timeout=60) as c, pytest.raises(errors.Unavailable):
            c.gc(grace="0")
        assert server.proc is not None and server.proc.wait(10) == 137, f"the server did not die at {point}"

        server.start()
        with Client(server.url) as c:
            assert c.fsck().ok  # consistent as the kill left it, before any repair
            for path, data in list(keep.items())[::50]:
                assert c.get_file(path) == data
            time.sleep(2.5)
            _gc_after_restart(c)
            u = c.du(grace="0")
            assert u.reclaimable == 0 and u.orphans == 0, u  # the work was finished
            assert c.fsck().ok
            for path, data in keep.items():
                assert c.get_file(path) == data
    finally:
        server.stop()


@pytest.mark.slow
def test_gc_repeated_under_writers_a_job_and_a_push(tmp_path: Path, storage: Storage) -> None:
    """Embedded: one node. Cluster (PostgreSQL + S3): two nodes, the writers spread over
    both, the collections run by one: the other acknowledges each and logs its finds."""
    env = {"PFS_JOB_RUNTIME": "process"}
    target = ServerProc(tmp_path / "t", env=env, storage=storage).start()
    other = ServerProc(tmp_path / "t2", env=env, storage=storage).start() if storage.kind == "cluster" else target
    source = ServerProc(tmp_path / "s").start()
    rnd = random.Random(7)
    # Content shared between writers, deleted branches and the peer: writes of it are
    # dedupe finds of objects a collection may be about to delete.
    pool = [rnd.randbytes(n) for n in SIZES for _ in range(4)]
    acked: dict[tuple[str, str], bytes] = {}  # (branch, path) -> bytes: writes a live branch holds
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[BaseException] = []
    collections: list[int] = []
    clones: dict[str, dict[str, bytes]] = {}  # repository -> its master's files, once cloned

    def guard(fn):  # type: ignore[no-untyped-def]
        def run(*args):  # type: ignore[no-untyped-def]
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                failures.append(exc)
                stop.set()

        return run

    @guard
    def writer(i: int) -> None:
        """Writes data, drops the branch (its data is garbage), waits until that garbage is
        old enough to be swept, then writes the same data again: a dedupe find of objects
        a collection may be deleting."""
        r = random.Random(i)
        with Client((target if i % 2 else other).url, timeout=120) as c:
            prev: str | None = None
            n = 0
            while not stop.is_set():
                files = {f"f{k}.bin": r.randbytes(r.choice(SIZES)) for k in range(3)}
                files["shared.bin"] = r.choice(pool)
                c.create_branch(f"w{i}-{n}-gone")
                for path, data in files.items():
                    c.put_file(path, data, branch=f"w{i}-{n}-gone")
                c.commit(branch=f"w{i}-{n}-gone")
                c.delete_branch(f"w{i}-{n}-gone")
                time.sleep(r.uniform(1.5, 4.0))
                name = f"w{i}-{n}"
                c.create_branch(name)
                for path, data in files.items():
                    c.put_file(path, data, branch=name)
                c.commit(branch=name)
                with lock:
                    acked.update({(name, p): d for p, d in files.items()})
                if prev is not None and n % 2 == 0:  # every other branch goes too
                    c.delete_branch(prev)
                    with lock:
                        for key in [k for k in acked if k[0] == prev]:
                            del acked[key]
                prev, n = name, n + 1

    @guard
    def job_writer() -> None:
        with Client(target.url, timeout=120) as c:
            n = 0
            while not stop.is_set():
                data = pool[n % len(pool)] + str(n).encode()
                c.put_file(f"data/{n % 5}.txt", data)
                cid = c.commit(run=True).id
                with lock:
                    acked[("master", f"data/{n % 5}.txt")] = data
                status = c.wait_run(cid, timeout=120)
                assert status.state == "succeeded", status
                n += 1

    @guard
    def pusher() -> None:
        """Pushes a commit, drops it on the target, waits, pushes its child: the target
        answers `missing` with garbage it still holds, which the push then relies on."""
        with Client(source.url, timeout=120) as s, Client(other.url, timeout=120) as t:
            n = 0
            files: dict[str, bytes] = {}  # what the source's master holds
            while not stop.is_set():
                fresh = {f"p/{k}.bin": rnd.randbytes(rnd.choice(SIZES)) for k in range(4)}
                files.update(fresh)
                for path, data in fresh.items():
                    s.put_file(path, data)
                s.commit()
                sync.push(s, t, [("master", f"in-{n}-gone")])
                t.delete_branch(f"in-{n}-gone")
                time.sleep(rnd.uniform(1.5, 4.0))
                files[f"p/new-{n}.bin"] = os.urandom(50 * KiB)
                s.put_file(f"p/new-{n}.bin", files[f"p/new-{n}.bin"])
                s.commit()
                report = sync.push(s, t, [("master", f"in-{n}")])
                if all(b.result == "created" for b in report.branches):
                    with lock:
                        acked.update({(f"in-{n}", p): d for p, d in files.items()})
                if n % 3 == 0:  # a whole clone into a new repository, which the collector also collects
                    t.create_repo(f"clone-{n}")
                    with t.repo(f"clone-{n}") as dest:
                        sync.clone(s, dest)
                    with lock:
                        clones[f"clone-{n}"] = dict(files)
                n += 1

    @guard
    def collector() -> None:
        with Client(target.url, timeout=300) as c:
            while not stop.is_set():
                r = c.gc(grace="0")
                assert r.problems == (), r.problems
                collections.append(r.deleted)
                for repo in [r.name for r in c.repos() if r.name.startswith("clone-")][-2:]:
                    with c.repo(repo) as other_repo:
                        assert other_repo.gc(grace="0").problems == ()

    with Client(target.url) as c:
        c.put_file("data/0.txt", b"first\n")
        c.commit()
        acked["master", "data/0.txt"] = b"first\n"
        c.put_job("up", pspec("map", "data", "upper"))
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(16)]
    threads += [threading.Thread(target=fn) for fn in (job_writer, pusher, collector)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not stop.is_set():
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(300)
        assert not failures, failures
        assert len(collections) >= 5 and sum(collections) > 0, collections
        with Client(target.url, timeout=300) as c:
            time.sleep(2.5)
            assert c.gc(grace="0").problems == ()
            check = c.fsck()
            assert check.ok, (check.problems[:5], str(target.log_path))
            for (branch, path), data in sorted(acked.items()):
                assert c.get_file(path, branch=branch) == data, (branch, path)
            assert clones
            for repo, files in clones.items():
                with c.repo(repo) as cloned:
                    assert cloned.fsck().ok
                    for path, data in files.items():
                        assert cloned.get_file(path) == data, (repo, path)
            head = c.log("master", limit=1)[0].id
            status = c.wait_run(head, timeout=120)
            assert status.state == "succeeded"
            for k in range(5):
                want = acked.get(("master", f"data/{k}.txt"))
                if want is not None:
                    assert c.get_job_file("up", f"{k}.txt", commit=head) == want.upper()
    finally:
        stop.set()
        target.stop()
        other.stop()
        source.stop()


@pytest.mark.slow
def test_gc_gives_back_a_deleted_gigabyte(tmp_path: Path) -> None:
    """1 GiB of unique data on a branch, the branch deleted: a collection frees at least 99%
    of it on disk, and what master holds stays whole."""
    server = ServerProc(tmp_path / "data").start()

    def disk() -> int:
        return sum(f.stat().st_size for f in (tmp_path / "data").rglob("*") if f.is_file())

    def pieces(seed: int, n: int) -> Iterator[bytes]:
        r = random.Random(seed)
        for _ in range(n // MiB):
            yield r.randbytes(MiB)

    try:
        with Client(server.url, timeout=600) as c:
            keep = os.urandom(3 * MiB)
            c.put_file("keep.bin", keep)
            c.commit()
            c.create_branch("big")
            for i in range(4):
                c.put_file(f"big/{i}.bin", pieces(i, 256 * MiB), branch="big")
            c.commit(branch="big")
            before = disk()
            c.delete_branch("big")
            time.sleep(2.5)
            r = c.gc(grace="0")
            assert r.problems == () and r.deleted_bytes >= 0.99 * 1024 * MiB, r
            freed = before - disk()
            assert freed >= 0.99 * 1024 * MiB, (before, freed)
            assert c.get_file("keep.bin") == keep and c.fsck().ok
    finally:
        server.stop()


def test_a_cleanly_stopped_node_leaves_and_a_killed_one_stops_counting(tmp_path: Path) -> None:
    """A GC waits for every live node to acknowledge it: a node stopped cleanly removes
    itself at once; a killed one counts as live until PFS_GC_NODE_TTL passes."""
    server = ServerProc(tmp_path / "data", env=FAST_NODES).start()

    def nodes() -> int:
        with sqlite3.connect(tmp_path / "data" / "meta.sqlite") as db:
            return int(db.execute("SELECT count(*) FROM nodes").fetchone()[0])

    try:
        assert nodes() == 1
        server.stop()
        assert nodes() == 0
        server.start()
        server.kill9()
        assert nodes() == 1  # its row stays; a GC skips it once its heartbeat is 2 s old
        server.start()
        time.sleep(2.5)
        with Client(server.url) as c:
            assert c.gc(grace="0", dry_run=True).problems == ()
    finally:
        server.stop()
