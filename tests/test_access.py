"""Identity and access (DESIGN.md section 6), against real servers: the permission matrix of
every native route and every S3 operation for anonymous, reader, writer, repository admin,
server admin, a disabled key and a wrong secret (and, on the gateway, a tampered signature
and an expired presigned URL) — each answering exactly as `pfs.http.permissions` says, and a
refused request changing nothing. Then keys, protected branches, the audit log, the sign-in
throttle, SigV4 on the native API, secrets at rest and in logs, and the safe defaults."""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
import httpx
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError
from conftest import AppServer, ServerProc, Storage
from test_s3_gateway import InProcessServers

from pfs.access.identity import NewKey, Permission
from pfs.access.secrets import ServerKey
from pfs.access.service import Access
from pfs.config import Config
from pfs.errors import BranchProtected, PfsError
from pfs.http.api import create_app
from pfs.http.auth import Gate, Throttle
from pfs.http.permissions import REPO_ROUTES, S3_OPERATIONS, SERVER_ROUTES, markdown
from pfs.storage.identity import IdentityStore

ROOT = Path(__file__).resolve().parent.parent
REPO = "data"
PRINCIPALS = ("anonymous", "disabled", "wrong-secret", "reader", "writer", "owner", "root")
ROLE_OF = {"reader": "read", "writer": "write", "owner": "admin", "disabled": "write"}
MAY = {"reader": Permission.READ, "writer": Permission.WRITE, "owner": Permission.ADMIN, "root": Permission.SERVER}
JOB_SPEC = b'{"type": "map", "input": "m", "image": "none:latest", "command": ["true"]}'


class Servers(InProcessServers):
    """The native API and the S3 gateway over one node with access control on, served by
    uvicorn on 127.0.0.1 in this process (so the test can reach the node's identity)."""

    def __init__(self, data_dir: Path, throttle: Throttle | None = None) -> None:
        # the matrix fails sign-ins on purpose, a lot: no throttle unless a test gives one
        gate = Gate(throttle or Throttle(free=1_000_000, block=1_000_000))
        super().__init__(data_dir, lambda repos: Access.ephemeral(repos.db), gate)
        self.access = self.node.access
        self.keys: dict[str, NewKey] = {}
        self._n = itertools.count()

    @property
    def identity(self) -> Any:
        return self.access.identity

    def fresh(self, what: str) -> str:
        return f"{what}-{next(self._n)}"

    def auth(self, who: str) -> tuple[str, str] | None:
        if who == "anonymous":
            return None
        if who == "wrong-secret":
            return (self.keys["writer"].id, "x" * 40)
        return (self.keys[who].id, self.keys[who].secret)

    def http(self, who: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=self.auth(who), timeout=30, headers={"accept": "application/json"})

    def root(self) -> httpx.Client:
        return self.http("root")


def setup_world(s: Servers) -> None:
    """Users with each role on repository `data` (and a disabled key), a commit with m/x.txt,
    and a branch `feature` one commit ahead."""
    ident = s.identity
    s.keys["root"] = ident.init_admin("root")
    s.repos.create(REPO)
    repo_id = s.repos.get(REPO).id
    for who, role in ROLE_OF.items():
        ident.create_user(who)
        s.keys[who] = ident.create_key(who)
        ident.grant(who, repo_id, role)
    ident.set_key_disabled(s.keys["disabled"].id, True)
    ident.create_user("victim")
    with s.root() as h:
        base = f"/repo/{REPO}"
        h.post(f"{base}/file/m/x.txt", content=b"x").raise_for_status()
        h.post(f"{base}/commit").raise_for_status()
        h.post(f"{base}/branch", params={"commit": "master", "branch": "feature"}).raise_for_status()
        h.post(f"{base}/file/m/y.txt", params={"branch": "feature"}, content=b"y").raise_for_status()
        h.post(f"{base}/commit", params={"branch": "feature"}).raise_for_status()


@contextlib.contextmanager
def running_world(data_dir: Path, throttle: Throttle | None = None) -> Iterator[Servers]:
    s = Servers(data_dir, throttle).start()
    try:
        setup_world(s)
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """One world for the matrix and the tests that change nothing it relies on."""
    with running_world(tmp_path_factory.mktemp("access") / "data") as s:
        yield s


@pytest.fixture
def fresh_world(tmp_path: Path) -> Iterator[Servers]:
    """A world of its own, for a test that changes rules or reads the whole audit log."""
    with running_world(tmp_path / "data") as s:
        yield s


def fingerprint(s: Servers) -> Any:
    """Everything a request could change: users, keys, grants, rules, repositories, and each
    repository's branches, staged writes and jobs."""
    store: IdentityStore = s.identity.store
    repos = []
    for r in s.repos.each():
        staged = sorted((b, x.path, x.entry) for b, _ in r.branches() for x in r.meta.staged(b))
        repos.append((r.name, r.branches(), staged, r.meta.list_jobs()))
    return (
        store.list_users(),
        [(k.id, k.user, k.disabled) for k in store.list_keys()],
        sorted((u.name, store.grants_of_user(u.name).items().__repr__()) for u in store.list_users()),
        [store.protected(r.id) for r in s.repos.each()],
        repos,
    )


