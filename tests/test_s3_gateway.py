"""The S3 gateway through real clients: boto3 (and s3transfer), the AWS CLI, and raw HTTP for
what clients never send. Bucket = repository, key = `<ref>/<path>`; what S3 writes is read back
through pfs's native API and the other way round, before and after commits.

One server for the whole file (each test makes its own buckets): `servers` starts `pfs serve`'s
two apps (native API and S3 gateway) on real sockets in this process; `ProcServers` is the same
behind `pfs serve --s3-addr` as a subprocess.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree as ET

import anyio
import blake3
import boto3
import httpx
import pytest
import uvicorn
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum
from conftest import ServerProc, Storage, free_port, tar_of

from pfs.config import Config
from pfs.errors import Unavailable
from pfs.http.api import Node, OpenNode, create_app
from pfs.http.logs import RequestIds
from pfs.http.s3 import gateway, protocol, sigv4
from pfs.http.s3.gateway import create_s3_app

ACCESS_KEY, SECRET = "AKIDPFSTEST", "any-secret-will-do"
MB = 1 << 20
AUTH_PREFIX = "AWS4-HMAC-SHA256 "


# ---- servers ---------------------------------------------------------------------------


class _Uvicorn:
    """One ASGI app served by uvicorn on 127.0.0.1, in a thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


class InProcessServers:
    """The native API and the S3 gateway over one node, as `pfs serve --s3-addr` serves them."""

    def __init__(self, data_dir: Path, access: Any = None, gate: Any = None) -> None:
        """`access`: a function of the repositories giving the node's `Access` (default: one
        with an in-memory server key); `gate`: the sign-in gate both listeners share."""
        self.data_dir = data_dir
        self.repos = Config(str(data_dir)).open_repos()
        node = OpenNode(self.repos, None, access(self.repos) if access else None)
        self.node = node
        self.native = _Uvicorn(create_app(node, gate=gate))
        self.s3 = _Uvicorn(RequestIds(create_s3_app(node, gate=gate)))
        self.url = f"http://127.0.0.1:{self.native.port}"
        self.s3_url = f"http://127.0.0.1:{self.s3.port}"

    def start(self) -> InProcessServers:
        self.native.start()
        self.s3.start()
        return self

    def stop(self) -> None:
        self.s3.stop()
        self.native.stop()
        self.repos.close()


class ProcServers:
    """The same as a `pfs serve --s3-addr` subprocess (on `storage`: embedded by default)."""

    def __init__(self, data_dir: Path, storage: Storage | None = None, tls: tuple[Path, Path] | None = None) -> None:
        port = free_port()
        self.data_dir = data_dir
        self.proc = ServerProc(data_dir, args=["--s3-addr", f"127.0.0.1:{port}"], storage=storage, tls=tls)
        self.url = self.proc.url
        self.s3_url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"

    def start(self) -> ProcServers:
        self.proc.start()
        return self

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcServers]:
    """`pfs serve --s3-addr`: the gateway as users run it."""
    s = ProcServers(tmp_path_factory.mktemp("s3") / "data").start()
    yield s
    s.stop()


@pytest.fixture
def inproc(tmp_path: Path) -> Iterator[InProcessServers]:
    """The same in this process, for a test that turns the gateway's timing knobs."""
    s = InProcessServers(tmp_path / "data").start()
    yield s
    s.stop()


def client(url: str, **config: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **config),
    )


@pytest.fixture(scope="module")
def s3(servers: ProcServers) -> Any:
    return client(servers.s3_url)


@pytest.fixture(scope="module")
def native(servers: ProcServers) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=servers.url, timeout=60) as h:
        yield h


@pytest.fixture(scope="module")
def raw(servers: ProcServers) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=servers.s3_url, timeout=60) as h:
        yield h


@pytest.fixture
def bucket(s3: Any) -> str:
    name = "t-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    return name


