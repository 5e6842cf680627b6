"""Many small files: ingest and commit against git, BorgBackup and restic, in the same run.

100,000 files of 1 KiB in 100 directories: pfs (`put_dir`, one streamed tar, then commit),
`git add -A && git commit`, `borg create` (no encryption) and `restic backup`: the median
of three fresh runs each, every one after `sync`; the stored bytes of each repository after
it is closed; pfs's peak server RSS during the upload and during the commit. With
`--huge`, 1,000,000 files of 100 B against git (one run each: minutes). A peer that is not
installed is skipped, and the report says so (scripts/bench-peers-setup.sh installs them).
DVC is not measured: it is not packaged for Debian and its PyPI tree is large.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil

from pfs import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Rows, start_pfs, timed  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from rss import PeakRss  # noqa: E402

GIT_ENV = {
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@b",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@b",
}


def make_tree(root: Path, dirs: int, per_dir: int, size: int) -> None:
    """Files of random printable content (compressible about 2:1, like text)."""
    rnd = random.Random(1)
    for d in range(dirs):
        sub = root / f"d{d:04}"
        sub.mkdir(parents=True, exist_ok=True)
        for i in range(per_dir):
            (sub / f"f{i:06}.txt").write_bytes(rnd.randbytes(size // 2).hex().encode())


def du(path: Path) -> int:
    """Bytes a directory takes on disk (allocated blocks, as `du` counts)."""
    return sum(os.lstat(os.path.join(d, f)).st_blocks * 512 for d, _, files in os.walk(path) for f in files)


def run_pfs(tree: Path, data: Path) -> dict[str, float]:
    pfs = start_pfs(data)
    try:
        os.sync()
        idle = psutil.Process(pfs.proc.pid).memory_info().rss
        with Client(pfs.url, timeout=3600) as c:
            with PeakRss(pfs.proc.pid, interval=0.02) as up:
                t_up = timed(lambda: c.put_dir(str(tree), "small"))
            with PeakRss(pfs.proc.pid, interval=0.02) as com:
                t_commit = timed(lambda: c.commit(message="small files"))
    finally:
        pfs.stop()
    return {
        "time": t_up + t_commit,
        "upload": t_up,
        "commit": t_commit,
        "rss_up": up.peak,
        "rss_commit": com.peak,
        "rss_idle": idle,
        "stored": du(data),
    }


def run_git(tree: Path, repo: Path) -> dict[str, float]:
    shutil.copytree(tree, repo)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    os.sync()
    env = {**os.environ, **GIT_ENV}

    def go() -> None:
        subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
        subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "x"], check=True, env=env)

    t = timed(go)
    return {"time": t, "stored": du(repo / ".git")}


def run_borg(tree: Path, repo: Path) -> dict[str, float]:
    env = {
        **os.environ,
        "BORG_PASSPHRASE": "",
        "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
        "BORG_BASE_DIR": str(repo.parent / (repo.name + "-home")),
    }
    subprocess.run(["borg", "init", "--encryption=none", str(repo)], check=True, env=env)
    os.sync()
    t = timed(lambda: subprocess.run(["borg", "create", f"{repo}::a", "."], check=True, env=env, cwd=tree))
    return {"time": t, "stored": du(repo)}


def run_restic(tree: Path, repo: Path) -> dict[str, float]:
    env = {**os.environ, "RESTIC_PASSWORD": "bench", "RESTIC_CACHE_DIR": str(repo.parent / (repo.name + "-cache"))}
    subprocess.run(["restic", "init", "-q", "--repo", str(repo)], check=True, env=env, capture_output=True)
    os.sync()
    t = timed(
        lambda: subprocess.run(["restic", "backup", "-q", "--repo", str(repo), "."], check=True, env=env, cwd=tree)
    )
    return {"time": t, "stored": du(repo)}


PEERS: dict[str, tuple[str, Callable[[Path, Path], dict[str, float]]]] = {
    "git": ("git", run_git),
    "borg": ("borg", run_borg),
    "restic": ("restic", run_restic),
}


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def bench_ingest(work: Path, rows: Rows, huge: bool = False) -> None:
    tree = work / "ingest-100k"
    make_tree(tree, 100, 1000, 1024)
    content = 100 * 1000 * 1024
    results: dict[str, list[dict[str, float]]] = {}
    missing = [name for name, (tool, _) in PEERS.items() if shutil.which(tool) is None]
    for trial in range(3):
        for name, fn in [("pfs", run_pfs), *[(n, f) for n, (_, f) in PEERS.items() if n not in missing]]:
            place = work / f"ingest-{name}-{trial}"
            results.setdefault(name, []).append(fn(tree, place))
            shutil.rmtree(place, ignore_errors=True)
            for extra in (f"{place.name}-home", f"{place.name}-cache"):
                shutil.rmtree(work / extra, ignore_errors=True)
    shutil.rmtree(tree)
    med = {name: statistics.median(r["time"] for r in rs) for name, rs in results.items()}
    stored = {name: statistics.median(r["stored"] for r in rs) for name, rs in results.items()}
    what = "ingest + commit 100,000 files of 1 KiB (100 dirs)"
    for name in PEERS:
        if name in missing:
            rows.append((f"{what}, vs {name}", f"{med['pfs']:.1f} s", f"{name}: not installed, skipped", "-"))
        else:
            ratio = f"{med[name] / med['pfs']:.2f}x as fast"
            rows.append((f"{what}, vs {name}", f"{med['pfs']:.1f} s", f"{name} {med[name]:.1f} s", ratio))
    peers = [n for n in PEERS if n not in missing]
    if peers:
        small = min(peers, key=lambda n: stored[n])
        ratio = f"{stored['pfs'] / stored[small]:.2f}x the bytes"
        what = f"stored bytes of that repository (content {_mb(content)})"
        rows.append((what, _mb(stored["pfs"]), f"smallest peer, {small}: {_mb(stored[small])}", ratio))
    p = results["pfs"]
    peak = f"{_mb(max(r['rss_up'] for r in p))} / {_mb(max(r['rss_commit'] for r in p))}"
    rows.append(("peak pfs server RSS: upload / commit of those files", peak, f"idle {_mb(p[0]['rss_idle'])}", "-"))
    if huge:
        bench_million(work, rows)


def bench_million(work: Path, rows: Rows) -> None:
    tree = work / "ingest-1m"
    make_tree(tree, 1000, 1000, 100)
    pfs = run_pfs(tree, work / "ingest-1m-pfs")
    shutil.rmtree(work / "ingest-1m-pfs", ignore_errors=True)
    git = run_git(tree, work / "ingest-1m-git")
    shutil.rmtree(work / "ingest-1m-git", ignore_errors=True)
    shutil.rmtree(tree)
    what = "ingest + commit 1,000,000 files of 100 B (1,000 dirs)"
    took = f"{pfs['time']:.0f} s (upload {pfs['upload']:.0f} s, commit {pfs['commit']:.0f} s)"
    rows.append((f"{what}, vs git", took, f"git {git['time']:.0f} s", f"{git['time'] / pfs['time']:.2f}x as fast"))
    ratio = f"{pfs['stored'] / git['stored']:.2f}x the bytes"
    stored = ("stored bytes of that repository (content 100 MB)", _mb(pfs["stored"]))
    rows.append((*stored, f"git {_mb(git['stored'])}", ratio))
    peak = f"{_mb(pfs['rss_up'])} / {_mb(pfs['rss_commit'])}"
    rows.append(("peak pfs server RSS: upload / commit of 1,000,000 files", peak, f"idle {_mb(pfs['rss_idle'])}", "-"))


if __name__ == "__main__":  # python bench/ingest.py [--huge]: this part alone
    import tempfile

    out: Rows = []
    w = Path(tempfile.mkdtemp(prefix="pfs-ingest-"))
    try:
        bench_ingest(w, out, huge="--huge" in sys.argv)
    finally:
        shutil.rmtree(w, ignore_errors=True)
    for r in out:
        print("| " + " | ".join(r) + " |")