# ---- the native API: every route and method ---------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def native_call(s: Servers, route: str, method: str, who: str, prefix: str) -> Call:
    """A concrete request for `route`; anything it may destroy or create is made fresh for it."""
    me = who if who in MAY or who == "disabled" else "writer"
    commit = s.repos.get(REPO).branch_head("master") or ""

    def own_key() -> str:
        return str(s.identity.create_key(me).id)

    fills: dict[str, Callable[[], str]] = {
        "{path:anypath}": lambda: "m/x.txt" if method == "GET" else "m/new.txt",
        "{id}": (lambda: own_key()) if route.startswith("/key/") else (lambda: commit),
        "{user}": lambda: "victim",
        "{pattern:anypath}": lambda: "rel-*",
        "{repo}": lambda: REPO,  # the console's routes
        "{ref}": lambda: "master",
        "{branch}": lambda: "master",
    }
    if route == "/repo/{name}":
        fills["{name}"] = (lambda: REPO) if method == "GET" else (lambda: fresh_repo(s, method))
    elif route.startswith("/user/{name}"):
        own = SERVER_ROUTES[route][method] == Permission.USER
        fills["{name}"] = (lambda: me) if own else (lambda: fresh_user(s, method))
    elif route == "/branch/{name:anypath}":
        fills["{name:anypath}"] = (lambda: "feature") if method == "GET" else (lambda: fresh_branch(s))
    elif route.startswith("/job/{name}"):
        fills["{name}"] = lambda: "wc"
    path = route
    for hole, fill in fills.items():
        if hole in path:
            path = path.replace(hole, fill())
    call = Call(method, prefix + path)
    if route == "/merge":
        call.params = {"from": "feature", "into": "master"}
    elif route == "/revert":
        call.params = {"branch": "master", "commit": commit}
    elif route == "/access/{user}" and method == "PUT":
        call.params = {"role": "read"}
    elif route == "/user/{name}" and method == "PUT":
        call.params = {"admin": "0"}
    elif route == "/job/{name}" and method in ("POST", "PUT"):
        call.body = JOB_SPEC
    elif route.startswith("/file") and method in ("POST", "PUT"):
        call.body = b"new"
    return call


def fresh_repo(s: Servers, method: str) -> str:
    name = s.fresh("tmp")
    if method == "DELETE":
        s.repos.create(name)
    return name


def fresh_user(s: Servers, method: str) -> str:
    name = s.fresh("u")
    if method != "POST":
        s.identity.create_user(name)
    return name


def fresh_branch(s: Servers) -> str:
    name = s.fresh("b")
    s.repos.get(REPO).create_branch(name)
    return name


def expected_native(route: str, method: str, need: Permission, who: str) -> int | None:
    """The status a refused request gets, or None where it is allowed."""
    if need == Permission.PUBLIC:
        return 401 if route == "/whoami" and who in ("disabled", "wrong-secret") else None
    if who in ("anonymous", "disabled", "wrong-secret"):
        return 401
    return None if need <= MAY[who] else 403


NATIVE_CASES = [
    (table_name, route, method)
    for table_name, table in (("server", SERVER_ROUTES), ("repo", REPO_ROUTES))
    for route, methods in table.items()
    for method in methods
]


@pytest.mark.parametrize("who", PRINCIPALS)
def test_every_native_route_answers_as_the_table_says(world: Servers, who: str) -> None:
    """Each route and method once per principal; refused ones change nothing. Repository routes
    are tried under /repo/data/ (the grants are on `data`)."""
    wrong: list[str] = []
    with world.http(who) as h:
        for table_name, route, method in NATIVE_CASES:
            need = (SERVER_ROUTES if table_name == "server" else REPO_ROUTES)[route][method]
            call = native_call(world, route, method, who, "" if table_name == "server" else f"/repo/{REPO}")
            refused = expected_native(route, method, need, who)
            before = fingerprint(world) if refused else None
            r = h.request(call.method, call.path, params=call.params, content=call.body or None)
            shown = f"{method} {call.path} as {who}: {r.status_code} {r.text[:200]}"
            if refused is not None:
                if r.status_code != refused or fingerprint(world) != before:
                    wrong.append(f"expected {refused}: {shown}")
                elif r.json()["error"] != ("unauthorized" if refused == 401 else "forbidden"):
                    wrong.append(f"wrong error code: {shown}")
                elif refused == 401 and not r.headers.get("www-authenticate", "").startswith("Basic realm="):
                    wrong.append(f"a 401 without WWW-Authenticate: {shown}")
            elif route.startswith("/ui/") and r.status_code == 403 and "CSRF token" in r.text:
                pass  # allowed by its permission; a console form also needs its page's token
            elif r.status_code in (401, 403) or r.status_code >= 500:
                wrong.append(f"expected it allowed: {shown}")
    assert not wrong, "\n".join(wrong)


