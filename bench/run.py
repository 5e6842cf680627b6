"""pfs benchmark: every figure is a ratio against a baseline measured in the same run.

    python bench/run.py                 # full run (1 GiB files), prints a Markdown report
    python bench/run.py --size-mb 64    # quicker smoke run
    python bench/run.py --out bench/RESULTS.md
    python bench/run.py --only gc --gc-objects 1000000   # the recorded GC figure (~15 min)
    python bench/run.py --only console  # the web console's pages on 100,000 files (~2 min)

Baselines: a plain HTTP sink/source (uvicorn + starlette, body straight to/from a file on
the same disk), `git add && git commit`, raw disk copy, for map jobs a plain pool of
local map-server processes fed straight from local files (the limit for the same map
function behind the same protocol), and for garbage collection listing the object store
and unlinking as many files on the same disk (the file system's floor) and `git gc
--prune=now` on a git repository of the same files and branches.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from pfs import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from auth import bench_auth  # noqa: E402
from cluster import bench_cluster  # noqa: E402
from common import Proc, Rows, free_port, start_pfs, timed  # noqa: E402
from console import bench_console  # noqa: E402
from ingest import bench_ingest, make_tree  # noqa: E402
from s3 import bench_s3  # noqa: E402

# bench/gc.py by its path: `import gc` would find the interpreter's built-in module first.
_spec = importlib.util.spec_from_file_location("bench_gc", Path(__file__).with_name("gc.py"))
assert _spec is not None and _spec.loader is not None
_gc_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_gc_bench)
bench_gc: Callable[[Path, Rows, int], None] = _gc_bench.bench_gc

PIECE = 1 << 20
SETTLE = 3.0  # seconds between a server being up and its upload (see bench_throughput)
SINK_APP = textwrap.dedent(
    """
    import os, sys
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse, StreamingResponse
    from starlette.routing import Route
    import uvicorn

    DIR = sys.argv[2]

    async def put(request):
        path = os.path.join(DIR, "upload")
        with open(path, "wb") as f:
            async for piece in request.stream():
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        return PlainTextResponse("ok")

    async def get(request):
        path = os.path.join(DIR, "upload")
        def pieces():
            with open(path, "rb") as f:
                while piece := f.read(1 << 20):
                    yield piece
        return StreamingResponse(pieces(), headers={"content-length": str(os.path.getsize(path))})

    async def ping(request):
        return PlainTextResponse("pong")

    app = Starlette(routes=[Route("/f", put, methods=["POST"]), Route("/f", get), Route("/ping", ping)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def start_sink(work: Path) -> Proc:
    port = free_port()
    script = work / "sink.py"
    script.write_text(SINK_APP)
    (work / "sink").mkdir(exist_ok=True)
    return Proc([sys.executable, str(script), str(port), str(work / "sink")], f"http://127.0.0.1:{port}")


def file_pieces(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while piece := f.read(PIECE):
            yield piece


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def make_random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 << 20)
            f.write(os.urandom(n))
            left -= n


# ---- 1. large file throughput -----------------------------------------------------------
def bench_throughput(work: Path, size: int, rows: list[tuple[str, str, str, str]], trials: int = 8) -> None:
    """Each side runs `trials` times, interleaved, the side that goes first alternating;
    every written copy is deleted before the next run, so neither side gets page-cache
    pages the other one warmed. This VM's writeback swings from one minute to the next (the
    sink alone moves 250-1000 MB/s), so the ratio is the median of the paired runs' ratios
    and the rates the medians of each side's runs.

    Each upload starts `SETTLE` seconds after its server is up. This VM hands memory freed
    by a process back to its host about 2 s later (virtio-balloon free page reporting), and
    writing into pages the host must supply again costs several times more (2.4 against
    0.3 s of kernel time per GiB of page cache, measured). Without the pause, whichever
    side runs right after the other's files are deleted writes into still-backed pages:
    the sink, which started faster than pfs, was measured 15-20% faster that way."""
    big = work / "big.bin"
    make_random_file(big, size)
    mb = size / 1e6
    runs: dict[str, list[float]] = {"copy": [], "up_sink": [], "down_sink": [], "up_pfs": [], "down_pfs": []}

    def sink_side(trial: int) -> None:
        sink = start_sink(work)
        time.sleep(SETTLE)
        with httpx.Client(base_url=sink.url, timeout=600) as h:
            runs["up_sink"].append(timed(lambda: h.post("/f", content=file_pieces(big)).raise_for_status()))
            runs["down_sink"].append(timed(lambda: _drain(h, "/f")))
        sink.stop()
        (work / "sink" / "upload").unlink()

    def pfs_side(trial: int) -> None:
        pfs = start_pfs(work / f"pfs-tp{trial}")
        time.sleep(SETTLE)
        with Client(pfs.url) as c:
            runs["up_pfs"].append(timed(lambda: c.put_file("big.bin", file_pieces(big))))
            c.commit(message="big")
            runs["down_pfs"].append(timed(lambda: sum(len(p) for p in c.open_file("big.bin", commit="master"))))
        pfs.stop()
        shutil.rmtree(work / f"pfs-tp{trial}")

    for trial in range(trials):
        runs["copy"].append(timed(lambda: _copy_fsync(big, work / "copy.bin")))
        (work / "copy.bin").unlink()
        for side in (sink_side, pfs_side) if trial % 2 == 0 else (pfs_side, sink_side):
            side(trial)
        print(
            f"    trial {trial + 1}/{trials}: upload sink {runs['up_sink'][-1]:.2f} s, pfs {runs['up_pfs'][-1]:.2f} s;"
            f" download sink {runs['down_sink'][-1]:.2f} s, pfs {runs['down_pfs'][-1]:.2f} s",
            file=sys.stderr,
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in runs.items()}

    def ratio(base: str, ours: str) -> float:
        return statistics.median(b / o for b, o in zip(runs[base], runs[ours], strict=True))

    note = f"{ratio('up_sink', 'up_pfs'):.2f}x the speed (median of {trials} paired runs)"
    rows.append(
        ("upload 1 file", f"{mb / med['up_pfs']:.0f} MB/s", f"plain HTTP sink {mb / med['up_sink']:.0f} MB/s", note)
    )
    note = f"{ratio('down_sink', 'down_pfs'):.2f}x the speed (median of {trials} paired runs)"
    rows.append(
        (
            "download 1 file",
            f"{mb / med['down_pfs']:.0f} MB/s",
            f"plain HTTP source {mb / med['down_sink']:.0f} MB/s",
            note,
        )
    )
    rows.append(("(reference) raw disk copy + fsync", f"{mb / med['copy']:.0f} MB/s", "-", "-"))


def _copy_fsync(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "rb") as f:
        os.fsync(f.fileno())


def _drain(h: httpx.Client, url: str) -> None:
    """Read as pfs's client does, pieces as they arrive: httpx's fixed-size pieces cost the
    reader twice the CPU, and a slower reader would hide what the servers spend."""
    with h.stream("GET", url) as r:
        r.raise_for_status()
        for _ in r.iter_bytes():
            pass


# ---- 2. many small files vs git -------------------------------------------------------
def bench_small_files(work: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """Best of two interleaved runs each, every one on a fresh copy after `sync`, since
    the disk here is still writing back whatever the previous step left dirty."""
    tree = work / "small"
    make_tree(tree, 100, 100, 1024)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@b",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@b",
    }
    git_t = pfs_t = 1e9
    for trial in range(2):
        gitdir = work / f"small-git{trial}"
        shutil.copytree(tree, gitdir)
        subprocess.run(["git", "init", "-q", str(gitdir)], check=True)
        os.sync()

        def git(d: Path = gitdir) -> None:
            subprocess.run(["git", "-C", str(d), "add", "-A"], check=True, env=env)
            subprocess.run(["git", "-C", str(d), "commit", "-q", "-m", "x"], check=True, env=env)

        git_t = min(git_t, timed(git))
        shutil.rmtree(gitdir)

        pfs = start_pfs(work / f"pfs-small{trial}")
        os.sync()
        with Client(pfs.url) as c:

            def put(c: Client = c) -> None:
                c.put_dir(str(tree), "small")
                c.commit(message="small files")

            pfs_t = min(pfs_t, timed(put))
            assert len(c.ls("small")) == 100
        pfs.stop()
        shutil.rmtree(work / f"pfs-small{trial}")
    rows.append(
        (
            "add+commit 10,000 files of 1 KB",
            f"{pfs_t:.2f} s",
            f"git add && git commit {git_t:.2f} s",
            f"{git_t / pfs_t:.2f}x as fast",
        )
    )


# ---- 3. commit latency and branching vs repo size --------------------------------------
def bench_scaling(work: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """One changed file committed, and a branch created, in repos of 100 and 100,000 files;
    the big repo both as 1,000 directories of 100 files and as one flat directory."""
    results: dict[str, tuple[float, float]] = {}
    for label, n, dirs in (("100", 100, 1), ("100k nested", 100_000, 1000), ("100k flat", 100_000, 1)):
        tree = work / f"scale-{n}-{dirs}"
        make_tree(tree, dirs, n // dirs, 64)
        pfs = start_pfs(work / f"pfs-scale-{n}-{dirs}")
        with Client(pfs.url) as c:
            c.put_dir(str(tree), "data")
            head = c.commit(message="load").id
            lat = []
            for i in range(30):
                c.put_file(f"data/d0000/f{i * 3:06}.txt", f"edit {i}".encode())
                lat.append(timed(lambda: c.commit(message="one change")))
            br = [timed(lambda i=i, h=head: c.create_branch(f"b{i}", h)) for i in range(30)]
            assert len(c.ls("data")) == dirs
        pfs.stop()
        shutil.rmtree(tree)
        shutil.rmtree(work / f"pfs-scale-{n}-{dirs}")
        results[label] = (statistics.median(lat), statistics.median(br))
    c_small, b_small = results["100"]
    for label in ("100k nested", "100k flat"):
        c_big, b_big = results[label]
        shape = "1,000 dirs x 100 files" if "nested" in label else "one flat directory"
        rows.append(
            (
                f"commit 1 changed file, 100,000 files ({shape})",
                f"{c_big * 1e3:.1f} ms",
                f"100-file repo {c_small * 1e3:.1f} ms",
                f"{c_big / c_small:.2f}x the time",
            )
        )
        rows.append(
            (
                f"create branch, 100,000 files ({shape})",
                f"{b_big * 1e3:.1f} ms",
                f"100-file repo {b_small * 1e3:.1f} ms",
                f"{b_big / b_small:.2f}x the time",
            )
        )


# ---- 4. storage of edited versions ----------------------------------------------------
def version_stream(base: Path, edits: list[tuple[int, str, bytes]]) -> Iterator[bytes]:
    """`base` with edits (offset, "insert"|"overwrite", bytes) applied, streamed."""
    pos = 0
    with open(base, "rb") as f:
        for off, kind, data in sorted(edits, key=lambda e: e[0]):
            while pos < off:
                piece = f.read(min(PIECE, off - pos))
                pos += len(piece)
                yield piece
            yield data
            if kind == "overwrite":
                f.seek(len(data), os.SEEK_CUR)
                pos += len(data)
        while piece := f.read(PIECE):
            yield piece


def bench_storage(work: Path, size: int, rows: list[tuple[str, str, str, str]]) -> None:
    base = work / "big.bin"
    rnd = random.Random(7)
    edits: list[tuple[int, str, bytes]] = []
    pfs = start_pfs(work / "pfs-versions")
    with Client(pfs.url) as c:
        for v in range(10):
            if v:
                # each version: one 1 KB insertion and two 100-byte overwrites, far apart
                for kind, n in (("insert", 1024), ("overwrite", 100), ("overwrite", 100)):
                    edits.append((rnd.randrange(0, size - 200), kind, rnd.randbytes(n)))
            c.put_file("big.bin", version_stream(base, edits))
            c.commit(message=f"version {v}")
    pfs.stop()
    used = dir_size(work / "pfs-versions" / "objects")
    rows.append(
        (
            "storage of 10 edited versions of one file",
            f"{used / 1e6:.0f} MB",
            f"one version {size / 1e6:.0f} MB",
            f"{used / size:.3f}x",
        )
    )


# ---- 5. map jobs ---------------------------------------------------------------------------
MAP_FILES = 1000
MAP_PARALLELISM = 2
MAP_INFLIGHT = 4
MAPSERVER = Path(__file__).with_name("mapserver.py")


def baseline_map_pool(work: Path, inputs: Path) -> float:
    """The limit: the same map servers, started as plain local processes and fed straight
    from local files by a pool of clients (no pfs), outputs written to local files."""
    from concurrent.futures import ThreadPoolExecutor

    out = Path(tempfile.mkdtemp(prefix="pool-out-", dir=work))
    procs = []
    urls = []
    for _ in range(MAP_PARALLELISM):
        port = free_port()
        procs.append(Proc([sys.executable, str(MAPSERVER)], f"http://127.0.0.1:{port}", env={"PORT": str(port)}))
        urls.append(f"http://127.0.0.1:{port}")
    files = sorted(inputs.iterdir())
    local = threading.local()

    def one(i: int) -> None:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        f = files[i]
        r = local.client.post(f"{urls[i % len(urls)]}/map/{f.name}", content=f.read_bytes())
        r.raise_for_status()
        (out / f.name).write_bytes(r.content)

    try:
        t = time.perf_counter()
        with ThreadPoolExecutor(MAP_PARALLELISM * MAP_INFLIGHT) as pool:
            list(pool.map(one, range(len(files))))
        return time.perf_counter() - t
    finally:
        for p in procs:
            p.stop()


def _upper_file(args: tuple[str, str]) -> None:
    src, dst = args
    with open(src, "rb") as f, open(dst, "wb") as g:
        g.write(f.read().upper())


def baseline_function_pool(work: Path, inputs: Path) -> float:
    """For scale only: the same upper-casing as a plain function in a multiprocessing pool,
    local file to local file, with no job protocol at all."""
    import multiprocessing

    out = Path(tempfile.mkdtemp(prefix="fn-out-", dir=work))
    jobs = [(str(f), str(out / f.name)) for f in sorted(inputs.iterdir())]
    with multiprocessing.Pool(MAP_PARALLELISM) as pool:
        t = time.perf_counter()
        pool.map(_upper_file, jobs, chunksize=16)
        return time.perf_counter() - t


def docker_ready() -> bool:
    try:
        r = subprocess.run(["docker", "image", "inspect", "pfs-python-base:local"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def build_map_image(work: Path) -> str:
    ctx = work / "mapimage"
    ctx.mkdir()
    shutil.copy(MAPSERVER, ctx / "mapserver.py")
    (ctx / "Dockerfile").write_text("FROM pfs-python-base:local\nCOPY mapserver.py /mapserver.py\n")
    subprocess.run(["docker", "build", "-q", "-t", "pfs-bench-map:local", str(ctx)], check=True, capture_output=True)
    return "pfs-bench-map:local"


def bench_jobs(work: Path, rows: list[tuple[str, str, str, str]]) -> None:
    inputs = work / "map-in"
    inputs.mkdir()
    rnd = random.Random(5)
    for i in range(MAP_FILES):
        (inputs / f"f{i:05d}.txt").write_bytes(rnd.randbytes(512).hex().encode())
    base = min(baseline_map_pool(work, inputs) for _ in range(2))
    base_rate = MAP_FILES / base
    fn = min(baseline_function_pool(work, inputs) for _ in range(2))
    rows.append(
        (
            f"for scale: the same upper-casing as a plain function, multiprocessing.Pool({MAP_PARALLELISM}), no HTTP",
            f"{MAP_FILES / fn:.0f} files/s",
            f"plain process pool (HTTP) {base_rate:.0f} files/s",
            f"HTTP per file: {fn / base:.2f}x of this rate",
        )
    )
    runtimes = ["process"] + (["docker"] if docker_ready() else [])
    if "docker" not in runtimes:
        rows.append(("map job, docker runtime", "skipped: no Docker Engine", "", ""))
    for runtime in runtimes:
        spec: dict[str, object] = {
            "type": "map",
            "input": "in",
            "command": ["python3", "/mapserver.py"] if runtime == "docker" else [sys.executable, str(MAPSERVER)],
            "runtime": runtime,
            "parallelism": MAP_PARALLELISM,
            "inflight": MAP_INFLIGHT,
        }
        if runtime == "docker":
            spec["image"] = build_map_image(work)
        pfs = start_pfs(work / f"pfs-jobs-{runtime}", {"PFS_JOB_RUNTIME": runtime})
        try:
            with Client(pfs.url) as c:
                c.put_dir(str(inputs), "in")
                c.put_job("upper", spec)
                t = time.perf_counter()
                cid = c.commit(run=True).id
                status = c.wait_run(cid, timeout=600)
                full = time.perf_counter() - t
                assert status.state == "succeeded", status
                c.put_file("in/f00007.txt", b"one changed file")
                t = time.perf_counter()
                cid = c.commit(run=True).id
                status = c.wait_run(cid, timeout=600)
                incr = time.perf_counter() - t
                assert status.state == "succeeded" and status.jobs[0].done == 1, status
        finally:
            pfs.stop()
        rate = MAP_FILES / full
        rows.append(
            (
                f"map job, {MAP_FILES} small files, {runtime} runtime (commit to finished run)",
                f"{rate:.0f} files/s",
                f"plain process pool {base_rate:.0f} files/s",
                f"{rate / base_rate:.2f}x the rate",
            )
        )
        rows.append(
            (
                f"re-run after 1 of {MAP_FILES} files changed, {runtime} runtime",
                f"{incr:.2f} s",
                f"full run {full:.2f} s",
                f"{incr / full:.2f}x the time",
            )
        )


# ---- 6. clone and pull between two pfs instances ----------------------------------------
SYNC_COMMITS = 100
SYNC_FILE = 16 << 10


def _pack_bytes(gitdir: Path) -> int:
    return sum(p.stat().st_size for p in (gitdir / ".git" / "objects" / "pack").glob("*.pack"))


def bench_sync(work: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """The same history of 100 commits (each writes 10 files of 16 KB, 5 new and 5
    rewritten, in 20 directories) built in pfs and in git. pfs clones it into an empty
    pfs (pfs.sync, both servers local); git clones it with `git clone --no-local` (the
    pack protocol, not hard links). Then one more commit changes one file, and pfs pulls
    it while git fetches it (fetch.unpackLimit=1 keeps the pack, so its size is what came)."""
    from pfs import sync

    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@b",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@b",
    }

    def git(*args: str, cwd: Path) -> None:
        subprocess.run(["git", "-C", str(cwd), *args], check=True, env=env, stdout=subprocess.DEVNULL)

    rnd = random.Random(11)
    src_git = work / "sync-git-src"
    src_git.mkdir()
    git("init", "-q", cwd=src_git)
    src = start_pfs(work / "sync-pfs-src")
    dst = start_pfs(work / "sync-pfs-dst")
    try:
        paths: list[str] = []
        with Client(src.url) as c:
            for i in range(SYNC_COMMITS):
                for j in range(10):
                    if j < 5 or not paths:
                        paths.append(f"d{rnd.randrange(20):02}/f{len(paths):04}.txt")
                    path = paths[-1] if j < 5 or len(paths) == 1 else rnd.choice(paths[:-1])
                    data = rnd.randbytes(SYNC_FILE // 2).hex().encode()  # text-like: compresses about 2x
                    c.put_file(path, data)
                    (src_git / path).parent.mkdir(exist_ok=True)
                    (src_git / path).write_bytes(data)
                c.commit(message=f"commit {i}")
                git("add", "-A", cwd=src_git)
                git("commit", "-q", "-m", f"commit {i}", cwd=src_git)
        git_t = pfs_t = 1e9
        clone_git = work / "sync-git-clone"
        for trial in range(2):  # best of two interleaved runs, each after `sync`, as for small files
            if trial:
                shutil.rmtree(clone_git)
                dst.stop()
                shutil.rmtree(work / "sync-pfs-dst")
                dst = start_pfs(work / "sync-pfs-dst")
            os.sync()
            git_t = min(git_t, timed(lambda: git("clone", "-q", "--no-local", str(src_git), str(clone_git), cwd=work)))
            os.sync()
            rep = sync.clone(src.url, dst.url)
            assert rep.ok and rep.commits == SYNC_COMMITS, rep
            pfs_t = min(pfs_t, rep.seconds)
        git_bytes = _pack_bytes(clone_git)
        clone_bytes = rep.bytes + rep.overhead

        change = rnd.randbytes(SYNC_FILE // 2).hex().encode()
        changed = paths[len(paths) // 2]
        with Client(src.url) as c:
            c.put_file(changed, change)
            c.commit(message="one change")
        (src_git / changed).write_bytes(change)
        git("commit", "-q", "-a", "-m", "one change", cwd=src_git)
        before = _pack_bytes(clone_git)
        git("-c", "fetch.unpackLimit=1", "fetch", "-q", "origin", cwd=clone_git)
        git_fetch = _pack_bytes(clone_git) - before
        pull = sync.pull(src.url, dst.url)
        assert pull.ok and pull.commits == 1, pull
        pull_bytes = pull.bytes + pull.overhead
    finally:
        src.stop()
        dst.stop()
    rows.append(
        (
            f"clone {SYNC_COMMITS} commits ({SYNC_COMMITS * 10} files of 16 KB written) into an empty pfs",
            f"{pfs_t:.2f} s",
            f"git clone --no-local {git_t:.2f} s",
            f"{git_t / pfs_t:.2f}x as fast",
        )
    )
    rows.append(
        (
            "bytes sent by that clone (objects + negotiation)",
            f"{clone_bytes / 1e6:.2f} MB",
            f"git pack {git_bytes / 1e6:.2f} MB",
            f"{clone_bytes / git_bytes:.2f}x the bytes",
        )
    )
    rows.append(
        (
            f"pull after 1 new commit changing one 16 KB file ({len(change) // 1000} KB)",
            f"{pull_bytes / 1e3:.1f} KB in {pull.seconds * 1e3:.0f} ms ({pull.objects} objects)",
            f"the clone {clone_bytes / 1e6:.2f} MB; git fetch pack {git_fetch / 1e3:.1f} KB",
            f"{pull_bytes / clone_bytes:.4f}x the clone's bytes",
        )
    )


NOTES = """\
Notes: each ratio compares pfs with a baseline measured in the same run on the same disk.
Map jobs: the baseline ("plain process pool") is the same trivial map server
(bench/mapserver.py) run as plain local processes, fed straight from local files by as many
client threads as pfs uses (parallelism 2 x 4 in flight), writing outputs to local files;
that is the limit of the job protocol on this machine. pfs's figure runs from the commit
to the finished run: worker start, every file read from and written to pfs, the output
tree, and container removal. The "for scale" row shows what the HTTP round trip per file
costs against a pure-function pool. Targets: docker runtime >= 0.5x, process >= 0.8x.
Cluster: every node, PostgreSQL, SeaweedFS and the client threads share the machine's
cores, so adding nodes here cannot add CPU; the rows show that more nodes cost nothing in
contention (compare-and-swap, staging), not how a cluster of real machines scales. The
baseline writes the same bytes straight to SeaweedFS with boto3, which pfs must also do
after chunking, hashing and recording each file in PostgreSQL.
S3 gateway: client and server share the machine's two cores. A signed PutObject over plain
HTTP makes botocore hash the whole body (SHA-256) before sending and the gateway hash it
again to check it, which the native POST does not do: that is most of the PUT gap (over
HTTPS the SDK streams an unsigned body with a trailing CRC instead: the HTTPS rows).
upload_file/download_file add boto3's transfer manager (threads, a temporary file, disk
writes) on the same cores; one GetObject shows the gateway's own read path. Listing: the
"plain HTTP pages" row is the gateway's share; the rest is botocore parsing 100 XML pages.
Small PUTs: each is staged with one durable SQLite commit (fsync), which SeaweedFS's S3
server, writing without a transaction log, does not pay.
GC (bench/gc.py): files of 3 KiB (one chunk object each) on two branches, one deleted, so
about half the objects are garbage; each collection runs on a freshly started server. The
floor baseline is listing the objects directory (os.scandir + stat) plus unlinking as many
files, timed on the objects the collection kept (same size, same directories); git's
objects are in one pack, so its gc rewrites one file rather than unlinking one per object.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024, help="size of the large file (MiB)")
    ap.add_argument("--out", help="also write the report to this Markdown file")
    ap.add_argument("--trials", type=int, default=8, help="throughput: paired runs of each side")
    parts = "throughput,small,scaling,storage,jobs,sync,cluster,s3,auth,ingest,gc,console"
    ap.add_argument("--only", help=f"comma-separated subset: {parts}")
    ap.add_argument("--huge", action="store_true", help="ingest: also 1,000,000 files of 100 B (several minutes)")
    ap.add_argument(
        "--gc-objects",
        type=int,
        default=100_000,
        help="gc: files in the collected repository, half of them garbage (recorded: 1000000, ~15 minutes)",
    )
    ap.add_argument("--work", help="scratch directory (default: a temp dir on the same disk as /tmp)")
    args = ap.parse_args()
    size = args.size_mb << 20
    rows: list[tuple[str, str, str, str]] = []
    work = Path(tempfile.mkdtemp(prefix="pfs-bench-", dir=args.work))
    t0 = time.time()
    try:
        for name, fn in (
            ("throughput", lambda: bench_throughput(work, size, rows, args.trials)),
            ("small", lambda: bench_small_files(work, rows)),
            ("scaling", lambda: bench_scaling(work, rows)),
            ("storage", lambda: bench_storage(work, size, rows)),
            ("jobs", lambda: bench_jobs(work, rows)),
            ("sync", lambda: bench_sync(work, rows)),
            ("cluster", lambda: bench_cluster(work, rows)),
            ("s3", lambda: bench_s3(work, size, rows)),
            ("auth", lambda: bench_auth(work, rows)),
            ("ingest", lambda: bench_ingest(work, rows, huge=args.huge)),
            ("gc", lambda: bench_gc(work, rows, args.gc_objects)),
            ("console", lambda: bench_console(work, rows)),
        ):
            if args.only and name not in args.only.split(","):
                continue
            print(f"... {name}", file=sys.stderr, flush=True)
            fn()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cmd = "python bench/run.py" + "".join(f" {a}" for a in sys.argv[1:])
    lines = [
        "| measure | pfs | baseline (same run) | ratio |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
    ]
    report = "\n".join(
        [
            f"Command: `{cmd}`  ",
            f"Machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
            f"run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))}, took {time.time() - t0:.0f} s",
            "",
            *lines,
            "",
            NOTES,
        ]
    )
    print(report)
    if args.out:
        Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