def code_of(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


@contextlib.contextmanager
def s3_error(code: str, status: int | None = None) -> Iterator[pytest.ExceptionInfo[ClientError]]:
    with pytest.raises(ClientError) as info:
        yield info
    assert code_of(info) == code, info.value.response
    if status is not None:
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def commit(native: httpx.Client, bucket: str, branch: str = "master", message: str = "") -> str:
    r = native.post(f"/repo/{bucket}/commit", params={"branch": branch, "message": message})
    assert r.status_code == 201, r.text
    return r.text.strip()


def native_read(native: httpx.Client, bucket: str, path: str, **params: str) -> bytes:
    r = native.get(f"/repo/{bucket}/file/{path}", params=params or {"branch": "master"})
    assert r.status_code == 200, r.text
    return r.content


def etag(data: bytes) -> str:
    return f'"{blake3.blake3(data).hexdigest()}"'


def keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def signed_headers(method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers of a request signed with SigV4 (the signer that test_s3_protocol checks against
    botocore's), any x-amz-content-sha256 the test gives kept as it is: botocore's signer would
    replace it by the body's."""
    now = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    parts = urlsplit(url)
    h = {"host": parts.netloc, "x-amz-date": now, "x-amz-content-sha256": hashlib.sha256(body).hexdigest()}
    h.update({k.lower(): v for k, v in (headers or {}).items()})
    names = sorted(h)
    canonical = sigv4.canonical_request(
        method, parts.path, protocol.parse_query(parts.query), h, names, h["x-amz-content-sha256"]
    )
    scope = f"{now[:8]}/us-east-1/s3/aws4_request"
    key = sigv4.signing_key(SECRET, now[:8], "us-east-1")
    signature = sigv4.signature(key, sigv4.string_to_sign(now, scope, canonical))
    h["authorization"] = (
        f"{AUTH_PREFIX}Credential={ACCESS_KEY}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return h


def error_of(response: httpx.Response) -> tuple[str, str]:
    """(Code, RequestId) of an S3 error answer, checking it names the request as the header does."""
    root = ET.fromstring(response.content)
    assert root.tag == "Error", response.content
    rid = root.findtext("RequestId") or ""
    assert rid and rid == response.headers["x-amz-request-id"]
    return root.findtext("Code") or "", rid


# ---- buckets ---------------------------------------------------------------------------


def test_buckets_are_repositories(s3: Any, native: httpx.Client) -> None:
    name = "b-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert native.get(f"/repo/{name}").status_code == 200  # the native API sees the repository
    s3.head_bucket(Bucket=name)
    assert s3.get_bucket_location(Bucket=name).get("LocationConstraint") is None  # us-east-1
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    with s3_error("BucketAlreadyOwnedByYou", 409):
        s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="master/a.txt", Body=b"a")
    with s3_error("BucketNotEmpty", 409):
        s3.delete_bucket(Bucket=name)
    s3.head_object(Bucket=name, Key="master/a.txt")  # nothing was deleted
    empty = "e-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=empty, ACL="private")
    s3.delete_bucket(Bucket=empty)
    with s3_error("404"):  # HEAD: no body, botocore names the status
        s3.head_bucket(Bucket=empty)
    with s3_error("NoSuchBucket", 404):
        s3.list_objects_v2(Bucket=empty)
    with s3_error("InvalidBucketName", 400):
        s3.create_bucket(Bucket="Not_A_Bucket")
    with s3_error("AccessDenied", 403):  # the default repository is never deleted
        s3.delete_bucket(Bucket="default")
    with s3_error("NotImplemented", 501):
        s3.create_bucket(Bucket="p-" + uuid.uuid4().hex[:12], ACL="public-read")


# ---- objects ---------------------------------------------------------------------------


def test_put_get_head_and_native_api_agree(s3: Any, native: httpx.Client, bucket: str) -> None:
    data = random.Random(1).randbytes(3 * MB + 12345)  # several chunks
    put = s3.put_object(
        Bucket=bucket,
        Key="master/dir/data.bin",
        Body=data,
        ContentType="application/x-pfs",
        Metadata={"owner": "me", "note": "x y"},
        CacheControl="no-cache",
        ACL="private",
    )
    assert put["ETag"] == etag(data)
    got = s3.get_object(Bucket=bucket, Key="master/dir/data.bin")
    assert got["Body"].read() == data
    assert got["ETag"] == etag(data) and got["ContentLength"] == len(data)
    assert got["ContentType"] == "application/x-pfs" and got["CacheControl"] == "no-cache"
    assert got["Metadata"]["owner"] == "me"
    assert native_read(native, bucket, "dir/data.bin") == data  # staged on master, like POST /file
    # the other way round: written natively, read through S3 (no metadata: S3's default type)
    assert native.post(f"/repo/{bucket}/file/native.txt", params={"branch": "master"}, content=b"hi").status_code == 201
    small = s3.get_object(Bucket=bucket, Key="master/native.txt")
    assert small["Body"].read() == b"hi" and small["ContentType"] == "binary/octet-stream"
    # a commit: the same keys under the commit id, read-only, with the commit's time
    cid = commit(native, bucket)
    c_time = native.get(f"/repo/{bucket}/commit/{cid}", headers={"accept": "application/json"}).json()["time"]
    for ref in ("master", cid, cid[:12]):
        head = s3.head_object(Bucket=bucket, Key=f"{ref}/dir/data.bin")
        assert head["ETag"] == etag(data) and head["Metadata"] == {"owner": "me", "note": "x y"}
        assert head["LastModified"].isoformat()[:19] == c_time[:19]
        assert s3.get_object(Bucket=bucket, Key=f"{ref}/native.txt")["Body"].read() == b"hi"
    assert native_read(native, bucket, "dir/data.bin", commit=cid) == data
    with s3_error("AccessDenied", 403):
        s3.put_object(Bucket=bucket, Key=f"{cid}/x.txt", Body=b"x")
    with s3_error("AccessDenied", 403):
        s3.delete_object(Bucket=bucket, Key=f"{cid}/native.txt")
    # a new write is dirty: modified "now", the committed version unchanged under the commit id
    before = time.time()
    s3.put_object(Bucket=bucket, Key="master/native.txt", Body=b"hello")
    assert s3.head_object(Bucket=bucket, Key="master/native.txt")["LastModified"].timestamp() >= int(before)
    assert s3.get_object(Bucket=bucket, Key=f"{cid}/native.txt")["Body"].read() == b"hi"
    assert native_read(native, bucket, "native.txt") == b"hello"
    with s3_error("NoSuchKey", 404):
        s3.get_object(Bucket=bucket, Key="master/missing.txt")
    with s3_error("NoSuchKey", 404):
        s3.get_object(Bucket=bucket, Key="nobranch/native.txt")
    with s3_error("NoSuchKey", 404):
        s3.get_object(Bucket=bucket, Key="0123456789abcdef/native.txt")  # no such commit
    with s3_error("404"):
        s3.head_object(Bucket=bucket, Key="master/dir")  # a directory is not a key


def test_ranges_and_conditions(s3: Any, bucket: str) -> None:
    data = random.Random(2).randbytes(5 * MB)
    s3.put_object(Bucket=bucket, Key="master/r.bin", Body=data)
    tag = etag(data)
    for first, last in [(0, 0), (10, 20), (MB - 5, 3 * MB + 7), (len(data) - 10, len(data) - 1)]:
        got = s3.get_object(Bucket=bucket, Key="master/r.bin", Range=f"bytes={first}-{last}")
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["ContentRange"] == f"bytes {first}-{last}/{len(data)}"
        assert got["Body"].read() == data[first : last + 1]
    assert s3.get_object(Bucket=bucket, Key="master/r.bin", Range="bytes=-100")["Body"].read() == data[-100:]
    assert s3.get_object(Bucket=bucket, Key="master/r.bin", Range=f"bytes={len(data) - 3}-")["Body"].read() == data[-3:]
    with s3_error("InvalidRange", 416):
        s3.get_object(Bucket=bucket, Key="master/r.bin", Range=f"bytes={len(data)}-")
    with s3_error("304"):
        s3.get_object(Bucket=bucket, Key="master/r.bin", IfNoneMatch=tag)
    with s3_error("PreconditionFailed", 412):
        s3.get_object(Bucket=bucket, Key="master/r.bin", IfMatch='"nope"')
    assert s3.get_object(Bucket=bucket, Key="master/r.bin", IfMatch=tag, Range="bytes=0-1")["Body"].read() == data[:2]
    with s3_error("412"):
        s3.head_object(Bucket=bucket, Key="master/r.bin", IfMatch='"nope"')
    # conditional writes
    with s3_error("PreconditionFailed", 412):
        s3.put_object(Bucket=bucket, Key="master/r.bin", Body=b"x", IfNoneMatch="*")
    s3.put_object(Bucket=bucket, Key="master/new.bin", Body=b"x", IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="master/r.bin")["Body"].read() == data


def test_copy_within_and_across_branches_and_buckets(
    s3: Any, native: httpx.Client, servers: ProcServers, bucket: str
) -> None:
    data = random.Random(3).randbytes(2 * MB)
    s3.put_object(Bucket=bucket, Key="master/src.bin", Body=data, Metadata={"k": "v"}, ContentType="text/x-a")
    cid = commit(native, bucket)
    assert native.post(f"/repo/{bucket}/branch", params={"branch": "dev"}).status_code == 201
    objects = servers.data_dir / "repos"  # every repository's objects but the default one's
    count = sum(1 for _ in objects.rglob("*"))
    s3.copy_object(Bucket=bucket, Key="master/copy.bin", CopySource={"Bucket": bucket, "Key": "master/src.bin"})
    s3.copy_object(Bucket=bucket, Key="dev/moved/copy.bin", CopySource=f"{bucket}/{cid}/src.bin")
    assert count > 0 and sum(1 for _ in objects.rglob("*")) == count  # within a repository no byte is copied
    for key in ("master/copy.bin", "dev/moved/copy.bin"):
        got = s3.get_object(Bucket=bucket, Key=key)
        assert got["Body"].read() == data and got["Metadata"] == {"k": "v"} and got["ContentType"] == "text/x-a"
    assert native_read(native, bucket, "moved/copy.bin", branch="dev") == data
    replaced = s3.copy_object(
        Bucket=bucket,
        Key="master/copy.bin",
        CopySource={"Bucket": bucket, "Key": "master/copy.bin"},
        MetadataDirective="REPLACE",
        Metadata={"new": "1"},
        ContentType="text/plain",
    )
    assert replaced["CopyObjectResult"]["ETag"] == etag(data)
    head = s3.head_object(Bucket=bucket, Key="master/copy.bin")
    assert head["Metadata"] == {"new": "1"} and head["ContentType"] == "text/plain"
    with s3_error("InvalidRequest", 400):  # to itself, changing nothing
        s3.copy_object(Bucket=bucket, Key="master/copy.bin", CopySource={"Bucket": bucket, "Key": "master/copy.bin"})
    with s3_error("PreconditionFailed", 412):
        s3.copy_object(
            Bucket=bucket, Key="master/c2.bin", CopySource=f"{bucket}/master/src.bin", CopySourceIfMatch='"other"'
        )
    with s3_error("NoSuchKey", 404):
        s3.copy_object(Bucket=bucket, Key="master/c2.bin", CopySource=f"{bucket}/master/nothing")
    # across buckets: streamed into the other repository's objects
    other = "o-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=other)
    s3.copy_object(Bucket=other, Key="master/x/copy.bin", CopySource={"Bucket": bucket, "Key": "master/src.bin"})
    assert s3.get_object(Bucket=other, Key="master/x/copy.bin")["Body"].read() == data
    assert native_read(native, other, "x/copy.bin") == data
    cid2 = commit(native, other)
    assert native_read(native, other, "x/copy.bin", commit=cid2) == data


def test_delete_object_and_delete_objects(s3: Any, native: httpx.Client, bucket: str) -> None:
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"master/d/{i}.txt", Body=b"%d" % i)
    cid = commit(native, bucket)
    s3.delete_object(Bucket=bucket, Key="master/d/0.txt")
    s3.delete_object(Bucket=bucket, Key="master/d/never-there.txt")  # 204, as S3
    s3.delete_object(Bucket=bucket, Key="master/d")  # a directory is not a key: nothing happens
    answer = s3.delete_objects(
        Bucket=bucket,
        Delete={
            "Objects": [
                {"Key": "master/d/1.txt"},
                {"Key": "master/d/2.txt"},
                {"Key": f"{cid}/d/3.txt"},  # a commit: read-only
                {"Key": "master/../d/4.txt"},
                {"Key": "master/gone.txt"},
            ]
        },
    )
    assert sorted(d["Key"] for d in answer["Deleted"]) == ["master/d/1.txt", "master/d/2.txt", "master/gone.txt"]
    assert {e["Key"]: e["Code"] for e in answer["Errors"]} == {
        f"{cid}/d/3.txt": "AccessDenied",
        "master/../d/4.txt": "InvalidArgument",
    }
    assert keys(s3, bucket, "master/") == ["master/d/3.txt", "master/d/4.txt"]
    assert native.get(f"/repo/{bucket}/file/d/1.txt", params={"branch": "master"}).status_code == 404
    assert keys(s3, bucket, cid + "/") == [f"{cid}/d/{i}.txt" for i in range(5)]  # history keeps them


@pytest.mark.slow
def test_listing(s3: Any, native: httpx.Client, bucket: str) -> None:
    many = 10_345  # more than ten pages of 1,000
    files = {f"many/{i:05d}.txt": b"x" * (i % 7) for i in range(many)}
    files.update({"a.txt": b"a", "a/b.txt": b"ab", "a-b/c.txt": b"abc", "z/é.txt": b"e", "z/sp ace+plus.txt": b"s"})
    archive = tar_of(files).getvalue()
    assert native.post(f"/repo/{bucket}/tar", params={"branch": "master"}, content=archive).status_code == 201
    expected = sorted("master/" + p for p in files)
    assert keys(s3, bucket) == expected  # more keys than a page, in S3 order
    pages = list(
        s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix="master/", PaginationConfig={"PageSize": 700}
        )
    )
    assert [len(p.get("Contents", [])) for p in pages] == [700] * (len(files) // 700) + [len(files) % 700]
    v1 = s3.get_paginator("list_objects").paginate(
        Bucket=bucket, Prefix="master/many/", PaginationConfig={"PageSize": 1000}
    )
    assert sum(len(p.get("Contents", [])) for p in v1) == many
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")  # the refs are the top level
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["master/"] and "Contents" not in top
    level = s3.list_objects_v2(Bucket=bucket, Prefix="master/", Delimiter="/")
    assert [p["Prefix"] for p in level["CommonPrefixes"]] == ["master/a-b/", "master/a/", "master/many/", "master/z/"]
    assert [o["Key"] for o in level["Contents"]] == ["master/a.txt"]
    assert level["Contents"][0]["ETag"] == etag(b"a") and level["Contents"][0]["Size"] == 1
    after = s3.list_objects_v2(Bucket=bucket, Prefix="master/", StartAfter="master/many/02340.txt", MaxKeys=3)
    assert [o["Key"] for o in after["Contents"]] == [
        "master/many/02341.txt",
        "master/many/02342.txt",
        "master/many/02343.txt",
    ]
    assert after["IsTruncated"]
    # encoding-type=url (botocore asks for it and decodes): names with spaces, + and non-ASCII
    z = s3.list_objects_v2(Bucket=bucket, Prefix="master/z/")
    assert [o["Key"] for o in z["Contents"]] == ["master/z/sp ace+plus.txt", "master/z/é.txt"]
    assert s3.list_objects_v2(Bucket=bucket, Prefix="master/zz")["KeyCount"] == 0
    assert s3.list_objects_v2(Bucket=bucket, Prefix="nobranch/")["KeyCount"] == 0
    # a branch and a commit are listed too
    cid = commit(native, bucket)
    assert native.post(f"/repo/{bucket}/branch", params={"branch": "dev"}).status_code == 201
    s3.put_object(Bucket=bucket, Key="dev/only-dev.txt", Body=b"d")
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["dev/", "master/"]
    assert len(keys(s3, bucket, cid + "/")) == len(files)
    assert keys(s3, bucket, "dev/o") == ["dev/only-dev.txt"]
    every = keys(s3, bucket)  # no ref in the prefix: every branch, in key order
    assert every[:2] == ["dev/a-b/c.txt", "dev/a.txt"] and every[-1] == "master/z/é.txt"
    assert len(every) == 2 * len(files) + 1
    with s3_error("InvalidArgument", 400):
        s3.list_objects_v2(Bucket=bucket, Delimiter="|")
    with s3_error("InvalidArgument", 400):
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="not a token!")


def test_versions_are_commits(s3: Any, native: httpx.Client, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="master/f.txt", Body=b"one")
    c1 = commit(native, bucket, message="one")
    s3.put_object(Bucket=bucket, Key="master/f.txt", Body=b"two")
    s3.put_object(Bucket=bucket, Key="master/g.txt", Body=b"g")
    c2 = commit(native, bucket, message="two")
    s3.delete_object(Bucket=bucket, Key="master/f.txt")
    c3 = commit(native, bucket, message="three")
    s3.put_object(Bucket=bucket, Key="master/f.txt", Body=b"dirty")  # not a version until committed
    answer = s3.list_object_versions(Bucket=bucket, Prefix="master/f")
    assert [(v["VersionId"], v["IsLatest"], v["Size"]) for v in answer["Versions"]] == [(c2, False, 3), (c1, False, 3)]
    assert [(m["Key"], m["VersionId"], m["IsLatest"]) for m in answer["DeleteMarkers"]] == [("master/f.txt", c3, True)]
    assert answer["Versions"][0]["ETag"] == etag(b"two")
    for cid, body in ((c1, b"one"), (c2, b"two")):
        got = s3.get_object(Bucket=bucket, Key="master/f.txt", VersionId=cid)
        assert got["Body"].read() == body and got["VersionId"] == cid
    with s3_error("NoSuchKey", 404):
        s3.get_object(Bucket=bucket, Key="master/f.txt", VersionId=c3)  # deleted there
    with s3_error("NoSuchVersion", 404):
        s3.get_object(Bucket=bucket, Key="master/f.txt", VersionId="ab" * 32)
    with s3_error("InvalidArgument", 400):
        s3.get_object(Bucket=bucket, Key="master/f.txt", VersionId="null")
    whole = s3.list_object_versions(Bucket=bucket, Prefix="master/")
    assert [(v["Key"], v["VersionId"]) for v in whole["Versions"]] == [
        ("master/f.txt", c2),
        ("master/f.txt", c1),
        ("master/g.txt", c2),
    ]
    page = s3.list_object_versions(Bucket=bucket, Prefix="master/", MaxKeys=2)
    assert page["IsTruncated"] and len(page["Versions"]) + len(page.get("DeleteMarkers", [])) == 2
    rest = s3.list_object_versions(
        Bucket=bucket,
        Prefix="master/",
        KeyMarker=page["NextKeyMarker"],
        VersionIdMarker=page["NextVersionIdMarker"],
    )
    assert len(rest["Versions"]) + len(rest.get("DeleteMarkers", [])) == 2 and not rest["IsTruncated"]
    with s3_error("NotImplemented", 501):
        s3.delete_object(Bucket=bucket, Key="master/f.txt", VersionId=c1)


# ---- multipart -------------------------------------------------------------------------


def test_s3transfer_multipart_upload_and_download(s3: Any, native: httpx.Client, bucket: str, tmp_path: Path) -> None:
    data = random.Random(4).randbytes(20 * MB + 777)
    src, dest = tmp_path / "up.bin", tmp_path / "down.bin"
    src.write_bytes(data)
    config = TransferConfig(multipart_threshold=5 * MB, multipart_chunksize=5 * MB, max_concurrency=4)
    s3.upload_file(str(src), bucket, "master/big/up.bin", Config=config, ExtraArgs={"ContentType": "x/big"})
    head = s3.head_object(Bucket=bucket, Key="master/big/up.bin")
    assert head["ContentLength"] == len(data) and head["ContentType"] == "x/big"
    md5s = [hashlib.md5(data[i : i + 5 * MB]).digest() for i in range(0, len(data), 5 * MB)]
    assert head["ETag"] == f'"{hashlib.md5(b"".join(md5s)).hexdigest()}-{len(md5s)}"'  # S3's multipart form
    s3.download_file(bucket, "master/big/up.bin", str(dest), Config=config)
    assert dest.read_bytes() == data
    assert native_read(native, bucket, "big/up.bin") == data
    cid = commit(native, bucket)
    assert native_read(native, bucket, "big/up.bin", commit=cid) == data
    assert s3.head_object(Bucket=bucket, Key=f"{cid}/big/up.bin")["ETag"] == head["ETag"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_multipart_bad_input(s3: Any, bucket: str) -> None:
    key = "master/mp.bin"
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"m": "1"})["UploadId"]
    part1 = random.Random(5).randbytes(5 * MB)
    e1 = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=part1)["ETag"]
    assert e1 == f'"{hashlib.md5(part1).hexdigest()}"'
    e2 = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=2, Body=b"tail")["ETag"]
    for number in (0, 10001):
        with s3_error("InvalidArgument", 400):
            s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=b"x")
    with s3_error("NoSuchUpload", 404):
        s3.upload_part(Bucket=bucket, Key=key, UploadId="f" * 32, PartNumber=1, Body=b"x")
    with s3_error("NoSuchUpload", 404):  # another key's upload
        s3.upload_part(Bucket=bucket, Key="master/other.bin", UploadId=upload, PartNumber=1, Body=b"x")
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed["Parts"]] == [(1, e1, 5 * MB), (2, e2, 4)]
    uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix="master/")["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [(key, upload)]
    second = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    other = s3.create_multipart_upload(Bucket=bucket, Key="master/zz.bin")["UploadId"]
    page = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=1)
    assert [u["UploadId"] for u in page["Uploads"]] == [upload] and page["IsTruncated"]
    rest = s3.list_multipart_uploads(
        Bucket=bucket, KeyMarker=page["NextKeyMarker"], UploadIdMarker=page["NextUploadIdMarker"]
    )
    assert [u["UploadId"] for u in rest["Uploads"]] == [second, other]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket, KeyMarker=key)["Uploads"]] == [other]
    for extra, name in ((second, key), (other, "master/zz.bin")):
        s3.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=extra)

    def complete(parts: list[dict[str, Any]]) -> Any:
        return s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})

    with s3_error("InvalidPart", 400):  # part 3 was never sent
        complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 3, "ETag": e2}])
    with s3_error("InvalidPart", 400):  # a wrong ETag
        complete([{"PartNumber": 1, "ETag": e2}, {"PartNumber": 2, "ETag": e2}])
    with s3_error("InvalidPartOrder", 400):
        complete([{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}])
    with s3_error("InvalidArgument", 400):
        complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 10001, "ETag": e2}])
    with s3_error("InvalidPart", 400):  # 10,000 parts named: answered at once, nothing done
        complete([{"PartNumber": n, "ETag": e1} for n in range(1, 10001)])
    small = s3.create_multipart_upload(Bucket=bucket, Key="master/small.bin")["UploadId"]
    tags = [
        s3.upload_part(Bucket=bucket, Key="master/small.bin", UploadId=small, PartNumber=n, Body=b"s")["ETag"]
        for n in (1, 2)
    ]
    with s3_error("EntityTooSmall", 400):  # a part but the last under 5 MiB
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="master/small.bin",
            UploadId=small,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": t} for n, t in zip((1, 2), tags, strict=True)]},
        )
    with s3_error("NoSuchKey", 404):  # nothing was staged by the refusals
        s3.get_object(Bucket=bucket, Key=key)
    done = complete([{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}])
    assert done["ETag"].endswith('-2"')
    got = s3.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == part1 + b"tail" and got["Metadata"] == {"m": "1"} and got["ETag"] == done["ETag"]
    with s3_error("NoSuchUpload", 404):  # completed: gone
        s3.list_parts(Bucket=bucket, Key=key, UploadId=upload)
    aborted = s3.create_multipart_upload(Bucket=bucket, Key="master/ab.bin")["UploadId"]
    s3.abort_multipart_upload(Bucket=bucket, Key="master/ab.bin", UploadId=aborted)
    with s3_error("NoSuchUpload", 404):
        s3.abort_multipart_upload(Bucket=bucket, Key="master/ab.bin", UploadId=aborted)