def test_default_repository_routes_need_a_role_on_it(world: Servers) -> None:
    """Unprefixed routes address the default repository: a role on `data` gives nothing there."""
    with world.http("writer") as h:
        assert h.get("/file/m/x.txt").status_code == 403
        assert h.post("/file/a.txt", content=b"a").status_code == 403
    with world.http("root") as h:
        assert h.post("/file/a.txt", content=b"a").status_code == 201
    default_id = world.repos.default.id
    world.identity.grant("reader", default_id, "read")
    try:
        with world.http("reader") as h:
            assert h.get("/file/a.txt").content == b"a"
            assert h.post("/file/b.txt", content=b"b").status_code == 403
    finally:
        world.identity.revoke("reader", default_id)


def test_listings_show_only_readable_repositories(world: Servers) -> None:
    with world.http("reader") as h:
        assert [r["name"] for r in h.get("/repo").json()] == [REPO]
        assert h.get("/repo/default").status_code == 403
    with world.http("root") as h:
        assert {REPO, "default"} <= {r["name"] for r in h.get("/repo").json()}
    assert world.identity is not None
    names = [b["Name"] for b in s3(world, "reader").list_buckets()["Buckets"]]
    assert names == [REPO]


def test_users_see_their_own_keys_only(world: Servers) -> None:
    other = world.keys["writer"].id
    with world.http("reader") as h:
        assert h.get("/user/writer").status_code == 403
        assert h.get("/user/writer/key").status_code == 403
        assert h.post("/user/writer/key").status_code == 403
        for path in (f"/key/{other}", f"/key/{other}/disable", f"/key/{other}/rotate"):
            r = h.get(path) if path.count("/") == 2 else h.post(path)
            assert r.status_code == 404, path  # another's key id is not confirmed
        assert h.delete(f"/key/{other}").status_code == 404
        mine = h.get("/user/reader").json()
        assert mine["roles"] == {REPO: "read"} and world.keys["reader"].id in [k["id"] for k in mine["keys"]]
        assert {k["id"] for k in mine["keys"]} == {k.id for k in world.identity.keys("reader")}
        assert "secret" not in str(mine).lower()
    with world.http("writer") as h:
        assert h.get(f"/key/{other}").json()["disabled"] is False


# ---- the S3 gateway: every operation -----------------------------------------------------


def s3(s: Servers, who: str, tamper: bool = False) -> Any:
    if who == "anonymous":
        return boto3.client(
            "s3", endpoint_url=s.s3_url, region_name="us-east-1", config=BotoConfig(signature_version=botocore.UNSIGNED)
        )
    key_id, secret = s.auth(who) or ("", "")
    c = boto3.client(
        "s3",
        endpoint_url=s.s3_url,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=BotoConfig(retries={"max_attempts": 1}, s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    if tamper:

        def flip(request: Any, **_: Any) -> None:
            auth = request.headers["Authorization"]
            auth = auth.decode() if isinstance(auth, bytes) else auth
            request.headers["Authorization"] = auth[:-1] + ("0" if auth[-1] != "0" else "1")

        c.meta.events.register("before-send.s3.*", flip)
    return c


class S3Targets:
    """Uploads and buckets made fresh (by the server admin) for the operations that use them up."""

    def __init__(self, s: Servers) -> None:
        self.s = s
        self.admin = s3(s, "root")

    def upload(self, with_part: bool = False) -> tuple[str, str, str]:
        key = f"master/s3/{self.s.fresh('mp')}.bin"
        uid = self.admin.create_multipart_upload(Bucket=REPO, Key=key)["UploadId"]
        etag = ""
        if with_part:
            etag = self.admin.upload_part(Bucket=REPO, Key=key, UploadId=uid, PartNumber=1, Body=b"p")["ETag"]
        return key, uid, etag


def s3_operation(op: str, t: S3Targets) -> Callable[[Any], Any]:
    """The call of operation `op`, its targets made first (so that a refused call can be
    shown to change nothing)."""
    b, k = REPO, "master/m/x.txt"
    simple: dict[str, Callable[[Any], Any]] = {
        "ListBuckets": lambda c: c.list_buckets(),
        "HeadBucket": lambda c: c.head_bucket(Bucket=b),
        "GetBucketLocation": lambda c: c.get_bucket_location(Bucket=b),
        "GetBucketVersioning": lambda c: c.get_bucket_versioning(Bucket=b),
        "GetBucketAcl": lambda c: c.get_bucket_acl(Bucket=b),
        "ListObjects": lambda c: c.list_objects_v2(Bucket=b, Prefix="master/"),
        "ListObjectVersions": lambda c: c.list_object_versions(Bucket=b, Prefix="master/m/"),
        "ListMultipartUploads": lambda c: c.list_multipart_uploads(Bucket=b),
        "GetObject": lambda c: c.get_object(Bucket=b, Key=k)["Body"].read(),
        "HeadObject": lambda c: c.head_object(Bucket=b, Key=k),
        "GetObjectAcl": lambda c: c.get_object_acl(Bucket=b, Key=k),
        "PutObject": lambda c: c.put_object(Bucket=b, Key="master/s3/put.txt", Body=b"put"),
        "CopyObject": lambda c: c.copy_object(Bucket=b, Key="master/s3/copy.txt", CopySource={"Bucket": b, "Key": k}),
        "DeleteObject": lambda c: c.delete_object(Bucket=b, Key="master/s3/put.txt"),
        "DeleteObjects": lambda c: c.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "master/s3/copy.txt"}]}),
        "CreateMultipartUpload": lambda c: c.create_multipart_upload(Bucket=b, Key="master/s3/new.bin"),
    }
    if op in simple:
        return simple[op]
    if op == "CreateBucket":
        name = t.s.fresh("bkt")
        return lambda c: c.create_bucket(Bucket=name)
    if op == "DeleteBucket":
        gone = fresh_repo(t.s, "DELETE")
        return lambda c: c.delete_bucket(Bucket=gone)
    key, uid, etag = t.upload(with_part=op == "CompleteMultipartUpload")
    if op == "UploadPart":
        return lambda c: c.upload_part(Bucket=b, Key=key, UploadId=uid, PartNumber=1, Body=b"x")
    if op == "CompleteMultipartUpload":
        parts = {"Parts": [{"ETag": etag, "PartNumber": 1}]}
        return lambda c: c.complete_multipart_upload(Bucket=b, Key=key, UploadId=uid, MultipartUpload=parts)
    if op == "AbortMultipartUpload":
        return lambda c: c.abort_multipart_upload(Bucket=b, Key=key, UploadId=uid)
    if op == "ListParts":
        return lambda c: c.list_parts(Bucket=b, Key=key, UploadId=uid)
    raise AssertionError(f"no call for {op}")


