"""Garbage collection (`POST /gc`, `pfs gc`): what no root reaches goes, on each backend,
while writers go on; what an operation relies on without having written it (a find) stays,
whether it was found before the GC began, during its mark or during its sweep."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import AppServer, ServerProc

from pfs import Client, errors
from pfs.repository import gc
from pfs.repository.repo import Repository
from pfs.storage import collect
from pfs.storage.meta import SqlMetaStore, gc_t
from pfs.storage.trees import Entry

KiB, MiB = 1 << 10, 1 << 20
SETTLE = collect.SKEW + 0.2  # objects younger than SKEW are never swept, whatever the grace


def test_gc_reclaims_a_deleted_branch_and_keeps_every_root(client: Client, app: AppServer) -> None:
    keep = os.urandom(2 * MiB)
    client.put_file("keep/a.bin", keep)
    client.put_file("keep/small.txt", b"small")
    client.commit()
    client.create_branch("exp")
    only = os.urandom(6 * MiB)
    client.put_file("exp/only.bin", only, branch="exp")
    client.commit(branch="exp")
    client.create_branch("staged")
    dirty = os.urandom(1 * MiB)
    client.put_file("dirty.bin", dirty, branch="staged")  # uncommitted: a root all the same
    exclusive = {b.name: b.exclusive for b in client.du(grace="0").branches}["exp"]
    client.delete_branch("exp")
    time.sleep(SETTLE)

    dry = client.gc(grace="0", dry_run=True)
    assert dry.dry_run and dry.problems == ()
    assert dry.deleted_bytes == exclusive and dry.commits == 1
    assert client.du(grace="0").reclaimable_bytes == exclusive  # a dry run deletes nothing

    young = client.gc(grace="1h")  # all of it is younger than an hour: nothing goes
    assert young.deleted == 0 and young.commits == 0

    r = client.gc(grace="0")
    assert r.problems == () and not r.dry_run
    assert r.deleted_bytes == exclusive >= len(only) and r.commits == 1
    assert r.deleted_bytes >= 0.99 * len(only)
    u = client.du(grace="0")
    assert u.reclaimable == 0 and u.young == 0 and u.orphans == 0
    assert client.get_file("keep/a.bin") == keep and client.get_file("keep/small.txt") == b"small"
    client.commit(branch="staged")
    assert client.get_file("dirty.bin", branch="staged") == dirty
    assert client.fsck().ok
    again = client.gc(grace="0")
    assert again.deleted == 0  # nothing more to take
    running, last = client.gc_status()
    assert not running and last is not None and last.generation == again.generation


def test_gc_keeps_job_runs_and_drops_those_of_commits_it_removes(app: AppServer) -> None:
    repo = app.repo
    entry = repo.store([os.urandom(2 * MiB)])
    repo.stage_file("master", "in/a.bin", entry)
    head = repo.commit_branch("master")
    out = repo.store([os.urandom(2 * MiB)])  # an output only a job run's record names
    with repo.objects.batch() as b:
        tree = repo.trees.write_tree({"a.bin": out}, b)
    repo.meta.create_run(head.id, "master", [("j", "spec")])
    repo.meta.update_job_run(head.id, "j", output_tree=tree, state="succeeded", finished=time.time())
    repo.create_branch("side", head.id)
    repo.stage_file("side", "x.bin", repo.store([os.urandom(1 * MiB)]))
    side = repo.commit_branch("side")
    repo.meta.create_run(side.id, "side", [("j", "spec")])
    repo.meta.update_job_run(side.id, "j", output_tree=tree, state="succeeded", finished=time.time())
    repo.delete_branch("side")
    time.sleep(SETTLE)

    r = gc.collect_garbage(repo, grace=0)
    assert r.problems == [] and r.commits == 1 and r.runs == 1
    assert repo.meta.get_run(side.id) is None and repo.meta.get_commit(side.id) is None
    assert repo.meta.get_run(head.id) is not None
    assert b"".join(repo.read_file(out))  # the job run's output stays readable


def test_a_find_logged_before_a_sweep_batch_keeps_its_object(app: AppServer) -> None:
    """An upload of bytes whose chunks are stored but unreachable, made while the GC
    sweeps: logged before the batch, the chunks stay, and the file reads back whole."""
    repo = app.repo
    data = os.urandom(3 * MiB)
    _garbage(repo, data)

    def again(phase: str, n: int) -> None:
        if phase == "sweeping":  # after the commits went, before any object
            repo.stage_file("master", "again.bin", repo.store([data]))
            repo.commit_branch("master")

    r = gc.collect_garbage(repo, grace=0, progress=again)
    assert r.problems == [] and r.saved > 0
    assert b"".join(repo.read_file(_entry(repo, "master", "again.bin"))) == data
    assert gc.collect_garbage(repo, grace=0).deleted == 0


def test_a_find_logged_after_its_object_went_writes_it_again(app: AppServer) -> None:
    repo = app.repo
    data = os.urandom(3 * MiB)
    _garbage(repo, data)
    done: list[int] = []

    def again(phase: str, n: int) -> None:
        if phase == "deleted" and not done:  # the chunks are gone; the store looks again after logging
            repo.stage_file("master", "again.bin", repo.store([data]))
            repo.commit_branch("master")
            done.append(n)

    r = gc.collect_garbage(repo, grace=0, progress=again)
    assert r.problems == [] and r.deleted > 0 and done
    assert b"".join(repo.read_file(_entry(repo, "master", "again.bin"))) == data


def test_a_branch_made_at_a_removed_commit_fails_cleanly(app: AppServer) -> None:
    repo = app.repo
    gone = _garbage(repo, os.urandom(2 * MiB))
    made: list[BaseException | None] = []

    def at_gone(phase: str, n: int) -> None:
        if phase == "sweeping":  # the commit was forgotten: a branch there is refused, nothing dangles
            try:
                repo.create_branch("late", gone)
                made.append(None)
            except errors.PfsError as exc:
                made.append(exc)

    gc.collect_garbage(repo, grace=0, progress=at_gone)
    assert made and isinstance(made[0], errors.CommitNotFound)
    assert "late" not in dict(repo.branches())
    with pytest.raises(errors.CommitNotFound):
        repo.create_branch("later", gone)


def test_a_find_before_the_gc_began_is_kept(app: AppServer) -> None:
    """A branch made at a commit no branch reached, just before the GC: the find was held
    in memory, and the GC's activation wrote it to the log before the mark."""
    repo = app.repo
    data = os.urandom(2 * MiB)
    c = _garbage(repo, data)
    # the find, then (before the ref lands) a whole GC: as a slow request would see it
    commit = repo.rely_on_commit(repo.resolve(c))
    r = gc.collect_garbage(repo, grace=0)
    assert r.deleted == 0 and r.commits == 0
    repo.meta.create_ref("back", commit.id)
    assert b"".join(repo.read_file(_entry(repo, "back", "d.bin"))) == data


