"""Crash consistency (reliability catalogue A1, A2): a real `pfs serve` is crashed at every
named failpoint, and kill -9'd at random moments under load; after a restart with no manual
step, fsck is clean and nothing acknowledged is lost.

The history checker (catalogue H3) knows every operation the client invoked and which of
them were acknowledged. Every write goes to a fresh path with unique content, so each file
in the repository can be traced back to exactly one write:
- every acknowledged commit is on master's history, which is a single parent chain, in
  the order the commits were acknowledged;
- an acknowledged commit holds every write acknowledged before it was invoked, no write
  invoked after it, and each file with exactly the bytes written;
- every acknowledged write is visible on master (staged or committed) with its bytes.
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import pytest
from conftest import ServerProc

from pfs import Client, errors
from pfs.config import Config
from pfs.repository.fsck import fsck


@dataclass
class Write:
    path: str
    digest: str
    size: int
    acked: bool = False


@dataclass
class CommitOp:
    invoked_after: int  # how many writes had been invoked when this commit was invoked
    id: str | None = None  # set once acknowledged


@dataclass
class History:
    """Operations of one sequential client, in invocation order."""

    writes: list[Write] = field(default_factory=list)
    commits: list[CommitOp] = field(default_factory=list)
    checked: int = 0  # acknowledged commits already checked in full

    def put(self, c: Client, path: str, data: bytes) -> Write:
        w = Write(path, blake3.blake3(data).hexdigest(), len(data))
        self.writes.append(w)
        c.put_file(path, data)
        w.acked = True
        return w

    def commit(self, c: Client) -> CommitOp:
        op = CommitOp(len(self.writes))
        self.commits.append(op)
        op.id = c.commit(message=f"commit {len(self.commits)}").id
        return op

    def acked_commits(self) -> list[CommitOp]:
        return [op for op in self.commits if op.id is not None]


def content(path: str, size: int, rnd: random.Random) -> bytes:
    head = path.encode() + b"\n"
    return head + rnd.randbytes(max(0, size - len(head)))


def walk(c: Client, commit: str | None = None, branch: str | None = None, path: str = "") -> dict[str, tuple[str, int]]:
    """Every file below `path`: path -> (content hash, size)."""
    out: dict[str, tuple[str, int]] = {}
    for e in c.ls(path, commit=commit, branch=branch):
        if e.type == "dir":
            out.update(walk(c, commit, branch, e.path))
        else:
            out[e.path] = (e.hash, e.size)
    return out


def check_files(files: dict[str, tuple[str, int]], hist: History, upto: int, what: str) -> None:
    """`files` holds every acknowledged write among the first `upto` invoked, nothing that
    was invoked later, and each file exactly as it was written."""
    by_path = {w.path: w for w in hist.writes}
    invoked = hist.writes[:upto]
    must = {w.path for w in invoked if w.acked}
    lost = sorted(must - files.keys())
    assert not lost, f"{what}: acknowledged writes lost: {lost}"
    unexpected = sorted(files.keys() - {w.path for w in invoked})
    assert not unexpected, f"{what}: files that were not written before it: {unexpected}"
    for p, got in files.items():
        w = by_path[p]
        assert got == (w.digest, w.size), f"{what}: {p} has the wrong content"


def check_repo(server: ServerProc, hist: History, full: bool = False, download: bool = False) -> None:
    """The whole invariant set, through the running server."""
    tmp = server.data_dir / "tmp"
    assert not os.listdir(tmp), f"temporary files survived the restart: {os.listdir(tmp)}"
    with Client(server.url, timeout=120) as c:
        rep = c.fsck()
        assert rep.ok, rep.problems
        log = c.log("master")
        for newer, older in zip(log, log[1:], strict=False):
            assert newer.parents == (older.id,), "master's history is not a single parent chain"
        assert log[-1].parents == () if log else True
        pos = {e.id: i for i, e in enumerate(log)}
        acked = hist.acked_commits()
        missing = [op.id for op in acked if op.id not in pos]
        assert not missing, f"acknowledged commits missing from master: {missing}"
        order = [pos[op.id] for op in acked if op.id is not None]
        assert order == sorted(order, reverse=True) and len(set(order)) == len(order), "history out of order"
        for op in acked[0 if full else hist.checked :]:
            assert op.id is not None
            check_files(walk(c, commit=op.id), hist, op.invoked_after, f"commit {op.id[:12]}")
        hist.checked = len(acked)
        dirty = walk(c, branch="master")
        check_files(dirty, hist, len(hist.writes), "master (with dirty writes)")
        if download:  # the bytes themselves, through the verifying read path
            for p, (digest, size) in dirty.items():
                data = c.get_file(p, branch="master")
                assert (blake3.blake3(data).hexdigest(), len(data)) == (digest, size), p


def final_offline_checks(data_dir: Path) -> None:
    """With the server stopped: fsck in-process and SQLite's own integrity check."""
    report = fsck(Config(str(data_dir)).open())
    assert report.ok, report.problems
    assert report.commits > 0
    with sqlite3.connect(data_dir / "meta.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# ---- A1: every failpoint ---------------------------------------------------------------

# (failpoint, the operation it interrupts). Objects are written by uploads (chunks) and by
# commits (trees and the commit object): both are crashed at each object-store point.
CASES = [
    ("stage.before", "put"),  # chunks durable, the write not staged yet
    ("objects.synced", "put"),  # object data fsynced, not yet renamed to its hash name
    ("objects.synced", "commit"),
    ("objects.partly_renamed", "put"),  # some objects of a batch in place, the rest still temporary
    ("objects.partly_renamed", "commit"),
    ("commit.tree_written", "commit"),  # trees handed to the batch, not durable yet
    ("commit.object_written", "commit"),  # trees and commit object durable, ref not moved
    ("commit.ref_swapped", "commit"),  # ref moved, reply not sent: the client cannot know the outcome
]
SIZES = [100, 50_000, 2_500_000]  # inline in its tree entry, one chunk, several chunks


@pytest.mark.parametrize(("point", "op"), CASES)
def test_crash_at_failpoint_recovers_without_losing_acknowledged_work(tmp_path: Path, point: str, op: str) -> None:
    rnd = random.Random(point)
    hist = History()
    server = ServerProc(tmp_path / "data").start()
    try:
        # Acknowledged state before the crash: commits, a big file with a manifest, and a
        # dirty write that is staged only.
        with Client(server.url) as c:
            hist.put(c, "base/small.txt", content("base/small.txt", 50, rnd))
            hist.put(c, "base/big.bin", content("base/big.bin", 12 << 20, rnd))
            hist.commit(c)
            hist.put(c, "base/second.bin", content("base/second.bin", 300_000, rnd))
            hist.commit(c)
            hist.put(c, "base/dirty.txt", content("base/dirty.txt", 3000, rnd))
        server.kill9()

        server.start(env={"PFS_FAILPOINT": point})
        interrupted: tuple[str, str, bytes] | None = None
        with Client(server.url, timeout=60) as c:
            first = 2 if op == "put" else 0  # an inline file writes no object: the commit does
            for i in range(8):
                path = f"run/{i:02d}.bin"
                data = content(path, SIZES[(first + i) % len(SIZES)], rnd)
                try:
                    hist.put(c, path, data)
                except errors.Unavailable:
                    interrupted = ("put", path, data)
                    break
                try:
                    hist.commit(c)
                except errors.Unavailable:
                    interrupted = ("commit", "", b"")
                    break
        assert interrupted is not None, f"failpoint {point} was never hit"
        assert interrupted[0] == op, f"{point} interrupted a {interrupted[0]}, not a {op}"
        assert server.proc is not None and server.proc.wait(10) == 137, "the server did not die at the failpoint"

        server.start()  # no failpoint; no manual recovery step
        check_repo(server, hist, full=True)
        # The interrupted operation is all or nothing, and which one follows from the point.
        with Client(server.url) as c:
            head = c.log("master", limit=1)[0]
            last_acked = hist.acked_commits()[-1].id
            if point == "commit.ref_swapped":  # done, only the reply was lost
                assert head.parents == (last_acked,)
            else:  # every other point comes before the ref swap
                assert head.id == last_acked
            if interrupted[0] == "put":  # every point an upload can hit comes before staging
                assert interrupted[1] not in walk(c, branch="master")
        # Re-issuing the interrupted operation works, and the repository stays consistent.
        with Client(server.url) as c:
            if interrupted[0] == "put":
                hist.put(c, interrupted[1], interrupted[2])
            hist.commit(c)
            hist.put(c, "after/x.bin", content("after/x.bin", 70_000, rnd))
            hist.commit(c)
        check_repo(server, hist, full=True, download=True)
    finally:
        server.stop()
    final_offline_checks(tmp_path / "data")


# ---- A2: random kill -9 under load ----------------------------------------------------

KILLS = 30


def _load(url: str, hist: History, rnd: random.Random, failures: list[str]) -> None:
    """Uploads and commits until the server goes away (or 200 operations)."""
    with Client(url, timeout=60) as c:
        for _ in range(200):
            try:
                if hist.writes and hist.writes[-1].acked and rnd.random() < 0.35:
                    hist.commit(c)
                else:
                    path = f"k/{len(hist.writes):05d}.bin"
                    r = rnd.random()
                    size = (
                        rnd.randrange(10, 2000) if r < 0.4 else rnd.randrange(3000, 200_000) if r < 0.9 else 1_500_000
                    )
                    hist.put(c, path, content(path, size, rnd))
            except errors.Unavailable:
                return  # killed: the operation in flight is indeterminate
            except errors.PfsError as exc:
                failures.append(f"{type(exc).__name__}: {exc.message}")
                return


def test_random_kill9_under_load(tmp_path: Path) -> None:
    seed = int(os.environ.get("PFS_TEST_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"random kill -9 test: PFS_TEST_SEED={seed}")
    hist = History()
    server = ServerProc(tmp_path / "data").start()
    failures: list[str] = []
    mid_op = 0
    try:
        for k in range(KILLS):
            rnd = random.Random(f"{seed}/{k}")
            delay = rnd.uniform(0.003, 0.3)
            writer = threading.Thread(target=_load, args=(server.url, hist, rnd, failures), daemon=True)
            writer.start()
            writer.join(delay)
            server.kill9()
            writer.join(60)
            assert not writer.is_alive(), f"seed {seed}: the writer hung after kill {k}"
            assert not failures, f"seed {seed}, kill {k}: unexpected errors {failures}"
            last = hist.commits[-1] if hist.commits else None
            if (hist.writes and not hist.writes[-1].acked) or (last is not None and last.id is None):
                mid_op += 1
            server.start()
            try:
                check_repo(server, hist)
            except AssertionError as exc:
                raise AssertionError(f"seed {seed}, after kill {k}: {exc}") from exc
        check_repo(server, hist, full=True, download=True)
    finally:
        server.stop()
    acked_writes = sum(w.acked for w in hist.writes)
    print(
        f"{KILLS} kills ({mid_op} mid-operation), {acked_writes}/{len(hist.writes)} writes "
        f"and {len(hist.acked_commits())}/{len(hist.commits)} commits acknowledged"
    )
    assert len(hist.acked_commits()) >= 10 and acked_writes >= 30, "too little work between kills to test anything"
    final_offline_checks(tmp_path / "data")


# ---- temporary files: swept after a crash, never under a live server -------------------


def test_fsck_beside_a_live_server_keeps_its_uploads_in_flight(tmp_path: Path) -> None:
    """Opening the store sweeps temporary files (a crash's leftovers). `pfs fsck --data-dir`
    run beside a live server used to sweep that server's uploads in flight too, failing
    them with a 500; the sweep now happens only when no other process has the store open."""
    data_dir = tmp_path / "data"
    server = ServerProc(data_dir).start()
    piece = b"".join(i.to_bytes(4, "little") for i in range(1 << 18))  # 1 MiB, not compressible to nothing
    pieces = [bytes([n]) + piece[1:] for n in range(48)]
    in_flight = threading.Event()
    result: dict[str, object] = {}

    def slow_body() -> Iterator[bytes]:
        for n, p in enumerate(pieces):
            if n == 24:
                in_flight.set()
            time.sleep(0.02)
            yield p

    def upload() -> None:
        try:
            with Client(server.url) as c:
                result["ok"] = c.put_file("slow.bin", slow_body())
        except errors.PfsError as exc:
            result["error"] = f"{type(exc).__name__}: {exc.message}"

    try:
        t = threading.Thread(target=upload, daemon=True)
        t.start()
        assert in_flight.wait(60)
        deadline = time.monotonic() + 10
        while not os.listdir(data_dir / "tmp") and time.monotonic() < deadline:
            time.sleep(0.01)
        before = set(os.listdir(data_dir / "tmp"))
        assert before, "the upload left no temporary files to protect"
        cli = subprocess.run(
            [sys.executable, "-m", "pfs.cli", "fsck", "--data-dir", str(data_dir)], capture_output=True, timeout=120
        )
        assert cli.returncode == 0, cli.stdout + cli.stderr
        t.join(60)
        assert "error" not in result, result
        with Client(server.url) as c:
            assert c.get_file("slow.bin") == b"".join(pieces)
        server.kill9()
        (data_dir / "tmp" / "left-by-crash").write_bytes(b"garbage")
        server.start()  # alone again: the leftovers of the crash are swept
        assert not os.listdir(data_dir / "tmp")
    finally:
        server.stop()