S3_PRINCIPALS = (*PRINCIPALS, "tampered")
S3_REFUSAL = {
    "anonymous": "AccessDenied",
    "disabled": "InvalidAccessKeyId",
    "wrong-secret": "SignatureDoesNotMatch",
    "tampered": "SignatureDoesNotMatch",
}


@pytest.mark.parametrize("who", S3_PRINCIPALS)
def test_every_s3_operation_answers_as_the_table_says(world: Servers, who: str) -> None:
    c = s3(world, "writer" if who == "tampered" else who, tamper=who == "tampered")
    targets = S3Targets(world)
    wrong: list[str] = []
    for op, need in S3_OPERATIONS.items():
        refused = S3_REFUSAL.get(who) or (None if need <= MAY[who] else "AccessDenied")
        call = s3_operation(op, targets)
        before = fingerprint(world) if refused else None
        try:
            call(c)
            code = None
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
            if op.startswith("Head") and refused:  # HEAD answers carry no body: the status tells
                code = refused if status == 403 else code
        if refused is not None:
            if code != refused or fingerprint(world) != before:
                wrong.append(f"{op} as {who}: expected {refused}, got {code}")
        elif code is not None and code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            wrong.append(f"{op} as {who}: expected it allowed, got {code}")
    assert not wrong, "\n".join(wrong)


def test_copy_needs_read_on_the_source_bucket(world: Servers) -> None:
    with world.root() as h:
        h.post("/repo/secret-stuff").raise_for_status()
        h.post("/repo/secret-stuff/file/s.txt", content=b"s").raise_for_status()
    c = s3(world, "writer")
    with pytest.raises(ClientError) as e:
        source = {"Bucket": "secret-stuff", "Key": "master/s.txt"}
        c.copy_object(Bucket=REPO, Key="master/s3/stolen.txt", CopySource=source)
    assert e.value.response["Error"]["Code"] == "AccessDenied"
    with world.root() as h:
        assert h.get(f"/repo/{REPO}/file/s3/stolen.txt").status_code == 404


def test_presigned_urls_work_until_they_expire(world: Servers) -> None:
    c = s3(world, "reader")
    url = c.generate_presigned_url("get_object", Params={"Bucket": REPO, "Key": "master/m/x.txt"}, ExpiresIn=2)
    assert httpx.get(url).content == b"x"
    put = c.generate_presigned_url("put_object", Params={"Bucket": REPO, "Key": "master/s3/p.txt"}, ExpiresIn=60)
    r = httpx.put(put, content=b"no")
    assert r.status_code == 403 and b"AccessDenied" in r.content  # a reader's URL cannot write
    time.sleep(3.1)
    r = httpx.get(url)
    assert r.status_code == 403 and b"Request has expired" in r.content
    forged = url.replace("X-Amz-Expires=2", "X-Amz-Expires=3600")
    r = httpx.get(forged)
    assert r.status_code == 403 and b"SignatureDoesNotMatch" in r.content


# ---- SigV4 on the native API ----------------------------------------------------------