def test_one_gc_at_a_time(client: Client, app: AppServer) -> None:
    lease = collect.board(app.repo.meta.db).begin(app.repo.id)  # type: ignore[attr-defined]
    try:
        with pytest.raises(errors.Conflict, match="garbage collection"):
            client.gc(grace="0")
        assert client.gc_status()[0]
    finally:
        collect.board(app.repo.meta.db).end(lease, "{}")  # type: ignore[attr-defined]
    assert client.gc(grace="0").problems == ()


def test_gc_refuses_bad_parameters(client: Client, app: AppServer) -> None:
    for bad in ("soon", "-1", "1y"):
        with pytest.raises(errors.BadRequest):
            client.gc(grace=bad)
    with app.http() as h:
        r = h.post("/gc", params={"graze": "0"})
        assert r.status_code == 400
        assert h.put("/gc").status_code == 405
        assert h.get("/gc").status_code == 200  # status only: GET never collects


def _entry(repo: Repository, branch: str, path: str) -> Entry:
    entry = repo.view(branch).lookup(path)
    assert entry is not None
    return entry


def test_retention_keeps_history_and_answers_410_for_expired_data(client: Client, app: AppServer) -> None:
    old, new, shared = os.urandom(2 * MiB), os.urandom(2 * MiB), os.urandom(1 * MiB)
    client.put_file("a.bin", old)
    client.put_file("c.bin", shared)
    client.put_file("small.txt", b"inline, in the tree")
    v1 = client.commit().id
    time.sleep(3)
    client.put_file("a.bin", new)
    v2 = client.commit().id
    client.create_branch("keepit", v1)  # a branch without a rule reaches v1 whole
    client.set_retention("master", "2s")
    assert client.retention() == {"master": 2.0}
    time.sleep(SETTLE)

    assert client.gc(grace="0").deleted == 0  # keepit still holds v1's data
    assert client.get_file("a.bin", commit=v1) == old
    client.delete_branch("keepit")
    time.sleep(SETTLE)
    r = client.gc(grace="0")
    assert r.problems == () and len(old) <= r.deleted_bytes < len(old) + 64 * KiB and r.commits == 0

    with pytest.raises(errors.DataExpired, match="master") as gone:
        client.get_file("a.bin", commit=v1)
    assert gone.value.status == 410
    with app.http() as h:
        assert h.head("/file/a.bin", params={"commit": v1}).status_code == 410
    assert client.get_file("c.bin", commit=v1) == shared  # still at the head: kept
    assert client.get_file("small.txt", commit=v1) == b"inline, in the tree"
    assert client.get_file("a.bin") == new  # the head keeps its data, whatever its age
    assert [c.id for c in client.log("master")][:2] == [v2, v1]  # history stays
    assert {f.path for f in client.ls("", commit=v1)} >= {"a.bin", "c.bin", "small.txt"}
    assert [d.path for d in client.diff(v1, v2)] == ["a.bin"]
    assert client.fsck().ok  # expired data is no damage

    client.drop_retention("master")
    assert client.retention() == {}
    with pytest.raises(errors.NotFound):
        client.drop_retention("master")
    for bad in ("0", "soon", "-3d"):
        with pytest.raises(errors.BadRequest):
            client.set_retention("master", bad)
    with pytest.raises(errors.BadRequest):
        client.set_retention("bad..name", "1d")