def test_slow_complete_and_copy_keep_the_connection_alive(
    inproc: InProcessServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answers that take long start at once (a 200, spaces while the work goes on) and end with
    the result or an `<Error>`, which botocore reads as the error it is."""
    s3 = client(inproc.s3_url)
    bucket = "slow-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=bucket)
    monkeypatch.setattr(gateway, "KEEPALIVE_AFTER", 0.0)
    monkeypatch.setattr(gateway, "KEEPALIVE_EVERY", 0.001)
    part = random.Random(8).randbytes(5 * MB)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="master/slow.bin")["UploadId"]
    tags = [
        s3.upload_part(Bucket=bucket, Key="master/slow.bin", UploadId=upload, PartNumber=n, Body=part)["ETag"]
        for n in (1, 2)
    ]
    parts = [{"PartNumber": n, "ETag": t} for n, t in zip((1, 2), tags, strict=True)]
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="master/slow.bin", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    assert done["ETag"].endswith('-2"') and done["Key"] == "master/slow.bin"
    assert s3.get_object(Bucket=bucket, Key="master/slow.bin")["Body"].read() == part + part
    other = "k-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=other, Key="master/file", Body=b"in the way")
    copied = s3.copy_object(Bucket=other, Key="master/copy.bin", CopySource=f"{bucket}/master/slow.bin")
    assert copied["CopyObjectResult"]["ETag"] == done["ETag"]
    with s3_error("InvalidArgument", 500):  # failed after a 200 started: botocore makes its Error a 500
        s3.copy_object(Bucket=other, Key="master/file/below.bin", CopySource=f"{bucket}/master/slow.bin")
    assert keys(s3, other) == ["master/copy.bin", "master/file"]


# ---- protocol edges: raw HTTP ----------------------------------------------------------


def test_addressing_anonymous_presigned_and_chunked(
    s3: Any, raw: httpx.Client, servers: ProcServers, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="master/v.txt", Body=b"virtual")
    # virtual-host style: the bucket in the Host header
    port = servers.s3_url.rsplit(":", 1)[1]
    r = raw.get("/master/v.txt", headers={"host": f"{bucket}.s3.localhost:{port}"})
    assert r.status_code == 200, r.text and r.content == b"virtual"
    # anonymous (no credentials at all) is accepted, until access control exists
    r = raw.get(f"/{bucket}/master/v.txt")
    assert r.status_code == 200 and r.content == b"virtual" and r.headers["x-amz-request-id"]
    # presigned URLs
    presign = client(servers.s3_url, signature_version="s3v4")
    url = presign.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "master/v.txt"}, ExpiresIn=60)
    r = httpx.get(url)
    assert r.content == b"virtual", r.text
    put_url = presign.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "master/p.txt"}, ExpiresIn=60
    )
    assert httpx.put(put_url, content=b"presigned").status_code == 200
    assert s3.get_object(Bucket=bucket, Key="master/p.txt")["Body"].read() == b"presigned"
    # aws-chunked bodies with a trailing CRC32, as SDKs send them over TLS
    payload = random.Random(6).randbytes(300_000)
    body = bytes(AwsChunkedWrapper(io.BytesIO(payload), Crc32Checksum, "x-amz-checksum-crc32", chunk_size=65536).read())
    headers = {
        "content-encoding": "aws-chunked",
        "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "x-amz-decoded-content-length": str(len(payload)),
        "x-amz-trailer": "x-amz-checksum-crc32",
        "content-type": "text/x-chunked",
    }
    target = f"{servers.s3_url}/{bucket}/master/chunked.bin"
    r = raw.put(target, content=body, headers=signed_headers("PUT", target, body, headers))
    assert r.status_code == 200, r.text
    got = s3.get_object(Bucket=bucket, Key="master/chunked.bin")
    assert got["Body"].read() == payload and got["ContentType"] == "text/x-chunked"
    assert "ContentEncoding" not in got  # aws-chunked was the transfer, not the object's encoding
    bad = body.replace(base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")), b"AAAAAA==")
    r = raw.put(target.replace("chunked", "bad"), content=bad, headers=signed_headers("PUT", target, bad, headers))
    assert r.status_code == 400 and error_of(r)[0] == "BadDigest"
    # a signed chunk chain (signatures not checked until access keys exist, but framing is)
    chain = b"".join(
        f"{len(c):x};chunk-signature={'0' * 64}\r\n".encode() + c + b"\r\n" for c in (payload[:70000], payload[70000:])
    )
    chain += b"0;chunk-signature=" + b"0" * 64 + b"\r\n\r\n"
    signed = {**headers, "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"}
    del signed["x-amz-trailer"]
    r = raw.put(target, content=chain, headers=signed_headers("PUT", target, chain, signed))
    assert r.status_code == 200, r.text
    assert s3.get_object(Bucket=bucket, Key="master/chunked.bin")["Body"].read() == payload
    cut = chain[:-40]
    r = raw.put(target.replace("chunked", "cut"), content=cut, headers=signed_headers("PUT", target, cut, signed))
    assert r.status_code == 400 and error_of(r)[0] in ("IncompleteBody", "InvalidRequest")
    for refused in ("master/bad.bin", "master/cut.bin"):
        with s3_error("NoSuchKey"):
            s3.get_object(Bucket=bucket, Key=refused)


def test_bad_input_is_an_s3_error_and_changes_nothing(
    s3: Any, raw: httpx.Client, servers: ProcServers, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="master/keep.txt", Body=b"keep")
    base = servers.s3_url

    def send(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, sign: bool = True):
        url = base + path
        hdrs = signed_headers(method, url, body, headers) if sign else dict(headers or {})
        return raw.request(method, url, content=body, headers=hdrs)

    cases: list[tuple[httpx.Response, int, str]] = [
        (send("PUT", f"/{bucket}/master/a/%2E%2E/x.txt", b"x"), 400, "InvalidArgument"),
        (send("PUT", f"/{bucket}/master/a%00b", b"x"), 400, "InvalidArgument"),
        (send("PUT", f"/{bucket}/master/", b"x"), 400, "InvalidArgument"),
        (send("PUT", f"/{bucket}/nokey", b"x"), 400, "InvalidArgument"),
        (send("PUT", f"/{bucket}/nobranch/x.txt", b"x"), 404, "NoSuchKey"),
        (send("PUT", f"/{bucket}/master/" + "k" * 1100, b"x"), 400, "KeyTooLongError"),
        (send("GET", "/no-such-bucket-here/master/x"), 404, "NoSuchBucket"),
        (send("GET", f"/{bucket}/master/keep.txt%"), 400, "InvalidURI"),
        (send("PATCH", f"/{bucket}/master/keep.txt"), 405, "MethodNotAllowed"),
        (send("GET", f"/{bucket}?tagging"), 501, "NotImplemented"),
        (send("PUT", f"/{bucket}/master/keep.txt?tagging", b"<Tagging/>"), 501, "NotImplemented"),
        (send("POST", f"/{bucket}?delete", b"<Delete><Object><Key>master/keep.txt"), 400, "MalformedXML"),
        (
            send(
                "POST",
                f"/{bucket}?delete",
                b'<!DOCTYPE x [<!ENTITY a "aaaa">]><Delete><Object><Key>&a;</Key></Object></Delete>',
            ),
            400,
            "MalformedXML",
        ),
        (
            send("POST", f"/{bucket}?delete", b"<Delete>" + b" " * (3 << 20) + b"</Delete>"),
            400,
            "MaxMessageLengthExceeded",
        ),
        (
            send(
                "PUT",
                f"/{bucket}/master/keep.txt",
                b"other",
                {"content-md5": base64.b64encode(hashlib.md5(b"x").digest()).decode()},
            ),
            400,
            "BadDigest",
        ),
        (send("PUT", f"/{bucket}/master/keep.txt", b"other", {"content-md5": "not base64"}), 400, "InvalidDigest"),
        (
            send(
                "PUT",
                f"/{bucket}/master/keep.txt",
                b"other",
                {"x-amz-content-sha256": hashlib.sha256(b"x").hexdigest()},
            ),
            400,
            "XAmzContentSHA256Mismatch",
        ),
        (send("PUT", f"/{bucket}/master/keep.txt", b"other", {"x-amz-acl": "public-read"}), 501, "NotImplemented"),
        (send("PUT", f"/{bucket}/master/keep.txt", b"other", {"x-amz-meta-big": "v" * 3000}), 400, "MetadataTooLarge"),
        (
            send("PUT", f"/{bucket}/master/keep.txt", b"other", {"x-amz-server-side-encryption": "AES256"}),
            501,
            "NotImplemented",
        ),
        (send("PUT", f"/{bucket}/master/x.txt?partNumber=1&uploadId=nope", b"x"), 404, "NoSuchUpload"),
        (
            send(
                "GET",
                f"/{bucket}",
                headers={
                    "authorization": AUTH_PREFIX
                    + "Credential=AKID/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=zz"
                },
                sign=False,
            ),
            403,
            "SignatureDoesNotMatch",
        ),
        (
            send(
                "GET",
                f"/{bucket}",
                headers={
                    "authorization": AUTH_PREFIX
                    + "Credential=AKID/2026/us-east-1/s3/aws4_request, SignedHeaders=host, Signature="
                    + "0" * 64
                },
                sign=False,
            ),
            400,
            "AuthorizationHeaderMalformed",
        ),
        (
            send("GET", f"/{bucket}", headers={"authorization": "AWS AKID:c2lnbmF0dXJl"}, sign=False),
            400,
            "InvalidRequest",
        ),
        (
            send("GET", f"/{bucket}?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=x", sign=False),
            400,
            "AuthorizationQueryParametersError",
        ),
    ]
    for response, status, code in cases:
        assert response.content, (response.request.method, response.request.url, response.request.headers, code)
        assert (response.status_code, error_of(response)[0]) == (status, code), (response.request.url, response.text)
    skewed = signed_headers("GET", f"{base}/{bucket}")
    skewed["x-amz-date"] = "20200101T000000Z"
    r = raw.get(f"{base}/{bucket}", headers=skewed)
    assert r.status_code in (400, 403) and error_of(r)[0] in ("RequestTimeTooSkewed", "AuthorizationHeaderMalformed")
    assert keys(s3, bucket) == ["master/keep.txt"]  # nothing was written
    assert s3.get_object(Bucket=bucket, Key="master/keep.txt")["Body"].read() == b"keep"


class _BrokenRepos:
    def list(self) -> list[Any]:
        raise RuntimeError("a secret detail of a bug")


class _FakeNode(Node):
    def __init__(self, broken: bool) -> None:
        self.broken = broken

    @property
    def repos(self) -> Any:
        if self.broken:
            return _BrokenRepos()
        raise Unavailable("the stores are opening")

    @property
    def access(self) -> Any:
        if self.broken:  # access control off: the request reaches the broken repositories
            return SimpleNamespace(identity=SimpleNamespace(enabled=lambda: False, allowed=lambda *a: True))
        raise Unavailable("the stores are opening")


def _asgi_get(app: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s3.test") as c:
            return await c.get("/", headers=headers)

    return anyio.run(go)


def test_unavailable_and_bugs_are_s3_errors() -> None:
    r = _asgi_get(create_s3_app(_FakeNode(broken=False)))
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert error_of(r)[0] == "ServiceUnavailable"
    r = _asgi_get(create_s3_app(_FakeNode(broken=True)), {"x-request-id": "req-123"})
    assert r.status_code == 500 and error_of(r) == ("InternalError", "req-123")
    assert "secret" not in r.text and "Traceback" not in r.text and "req-123" in r.text


# ---- the AWS CLI -----------------------------------------------------------------------


AWS = str(Path(sys.executable).parent / "aws")  # the test extras install it beside pytest


@pytest.mark.slow
def test_aws_cli_cp_sync_ls_rm(servers: ProcServers, native: httpx.Client, bucket: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }

    def aws(*args: str) -> str:
        done = subprocess.run(
            [AWS, "--endpoint-url", servers.s3_url, "s3", *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    local = tmp_path / "local"
    (local / "sub").mkdir(parents=True)
    (local / "one.txt").write_bytes(b"one")
    (local / "sub" / "two.txt").write_bytes(b"two")
    (local / "big.bin").write_bytes(random.Random(7).randbytes(9 * MB))  # multipart with the CLI's 8 MiB threshold
    aws("cp", str(local / "one.txt"), f"s3://{bucket}/master/cp/one.txt")
    assert native_read(native, bucket, "cp/one.txt") == b"one"
    aws("sync", str(local), f"s3://{bucket}/master/synced")
    assert native_read(native, bucket, "synced/sub/two.txt") == b"two"
    assert native_read(native, bucket, "synced/big.bin") == (local / "big.bin").read_bytes()
    listing = aws("ls", "--recursive", f"s3://{bucket}/master/")
    assert "master/synced/sub/two.txt" in listing and "master/cp/one.txt" in listing
    assert "PRE master/" in aws("ls", f"s3://{bucket}")
    assert aws("sync", str(local), f"s3://{bucket}/master/synced").strip() == ""  # nothing changed: nothing sent
    down = tmp_path / "down"
    aws("sync", f"s3://{bucket}/master/synced", str(down))
    assert (down / "big.bin").read_bytes() == (local / "big.bin").read_bytes()
    aws("rm", "--recursive", f"s3://{bucket}/master/synced")
    assert aws("ls", "--recursive", f"s3://{bucket}/master/").strip().endswith("master/cp/one.txt")