def sign(s: Servers, who: str, method: str, path: str, body: bytes = b"", payload: str | None = None) -> dict[str, str]:
    """Headers of a request to the native API signed by botocore's SigV4 (as an SDK would)."""
    key = s.keys[who]
    req = botocore.awsrequest.AWSRequest(method=method, url=s.url + path, data=body)
    if payload is not None:
        req.headers["x-amz-content-sha256"] = payload
    botocore.auth.S3SigV4Auth(botocore.credentials.Credentials(key.id, key.secret), "s3", "us-east-1").add_auth(req)
    return dict(req.headers.items())


def test_sigv4_headers_and_presigned_urls_on_the_native_api(world: Servers) -> None:
    path = f"/repo/{REPO}/file/m/x.txt"
    assert httpx.get(world.url + path, headers=sign(world, "reader", "GET", path)).content == b"x"
    tampered = sign(world, "reader", "GET", path)
    tampered["Authorization"] = tampered["Authorization"][:-1] + ("0" if tampered["Authorization"][-1] != "0" else "1")
    r = httpx.get(world.url + path, headers=tampered)
    assert r.status_code == 401 and "SignatureDoesNotMatch" in r.text
    put = f"/repo/{REPO}/file/sig/ok.txt"
    r = httpx.post(world.url + put, content=b"signed body", headers=sign(world, "writer", "POST", put, b"signed body"))
    assert r.status_code == 201, r.text
    before = fingerprint(world)
    lying = sign(world, "writer", "POST", put, b"signed body")  # the signature covers the body's SHA-256
    r = httpx.post(world.url + put, content=b"another body", headers=lying)
    assert r.status_code == 400 and "x-amz-content-sha256" in r.text
    assert fingerprint(world) == before
    presigned = botocore.auth.S3SigV4QueryAuth(
        botocore.credentials.Credentials(world.keys["reader"].id, world.keys["reader"].secret), "s3", "us-east-1", 60
    )
    req = botocore.awsrequest.AWSRequest(method="GET", url=world.url + path)
    presigned.add_auth(req)
    assert httpx.get(req.url).content == b"x"
    assert httpx.get(req.url.replace("X-Amz-Signature=", "X-Amz-Signature=0")).status_code == 401


def test_a_signed_request_cannot_be_replayed_outside_the_clock_window(
    world: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SigV4 signs the request time; 15 minutes either way is the window (as S3's)."""
    import datetime as dt

    path = f"/repo/{REPO}/file/m/x.txt"
    captured = sign(world, "reader", "GET", path)
    assert httpx.get(world.url + path, headers=captured).status_code == 200  # and again: inside the window
    assert httpx.get(world.url + path, headers=captured).status_code == 200
    then = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=16)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: then)
    old = sign(world, "reader", "GET", path)
    r = httpx.get(world.url + path, headers=old)
    assert r.status_code == 401 and "RequestTimeTooSkewed" in r.text
    c = s3(world, "reader")
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=REPO, Key="master/m/x.txt")
    assert e.value.response["Error"]["Code"] == "RequestTimeTooSkewed"


# ---- keys ---------------------------------------------------------------------------------


def test_key_lifecycle_disable_rotate_delete(world: Servers) -> None:
    with world.root() as h:
        made = h.post("/user/carol").json()
        h.put(f"/repo/{REPO}/access/carol", params={"role": "read"}).raise_for_status()
    kid, secret = made["id"], made["secret"]
    path = f"/repo/{REPO}/file/m/x.txt"

    def status(auth: tuple[str, str]) -> int:
        return httpx.get(world.url + path, auth=auth).status_code

    assert status((kid, secret)) == 200
    with httpx.Client(base_url=world.url, auth=(kid, secret), headers={"accept": "application/json"}) as carol:
        listed = carol.get("/user/carol/key").json()
        assert [k["id"] for k in listed] == [kid] and secret not in str(listed)
        assert carol.post(f"/key/{kid}/disable").status_code == 200
    assert status((kid, secret)) == 401
    with world.root() as h:
        assert h.post(f"/key/{kid}/enable").status_code == 200
        assert status((kid, secret)) == 200
        new = h.post(f"/key/{kid}/rotate").json()
        assert new["id"] != kid and new["user"] == "carol"
        assert status((kid, secret)) == 401 and status((new["id"], new["secret"])) == 200
        assert h.delete(f"/key/{new['id']}").status_code == 200
        assert status((new["id"], new["secret"])) == 401
        assert h.delete("/user/carol").status_code == 200
        assert h.get("/key/" + kid).status_code == 404  # the user's keys went with it


def test_the_last_server_admin_stays(world: Servers) -> None:
    with world.root() as h:
        r = h.delete("/user/root")
        assert r.status_code == 409 and "last server admin" in r.text
        assert h.put("/user/root", params={"admin": "0"}).status_code == 409
        me = h.get("/whoami").json()
        assert me == {"user": "root", "admin": True, "key": world.keys["root"].id, "access_control": True}


