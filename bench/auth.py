"""Access control's cost: small-file GETs and PUTs signed with an access key against the
same with access control off, in the same run, on the native API (HTTP Basic, as curl and
the client send it) and on the S3 gateway (SigV4, as every SDK signs).

Two servers on embedded storage, one with a first admin (PFS_ADMIN_KEY_FILE: access
control on, every request looked up, authorized and, for writes, audited), one with no
users. Five trials, each measuring both servers back to back (in alternating order): the
rates are the best of each, the ratio the median of the five paired ratios (on this small
machine the rate drifts by more than the cost being measured between trials)."""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config as BotoConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Rows, free_port, start_pfs, timed  # noqa: E402

N = 1000
KEY_ID, SECRET = "PFSBENCHADMIN0000001", "bench-secret-" + "x" * 27


def _s3(url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def bench_auth(work: Path, rows: Rows) -> None:
    key_file = work / "admin.key"
    key_file.write_text(f"{KEY_ID}:{SECRET}\n")
    servers = {}
    for mode in ("on", "off"):
        s3_port = free_port()
        env = {"PFS_ADMIN_KEY_FILE": str(key_file)} if mode == "on" else {}
        proc = start_pfs(work / f"auth-{mode}", env, ["--s3-addr", f"127.0.0.1:{s3_port}"])
        servers[mode] = (proc, f"http://127.0.0.1:{s3_port}")
    body = os.urandom(1024)
    try:
        clients = {}
        for mode, (proc, s3_url) in servers.items():
            h = httpx.Client(base_url=proc.url, auth=(KEY_ID, SECRET), timeout=60)
            h.post("/repo/bench").raise_for_status()
            clients[mode] = (h, _s3(s3_url))

        def native_put(mode: str, trial: int) -> float:
            h = clients[mode][0]
            return timed(lambda: [h.post(f"/repo/bench/file/n{trial}/{i}", content=body) for i in range(N)])

        def native_get(mode: str, trial: int) -> float:
            h = clients[mode][0]
            return timed(lambda: [h.get(f"/repo/bench/file/n{trial}/{i}").content for i in range(N)])

        def s3_put(mode: str, trial: int) -> float:
            s3 = clients[mode][1]
            keys = [f"master/s{trial}/{i}" for i in range(N)]
            return timed(lambda: [s3.put_object(Bucket="bench", Key=k, Body=body) for k in keys])

        def s3_get(mode: str, trial: int) -> float:
            s3 = clients[mode][1]
            keys = [f"master/s{trial}/{i}" for i in range(N)]
            return timed(lambda: [s3.get_object(Bucket="bench", Key=k)["Body"].read() for k in keys])

        best: dict[tuple[str, str], float] = {}
        ratios: dict[str, list[float]] = {}
        ways: dict[str, Callable[[str, int], float]] = {
            "native PUT": native_put,
            "native GET": native_get,
            "S3 PUT": s3_put,
            "S3 GET": s3_get,
        }
        for trial in range(5):
            for name, fn in ways.items():
                took = {}
                for mode in ("on", "off") if trial % 2 == 0 else ("off", "on"):
                    os.sync()  # what earlier steps left dirty is not written back during a measurement
                    took[mode] = t = fn(mode, trial)
                    best[(name, mode)] = min(best.get((name, mode), 1e9), t)
                ratios.setdefault(name, []).append(took["off"] / took["on"])  # paired: drifts cancel
        for name, how in (
            ("native PUT", "POST /file, HTTP Basic"),
            ("native GET", "GET /file, HTTP Basic"),
            ("S3 PUT", "PutObject, SigV4"),
            ("S3 GET", "GetObject, SigV4"),
        ):
            on, off = best[(name, "on")], best[(name, "off")]
            rows.append(
                (
                    f"access control on: {N} small {name.split()[1]}s of 1 KiB, one client ({how})",
                    f"{N / on:.0f} ops/s",
                    f"access control off {N / off:.0f} ops/s",
                    f"{statistics.median(ratios[name]):.2f}x the rate (median of 5 paired runs)",
                )
            )
        for h, _ in clients.values():
            h.close()
    finally:
        for proc, _ in servers.values():
            proc.stop()