def test_pfs_gc_and_retention_commands(tmp_path: Path) -> None:
    s = ServerProc(tmp_path / "data").start()

    def pfs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pfs.cli", "--url", s.url, *args], capture_output=True, text=True, timeout=60
        )

    try:
        with Client(s.url) as c:
            c.create_branch("tmp")
            c.put_file("x.bin", os.urandom(2 * MiB), branch="tmp")
            c.commit(branch="tmp")
            c.delete_branch("tmp")
        time.sleep(SETTLE)
        dry = pfs("gc", "--grace", "0", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.startswith("would delete ") and "commits no branch reaches: 1" in dry.stdout
        done = pfs("gc", "--grace", "0")
        assert done.returncode == 0 and done.stdout.startswith("deleted "), done
        assert "2.0 MiB" in done.stdout
        status = pfs("gc", "--status")
        assert status.stdout.splitlines()[0] == "not running" and status.stdout.splitlines()[1].startswith("last:")
        bad = pfs("gc", "--grace", "soon")
        assert bad.returncode == 1 and bad.stderr.startswith("error:")

        assert pfs("retention", "set", "master", "30d").returncode == 0
        assert pfs("retention", "ls").stdout == "master\t30d\n"
        assert pfs("retention", "rm", "master").returncode == 0
        gone = pfs("retention", "rm", "master")
        assert gone.returncode == 1 and "no retention rule" in gone.stderr
    finally:
        s.stop()


def test_a_gc_whose_lease_ran_out_stops_and_another_takes_over(app: AppServer) -> None:
    meta = app.repo.meta
    assert isinstance(meta, SqlMetaStore)
    board = collect.board(meta.db)
    lease = board.begin(app.repo.id)
    assert board.active() == {app.repo.id: lease.gen}
    with meta.db.write() as c:
        c.execute(gc_t.update().where(gc_t.c.repo == app.repo.id).values(lease=time.time() - 1))
    assert board.active() == {}  # the nodes stop logging their finds: it must not delete more
    with pytest.raises(errors.Conflict, match="lease"):
        board.renew(lease)
    taken = board.begin(app.repo.id)
    assert taken.gen == lease.gen + 1
    board.end(taken, "{}")


def _garbage(repo: Repository, data: bytes) -> str:
    """A commit of `data` that only a deleted branch reached, old enough to be swept."""
    repo.create_branch("tmp")
    repo.stage_file("tmp", "d.bin", repo.store([data]))
    commit = repo.commit_branch("tmp")
    repo.delete_branch("tmp")
    time.sleep(SETTLE)
    return commit.id