def test_secrets_are_encrypted_at_rest_and_need_the_same_server_key(tmp_path: Path) -> None:
    cfg = Config(str(tmp_path / "data"))
    repos = cfg.open_repos()
    key = cfg.load_server_key()
    access = Access.open(repos.db, key)
    made = access.identity.init_admin("root")
    raw = (tmp_path / "data" / "meta.sqlite").read_bytes() + b"".join(
        p.read_bytes() for p in (tmp_path / "data").glob("meta.sqlite-*")
    )
    assert made.secret.encode() not in raw and made.id.encode() in raw
    assert oct((tmp_path / "data" / "server.key").stat().st_mode & 0o777) == "0o600"
    assert access.identity.check_password(made.id, made.secret).user == "root"
    with pytest.raises(PfsError, match="not the one"):
        Access.open(repos.db, ServerKey(os.urandom(32), "another key"))
    access.close()
    repos.close()


# ---- protected branches -------------------------------------------------------------------


def test_protected_branches_change_only_by_merge(fresh_world: Servers) -> None:
    s = fresh_world
    base = f"/repo/{REPO}"
    with s.http("owner") as owner:
        assert owner.put(f"{base}/protected/master").status_code == 201
        assert owner.put(f"{base}/protected/release-*").status_code == 201
        assert owner.get(f"{base}/protected").json() == ["master", "release-*"]
        owner.post(f"{base}/branch", params={"commit": "master", "branch": "release-1"}).raise_for_status()
    head = s.repos.get(REPO).branch_head("master")
    before = fingerprint(s)
    with s.http("writer") as w:
        refusals = [
            w.post(f"{base}/file/m/z.txt", content=b"z"),
            w.delete(f"{base}/file/m/x.txt"),
            w.post(f"{base}/tar", content=b""),
            w.post(f"{base}/commit"),
            w.post(f"{base}/revert", params={"branch": "master", "commit": head}),
            w.delete(f"{base}/branch/release-1"),
            w.post(f"{base}/file/a.txt", params={"branch": "release-1"}, content=b"a"),
        ]
        for r in refusals:
            assert r.status_code == 403 and r.json()["error"] == "branch_protected", r.text
        with pytest.raises(ClientError) as e:
            s3(s, "writer").put_object(Bucket=REPO, Key="master/s3.txt", Body=b"s")
        assert e.value.response["Error"]["Code"] == "AccessDenied"
        assert fingerprint(s) == before
        # nor by a push (a fast-forward from a copy of the repository)
        from pfs import Client, sync

        owner_key = s.keys["owner"]
        with s.root() as h:
            h.post("/repo/copy").raise_for_status()
        s.identity.grant("writer", s.repos.get("copy").id, "write")
        src = Client(s.url, repo=REPO, key_id=owner_key.id, secret=owner_key.secret)
        kid, secret = s.auth("writer") or ("", "")
        copy = Client(s.url, repo="copy", key_id=kid, secret=secret)
        sync.pull(src, copy, [("master", "master")])
        copy.put_file("pushed.txt", b"p")
        copy.commit()
        dest = Client(s.url, repo=REPO, key_id=kid, secret=secret)
        with pytest.raises(BranchProtected, match="not by a push"):
            sync.push(copy, dest, [("master", "master")])
        assert s.repos.get(REPO).branch_head("master") == head
        # a merge from another branch is the way in
        merged = w.post(f"{base}/merge", params={"from": "feature", "into": "master"})
        assert merged.is_success, merged.text
        assert w.get(f"{base}/file/m/y.txt", params={"branch": "master"}).content == b"y"
        # other branches are not protected
        assert w.post(f"{base}/file/m/z.txt", params={"branch": "feature"}, content=b"z").status_code == 201
        assert w.put(f"{base}/protected/feature").status_code == 403  # rules are the repository admin's
    with s.http("owner") as owner:
        assert owner.delete(f"{base}/protected/master").status_code == 200
        assert owner.delete(f"{base}/protected/master").status_code == 404
    with s.http("writer") as w:
        assert w.post(f"{base}/file/m/z.txt", content=b"z").status_code == 201


# ---- the audit log ---------------------------------------------------------------------


