"""`pfs serve --tls-cert/--tls-key`: both listeners speak HTTPS. Over HTTPS the SDKs stop
hashing every body before sending it (unsigned payloads with a trailing checksum in an
aws-chunked body), so this is also the gateway's fast path for uploads."""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config as BotoConfig
from conftest import ServerProc
from test_s3_gateway import ACCESS_KEY, SECRET, ProcServers
from tlscert import make_cert


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, tls: tuple[Path, Path]) -> Iterator[ProcServers]:
    s = ProcServers(tmp_path_factory.mktemp("tls-srv") / "data", tls=tls).start()
    yield s
    s.stop()


def test_native_api_over_https(servers: ProcServers, tls: tuple[Path, Path]) -> None:
    ctx = ssl.create_default_context(cafile=str(tls[0]))
    with httpx.Client(base_url=servers.url, verify=ctx) as h:
        assert h.post("/file/a.txt", content=b"secret sauce").status_code == 201
        assert h.get("/file/a.txt").content == b"secret sauce"
    with pytest.raises(httpx.ConnectError):  # an unknown certificate is refused by a client that checks
        httpx.get(servers.url + "/ping")
    with pytest.raises(httpx.TransportError):  # plain HTTP on a TLS port gets nothing
        httpx.get(servers.url.replace("https", "http") + "/ping", timeout=5)


def test_s3_over_https_streams_unsigned_with_a_checksum(servers: ProcServers, tls: tuple[Path, Path]) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=servers.s3_url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
        verify=str(tls[0]),
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    s3.create_bucket(Bucket="secure")
    data = os.urandom((3 << 20) + 17)
    seen: list[dict[str, str]] = []
    s3.meta.events.register("before-send.s3.PutObject", lambda request, **_: seen.append(dict(request.headers)))
    s3.put_object(Bucket="secure", Key="master/blob.bin", Body=data)
    sent = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in seen[0].items()}
    assert sent["x-amz-content-sha256"].startswith("STREAMING-UNSIGNED-PAYLOAD")  # no SHA-256 pass over the body
    got = s3.get_object(Bucket="secure", Key="master/blob.bin")["Body"].read()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        unchecked = boto3.client(
            "s3",
            endpoint_url=servers.s3_url,
            region_name="us-east-1",
            aws_access_key_id="a",
            aws_secret_access_key="b",
            config=BotoConfig(retries={"max_attempts": 1}),
        )
        unchecked.list_buckets()


def test_bad_certificate_files_are_one_line_and_exit_1(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    for args, said in (
        (["--tls-cert", str(junk), "--tls-key", str(junk)], "cannot use the TLS certificate"),
        (["--tls-cert", str(junk)], "--tls-cert and --tls-key go together"),
        (["--tls-cert", str(tmp_path / "none"), "--tls-key", str(junk)], "no such file"),
    ):
        port = ServerProc(tmp_path / "data").port
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pfs.cli",
                "serve",
                "--addr",
                f"127.0.0.1:{port}",
                "--data-dir",
                str(tmp_path / "data"),
                *args,
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 1 and said in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
