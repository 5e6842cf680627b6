"""The S3 gateway against its baselines, measured in the same run: boto3 through the
gateway against pfs's own API for one large object (both ways) and a 100,000-key listing,
and against SeaweedFS's own S3 server for 1,000 small PUTs and GETs."""

from __future__ import annotations

import io
import os
import re
import ssl
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import httpx
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig

from pfs import Client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from seaweed import running_seaweed  # noqa: E402
from tlscert import make_cert  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Rows, free_port, timed  # noqa: E402

KEYS = 100_000
SMALL = 1000


class _Pfs:
    """`pfs serve --s3-addr` on embedded storage (HTTPS with `tls`: certificate, key)."""

    def __init__(self, data_dir: Path, tls: tuple[Path, Path] | None = None) -> None:
        port, s3 = free_port(), free_port()
        scheme = "https" if tls else "http"
        self.url, self.s3_url = f"{scheme}://127.0.0.1:{port}", f"{scheme}://127.0.0.1:{s3}"
        self.verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(tls[0])) if tls else True
        args = ["serve", "--addr", f"127.0.0.1:{port}", "--s3-addr", f"127.0.0.1:{s3}", "--data-dir", str(data_dir)]
        if tls:
            args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        self.proc = subprocess.Popen([sys.executable, "-m", "pfs", *args], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ready", timeout=1, verify=self.verify).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("pfs did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _s3(url: str, key: str = "bench", secret: str = "bench-secret", verify: str | None = None) -> object:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        verify=verify,
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def _random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        for _ in range(size >> 26):
            f.write(os.urandom(64 << 20))
        f.write(os.urandom(size & ((64 << 20) - 1)))


def _pieces(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            yield piece


def _tar_of_empty_names(n: int) -> Iterator[bytes]:
    """A tar stream of `n` one-byte files in one directory, built as it is sent."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|") as tar:
        for i in range(n):
            info = tarfile.TarInfo(f"k{i:06d}")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
            if buf.tell() > 1 << 20:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
    yield buf.getvalue()


def bench_s3(work: Path, size: int, rows: Rows) -> None:
    big = work / "s3-big.bin"
    _random_file(big, size)
    mb = size / 1e6
    transfer = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=16 << 20, max_concurrency=4)
    pfs = _Pfs(work / "pfs-s3")
    try:
        c = Client(pfs.url)
        c.create_repo("bench")
        s3 = _s3(pfs.s3_url)
        ways: dict[str, Callable[[int], object]] = {
            "up_native": lambda t: c.repo("bench").put_file(f"n{t}.bin", _pieces(big)),
            "up_put": lambda t: _put_object(s3, big, f"master/p{t}.bin"),
            "up_multi": lambda t: s3.upload_file(str(big), "bench", f"master/m{t}.bin", Config=transfer),  # type: ignore[attr-defined]
            "down_native": lambda t: sum(len(p) for p in c.repo("bench").open_file(f"n{t}.bin")),
            "down_get": lambda t: _get_object(s3, f"master/p{t}.bin"),
            "down_multi": lambda t: s3.download_file("bench", f"master/m{t}.bin", str(out), Config=transfer),  # type: ignore[attr-defined]
        }
        best = dict.fromkeys(ways, 1e9)
        out = work / "s3-down.bin"
        for trial in range(2):  # interleaved, best of two
            for name, way in ways.items():
                if name == "down_native":
                    c.repo("bench").commit(message="big")
                best[name] = min(best[name], timed(lambda way=way, trial=trial: way(trial)))  # type: ignore[misc]
            out.unlink()
            for name in ("n", "p", "m"):
                c.repo("bench").delete_file(f"{name}{trial}.bin")
            c.repo("bench").commit(message="drop")
        for key, what, how in (
            ("up_put", "PUT", "one PutObject"),
            ("up_multi", "PUT", "upload_file, 16 MiB parts x 4"),
            ("down_get", "GET", "one GetObject"),
            ("down_multi", "GET", "download_file, 16 MiB ranges x 4"),
        ):
            native = "up_native" if key.startswith("up") else "down_native"
            rows.append(
                (
                    f"S3 gateway: {what} of a {size >> 20} MiB object (boto3 {how})",
                    f"{mb / best[key]:.0f} MB/s",
                    f"native {'POST' if what == 'PUT' else 'GET'} /file {mb / best[native]:.0f} MB/s",
                    f"{best[native] / best[key]:.2f}x the speed",
                )
            )

        c.repo("bench").put_tar("flat", _tar_of_empty_names(KEYS))
        c.repo("bench").commit(message="keys")

        def native_listing() -> int:
            with httpx.Client(base_url=pfs.url, timeout=600) as h:
                r = h.get("/repo/bench/file/flat/*", headers={"accept": "application/json"})
                r.raise_for_status()
                return len(r.json())

        def s3_listing() -> int:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="master/flat/")  # type: ignore[attr-defined]
            return sum(len(p.get("Contents", [])) for p in pages)

        def raw_listing() -> int:  # the gateway's share: the pages without botocore's parsing
            n, token = 0, None
            with httpx.Client(timeout=600) as h:
                while True:
                    params = {
                        "list-type": "2",
                        "prefix": "master/flat/",
                        **({"continuation-token": token} if token else {}),
                    }
                    text = h.get(f"{pfs.s3_url}/bench", params=params).text
                    n += text.count("<Key>")
                    m = re.search(r"<NextContinuationToken>([^<]+)<", text)
                    if m is None:
                        return n
                    token = m.group(1)

        assert native_listing() == KEYS and s3_listing() == KEYS and raw_listing() == KEYS
        t_native = min(timed(native_listing) for _ in range(2))
        for fn, how in ((s3_listing, "boto3 paginator"), (raw_listing, "plain HTTP pages, no client parsing")):
            t = min(timed(fn) for _ in range(2))
            rows.append(
                (
                    f"S3 gateway: ListObjectsV2 of {KEYS:,} keys, 100 pages ({how})",
                    f"{t:.2f} s",
                    f"native listing (one JSON answer) {t_native:.2f} s",
                    f"{t / t_native:.2f}x the time",
                )
            )
        t_pfs = _small_ops(s3, "bench", "master/small/")
    finally:
        pfs.stop()
        big.unlink(missing_ok=True)
    _bench_tls(work, big_size=size, rows=rows)
    with running_seaweed(work / "weed-s3") as weed:
        bucket = weed.new_bucket("small")
        t_weed = _small_ops(weed.client(), bucket, "small/")
    for i, what in enumerate(("PUTs", "GETs")):
        rows.append(
            (
                f"S3 gateway: {SMALL} small {what} (1 KiB, one client)",
                f"{SMALL / t_pfs[i]:.0f} ops/s",
                f"SeaweedFS's own S3 server {SMALL / t_weed[i]:.0f} ops/s",
                f"{t_weed[i] / t_pfs[i]:.2f}x the rate",
            )
        )


def _bench_tls(work: Path, big_size: int, rows: Rows) -> None:
    """One PutObject and one GetObject over HTTPS, against the native POST and GET over
    HTTPS: there the SDK sends an unsigned, streamed body with a trailing checksum instead
    of hashing the whole body first."""
    cert, key = make_cert(work)
    big = work / "s3-big-tls.bin"
    _random_file(big, big_size)
    mb = big_size / 1e6
    pfs = _Pfs(work / "pfs-tls", (cert, key))
    try:
        with httpx.Client(base_url=pfs.url, verify=pfs.verify, timeout=600) as h:
            h.post("/repo/bench").raise_for_status()
            s3 = _s3(pfs.s3_url, verify=str(cert))

            def native_get(t: int) -> int:
                with h.stream("GET", f"/repo/bench/file/n{t}.bin") as r:
                    return sum(len(p) for p in r.iter_raw(1 << 20))

            ways: dict[str, Callable[[int], object]] = {
                "up_native": lambda t: h.post(f"/repo/bench/file/n{t}.bin", content=_pieces(big)).raise_for_status(),
                "up_put": lambda t: _put_object(s3, big, f"master/p{t}.bin"),
                "down_native": native_get,
                "down_get": lambda t: _get_object(s3, f"master/p{t}.bin"),
            }
            best = dict.fromkeys(ways, 1e9)
            for trial in range(2):
                for name, way in ways.items():
                    best[name] = min(best[name], timed(lambda way=way, trial=trial: way(trial)))  # type: ignore[misc]
                h.post("/repo/bench/discard").raise_for_status()
    finally:
        pfs.stop()
        big.unlink(missing_ok=True)
    for k, what, native in (("up_put", "PUT", "POST"), ("down_get", "GET", "GET")):
        base = "up_native" if what == "PUT" else "down_native"
        rows.append(
            (
                f"S3 gateway over HTTPS: {what} of a {big_size >> 20} MiB object (boto3 one {what.title()}Object)",
                f"{mb / best[k]:.0f} MB/s",
                f"native {native} /file over HTTPS {mb / best[base]:.0f} MB/s",
                f"{best[base] / best[k]:.2f}x the speed",
            )
        )


def _put_object(s3: object, path: Path, key: str) -> None:
    with open(path, "rb") as f:
        s3.put_object(Bucket="bench", Key=key, Body=f)  # type: ignore[attr-defined]


def _get_object(s3: object, key: str) -> int:
    body = s3.get_object(Bucket="bench", Key=key)["Body"]  # type: ignore[attr-defined]
    return sum(len(p) for p in body.iter_chunks(1 << 20))


def _small_ops(s3: object, bucket: str, prefix: str) -> tuple[float, float]:
    body = os.urandom(1024)
    put = timed(lambda: [s3.put_object(Bucket=bucket, Key=f"{prefix}{i}", Body=body) for i in range(SMALL)])  # type: ignore[attr-defined]
    get = timed(lambda: [s3.get_object(Bucket=bucket, Key=f"{prefix}{i}")["Body"].read() for i in range(SMALL)])  # type: ignore[attr-defined]
    return put, get
