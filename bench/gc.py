"""Garbage collection of a repository whose objects are half garbage, against the file
system's floor for the same work and against `git gc --prune=now` on a git repository of
the same shape.

The repository (embedded backend: `pfs serve` with SQLite and a local objects directory)
holds `objects` files of 3 KiB (text-like random content, over the 2 KiB that live inline
in a tree entry, so each is one chunk object of its own) in directories of 1,000: half on
master, uploaded as one tar and committed, and half on a branch made from it, uploaded as
another tar and committed there. The branch is deleted, so its files, its directories
and its commit are garbage: about half the store. Then, each on a freshly started server
(its peak RSS sampled every 20 ms), timed from the client:

  - a dry run of the collection (`POST /gc?grace=0&dry_run=1`: mark, list, nothing deleted),
  - the collection itself (`POST /gc?grace=0`).

Baselines, measured in the same run on the same disk:

  - listing the objects directory: an `os.scandir` walk of its 256 fan-out directories
    with a `stat` of every file (what a sweep must at least read: each object's size and
    last write), warm, the best of two; the baseline of the dry run;
  - that listing plus unlinking as many files: the file system's floor for the
    collection. The unlinks are timed on the store itself once the collection is done:
    the objects it kept (as many as it deleted, give or take 1%, of the same size, in
    the same directories) unlinked in key order after a sync, scaled to the number it
    deleted (and the store is gone, which the benchmark has to do anyway);
  - `git gc --prune=now` on a bare git repository holding the same files (same bytes,
    same paths) on the same two branches, the second deleted before the gc; built with
    `git fast-import`, so its objects are already in one pack: the gc rewrites the pack
    with the reachable half (reusing the pack's compressed data) and drops the rest.

After the collection `GET /fsck?quick=1` must pass; the dry run, the collection and the
store's own count must agree on the objects deleted, and that count must be the objects
the deleted branch added (the store counted before and after it was built), within 0.1%;
anything else stops the benchmark.

    python bench/gc.py                      # 100,000 files (a quick run, ~3 minutes)
    python bench/gc.py --objects 1000000    # the figure recorded in bench/RESULTS.md (~14 minutes)
    python bench/run.py --only gc --gc-objects 1000000
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from pfs import Client
from pfs.records import GcReport
from pfs.storage.collect import node_ttl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Rows, start_pfs, timed  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from rss import PeakRss  # noqa: E402

FILE_SIZE = 3072  # bytes of each file: over INLINE_DATA (2048), so a chunk object of its own
PER_DIR = 1000
PIECE = 1 << 20  # bytes of tar handed to the upload at a time
GIT_ENV = {
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@b",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@b",
}


def files(top: str, n: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """`n` files of FILE_SIZE bytes under `top`, in directories of PER_DIR, in path order;
    random printable content (compressible about 2:1, like text), none alike."""
    rnd = random.Random(seed)
    for i in range(n):
        yield f"{top}/d{i // PER_DIR:04}/f{i % PER_DIR:04}.txt", rnd.randbytes(FILE_SIZE // 2).hex().encode()


def tar_pieces(members: Iterator[tuple[str, bytes]]) -> Iterator[bytes]:
    """A tar stream of those files, made while it is sent (nothing is written to disk)."""
    buf: list[bytes] = []
    held = 0
    for name, data in members:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        buf.append(info.tobuf(tarfile.USTAR_FORMAT))
        buf.append(data)
        pad = -len(data) % tarfile.BLOCKSIZE
        if pad:
            buf.append(b"\0" * pad)
        held += tarfile.BLOCKSIZE + len(data) + pad
        if held >= PIECE:
            yield b"".join(buf)
            buf, held = [], 0
    buf.append(b"\0" * (2 * tarfile.BLOCKSIZE))
    yield b"".join(buf)


def list_store(obj_dir: Path) -> tuple[int, int]:
    """The baseline walk: every object file's size and last write; (files, bytes)."""
    n = size = 0
    with os.scandir(obj_dir) as top:
        subs = [e.path for e in top if e.is_dir(follow_symlinks=False)]
    for sub in sorted(subs):
        with os.scandir(sub) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                n += 1
                size += st.st_size
                _ = st.st_mtime
    return n, size


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def unlink_all(obj_dir: Path) -> tuple[int, float]:
    """The floor's sweep: every object file unlinked, in key order (as the sweep deletes),
    after a sync; (files, seconds). Reading the directory first is not timed."""
    with os.scandir(obj_dir) as top:
        subs = sorted(e.path for e in top if e.is_dir(follow_symlinks=False))
    paths: list[str] = []
    for sub in subs:
        with os.scandir(sub) as it:
            paths.extend(sorted(e.path for e in it))
    os.sync()
    t = time.perf_counter()
    for path in paths:
        os.unlink(path)
    return len(paths), time.perf_counter() - t


