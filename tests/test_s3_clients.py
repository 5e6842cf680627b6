"""The S3 gateway driven by data tools as their users drive them: pandas through s3fs
(`s3://<repo>/<branch>/…` with storage options pointing at pfs) and rclone (Debian's
package). What they write is read back through the native API at the commit."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from conftest import Storage
from test_s3_gateway import ACCESS_KEY, SECRET, ProcServers, client


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcServers]:
    s = ProcServers(tmp_path_factory.mktemp("clients") / "data").start()
    httpx.post(f"{s.url}/repo/lake").raise_for_status()
    yield s
    s.stop()


def native(servers: ProcServers, path: str, **params: str) -> bytes:
    r = httpx.get(f"{servers.url}/repo/lake/file/{path}", params=params)
    assert r.status_code == 200, r.text
    return r.content


def test_pandas_through_s3fs(servers: ProcServers) -> None:
    opts = {"key": ACCESS_KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": servers.s3_url}}
    df = pd.DataFrame({"city": ["Oslo", "Lima", "Pune"], "temp": [3.5, 19.0, 31.2]})
    df.to_parquet("s3://lake/master/weather/today.parquet", storage_options=opts)
    df.to_csv("s3://lake/master/weather/today.csv", index=False, storage_options=opts)
    pd.testing.assert_frame_equal(pd.read_parquet("s3://lake/master/weather/today.parquet", storage_options=opts), df)
    cid = httpx.post(f"{servers.url}/repo/lake/commit", params={"message": "weather"}).text.strip()
    assert native(servers, "weather/today.csv", commit=cid) == df.to_csv(index=False).encode()
    at_commit = pd.read_csv(f"s3://lake/{cid}/weather/today.csv", storage_options=opts)  # a commit is a ref too
    pd.testing.assert_frame_equal(at_commit, df)
    import s3fs

    fs = s3fs.S3FileSystem(**opts)
    assert sorted(fs.ls("lake/master/weather")) == [
        "lake/master/weather/today.csv",
        "lake/master/weather/today.parquet",
    ]
    with pytest.raises(PermissionError):  # a commit is read-only
        df.to_csv(f"s3://lake/{cid}/weather/other.csv", storage_options=opts)


RCLONE = shutil.which("rclone")


@pytest.mark.skipif(RCLONE is None, reason="rclone is not installed (scripts/s3-clients-setup.sh installs it)")
def test_rclone_copy_sync_check(servers: ProcServers, tmp_path: Path) -> None:
    conf = tmp_path / "rclone.conf"
    conf.write_text(
        "[pfs]\ntype = s3\nprovider = Other\n"
        f"access_key_id = {ACCESS_KEY}\nsecret_access_key = {SECRET}\nendpoint = {servers.s3_url}\n"
        "force_path_style = true\n"
    )

    # A CA bundle set for https elsewhere makes rclone refuse a plain-http endpoint.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}

    def rclone(*args: str) -> str:
        assert RCLONE is not None
        done = subprocess.run(
            [RCLONE, "--config", str(conf), "--low-level-retries", "1", "--retries", "1", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    src = tmp_path / "src"
    (src / "deep" / "er").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "deep" / "er" / "b.bin").write_bytes(bytes(range(256)) * 4096)
    rclone("copy", str(src), "pfs:lake/master/rc")
    assert native(servers, "rc/a.txt") == b"alpha"
    assert native(servers, "rc/deep/er/b.bin") == (src / "deep" / "er" / "b.bin").read_bytes()
    rclone("check", str(src), "pfs:lake/master/rc")  # sizes and hashes agree
    (src / "a.txt").unlink()
    rclone("sync", str(src), "pfs:lake/master/rc")
    assert httpx.get(f"{servers.url}/repo/lake/file/rc/a.txt").status_code == 404
    assert "deep/er/b.bin" in rclone("ls", "pfs:lake/master/rc")
    back = tmp_path / "back"
    rclone("copy", "pfs:lake/master/rc", str(back))
    assert (back / "deep" / "er" / "b.bin").read_bytes() == (src / "deep" / "er" / "b.bin").read_bytes()


def test_gateway_on_postgres_and_s3(tmp_path: Path, postgres: Any, seaweed: Any) -> None:
    """The gateway on a cluster's stores: buckets are repositories in PostgreSQL, objects in
    SeaweedFS; a multipart upload, a listing and a deleted bucket's objects gone."""
    storage = Storage(tmp_path / "data", postgres, seaweed)
    s = ProcServers(tmp_path / "data", storage).start()
    try:
        s3 = client(s.s3_url)
        s3.create_bucket(Bucket="shared")
        part = os.urandom(5 << 20)
        up = s3.create_multipart_upload(Bucket="shared", Key="master/big.bin")["UploadId"]
        tags = [
            s3.upload_part(Bucket="shared", Key="master/big.bin", UploadId=up, PartNumber=n, Body=part)["ETag"]
            for n in (1, 2)
        ]
        s3.complete_multipart_upload(
            Bucket="shared",
            Key="master/big.bin",
            UploadId=up,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": t} for n, t in zip((1, 2), tags, strict=True)]},
        )
        s3.put_object(Bucket="shared", Key="master/small.txt", Body=b"small")
        cid = httpx.post(f"{s.url}/repo/shared/commit").text.strip()
        assert httpx.get(f"{s.url}/repo/shared/file/big.bin", params={"commit": cid}).content == part + part
        listed = s3.list_objects_v2(Bucket="shared", Prefix="master/")
        assert [o["Key"] for o in listed["Contents"]] == ["master/big.bin", "master/small.txt"]
        raw = seaweed.client()
        assert raw.list_objects_v2(Bucket=storage.bucket, Prefix="repo/repos/1/").get("KeyCount", 0) > 0
        s3.delete_object(Bucket="shared", Key="master/big.bin")
        s3.delete_object(Bucket="shared", Key="master/small.txt")
        httpx.delete(f"{s.url}/repo/shared", params={"force": "1"}).raise_for_status()
        assert raw.list_objects_v2(Bucket=storage.bucket, Prefix="repo/repos/1/").get("KeyCount", 0) == 0
    finally:
        s.stop()
