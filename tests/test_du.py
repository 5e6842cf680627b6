"""`GET /du` (`pfs du`): what a repository stores, per branch and in all, and what a
garbage collection would give back, on each backend (its listing of the object store
gives each object's stored size and last write)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import AppServer, ServerProc

from pfs import Client, errors

KiB, MiB = 1 << 10, 1 << 20


def test_du_per_branch_and_what_a_deleted_branch_leaves(client: Client, app: AppServer) -> None:
    shared = os.urandom(3 * MiB)  # random: stored as it is, so stored bytes track it closely
    client.put_file("data/shared.bin", shared)
    client.commit()
    client.create_branch("exp")
    only = os.urandom(2 * MiB)
    client.put_file("data/only.bin", only, branch="exp")
    client.commit(branch="exp")
    dirty = os.urandom(1 * MiB)
    client.put_file("dirty.bin", dirty, branch="exp")  # staged, not committed: reachable all the same

    u = client.du(grace="0")
    assert u.problems == () and u.reclaimable == 0 and u.reclaimable_bytes == 0
    by = {b.name: b for b in u.branches}
    assert by["master"].logical == len(shared)
    assert by["exp"].logical == len(shared) + len(only)  # the head: dirty writes are not in it
    master_stored, exp_stored = by["master"].stored or 0, by["exp"].stored or 0
    assert len(shared) <= master_stored < len(shared) + 64 * KiB
    assert len(shared) + len(only) + len(dirty) <= exp_stored < master_stored + len(only) + len(dirty) + 64 * KiB
    assert (by["master"].exclusive or 0) < 16 * KiB  # only master's own commit and trees: exp shares the rest
    assert len(only) + len(dirty) <= (by["exp"].exclusive or 0) < len(only) + len(dirty) + 64 * KiB
    assert u.reachable == u.objects and u.reachable_bytes == u.stored
    assert u.logical == 2 * len(shared) + len(only) and u.dedupe > 1.0  # shared.bin is on both heads, stored once

    assert u.orphans == 0 and u.orphans_shown == ()
    exp_head = next(b.head for b in client.branches() if b.name == "exp")
    client.delete_branch("exp")
    after = client.du(grace="0")
    assert [b.name for b in after.branches] == ["master"]
    assert after.orphans == 1 and [c.id for c in after.orphans_shown] == [exp_head]  # what a sweep would remove
    freed = after.reclaimable_bytes
    assert by["exp"].exclusive == freed  # exactly what exp alone reached
    assert after.reachable_bytes == u.reachable_bytes - freed and after.objects == u.objects
    # within the grace period the same objects are unreachable but not yet reclaimable
    kept = client.du(grace="1h")
    assert kept.reclaimable == 0 and kept.young == after.reclaimable and kept.young_bytes == freed


def test_du_refuses_a_bad_grace_and_reports_damage(client: Client, app: AppServer) -> None:
    for bad in ("soon", "-1", "1y", "99999999d"):
        with pytest.raises(errors.BadRequest):
            client.du(grace=bad)
    client.put_file("d/big.bin", os.urandom(3 * MiB))
    head = client.commit().id
    root = app.repo.get_commit(head).tree
    name = next(n for n in app.storage.object_sizes() if app.storage.key_of(n) == root)
    app.storage.delete(name)  # the head's root directory, lost behind pfs's back
    u = client.du(grace="0")  # a 500 carrying the report: a mark with problems sweeps nothing
    assert any(root in p for p in u.problems), u.problems


def test_pfs_du_prints_the_report(tmp_path: Path) -> None:
    s = ServerProc(tmp_path / "data").start()
    try:
        with Client(s.url) as c:
            c.put_file("a.bin", os.urandom(2 * MiB))
            c.commit()
        out = subprocess.run(
            [sys.executable, "-m", "pfs.cli", "--url", s.url, "du", "--grace", "0"],
            capture_output=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.decode().splitlines()
        assert lines[0].split() == ["branch", "logical", "stored", "exclusive"]
        assert lines[1].split()[:3] == ["master", "2.0", "MiB"]
        assert any(ln.startswith("reclaimable: 0 objects") for ln in lines)
        assert "commits no branch reaches: 0" in lines
    finally:
        s.stop()


def test_du_past_64_branches_reports_totals_only(client: Client) -> None:
    client.put_file("a.bin", os.urandom(64 * KiB))
    client.commit()
    for i in range(64):
        client.create_branch(f"b{i}")
    u = client.du(grace="0")
    assert len(u.branches) == 65 and all(b.stored is None and b.exclusive is None for b in u.branches)
    assert all(b.logical == 64 * KiB for b in u.branches) and u.reachable == u.objects