def test_every_mutation_is_audited_without_secrets(fresh_world: Servers) -> None:
    s = fresh_world
    base = f"/repo/{REPO}"
    with s.http("writer") as w:
        w.post(f"{base}/file/audit/a.txt", content=b"a").raise_for_status()
        w.get(f"{base}/file/audit/a.txt").raise_for_status()  # a read: not audited
        assert w.post(f"{base}/job/wc", content=JOB_SPEC).status_code == 403
    with s.http("wrong-secret") as bad:
        assert bad.post(f"{base}/file/audit/b.txt", content=b"b").status_code == 401
    s3(s, "writer").put_object(Bucket=REPO, Key="master/audit/c.txt", Body=b"c")
    with s.http("reader") as r:
        assert r.get("/audit").status_code == 403
    with s.root() as h:
        entries = h.get("/audit", params={"limit": "4"}).json()
        assert [(e["user"], e["method"], e["status"], e["listener"]) for e in entries] == [
            ("writer", "PUT", 200, "s3"),
            (None, "POST", 401, "api"),
            ("writer", "POST", 403, "api"),
            ("writer", "POST", 201, "api"),
        ]
        first = entries[-1]
        assert first["action"] == "/file/{path}" and first["repo"] == REPO
        assert first["target"] == f"{base}/file/audit/a.txt" and first["addr"] == "127.0.0.1"
        assert entries[0]["action"] == "PutObject" and entries[0]["target"] == f"/{REPO}/master/audit/c.txt"
        assert entries[1]["key"] is None  # a claimed key id is recorded only if it is a key: here it is
        mine = h.get("/audit", params={"user": "writer"}).json()
        assert {e["user"] for e in mine} == {"writer"} and len(mine) == 3
        page = h.get("/audit", params={"limit": "2", "before": str(entries[1]["id"])}).json()
        assert [e["id"] for e in page] == [entries[2]["id"], entries[3]["id"]]
        everything = h.get("/audit", params={"limit": "1000"}).text
    for key in s.keys.values():
        assert key.secret not in everything


# ---- throttling failed sign-ins ----------------------------------------------------------


def test_repeated_failures_from_one_address_are_slowed_then_refused(tmp_path: Path) -> None:
    with running_world(tmp_path / "data", Throttle(free=3, block=8, window=60)) as s:
        bad = (s.keys["reader"].id, "not-the-secret-" * 3)
        times = []
        for _ in range(8):
            t0 = time.monotonic()
            assert httpx.get(s.url + "/whoami", auth=bad).status_code == 401
            times.append(time.monotonic() - t0)
        assert max(times[:3]) < 0.5 <= sum(times[5:8])  # free, then held back more and more
        r = httpx.get(s.url + "/whoami", auth=(s.keys["reader"].id, s.keys["reader"].secret))
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0  # the address is refused, good key or not
        assert httpx.get(s.url + "/ping").status_code == 200
        with pytest.raises(ClientError) as e:
            s3(s, "reader").list_buckets()
        assert e.value.response["Error"]["Code"] == "SlowDown"


# ---- defaults and the documentation --------------------------------------------------------


def test_without_users_everything_is_open_and_credentials_are_ignored(tmp_path: Path) -> None:
    a = AppServer(tmp_path / "data").start()
    try:
        with a.http() as h:
            assert h.post("/file/a.txt", content=b"a").status_code == 201
            assert h.get("/file/a.txt", auth=("PFSNOSUCHKEY0000000", "x" * 40)).content == b"a"
            assert h.get("/whoami", headers={"accept": "application/json"}).json()["access_control"] is False
    finally:
        a.stop()