def run_pfs(work: Path, half: int, meanwhile: Callable[[], object]) -> dict[str, float]:
    """Build the repository and delete the branch; a dry run, then the collection, each on
    a freshly started server (so its peak RSS is the collection's, not what the uploads
    left); then the floor's unlinks, on the objects the collection kept. `meanwhile` runs
    once the build's server is stopped (its writes are synced before anything is timed)."""
    data = work / "gc-pfs"
    obj_dir = data / "objects"
    pfs = start_pfs(data)
    try:
        with Client(pfs.url, timeout=3600) as c, PeakRss(pfs.proc.pid, interval=0.05) as build_rss:
            t = time.perf_counter()
            up = c.put_tar("", tar_pieces(files("a", half, 1)), branch="master")
            assert up.files == half, up
            head = c.commit(message="kept").id
            before_b = list_store(obj_dir)[0]
            c.create_branch("doomed", head)
            up = c.put_tar("", tar_pieces(files("b", half, 2)), branch="doomed")
            assert up.files == half, up
            c.commit(branch="doomed", message="garbage")
            build = time.perf_counter() - t
            total = list_store(obj_dir)[0]
            expected = total - before_b  # what the branch added: its chunks, directories, commit
            c.delete_branch("doomed")
    finally:
        pfs.stop()
    stopped = time.monotonic()
    meanwhile()
    os.sync()
    listing = min(timed(lambda: list_store(obj_dir)) for _ in range(2))

    def collect(dry_run: bool, stopped: float) -> tuple[GcReport, float, int, int]:
        # A server stopped cleanly leaves its node row behind (2026-12-03): a GC on the next
        # one would wait node_ttl() for that node's acknowledgement. Wait it out first, so
        # the figure is the collection's own (it also outlasts collect.SKEW, the 2 s before
        # which no object is swept).
        time.sleep(max(0.0, stopped + node_ttl() + 1.5 - time.monotonic()))
        pfs = start_pfs(data)
        try:
            idle = psutil.Process(pfs.proc.pid).memory_info().rss
            with Client(pfs.url, timeout=3600) as c:
                with PeakRss(pfs.proc.pid, interval=0.02) as rss:
                    t = time.perf_counter()
                    rep = c.gc(grace="0", dry_run=dry_run)
                    took = time.perf_counter() - t
                if not dry_run:
                    fsck = c.fsck(quick=True)
                    if not fsck.ok:
                        raise AssertionError(f"fsck --quick after the GC failed: {fsck.problems[:5]}")
        finally:
            pfs.stop()
        return rep, took, idle, rss.peak

    dry, t_dry, idle_dry, rss_dry = collect(True, stopped)
    rep, t_gc, idle_gc, rss_gc = collect(False, time.monotonic())
    after, unlink = unlink_all(obj_dir)
    shutil.rmtree(data)
    for name, r in (("dry run", dry), ("collection", rep)):
        if r.problems:
            raise AssertionError(f"GC {name} reported problems: {r.problems[:5]}")
        if r.objects != total:
            raise AssertionError(f"GC {name} listed {r.objects} objects; the store holds {total}")
    # The dry run, the collection and the store must agree exactly; the branch's own
    # objects are what should go, give or take the odd object its upload superseded.
    if not (dry.deleted == rep.deleted == total - after) or abs(rep.deleted - expected) > max(10, expected // 1000):
        raise AssertionError(
            f"deleted: dry run {dry.deleted}, collection {rep.deleted}, the store lost {total - after};"
            f" the deleted branch added {expected} objects"
        )
    if rep.commits != 1:
        raise AssertionError(f"the GC forgot {rep.commits} commits; the deleted branch had 1")
    return {
        "objects": total,
        "deleted": rep.deleted,
        "deleted_bytes": rep.deleted_bytes,
        "expected": expected,
        "kept": after,
        "build": build,
        "rss_build": build_rss.peak,
        "listing": listing,
        "floor": listing + unlink * rep.deleted / after,  # the unlinks scaled to as many files
        "dry": t_dry,
        "gc": t_gc,
        "gc_server": rep.seconds,
        "rss_idle": min(idle_dry, idle_gc),
        "rss_dry": rss_dry,
        "rss_gc": rss_gc,
    }


def _fast_import(half: int) -> Iterator[bytes]:
    """The same two branches as a `git fast-import` stream: master with a/, doomed with a/ and b/."""
    for branch, top, seed, parent in (("master", "a", 1, None), ("doomed", "b", 2, "refs/heads/master")):
        head = f"commit refs/heads/{branch}\ncommitter b <b@b> 0 +0000\ndata 1\nx\n"
        if parent:
            head += f"from {parent}\n"
        yield head.encode()
        buf: list[bytes] = []
        held = 0
        for name, data in files(top, half, seed):
            buf.append(f"M 100644 inline {name}\ndata {len(data)}\n".encode())
            buf.append(data)
            buf.append(b"\n")
            held += len(data)
            if held >= PIECE:
                yield b"".join(buf)
                buf, held = [], 0
        buf.append(b"\n")
        yield b"".join(buf)


def _count_objects(repo: Path) -> int:
    out = subprocess.run(["git", "-C", str(repo), "count-objects", "-v"], check=True, capture_output=True, text=True)
    counts = dict(line.split(": ") for line in out.stdout.splitlines())
    return int(counts["count"]) + int(counts["in-pack"])


def run_git(work: Path, half: int) -> dict[str, float]:
    repo = work / "gc-git"
    env = {**os.environ, **GIT_ENV}
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    imp = subprocess.Popen(["git", "-C", str(repo), "fast-import", "--quiet"], stdin=subprocess.PIPE, env=env)
    assert imp.stdin is not None
    for piece in _fast_import(half):
        imp.stdin.write(piece)
    imp.stdin.close()
    if imp.wait() != 0:
        raise RuntimeError(f"git fast-import exited with {imp.returncode}")
    total = _count_objects(repo)
    subprocess.run(["git", "-C", str(repo), "branch", "-q", "-D", "doomed"], check=True)
    os.sync()
    t = timed(lambda: subprocess.run(["git", "-C", str(repo), "gc", "-q", "--prune=now"], check=True, env=env))
    after = _count_objects(repo)
    shutil.rmtree(repo)
    deleted = total - after
    if abs(deleted - half) > half // 50:  # the branch's blobs, its directories and its commit
        raise AssertionError(f"git gc removed {deleted} of {total} objects; expected about {half}")
    return {"objects": total, "deleted": deleted, "gc": t}


def bench_gc(work: Path, rows: Rows, objects: int = 100_000) -> None:
    half = objects // 2
    g: dict[str, float] = {}
    has_git = shutil.which("git") is not None
    p = run_pfs(work, half, meanwhile=lambda: g.update(run_git(work, half)) if has_git else None)
    what = f"{p['objects']:,.0f} objects, {p['deleted']:,.0f} of them garbage"
    gc = f"{p['gc']:.1f} s"
    floor = f"listing the store + unlinking as many of its files {p['floor']:.1f} s"
    rows.append((f"GC, {what}", gc, floor, f"{p['gc'] / p['floor']:.2f}x the time"))
    if g:
        base = f"git gc --prune=now, {g['objects']:,.0f} objects ({g['deleted']:,.0f} garbage) {g['gc']:.1f} s"
        rows.append((f"GC, {what}, vs git", gc, base, f"{g['gc'] / p['gc']:.2f}x as fast"))
    else:
        rows.append((f"GC, {what}, vs git", gc, "git: not installed, skipped", "-"))
    listing = f"listing the store (os.scandir + stat) {p['listing']:.2f} s"
    rows.append((f"GC dry run, {what}", f"{p['dry']:.2f} s", listing, f"{p['dry'] / p['listing']:.2f}x the time"))
    peak = f"{_mb(p['rss_gc'])} / {_mb(p['rss_dry'])}"
    per = (max(p["rss_gc"], p["rss_dry"]) - p["rss_idle"]) / p["objects"]
    idle = f"idle, freshly started {_mb(p['rss_idle'])}"
    rows.append((f"peak pfs server RSS: GC / dry run, {what}", peak, idle, f"+{per:.0f} B per object"))
    build = f"{p['build']:.0f} s, peak server RSS {_mb(p['rss_build'])}"
    rows.append((f"(reference) building it: 2 tar uploads of {half:,} files of 3 KiB + commits", build, "-", "-"))
    server = f"{p['gc_server']:.1f} s on the server, {_mb(p['deleted_bytes'])} freed"
    server += f" (the deleted branch had added {p['expected']:,.0f} objects)"
    rows.append((f"(reference) that GC, {what}", server, "-", "-"))


if __name__ == "__main__":  # python bench/gc.py [--objects N]: this part alone
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=100_000, help="files in the repository, half of them garbage")
    ap.add_argument("--work", help="scratch directory (default: a temp dir)")
    args = ap.parse_args()
    out: Rows = []
    w = Path(tempfile.mkdtemp(prefix="pfs-gc-", dir=args.work))
    t0 = time.time()
    try:
        bench_gc(w, out, args.objects)
    finally:
        shutil.rmtree(w, ignore_errors=True)
    print(f"took {time.time() - t0:.0f} s, {os.cpu_count()} cores")
    print("| measure | pfs | baseline (same run) | ratio |")
    print("|---|---|---|---|")
    for r in out:
        print("| " + " | ".join(r) + " |")
