"""Concurrency on one server (reliability catalogue C1-C3): many writers committing to one
branch lose nothing, history stays a single parent chain, and create-only names have
exactly one winner."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from conftest import ServerProc

from pfs import Client, errors
from pfs.config import Config
from pfs.repository.fsck import fsck


def run_threads(n: int, target: Callable[[int], None]) -> list[str]:
    """Run target(0..n-1) in threads released together; the errors they raised."""
    barrier = threading.Barrier(n)
    failures: list[str] = []

    def body(i: int) -> None:
        try:
            barrier.wait(30)
            target(i)
        except BaseException as exc:  # reported by the test, not lost in a thread
            failures.append(f"thread {i}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a writer hung"
    return failures


def check_chain(c: Client, acked: set[str]) -> list[dict[str, Any]]:
    """master's history: a single parent chain from one root, holding each of `acked`
    exactly once and nothing else."""
    log = c.log("master")
    for newer, older in zip(log, log[1:], strict=False):
        assert newer.parents == (older.id,), "master's history is not a single parent chain"
    assert log[-1].parents == ()
    ids = [e.id for e in log]
    assert len(ids) == len(set(ids))
    assert set(ids) == acked, f"{len(acked - set(ids))} acknowledged commits missing, {len(set(ids) - acked)} unknown"
    return log


def offline_fsck(server: ServerProc) -> None:
    server.stop()
    report = fsck(Config(str(server.data_dir)).open())
    assert report.ok, report.problems


@dataclass
class Put:
    writer: int
    n: int
    path: str
    data: bytes
    commit: str | None = None  # the acknowledged commit this writer made right after the put


def data_for(path: str, size: int) -> bytes:
    line = (path + "\n").encode()
    return (line * (size // len(line) + 1))[:size]


def test_16_writers_commit_to_one_branch_nothing_lost(server: ServerProc) -> None:
    writers, rounds = 16, 20
    puts: list[list[Put]] = [[] for _ in range(writers)]
    errors_seen: list[str] = []

    def writer(i: int) -> None:
        with Client(server.url, timeout=120) as c:
            for n in range(rounds):
                path = f"w{i:02d}/f{n:03d}"
                # sizes from a few bytes (inline) to ~40 KB (a chunk object)
                p = Put(i, n, path, data_for(path, 17 + (i * 997 + n * 131) % 40_000))
                try:
                    c.put_file(path, p.data)
                    puts[i].append(p)
                    p.commit = c.commit(message=f"w{i} n{n}").id
                except errors.PfsError as exc:
                    errors_seen.append(f"w{i} n{n}: {type(exc).__name__} {exc.message}")

    failures = run_threads(writers, writer)
    assert not failures, failures
    assert not errors_seen, f"{len(errors_seen)} failed requests, e.g. {errors_seen[:5]}"
    everything = [p for ps in puts for p in ps]
    assert len(everything) == writers * rounds
    acked = {p.commit for p in everything if p.commit is not None}
    assert len(acked) == writers * rounds, "two writers were handed the same commit id"
    with Client(server.url) as c:
        log = check_chain(c, acked)
        head = log[0].id
        tree = {e.path: e for e in c.ls("", commit=head)}
        assert len(tree) == writers  # w00 .. w15
        for i in range(writers):
            files = {e.name: e for e in c.ls(f"w{i:02d}", commit=head)}
            assert sorted(files) == [f"f{n:03d}" for n in range(rounds)], f"writer {i} lost files"
        for p in everything:  # the bytes, read back from each writer's own commit (causality)
            assert p.commit is not None
            assert c.get_file(p.path, commit=p.commit) == p.data, f"{p.path} wrong in {p.commit}"
            assert c.get_file(p.path, commit=head) == p.data
        # Every write was followed by its writer's commit: nothing is left staged.
        assert c.diff(head, c.commit(message="nothing left").id) == []
    offline_fsck(server)


def test_writers_with_expected_head_get_409_and_lose_nothing(server: ServerProc) -> None:
    """C1 proper: commit with `expect=<head I saw>`; losers get 409 (no commit made) and
    retry; their writes stay staged meanwhile, so nothing is lost."""
    writers, rounds = 8, 8
    acked: list[str] = []
    conflicts = Counter[int]()
    errors_seen: list[str] = []
    puts: list[Put] = []

    def writer(i: int) -> None:
        with Client(server.url, timeout=120) as c:
            for n in range(rounds):
                path = f"e{i}/{n}"
                p = Put(i, n, path, data_for(path, 100 + n))
                c.put_file(path, p.data)
                puts.append(p)
                for _ in range(200):
                    head = next(b.head for b in c.branches() if b.name == "master")
                    try:
                        p.commit = c.commit(message=f"e{i} {n}", expect=head).id
                        acked.append(p.commit)
                        break
                    except errors.BranchMoved:
                        conflicts[i] += 1
                    except errors.PfsError as exc:
                        errors_seen.append(f"{type(exc).__name__} {exc.message}")
                        return
                else:
                    errors_seen.append(f"e{i} {n}: never won the race in 200 tries")

    failures = run_threads(writers, writer)
    assert not failures and not errors_seen, (failures, errors_seen)
    assert len(acked) == writers * rounds
    print(f"409s: {sum(conflicts.values())} for {len(acked)} commits")
    with Client(server.url) as c:
        log = check_chain(c, set(acked))
        head = log[0].id
        for p in puts:
            assert p.commit is not None and c.get_file(p.path, commit=p.commit) == p.data
            assert c.get_file(p.path, commit=head) == p.data
    offline_fsck(server)


@dataclass
class Timed:
    value: bytes
    invoked: float
    acked: float


def test_concurrent_writes_to_one_path_last_acknowledged_wins(server: ServerProc) -> None:
    writers, rounds = 12, 10
    shared: list[Timed] = []
    own: dict[str, bytes] = {}
    commits: list[str] = []
    lock = threading.Lock()

    def writer(i: int) -> None:
        with Client(server.url, timeout=120) as c:
            for n in range(rounds):
                value = f"writer {i} round {n}\n".encode() * (1 + (i * n) % 200)  # inline and chunked sizes
                t0 = time.monotonic()
                c.put_file("shared.txt", value)
                t1 = time.monotonic()
                mine = f"own/{i}-{n}"
                c.put_file(mine, mine.encode())
                with lock:
                    shared.append(Timed(value, t0, t1))
                    own[mine] = mine.encode()
                if n % 3 == 2:
                    cid = c.commit(message=f"{i}/{n}").id
                    with lock:
                        commits.append(cid)

    failures = run_threads(writers, writer)
    assert not failures, failures
    values = {t.value for t in shared}
    with Client(server.url) as c:
        final = c.get_file("shared.txt", branch="master")
        winner = [t for t in shared if t.value == final]
        assert winner, "shared.txt holds a value nobody wrote"
        # Linearizable last-writer-wins: no write that began after the winner was
        # acknowledged can have been overwritten by it.
        w = winner[0]
        later = [t for t in shared if t.invoked > w.acked]
        assert not later, f"{len(later)} writes started after the winning one was acknowledged, yet lost"
        for cid in commits:  # every commit holds one of the written values, whole
            assert c.get_file("shared.txt", commit=cid) in values
        last = c.commit(message="final").id
        assert c.get_file("shared.txt", commit=last) == final
        for path, data in own.items():  # nothing lost elsewhere
            assert c.get_file(path, commit=last) == data
        assert len(c.ls("own", commit=last)) == writers * rounds
        c.put_file("shared.txt", b"sequential\n")  # and a plain later write simply wins
        assert c.get_file("shared.txt") == b"sequential\n"
    offline_fsck(server)


def test_concurrent_branch_creation_has_exactly_one_winner(server: ServerProc) -> None:
    racers, rounds = 32, 10
    with Client(server.url) as c:
        c.put_file("a", b"a")
        first = c.commit().id
        c.put_file("b", b"b")
        second = c.commit().id
    starts = [first, second]
    for r in range(rounds):
        name = f"race-{r}"
        results: list[tuple[int, int, str]] = []  # (racer, status, body)

        def create(i: int, name: str = name, results: list[tuple[int, int, str]] = results) -> None:
            with httpx.Client(base_url=server.url, timeout=60) as h:
                resp = h.post("/branch", params={"branch": name, "commit": starts[i % 2]})
                results.append((i, resp.status_code, resp.text))

        failures = run_threads(racers, create)
        assert not failures, failures
        statuses = Counter(s for _, s, _ in results)
        assert statuses == {201: 1, 409: racers - 1}, f"round {r}: {statuses}"
        winner = next(i for i, s, _ in results if s == 201)
        with Client(server.url) as c:
            heads = [b.head for b in c.branches() if b.name == name]
            assert heads == [starts[winner % 2]], "the branch does not point where its creator put it"
    with Client(server.url) as c:
        assert sorted(b.name for b in c.branches()) == ["master"] + sorted(f"race-{r}" for r in range(rounds))
    offline_fsck(server)


def test_branch_reads_racing_commits_see_every_acknowledged_write(server: ServerProc) -> None:
    """Read-your-writes across commits (catalogue I4: never a branch in an intermediate
    state): a file acknowledged before a read starts is visible to that read, whether the
    read sees it staged or committed."""
    acked: list[tuple[str, float]] = []
    done = threading.Event()
    anomalies: list[str] = []

    def writer() -> None:
        with Client(server.url) as c:
            for i in range(300):
                if anomalies:
                    break
                path = f"r/{i:04d}"
                c.put_file(path, path.encode())
                acked.append((path, time.monotonic()))
                if i % 2:
                    c.commit()
        done.set()

    def reader() -> None:
        with Client(server.url) as c:
            while not done.is_set() and not anomalies:
                start = time.monotonic()
                must = {p for p, t in list(acked) if t < start}
                if not must:
                    continue
                newest = max(must)
                try:
                    if c.get_file(newest, branch="master") != newest.encode():
                        anomalies.append(f"GET {newest}: wrong bytes")
                except errors.FileNotFound:
                    anomalies.append(f"GET {newest}: 404 for an acknowledged write")
                listed = {e.path for e in c.ls("r", branch="master")}
                if must - listed:
                    anomalies.append(f"listing misses {sorted(must - listed)[:3]}")

    failures = run_threads(2, lambda i: writer() if i == 0 else reader())
    assert not failures, failures
    assert not anomalies, anomalies[:5]
