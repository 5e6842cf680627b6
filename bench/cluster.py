"""Cluster bench: aggregate write throughput through 1, 2 and 3 pfs nodes sharing one
PostgreSQL and one S3 store (SeaweedFS), against the same load written straight to the
S3 store with boto3 (the limit: pfs adds chunking, hashing, metadata and a second hop).

Run by bench/run.py (`--only cluster`), or alone: `python bench/cluster.py`.
"""

from __future__ import annotations

import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pg import running_postgres  # noqa: E402
from seaweed import running_seaweed  # noqa: E402

CLIENTS = 12  # writers in flight, spread over the nodes
FILES = 360  # per measurement
SIZE = 256 << 10  # bytes per file: several per request of real data, no chunking dominance


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_node(data_dir: Path, env: dict[str, str]) -> tuple[object, str]:
    import subprocess

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pfs", "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", str(data_dir)],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"pfs node exited with {proc.returncode}")
        try:
            if httpx.get(url + "/ready", timeout=1).status_code == 200:  # the stores answer too
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("pfs node did not start")


def _payloads(n: int, seed: int) -> list[bytes]:
    rnd = random.Random(seed)
    return [rnd.randbytes(SIZE) for _ in range(n)]


def _write_through_nodes(urls: list[str], payloads: list[bytes], tag: str) -> float:
    clients = [httpx.Client(base_url=u, timeout=120) for u in urls]
    try:

        def one(i: int) -> None:
            r = clients[i % len(clients)].post(f"/file/{tag}/{i:05d}", content=payloads[i])
            r.raise_for_status()

        t = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(one, range(len(payloads))))
        r = clients[0].post("/commit", params={"message": tag})
        r.raise_for_status()
        return time.perf_counter() - t
    finally:
        for c in clients:
            c.close()


def _write_straight_to_s3(weed: object, bucket: str, payloads: list[bytes]) -> float:
    s3 = weed.client()  # type: ignore[attr-defined]
    t = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"raw/{i:05d}", Body=payloads[i]), range(FILES)))
    return time.perf_counter() - t


def bench_cluster(work: Path, rows: list[tuple[str, str, str, str]]) -> None:
    mb = FILES * SIZE / 1e6
    with running_postgres() as pg, running_seaweed(work / "weed-cluster") as weed:
        base = min(_write_straight_to_s3(weed, weed.new_bucket("raw"), _payloads(FILES, s)) for s in (1, 2))
        base_rate = mb / base
        env = {"PFS_META_URL": pg.new_database("bench"), "PFS_OBJECTS_URL": f"s3://{weed.new_bucket('pfs')}/repo"}
        env.update(weed.env())
        env["PFS_JOB_RUNTIME"] = "process"
        procs = []
        urls: list[str] = []
        try:
            for n in (1, 2, 3):
                while len(urls) < n:
                    proc, url = _start_node(work / f"cluster-node{len(urls)}", env)
                    procs.append(proc)
                    urls.append(url)
                # fresh random data for every run: nothing deduplicated against a previous one
                secs = min(_write_through_nodes(urls, _payloads(FILES, 10 * n + k), f"n{n}k{k}") for k in (0, 1))
                rate = mb / secs
                rows.append(
                    (
                        f"aggregate writes, {n} node(s), {CLIENTS} clients, {FILES} x {SIZE >> 10} KiB + commit",
                        f"{rate:.0f} MB/s",
                        f"boto3 straight to the S3 store {base_rate:.0f} MB/s",
                        f"{rate / base_rate:.2f}x the rate",
                    )
                )
        finally:
            for proc in procs:
                proc.terminate()  # type: ignore[attr-defined]
                proc.wait(10)  # type: ignore[attr-defined]


if __name__ == "__main__":
    import tempfile

    out: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="pfs-bench-cluster-") as d:
        bench_cluster(Path(d), out)
    for row in out:
        print(" | ".join(row))