def test_refuses_a_non_loopback_address_without_users(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PFS_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run(
        [sys.executable, "-m", "pfs.cli", "serve", "--addr", f"0.0.0.0:{port}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    for words in ("refusing to serve on 0.0.0.0", "--insecure", "pfs admin init"):
        assert words in done.stderr


def test_admin_key_file_bootstraps_and_secrets_never_reach_the_log(tmp_path: Path) -> None:
    key_file = tmp_path / "admin.key"
    kid, secret = "PFSTESTADMIN00000001", "s3cr3t-" + "A" * 33
    key_file.write_text(f"{kid}:{secret}\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        s3_port = probe.getsockname()[1]
    proc = ServerProc(
        tmp_path / "data",
        env={"PFS_ADMIN_KEY_FILE": str(key_file)},
        args=["--log-level", "info", "--s3-addr", f"127.0.0.1:{s3_port}"],
    )
    proc.start()
    try:
        url = proc.url
        gw = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{s3_port}",
            region_name="us-east-1",
            aws_access_key_id=kid,
            aws_secret_access_key=secret,
            config=BotoConfig(retries={"max_attempts": 1}, s3={"addressing_style": "path"}, signature_version="s3v4"),
        )
        gw.put_object(Bucket="default", Key="master/s3.txt", Body=b"s")
        presigned = gw.generate_presigned_url("get_object", Params={"Bucket": "default", "Key": "master/s3.txt"})
        assert httpx.get(presigned).content == b"s"
        wrong = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{s3_port}",
            region_name="us-east-1",
            aws_access_key_id=kid,
            aws_secret_access_key=secret[::-1],
            config=BotoConfig(retries={"max_attempts": 1}),
        )
        with pytest.raises(ClientError) as e:
            wrong.put_object(Bucket="default", Key="master/no.txt", Body=b"n")
        assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
        assert secret not in str(e.value.response) and secret[::-1] not in str(e.value.response)
        assert httpx.get(url + "/file/x").status_code == 401
        made = httpx.post(url + "/user/dave", auth=(kid, secret), headers={"accept": "application/json"}).json()
        httpx.put(url + "/access/dave", params={"role": "write"}, auth=(kid, secret)).raise_for_status()
        assert httpx.post(url + "/file/d.txt", content=b"d", auth=(made["id"], made["secret"])).status_code == 201
        assert httpx.get(url + "/file/d.txt", auth=(made["id"], "wrong" * 8)).status_code == 401
        basic = base64.b64encode(f"{kid}:{secret}".encode()).decode()
        assert httpx.get(url + "/whoami", headers={"authorization": f"Basic {basic}"}).status_code == 200
        audit = httpx.get(url + "/audit", params={"limit": "1000"}, auth=(kid, secret)).text
    finally:
        proc.stop()
    log = proc.log_path.read_text()
    assert "GET '/file/x'" in log and "PUT '/default/master/s3.txt'" in log  # INFO: requests are in it
    signature = presigned.split("X-Amz-Signature=")[1]
    for text in (secret, secret[::-1], made["secret"], basic, signature):
        assert text not in log and text not in audit
    # the restart keeps the first admin (the file is only for a server with no users)
    proc2 = ServerProc(tmp_path / "data", env={"PFS_ADMIN_KEY_FILE": str(key_file)}).start()
    try:
        users = httpx.get(proc2.url + "/user", auth=(kid, secret), headers={"accept": "application/json"}).json()
        assert [u["name"] for u in users] == ["admin", "dave"]
    finally:
        proc2.stop()


def test_cluster_nodes_share_keys_through_one_server_key(tmp_path: Path, postgres: Any, seaweed: Any) -> None:
    """PostgreSQL metadata: every node is given the same server key; a key made or disabled
    through one node holds on the other (within the 2 s cache); a node with another key
    refuses to start; one with none answers 503 saying what to set."""
    storage = Storage(tmp_path / "a", postgres, seaweed)
    key_file = tmp_path / "admin.key"
    kid, secret = "PFSCLUSTERADMIN00001", "cluster-secret-" + "c" * 25
    key_file.write_text(f"{kid}:{secret}")
    env = {"PFS_SERVER_KEY": base64.b64encode(os.urandom(32)).decode(), "PFS_ADMIN_KEY_FILE": str(key_file)}
    a = ServerProc(tmp_path / "a", env=env, storage=storage).start()
    b = ServerProc(tmp_path / "b", env=env, storage=storage).start()
    try:
        made = httpx.post(a.url + "/user/erin", auth=(kid, secret), headers={"accept": "application/json"}).json()
        httpx.put(b.url + "/access/erin", params={"role": "write"}, auth=(kid, secret)).raise_for_status()
        erin = (made["id"], made["secret"])
        assert httpx.post(b.url + "/file/e.txt", content=b"e", auth=erin).status_code == 201
        assert httpx.get(a.url + "/file/e.txt", auth=erin).content == b"e"
        httpx.post(a.url + f"/key/{made['id']}/disable", auth=(kid, secret)).raise_for_status()
        deadline = time.monotonic() + 5
        while httpx.get(b.url + "/file/e.txt", auth=erin).status_code != 401:
            assert time.monotonic() < deadline, "node b still takes a key disabled through node a"
            time.sleep(0.2)
        other = ServerProc(tmp_path / "c", env={**env, "PFS_SERVER_KEY": base64.b64encode(os.urandom(32)).decode()})
        other.storage = storage
        try:
            with pytest.raises(RuntimeError, match="not the one"):
                other.start()
        finally:
            other.stop()
        keyless = ServerProc(tmp_path / "d", env={"PFS_ADMIN_KEY_FILE": str(key_file)}, storage=storage)
        try:
            keyless.start()
            r = httpx.get(keyless.url + "/file/e.txt", auth=(kid, secret))
            assert r.status_code == 503 and "PFS_SERVER_KEY_FILE" in r.text
        finally:
            keyless.stop()
    finally:
        a.stop()
        b.stop()


def test_docs_show_the_permission_table_in_code() -> None:
    doc = (ROOT / "docs" / "access.md").read_text()
    assert markdown() in doc, "docs/access.md is out of date: paste pfs.http.permissions.markdown() into it"


def test_every_route_has_one_permission() -> None:
    """The route table takes its permissions from permissions.py: a route without one fails
    at start, and the table names no route that is not there."""
    repos = Config(str(Path(os.environ.get("TMPDIR", "/tmp")) / f"pfs-perm-{os.getpid()}")).open_repos()
    try:
        app = create_app(repos)
        seen: set[tuple[str, str]] = set()

        def walk(routes: Any, prefix: str) -> None:
            for r in routes:
                if hasattr(r, "routes") and r.routes:
                    walk(r.routes, prefix + getattr(r, "path", ""))
                elif hasattr(r, "endpoint") and hasattr(r.endpoint, "needs"):
                    for method in r.endpoint.needs:
                        if method != "HEAD":
                            seen.add((r.path, method))

        walk(app.app.routes, "")
        table = {(route, m) for t in (SERVER_ROUTES, REPO_ROUTES) for route, ms in t.items() for m in ms}
        assert seen == table
    finally:
        repos.close()
