"""The S3 gateway (DESIGN.md section 5): bucket = repository, key = `<ref>/<path>`.

`create_s3_app` is the ASGI app `pfs serve --s3-addr` serves. It only parses requests and
renders answers; every rule about data is the repository's (writes are staged on the
branch like `POST /file`, and committed with pfs's own commit). A request goes:

1. addressing (`protocol.bucket_and_key`: path style, or virtual host under one of the
   base domains) and the query string (strict decoding);
2. authentication: `sigv4.authenticate` checks the structure and time of any SigV4
   credentials (15 minutes of clock skew; a presigned URL until it expires); the access
   key's secret comes from `pfs.access` (InvalidAccessKeyId for an unknown or disabled
   key) and the signature, and an aws-chunked body's chunk signatures, are verified. No
   credentials: anonymous, who may do nothing once the server has users;
3. dispatch: `operations` maps (level, method, subresources) to one operation and its
   handler; a method S3 does not have is 405 MethodNotAllowed, an S3 operation pfs does not
   serve (tagging, policy, ...) is 501 NotImplemented. The operation's permission
   (`permissions.S3_OPERATIONS`) is checked on the bucket's repository before the handler
   runs (AccessDenied), and an operation that may change something is audited;
4. errors: every failure is S3's XML error with S3's code (`PFS_TO_S3` maps pfs's errors
   in one table), the request id in `<RequestId>` and `x-amz-request-id`. A bug is a 500
   InternalError naming the request id, logged with its traceback, which is never sent.

Bodies are bounded: XML request bodies by `xml.MAX_*_BODY`, objects and parts are streamed
into the chunker (a `PayloadHasher` checks Content-MD5, x-amz-content-sha256 and
x-amz-checksum-* as the bytes go by, and the upload becomes visible only after), and
downloads are streamed from verified chunks.

Choices where S3 and pfs differ:
- ETag: a file's BLAKE3 content hash; a completed multipart upload keeps S3's
  `<md5 of part md5s>-<n>` form (stored as its `s3-etag` metadata). A part's ETag is its MD5.
- Last-Modified: the time of the commit a key is read at; a dirty (uncommitted) file is
  modified "now" (see `keyspace.RefView`).
- Versions are commits: the version id is a commit id; history cannot be rewritten, so
  deleting a version is NotImplemented; `versionId` reads any commit of the repository.
- A write to a key whose ref is a commit is AccessDenied; to a branch that does not exist,
  NoSuchKey (pfs branches are made with pfs, not by writing).
- Deleting a key that is not there is a 204, as in S3 (a directory is not a key).
- A full disk is 507 InsufficientStorage (S3 has no such code; MinIO uses 507 too):
  not retried by SDKs, as retrying would not help.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...access.identity import ANONYMOUS, OPEN, Permission, Principal
from ...errors import BadRequest, Conflict, FileNotFound, NotFound, PathConflict, PfsError, Unauthorized, Unavailable
from ...paths import MAX_META, check_meta, is_commit_like
from ...repository.keys import key_versions
from ...repository.registry import RepoInfo
from ...repository.repo import Repository
from ...repository.uploads import Part, Upload, Uploads
from ...storage.trees import Entry
from ..api import UPLOAD_BUFFER, Node
from ..auth import Gate, ask, audit_target, client_addr
from ..logs import REQUEST_ID, ROUTE_SCOPE, RequestIds
from ..permissions import S3_OPERATIONS, is_mutation
from ..web import DRAIN_LIMIT, pump_file, run
from . import sigv4
from . import xml as s3xml
from .keyspace import S3_ETAG, BucketKeys, RefView, etag_of, open_commit, open_ref
from .protocol import (
    MAX_PART_SIZE,
    MAX_PUT_SIZE,
    PayloadHasher,
    S3Error,
    SortedItems,
    bucket_and_key,
    check_conditions,
    check_key,
    check_part_sizes,
    decode_token,
    http_date,
    list_page,
    multipart_etag,
    parse_max_keys,
    parse_part_number,
    parse_query,
    parse_range,
    percent_decode,
    quote_etag,
    unquote_etag,
    valid_bucket_name,
)

log = logging.getLogger("pfs.s3")

REGION = "us-east-1"
OWNER = s3xml.Owner("pfs", "pfs")
DEFAULT_CONTENT_TYPE = "binary/octet-stream"  # what S3 answers for an object stored without one
# Headers stored with an object and sent back with it (x-amz-meta-* too).
STORED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-type",
    "expires",
)
# GetObject's response-* overrides (presigned downloads use them).
RESPONSE_OVERRIDES = {
    "response-cache-control": "cache-control",
    "response-content-disposition": "content-disposition",
    "response-content-encoding": "content-encoding",
    "response-content-language": "content-language",
    "response-content-type": "content-type",
    "response-expires": "expires",
}
# Query parameters that select an S3 operation ("subresources"); any other parameter is an
# argument of the operation (prefix, max-keys, versionId, x-id, ...).
SUBRESOURCES = frozenset(
    {
        "accelerate",
        "acl",
        "analytics",
        "attributes",
        "cors",
        "delete",
        "encryption",
        "intelligent-tiering",
        "inventory",
        "legal-hold",
        "lifecycle",
        "location",
        "logging",
        "metrics",
        "notification",
        "object-lock",
        "ownershipControls",
        "partNumber",
        "policy",
        "policyStatus",
        "publicAccessBlock",
        "replication",
        "requestPayment",
        "restore",
        "retention",
        "select",
        "tagging",
        "torrent",
        "uploadId",
        "uploads",
        "versioning",
        "versions",
        "website",
    }
)
S3_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})
# Headers that ask for what pfs does not do: refused rather than silently ignored.
UNSUPPORTED_HEADERS = (
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-object-lock-mode",
    "x-amz-object-lock-retain-until-date",
    "x-amz-object-lock-legal-hold",
    "x-amz-website-redirect-location",
    "x-amz-tagging",
)
CANNED_ACLS = frozenset(
    {
        "private",
        "public-read",
        "public-read-write",
        "authenticated-read",
        "aws-exec-read",
        "bucket-owner-read",
        "bucket-owner-full-control",
        "log-delivery-write",
    }
)

# pfs error code -> S3 error code: the one table. Codes not listed map by status (`_s3_error`).
PFS_TO_S3: dict[str, str] = {
    "repository_not_found": "NoSuchBucket",
    "file_not_found": "NoSuchKey",
    "commit_not_found": "NoSuchKey",  # a key's ref; a versionId's commit is NoSuchVersion (keyspace)
    "branch_not_found": "NoSuchKey",
    "upload_not_found": "NoSuchUpload",
    "already_exists": "BucketAlreadyOwnedByYou",  # the only thing S3 creates is a bucket
    "repository_not_empty": "BucketNotEmpty",
    "invalid_name": "InvalidBucketName",  # keys' names are checked before (protocol.check_key)
    "invalid_path": "InvalidArgument",
    "bad_request": "InvalidArgument",
    "path_conflict": "InvalidArgument",  # a file where a directory is needed, or the other way round
    "payload_too_large": "EntityTooLarge",
    "unavailable": "ServiceUnavailable",
    "insufficient_storage": "InsufficientStorage",
    "method_not_allowed": "MethodNotAllowed",
    "branch_moved": "OperationAborted",
    "conflict": "OperationAborted",
    "unauthorized": "AccessDenied",
    "forbidden": "AccessDenied",
    "branch_protected": "AccessDenied",
    "too_many_requests": "SlowDown",
    "data_expired": "InvalidObjectState",  # S3's answer for data it no longer serves (archived)
    "corrupt_object": "InternalError",
    "missing_object": "InternalError",
}
_BY_STATUS = {400: "InvalidArgument", 404: "NoSuchKey", 405: "MethodNotAllowed", 409: "OperationAborted"}


def _s3_error(exc: PfsError) -> S3Error:
    code = PFS_TO_S3.get(exc.code) or _BY_STATUS.get(exc.status, "InternalError")
    if code == "InternalError":
        raise exc  # storage damage or a bug: logged as one, never shown
    error = S3Error(code, exc.message)
    if isinstance(exc, Unavailable):
        error.headers["Retry-After"] = str(exc.retry_after)
    return error


Handler = Callable[["Ctx"], Awaitable[Response]]


@dataclass
class Ctx:
    """One S3 request, parsed."""

    request: Request
    bucket: str | None
    key: str | None
    query: dict[str, str]  # the first value of each parameter
    auth: sigv4.SigV4Auth | None
    secret: str | None  # the access key's secret, when signed: chunk signatures are verified with it
    principal: Principal = ANONYMOUS
    operation: str = ""
    repo: Repository | None = None  # the bucket's, once looked up
    reading: bool = False  # the body is being read: an error drains it

    @property
    def headers(self) -> Mapping[str, str]:
        return self.request.headers

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def resource(self) -> str:
        return "/" + "/".join(p for p in (self.bucket, self.key) if p)

    def ref_path(self) -> tuple[str, str]:
        assert self.key is not None
        return check_key(self.key)

    def branch_path(self) -> tuple[str, str]:
        """The key of a write: its ref must be a branch."""
        ref, path = self.ref_path()
        if is_commit_like(ref):
            raise S3Error("AccessDenied", f"{ref[:64]} is a commit: its keys are read-only (write to a branch)")
        return ref, path


class Gateway:
    def __init__(self, node: Node, base_domains: Sequence[str], gate: Gate | None = None) -> None:
        self.node = node
        self.gate = gate or Gate()
        self.base_domains = tuple(base_domains)
        self.ops = operations(self)
        self._with_ids = RequestIds(self.handle, front="s3")

    # ---- ASGI ----------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Request ids come from `RequestIds` (which also logs each request): the app works
        wrapped in it or not, and is never given two ids for one request."""
        if scope["type"] == "http" and REQUEST_ID.get() == "-":
            await self._with_ids(scope, receive, send)
        else:
            await self.handle(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # the node is started and stopped by the native app
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        rid = REQUEST_ID.get()
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-amz-request-id", rid.encode("latin-1"))]
            await send(message)

        request = Request(scope, receive)
        ctx: Ctx | None = None
        status = 500
        try:
            try:
                ctx = await self.parse(request)
                response = await self.dispatch(ctx)
            except PfsError as exc:
                raise _s3_error(exc) from None
            status = response.status_code
            await response(scope, receive, send_with_id)
        except S3Error as error:
            status = error.status
            if started:
                raise
            response = error_response(error, request, rid)
            if not await finish_body(request, ctx is not None and ctx.reading):
                response.headers["connection"] = "close"
            await response(scope, receive, send_with_id)
        except ClientDisconnect:
            status = 499
            return
        except Exception:
            if started:
                raise
            log.exception("internal error on %s %r", request.method, scope.get("path", "")[:200])
            bug = S3Error("InternalError", f"We encountered an internal error (request {rid}). Please try again.")
            await error_response(bug, request, rid)(scope, receive, send_with_id)
        finally:
            self.audit(request, ctx, status)

    def audit(self, request: Request, ctx: Ctx | None, status: int) -> None:
        """An entry for every request that may change something, refused ones included."""
        if request.method in ("GET", "HEAD"):
            return
        if ctx is not None and ctx.operation and not is_mutation(request.method, S3_OPERATIONS[ctx.operation]):
            return
        try:
            access = self.node.access
        except PfsError:
            return  # still starting: nothing could have changed
        principal = ctx.principal if ctx is not None else ANONYMOUS
        access.audit.record(
            user=principal.user,
            key=principal.key,
            addr=client_addr(request.scope),
            listener="s3",
            method=request.method,
            action=(ctx.operation if ctx is not None else "") or "-",
            repo=ctx.bucket if ctx is not None else None,
            target=audit_target(request),
            status=status,
            request_id=REQUEST_ID.get(),
        )

    async def parse(self, request: Request) -> Ctx:
        scope = request.scope
        host = request.headers.get("host", "")
        bucket, key = bucket_and_key(host, scope.get("raw_path") or scope["path"].encode(), self.base_domains)
        pairs = parse_query(scope.get("query_string", b""))
        query: dict[str, str] = {}
        for name, value in pairs:
            query.setdefault(name, value)
        auth = sigv4.authenticate(request.headers, pairs)
        identity = self.node.access.identity
        secret: str | None = None
        enabled = await ask(identity, identity.enabled)
        if auth is None or not enabled:  # no users: any key is taken, as anonymous is
            principal = OPEN if not enabled else ANONYMOUS
        else:
            addr = client_addr(scope)
            self.gate.throttle.check(addr)
            try:
                principal, secret = await ask(identity, identity.key_secret, auth.access_key, key=auth.access_key)
                assert secret is not None
                sigv4.verify(
                    auth,
                    request.method,
                    scope.get("raw_path") or scope["path"],
                    pairs,
                    request.headers,
                    sigv4.payload_hash(auth, request.headers),
                    secret,
                )
            except (Unauthorized, S3Error) as exc:
                delay = self.gate.throttle.failed(addr)
                if delay:
                    await asyncio.sleep(delay)
                if isinstance(exc, Unauthorized):
                    raise S3Error("InvalidAccessKeyId", extra={"AWSAccessKeyId": auth.access_key[:128]}) from None
                raise
        if bucket is not None and not valid_bucket_name(bucket):
            raise S3Error("InvalidBucketName", resource="/" + bucket[:100])
        return Ctx(request, bucket, key, query, auth, secret, principal)

    async def dispatch(self, ctx: Ctx) -> Response:
        method = ctx.method
        level = "object" if ctx.key is not None else "bucket" if ctx.bucket is not None else "service"
        sub = "+".join(sorted(name for name in ctx.query if name in SUBRESOURCES))
        op = self.ops.get((level, method, sub))
        if op is None:
            if method not in S3_METHODS or not any(lv == level and m == method for lv, m, _ in self.ops):
                raise S3Error("MethodNotAllowed", resource=ctx.resource[:1100])
            what = f"?{sub}" if sub else method
            raise S3Error("NotImplemented", f"{what} on a {level} is not supported by pfs", resource=ctx.resource)
        name, handler = op
        if name == "PutObject" and "x-amz-copy-source" in ctx.headers:
            name = "CopyObject"
        ctx.operation = name
        ctx.request.scope[ROUTE_SCOPE] = name  # the metrics' route label
        await self.authorize(ctx, S3_OPERATIONS[name], ctx.bucket)
        return await handler(ctx)

    async def authorize(self, ctx: Ctx, need: Permission, bucket: str | None) -> None:
        """AccessDenied unless the caller may do `need` on `bucket`'s repository. Anonymous
        callers (with access control on) learn nothing, not even whether the bucket exists."""
        identity = self.node.access.identity
        if ctx.principal.open:
            return
        repo_id: int | None = None
        if need not in (Permission.USER, Permission.SERVER) and bucket is not None:
            if ctx.principal.user is None:
                raise S3Error("AccessDenied")
            repo = await run(self.node.repos.get, bucket)
            if bucket == ctx.bucket:
                ctx.repo = repo  # the handler's, looked up once
            repo_id = repo.id
        if not await ask(identity, identity.allowed, ctx.principal, need, repo_id, who=ctx.principal):
            raise S3Error("AccessDenied")

    async def repo(self, ctx: Ctx) -> Repository:
        assert ctx.bucket is not None
        if ctx.repo is None:
            ctx.repo = await run(self.node.repos.get, ctx.bucket)
        return ctx.repo

    # ---- service and buckets -------------------------------------------------------
    async def list_buckets(self, ctx: Ctx) -> Response:
        identity, p = self.node.access.identity, ctx.principal

        def readable() -> list[RepoInfo]:
            return [r for r in self.node.repos.list() if identity.allowed(p, Permission.READ, r.id)]

        infos = await run(readable)
        return xml_response(s3xml.list_buckets_xml([(r.name, r.created) for r in infos], OWNER))

    async def head_bucket(self, ctx: Ctx) -> Response:
        await self.repo(ctx)
        return Response(b"", headers={"x-amz-bucket-region": REGION})

    async def create_bucket(self, ctx: Ctx) -> Response:
        check_acl(ctx.headers)
        if ctx.headers.get("x-amz-bucket-object-lock-enabled", "").lower() == "true":
            raise S3Error("NotImplemented", "object lock is not supported by pfs")
        s3xml.parse_create_bucket(await read_xml_body(ctx, s3xml.MAX_CREATE_BUCKET_BODY))
        assert ctx.bucket is not None
        await run(self.node.repos.create, ctx.bucket)
        return Response(b"", headers={"location": "/" + ctx.bucket})

    async def delete_bucket(self, ctx: Ctx) -> Response:
        try:
            await run(self.node.repos.delete, ctx.bucket)
        except Conflict as e:
            if e.code == "repository_not_empty":
                raise
            raise S3Error("AccessDenied", e.message) from None  # the default repository
        return Response(b"", status_code=204)

    async def get_bucket_location(self, ctx: Ctx) -> Response:
        await self.repo(ctx)
        return xml_response(s3xml.location_xml(REGION))

    async def get_bucket_versioning(self, ctx: Ctx) -> Response:
        await self.repo(ctx)
        return xml_response(s3xml.versioning_xml("Enabled"))

    async def get_acl(self, ctx: Ctx) -> Response:
        """Everything is private to its owner (the only principal until identities exist)."""
        repo = await self.repo(ctx)
        if ctx.key is not None:
            ref, path = ctx.ref_path()
            await run(_read_entry, repo, ref, path, ctx.query.get("versionId"))
        return xml_response(s3xml.acl_xml(OWNER))

    # ---- listing -------------------------------------------------------------------
    async def list_objects(self, ctx: Ctx) -> Response:
        q = ctx.query
        v2 = q.get("list-type") == "2"
        if "list-type" in q and not v2:
            raise S3Error("InvalidArgument", "list-type must be 2 (or absent, for ListObjects)")
        prefix, delimiter, url = listing_params(q)
        max_keys = parse_max_keys(q.get("max-keys"))
        token = q.get("continuation-token") if v2 else None
        start_after = q.get("start-after") or None if v2 else q.get("marker") or None
        start = decode_token(token) if token is not None else start_after
        repo = await self.repo(ctx)
        page = await run(lambda: list_page(BucketKeys(repo, prefix, start), prefix, delimiter, max_keys, start))
        assert ctx.bucket is not None
        owner = OWNER if not v2 or q.get("fetch-owner") == "true" else None
        if v2:
            body = s3xml.list_objects_v2_xml(
                ctx.bucket,
                page,
                prefix=prefix,
                delimiter=delimiter,
                max_keys=max_keys,
                start_after=q.get("start-after") or None,
                continuation_token=token,
                url=url,
                owner=owner,
            )
        else:
            body = s3xml.list_objects_v1_xml(
                ctx.bucket,
                page,
                prefix=prefix,
                delimiter=delimiter,
                marker=q.get("marker", ""),
                max_keys=max_keys,
                url=url,
                owner=owner,
            )
        return xml_response(body)

    async def list_object_versions(self, ctx: Ctx) -> Response:
        q = ctx.query
        prefix, delimiter, url = listing_params(q)
        max_keys = parse_max_keys(q.get("max-keys"))
        key_marker = q.get("key-marker", "")
        version_marker = q.get("version-id-marker", "")
        if version_marker and not key_marker:
            raise S3Error("InvalidArgument", "A version-id marker cannot be specified without a key marker.")
        repo = await self.repo(ctx)
        result = await run(_versions_page, repo, prefix, delimiter, max_keys, key_marker, version_marker)
        assert ctx.bucket is not None
        return xml_response(
            s3xml.list_object_versions_xml(
                ctx.bucket,
                result.versions,
                result.common_prefixes,
                prefix=prefix,
                delimiter=delimiter,
                key_marker=key_marker,
                version_id_marker=version_marker,
                next_key_marker=result.next_key,
                next_version_id_marker=result.next_version,
                max_keys=max_keys,
                is_truncated=result.truncated,
                url=url,
                owner=OWNER,
            )
        )

    # ---- objects: reading ----------------------------------------------------------
    async def get_object(self, ctx: Ctx) -> Response:
        repo = await self.repo(ctx)
        ref, path = ctx.ref_path()
        version_id = ctx.query.get("versionId")
        view, entry = await run(_read_entry, repo, ref, path, version_id)
        etag = etag_of(entry)
        mtime = await run(view.mtime, path, entry)
        check_conditions(ctx.headers, etag, mtime)
        headers = object_headers(entry, etag, mtime)
        if version_id is not None and view.commit is not None:
            headers["x-amz-version-id"] = view.commit.id
        for param, header in RESPONSE_OVERRIDES.items():
            if param in ctx.query:
                headers[header] = _header_value(ctx.query[param])
        span = parse_range(ctx.headers.get("range"), entry.size)
        status = 200
        if span is not None:
            first, last = span
            status = 206
            headers["content-range"] = f"bytes {first}-{last}/{entry.size}"
            headers["content-length"] = str(last - first + 1)
        await run(repo.check_data, entry)
        if ctx.method == "HEAD":
            return Response(b"", status_code=status, headers=headers)
        pieces = repo.read_range(entry, *span) if span is not None else repo.read_file(entry)
        return StreamingResponse(pump_file(pieces), status_code=status, headers=headers)

    # ---- objects: writing ----------------------------------------------------------
    async def put_object(self, ctx: Ctx) -> Response:
        if "x-amz-copy-source" in ctx.headers:
            return await self.copy_object(ctx)
        repo = await self.repo(ctx)
        branch, path = ctx.branch_path()
        check_acl(ctx.headers)
        check_unsupported(ctx.headers)
        meta = meta_from_headers(ctx.headers)
        await self._check_write_conditions(ctx, repo, branch, path)
        entry, _ = await self._receive(ctx, repo, branch, path, MAX_PUT_SIZE)
        entry = dataclasses.replace(entry, meta=meta)
        await self._check_write_conditions(ctx, repo, branch, path)
        await run(repo.stage_file, branch, path, entry)
        return Response(b"", headers={"etag": quote_etag(entry.hash)})

    async def _check_write_conditions(self, ctx: Ctx, repo: Repository, branch: str, path: str) -> None:
        if "if-match" not in ctx.headers and "if-none-match" not in ctx.headers:
            return
        view = await run(open_ref, repo, branch)
        entry = await run(view.lookup, path)
        check_conditions(ctx.headers, etag_of(entry) if entry else None, None, for_write=True)

    async def _receive(
        self, ctx: Ctx, repo: Repository, branch: str, path: str, limit: int, need_md5: bool = False
    ) -> tuple[Entry, PayloadHasher]:
        """The request body streamed into a new file (not staged): the file's entry and the
        hasher that checked it. Checked before a byte is read: the claims the headers make,
        the declared size, and that the branch exists and the path can take a file."""
        hasher = PayloadHasher(ctx.headers, need_md5)
        decoder = chunked_decoder(ctx)
        declared = _declared_length(ctx.headers, decoder is not None)
        for bound in (limit, repo.max_file_size):
            if bound is not None and declared is not None and declared > bound:
                raise S3Error("EntityTooLarge", extra={"ProposedSize": str(declared), "MaxSizeAllowed": str(bound)})
        await run(repo.check_writable, branch, path)
        writer = repo.writer()

        async def take(data: bytes) -> None:
            # Hashing for the client's claims and chunking for the store are both CPU work that
            # releases the GIL: side by side in two worker threads they use two cores.
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(run, hasher.update, data)
                    tg.start_soon(run, writer.write, data)
            except BaseExceptionGroup as group:  # the first failure, as a plain exception
                raise group.exceptions[0] from None

        buf = bytearray()
        received = 0
        ctx.reading = True
        try:
            async for piece in ctx.request.stream():
                data = decoder.feed(piece) if decoder is not None else piece
                received += len(data)
                if received > limit:
                    raise S3Error("EntityTooLarge", extra={"MaxSizeAllowed": str(limit)})
                buf += data
                if len(buf) >= UPLOAD_BUFFER:
                    chunk, buf = bytes(buf), bytearray()
                    await take(chunk)
            if decoder is not None:
                decoder.finish()
            if declared is not None and received != declared:
                raise S3Error("IncompleteBody")
            if buf:
                await take(bytes(buf))
            hasher.check()
            entry = await run(writer.finish)
        except (S3Error, PfsError):
            await run(writer.abort)
            raise
        except BaseException:
            writer.abort()
            raise
        ctx.reading = False
        return entry, hasher

    async def copy_object(self, ctx: Ctx) -> Response:
        dest_repo = await self.repo(ctx)
        branch, path = ctx.branch_path()
        check_acl(ctx.headers)
        check_unsupported(ctx.headers)
        src_bucket, src_key, src_version = parse_copy_source(ctx.headers["x-amz-copy-source"])
        src_ref, src_path = check_key(src_key)
        directive = ctx.headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "Unknown metadata directive.")
        same_bucket = src_bucket == ctx.bucket
        if not same_bucket:
            await self.authorize(ctx, Permission.READ, src_bucket)
        src_repo = dest_repo if same_bucket else await run(self.node.repos.get, src_bucket)
        view, entry = await run(_read_entry, src_repo, src_ref, src_path, src_version)
        etag = etag_of(entry)
        check_conditions(ctx.headers, etag, await run(view.mtime, src_path, entry), copy_source=True)
        if same_bucket and (src_ref, src_path) == (branch, path) and directive == "COPY" and src_version is None:
            raise S3Error(
                "InvalidRequest",
                "This copy request is illegal because it is trying to copy an object to itself without changing "
                "the object's metadata, storage class, website redirect location or encryption attributes.",
            )
        meta = entry.meta
        if directive == "REPLACE":
            kept = tuple((n, v) for n, v in entry.meta if n == S3_ETAG)  # describes the bytes, which stay
            meta = tuple(sorted(meta_from_headers(ctx.headers) + kept))
        await self._check_write_conditions(ctx, dest_repo, branch, path)
        if same_bucket:  # the same chunks: no byte is copied
            new = dataclasses.replace(await run(dest_repo.rely_on_entry, entry), meta=meta)
            await run(dest_repo.stage_file, branch, path, new)
            return xml_response(s3xml.copy_object_result_xml(etag_of(new), time.time()))

        def copy() -> bytes:  # repositories keep separate object stores: the bytes are streamed across
            new = dataclasses.replace(_copy_bytes(src_repo, dest_repo, entry), meta=meta)
            dest_repo.stage_file(branch, path, new)
            return s3xml.copy_object_result_xml(etag_of(new), time.time())

        return await answer_in_time(copy, ctx)

    async def delete_object(self, ctx: Ctx) -> Response:
        repo = await self.repo(ctx)
        branch, path = ctx.branch_path()
        if "versionId" in ctx.query:
            raise S3Error("NotImplemented", "versions are commits: pfs history cannot be rewritten")
        await run(_delete_key, repo, branch, path)
        return Response(b"", status_code=204)

    async def delete_objects(self, ctx: Ctx) -> Response:
        repo = await self.repo(ctx)
        body = await read_xml_body(ctx, s3xml.MAX_DELETE_BODY)
        objects, quiet = s3xml.parse_delete(body)
        deleted, errors = await run(_delete_many, repo, objects)
        return xml_response(s3xml.delete_result_xml(deleted, errors, quiet))

    # ---- multipart uploads ---------------------------------------------------------
    async def create_multipart_upload(self, ctx: Ctx) -> Response:
        repo = await self.repo(ctx)
        branch, path = ctx.branch_path()
        check_acl(ctx.headers)
        check_unsupported(ctx.headers)
        meta = meta_from_headers(ctx.headers)
        upload = await run(Uploads(repo).create, branch, path, meta)
        assert ctx.bucket is not None and ctx.key is not None
        return xml_response(s3xml.initiate_multipart_xml(ctx.bucket, ctx.key, upload.id))

    async def _upload(self, ctx: Ctx, repo: Repository) -> Upload:
        """The upload named by ?uploadId, which must be of this key."""
        ref, path = ctx.ref_path()
        upload = await run(Uploads(repo).get, ctx.query["uploadId"])
        if (upload.branch, upload.path) != (ref, path):
            raise S3Error("NoSuchUpload")
        return upload

    async def upload_part(self, ctx: Ctx) -> Response:
        if "x-amz-copy-source" in ctx.headers:
            raise S3Error("NotImplemented", "UploadPartCopy is not supported by pfs")
        number = parse_part_number(ctx.query.get("partNumber"))
        repo = await self.repo(ctx)
        upload = await self._upload(ctx, repo)
        entry, hasher = await self._receive(ctx, repo, upload.branch, upload.path, MAX_PART_SIZE, need_md5=True)
        await run(Uploads(repo).put_part, upload.id, number, entry, hasher.md5.hex())
        return Response(b"", headers={"etag": hasher.etag})

    async def complete_multipart_upload(self, ctx: Ctx) -> Response:
        repo = await self.repo(ctx)
        upload = await self._upload(ctx, repo)
        body = await read_xml_body(ctx, s3xml.MAX_COMPLETE_BODY)
        wanted = s3xml.parse_complete_multipart(body)
        parts = {p.number: p for p in await run(Uploads(repo).parts, upload.id)}
        chosen: list[Part] = []
        for number, etag in wanted:
            part = parts.get(number)
            if part is None or unquote_etag(etag).lower() != part.md5:
                raise S3Error("InvalidPart", extra={"PartNumber": str(number), "ETag": etag[:100]})
            chosen.append(part)
        check_part_sizes([p.size for p in chosen])
        etag = multipart_etag([bytes.fromhex(p.md5) for p in chosen])
        await self._check_write_conditions(ctx, repo, upload.branch, upload.path)
        bucket, key = ctx.bucket, ctx.key
        assert bucket is not None and key is not None

        def complete() -> bytes:  # reads every part back once, to hash the whole file: may take a while
            Uploads(repo).complete(upload.id, [p.number for p in chosen], ((S3_ETAG, etag),))
            location = f"/{urllib.parse.quote(bucket)}/{urllib.parse.quote(key)}"
            return s3xml.complete_multipart_xml(location, bucket, key, etag)

        return await answer_in_time(complete, ctx)

    async def abort_multipart_upload(self, ctx: Ctx) -> Response:
        repo = await self.repo(ctx)
        upload = await self._upload(ctx, repo)
        await run(Uploads(repo).abort, upload.id)
        return Response(b"", status_code=204)

    async def list_parts(self, ctx: Ctx) -> Response:
        repo = await self.repo(ctx)
        upload = await self._upload(ctx, repo)
        max_parts = parse_max_keys(ctx.query.get("max-parts"))
        marker_text = ctx.query.get("part-number-marker", "0") or "0"
        if not marker_text.isdigit() or len(marker_text) > 5:
            raise S3Error("InvalidArgument", "part-number-marker must be an integer")
        marker = int(marker_text)
        parts = [p for p in await run(Uploads(repo).parts, upload.id) if p.number > marker]
        shown, truncated = parts[:max_parts], len(parts) > max_parts
        assert ctx.bucket is not None and ctx.key is not None
        return xml_response(
            s3xml.list_parts_xml(
                ctx.bucket,
                ctx.key,
                upload.id,
                [s3xml.PartInfo(p.number, p.size, p.md5, p.created) for p in shown],
                part_number_marker=marker,
                next_part_number_marker=shown[-1].number if truncated and shown else None,
                max_parts=max_parts,
                is_truncated=truncated,
                owner=OWNER,
            )
        )

    async def list_multipart_uploads(self, ctx: Ctx) -> Response:
        q = ctx.query
        prefix, delimiter, url = listing_params(q)
        max_uploads = parse_max_keys(q.get("max-uploads"))
        key_marker = q.get("key-marker", "")
        id_marker = q.get("upload-id-marker", "")
        repo = await self.repo(ctx)
        ref, sep, path_prefix = prefix.partition("/")
        uploads = await run(Uploads(repo).in_progress, path_prefix if sep else "", MAX_UPLOADS_LISTED)
        items = sorted(
            ((f"{u.branch}/{u.path}", u) for u in uploads if (not sep or u.branch == ref)),
            key=lambda item: (item[0], item[1].created, item[1].id),
        )
        if key_marker:  # after the marker: later keys, and the marker's own uploads after upload-id-marker
            cut = next((i for i, (k, u) in enumerate(items) if k == key_marker and u.id == id_marker), None)
            items = [
                it
                for i, it in enumerate(items)
                if it[0] > key_marker or (cut is not None and it[0] == key_marker and i > cut)
            ]
        # a marker that is a common prefix skips all under it (without an upload-id-marker, as S3)
        page = list_page(SortedItems(items), prefix, delimiter, max_uploads, None if id_marker else key_marker or None)
        last = page.contents[-1] if page.contents else None
        assert ctx.bucket is not None
        return xml_response(
            s3xml.list_multipart_uploads_xml(
                ctx.bucket,
                [(k, s3xml.UploadInfo(u.id, u.created)) for k, u in page.contents],
                page.common_prefixes,
                prefix=prefix,
                delimiter=delimiter,
                key_marker=key_marker,
                upload_id_marker=id_marker,
                next_key_marker=page.next_marker,
                next_upload_id_marker=last[1].id if last is not None and last[0] == page.next_marker else None,
                max_uploads=max_uploads,
                is_truncated=page.is_truncated,
                url=url,
                owner=OWNER,
            )
        )


MAX_UPLOADS_LISTED = 10_000  # uploads in progress looked at for one ListMultipartUploads


def operations(g: Gateway) -> dict[tuple[str, str, str], tuple[str, Handler]]:
    """(level, method, subresources joined by '+') -> (S3 operation, handler): every operation
    at a glance. HEAD runs GetObject's handler, which sends headers only; no HEAD reaches a
    writer. PutObject with x-amz-copy-source is CopyObject."""
    return {
        ("service", "GET", ""): ("ListBuckets", g.list_buckets),
        ("bucket", "HEAD", ""): ("HeadBucket", g.head_bucket),
        ("bucket", "GET", ""): ("ListObjects", g.list_objects),  # or ListObjectsV2, with list-type=2
        ("bucket", "GET", "location"): ("GetBucketLocation", g.get_bucket_location),
        ("bucket", "GET", "versioning"): ("GetBucketVersioning", g.get_bucket_versioning),
        ("bucket", "GET", "versions"): ("ListObjectVersions", g.list_object_versions),
        ("bucket", "GET", "uploads"): ("ListMultipartUploads", g.list_multipart_uploads),
        ("bucket", "GET", "acl"): ("GetBucketAcl", g.get_acl),
        ("bucket", "PUT", ""): ("CreateBucket", g.create_bucket),
        ("bucket", "DELETE", ""): ("DeleteBucket", g.delete_bucket),
        ("bucket", "POST", "delete"): ("DeleteObjects", g.delete_objects),
        ("object", "GET", ""): ("GetObject", g.get_object),
        ("object", "HEAD", ""): ("HeadObject", g.get_object),
        ("object", "GET", "acl"): ("GetObjectAcl", g.get_acl),
        ("object", "PUT", ""): ("PutObject", g.put_object),
        ("object", "DELETE", ""): ("DeleteObject", g.delete_object),
        ("object", "POST", "uploads"): ("CreateMultipartUpload", g.create_multipart_upload),
        ("object", "PUT", "partNumber+uploadId"): ("UploadPart", g.upload_part),
        ("object", "POST", "uploadId"): ("CompleteMultipartUpload", g.complete_multipart_upload),
        ("object", "GET", "uploadId"): ("ListParts", g.list_parts),
        ("object", "DELETE", "uploadId"): ("AbortMultipartUpload", g.abort_multipart_upload),
    }


def create_s3_app(node: Node, base_domains: Sequence[str] = ("s3.localhost",), gate: Gate | None = None) -> ASGIApp:
    """The S3 gateway's ASGI app over a node's repositories. `base_domains`: hosts under
    which `<bucket>.<domain>` is virtual-host addressing (path style always works). `gate`:
    the native API's, so that failed sign-ins on either listener count together."""
    return Gateway(node, base_domains, gate)


# ---- answers ---------------------------------------------------------------------------

KEEPALIVE_AFTER = 2.0  # seconds a slow operation may take before its answer starts
KEEPALIVE_EVERY = 5.0  # seconds between the spaces sent while it goes on


async def answer_in_time(work: Callable[[], bytes], ctx: Ctx) -> Response:
    """The XML answer of a slow operation (completing a multipart upload hashes the whole file;
    a copy across buckets moves every byte), run in a worker thread. Done within
    KEEPALIVE_AFTER: an ordinary answer, errors with their status. Longer: as S3 does, a 200
    starts at once and a space is sent every KEEPALIVE_EVERY seconds, so that no client or
    proxy times out, and the body ends with the result or with an `<Error>` (which SDKs look
    for in a 200 answer to these operations). The work goes on if the client leaves."""
    task = asyncio.ensure_future(run(work))
    done, _ = await asyncio.wait({task}, timeout=KEEPALIVE_AFTER)
    if done:
        return xml_response(task.result())
    rid = REQUEST_ID.get()

    async def body() -> AsyncIterator[bytes]:
        yield XML_DECLARATION  # spaces may follow the declaration, not come before it
        while not (await asyncio.wait({task}, timeout=KEEPALIVE_EVERY))[0]:
            yield b" "
        try:
            text = task.result()
        except S3Error as error:
            text = s3xml.error_body(error, rid)
        except PfsError as exc:
            try:
                text = s3xml.error_body(_s3_error(exc), rid)
            except PfsError:
                log.exception("internal error while answering %s %r", ctx.method, ctx.resource[:200])
                text = s3xml.error_body(S3Error("InternalError"), rid)
        except Exception:
            log.exception("internal error while answering %s %r", ctx.method, ctx.resource[:200])
            text = s3xml.error_body(S3Error("InternalError"), rid)
        yield text.removeprefix(XML_DECLARATION)

    return StreamingResponse(body(), media_type="application/xml")


XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def xml_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="application/xml")


def error_response(error: S3Error, request: Request, rid: str) -> Response:
    headers = dict(error.headers)
    if error.status == 304 or request.method == "HEAD":  # no body, as S3 answers
        response = Response(b"", status_code=error.status, headers=headers)
        if error.status == 304:
            del response.headers["content-length"]
        return response
    if not error.resource:
        error.resource = request.url.path[:1100]
    body = s3xml.error_body(error, rid)
    return Response(body, status_code=error.status, headers=headers, media_type="application/xml")


def _header_value(value: str) -> str:
    """A header value as latin-1 can carry it: non-ASCII text RFC 2047-encoded, as S3 sends
    user metadata that is not ASCII."""
    if value.isascii():
        return value
    return "=?UTF-8?B?" + base64.b64encode(value.encode("utf-8", "surrogatepass")).decode("ascii") + "?="


def object_headers(entry: Entry, etag: str, mtime: float) -> dict[str, str]:
    headers = {
        "content-length": str(entry.size),
        "etag": quote_etag(etag),
        "last-modified": http_date(mtime),
        "accept-ranges": "bytes",
        "content-type": DEFAULT_CONTENT_TYPE,
    }
    for name, value in entry.meta:
        if name in STORED_HEADERS or name.startswith("x-amz-meta-"):
            headers[name] = _header_value(value)
    return headers


# ---- requests --------------------------------------------------------------------------


async def finish_body(request: Request, reading: bool) -> bool:
    """Before an error answer: read what is left of a refused body (bounded), so the client
    reads the answer rather than a reset, and the connection can serve its next request.
    False when the connection must close instead: a body too long to drain, or one the
    client holds back until told to go on (`Expect: 100-continue`), which it now never is."""
    length = request.headers.get("content-length", "0")
    if length in ("", "0") and "transfer-encoding" not in request.headers:
        return True
    if not reading and request.headers.get("expect", "").lower() == "100-continue":
        return False
    seen = 0
    try:
        async for piece in request.stream():
            seen += len(piece)
            if seen > DRAIN_LIMIT:
                return False
    except ClientDisconnect:
        return False
    except RuntimeError:  # the stream was read to its end already
        return True
    return True


def check_acl(headers: Mapping[str, str]) -> None:
    """Canned ACLs: `private` is what every object and bucket is, so it is accepted; others
    would make promises pfs does not keep (public reads): refused."""
    acl = headers.get("x-amz-acl")
    if acl is not None and acl != "private":
        if acl not in CANNED_ACLS:
            raise S3Error("InvalidArgument", f"unknown canned ACL {acl[:64]!r}")
        raise S3Error("NotImplemented", f"canned ACL {acl!r}: pfs keeps every object private")
    if any(name.lower().startswith("x-amz-grant-") for name in headers):
        raise S3Error("NotImplemented", "ACL grants are not supported by pfs")


def check_unsupported(headers: Mapping[str, str]) -> None:
    for name in UNSUPPORTED_HEADERS:
        if name in headers:
            raise S3Error("NotImplemented", f"{name} is not supported by pfs")
    storage_class = headers.get("x-amz-storage-class")
    if storage_class is not None and storage_class != "STANDARD":
        raise S3Error("InvalidStorageClass", f"pfs has only the STANDARD storage class, not {storage_class[:64]!r}")


def _latin1_to_text(value: str) -> str:
    """A header value as received (bytes shown as latin-1) read as the UTF-8 a client sent."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def meta_from_headers(headers: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """What is stored with an object: the standard headers S3 keeps and x-amz-meta-*.
    More than 2 KiB is MetadataTooLarge; a name or value pfs cannot store, InvalidArgument."""
    pairs: list[tuple[str, str]] = []
    for raw_name, raw_value in headers.items():
        name = raw_name.lower()
        if name in STORED_HEADERS or name.startswith("x-amz-meta-"):
            value = _latin1_to_text(raw_value)
            if name == "content-encoding":  # aws-chunked is how the body travelled, not what it is
                value = ",".join(e.strip() for e in value.split(",") if e.strip().lower() != "aws-chunked")
                if not value:
                    continue
            pairs.append((name, value))
    size = sum(len(n.encode()) + len(v.encode("utf-8", "surrogatepass")) for n, v in pairs)
    if size > MAX_META:
        raise S3Error(
            "MetadataTooLarge",
            f"Your metadata headers exceed the maximum allowed metadata size ({size} > {MAX_META} bytes).",
        )
    try:
        return check_meta(pairs)
    except BadRequest as e:
        raise S3Error("InvalidArgument", e.message) from None


def listing_params(q: Mapping[str, str]) -> tuple[str, str | None, bool]:
    """prefix, delimiter (`/` only: keys are paths), encoding-type=url."""
    prefix = q.get("prefix", "")
    delimiter = q.get("delimiter") or None
    if delimiter is not None and delimiter != "/":
        raise S3Error("InvalidArgument", "pfs lists with '/' as the only delimiter (keys are paths)")
    encoding = q.get("encoding-type")
    if encoding is not None and encoding != "url":
        raise S3Error("InvalidArgument", "Invalid Encoding Method specified in Request")
    if "\x00" in prefix or len(prefix.encode("utf-8", "surrogatepass")) > 1024:
        raise S3Error("InvalidArgument", "the prefix is too long or has a NUL byte")
    return prefix, delimiter, encoding == "url"


def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """x-amz-copy-source: `[/]bucket/key[?versionId=id]`, URL-encoded -> (bucket, key, version id)."""
    raw, _, query = value.partition("?")
    version = None
    if query:
        for name, val in parse_query(query):
            if name != "versionId":
                raise S3Error("InvalidArgument", "Unsupported parameter in x-amz-copy-source")
            version = val
    text = percent_decode(raw.lstrip("/"))
    bucket, sep, key = text.partition("/")
    if not sep or not key or not valid_bucket_name(bucket):
        raise S3Error("InvalidArgument", "Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
    return bucket, key, version


def _declared_length(headers: Mapping[str, str], chunked: bool) -> int | None:
    raw = headers.get("x-amz-decoded-content-length" if chunked else "content-length")
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 19:
        raise S3Error("InvalidArgument", "the content length is not a number")
    return int(raw)


def chunked_decoder(ctx: Ctx) -> sigv4.AwsChunkedDecoder | None:
    """The aws-chunked decoder of the body, if it is one. Chunk signatures are checked when
    the access key's secret is known; until then only the framing and trailing checksum."""
    if not sigv4.is_aws_chunked(ctx.headers):
        return None
    if ctx.secret is not None or ctx.headers.get("x-amz-content-sha256") == sigv4.STREAMING_UNSIGNED_TRAILER:
        return sigv4.AwsChunkedDecoder.from_request(ctx.headers, ctx.auth, ctx.secret)
    return sigv4.AwsChunkedDecoder.unverified(ctx.headers, ctx.auth)


async def read_xml_body(ctx: Ctx, limit: int) -> bytes:
    """A small XML body, read whole within `limit` bytes (MaxMessageLengthExceeded beyond)."""
    declared = ctx.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise S3Error("MaxMessageLengthExceeded", f"Your request was too big: more than {limit} bytes of XML.")
    body = bytearray()
    hasher = PayloadHasher(ctx.headers)
    decoder = chunked_decoder(ctx)
    ctx.reading = True
    async for piece in ctx.request.stream():
        body += decoder.feed(piece) if decoder is not None else piece
        if len(body) > limit:
            raise S3Error("MaxMessageLengthExceeded", f"Your request was too big: more than {limit} bytes of XML.")
    ctx.reading = False
    if decoder is not None:
        decoder.finish()
    data = bytes(body)
    hasher.update(data)
    hasher.check()  # Content-MD5 (which S3 requires of DeleteObjects), x-amz-content-sha256, checksums
    return data


# ---- blocking parts (run in worker threads) --------------------------------------------


def _read_entry(repo: Repository, ref: str, path: str, version_id: str | None) -> tuple[RefView, Entry]:
    view = open_commit(repo, ref, version_id) if version_id is not None else open_ref(repo, ref)
    entry = view.lookup(path)
    if entry is None:
        raise S3Error("NoSuchKey")
    return view, entry


def _copy_bytes(src: Repository, dest: Repository, entry: Entry) -> Entry:
    return dest.store(src.read_file(entry))


def _delete_key(repo: Repository, branch: str, path: str) -> None:
    """Delete a file on a branch; a key that is not there (or is a directory) is no error."""
    with contextlib.suppress(FileNotFound, PathConflict):  # a missing branch is not suppressed
        repo.delete(branch, path)


def _delete_many(
    repo: Repository, objects: list[tuple[str, str | None]]
) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None, str, str]]]:
    deleted: list[tuple[str, str | None]] = []
    errors: list[tuple[str, str | None, str, str]] = []
    for key, version in objects:
        try:
            ref, path = check_key(key)
            if is_commit_like(ref):
                raise S3Error("AccessDenied", f"{ref[:64]} is a commit: its keys are read-only")
            if version is not None:
                raise S3Error("NotImplemented", "versions are commits: pfs history cannot be rewritten")
            try:
                _delete_key(repo, ref, path)
            except PfsError as exc:
                raise _s3_error(exc) from None
            deleted.append((key, version))
        except S3Error as e:
            errors.append((key, version, e.code, e.message))
    return deleted, errors


@dataclass
class VersionsPage:
    versions: list[tuple[str, s3xml.VersionInfo]]
    common_prefixes: list[str]
    truncated: bool
    next_key: str | None
    next_version: str | None


def _versions_page(
    repo: Repository, prefix: str, delimiter: str | None, max_keys: int, key_marker: str, version_marker: str
) -> VersionsPage:
    """ListObjectVersions: each key's versions are the commits that changed it (newest first);
    a commit that deleted it is a delete marker. A prefix naming a ref lists that ref's
    history; a shorter one, every branch's."""
    ref, sep, path_prefix = prefix.partition("/")
    if sep:
        refs = [ref]
    else:
        refs = sorted(b for b, _ in repo.branches() if (b + "/").startswith(prefix))
        refs.sort(key=lambda r: r + "/")
    out = VersionsPage([], [], False, None, None)
    if max_keys == 0:
        return out
    count = 0
    past_marker = not version_marker
    for r in refs:
        base = r + "/"
        if key_marker and base < key_marker and not key_marker.startswith(base):
            continue
        if delimiter is not None and not sep:  # the whole ref rolls up into `<ref>/`
            items: Iterator[tuple[str, Any]] = iter([(base + "\x00", None)])
        else:
            try:
                versions = key_versions(repo, r, path_prefix if sep else "")
            except NotFound:
                continue  # an unknown ref has no versions
            items = ((base + kv.path, kv) for kv in versions)
        for key, kv in items:
            name, rolled = key, False
            if delimiter is not None:
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    name, rolled = key[: cut + len(delimiter)], True
            if rolled:
                if (out.common_prefixes and out.common_prefixes[-1] == name) or (key_marker and name <= key_marker):
                    continue
            else:
                if key_marker and key < key_marker:
                    continue
                if key_marker and key == key_marker:
                    if not version_marker:
                        continue
                    if not past_marker:
                        past_marker = kv.commit.id == version_marker
                        continue
            if count == max_keys:
                out.truncated = True
                return out
            count += 1
            if rolled:
                out.common_prefixes.append(name)
                out.next_key, out.next_version = name, None
            else:
                out.versions.append(
                    (
                        key,
                        s3xml.VersionInfo(
                            version_id=kv.commit.id,
                            is_latest=kv.latest,
                            last_modified=kv.commit.time,
                            etag=etag_of(kv.entry) if kv.entry is not None else "",
                            size=kv.entry.size if kv.entry is not None else 0,
                            delete_marker=kv.entry is None,
                        ),
                    )
                )
                out.next_key, out.next_version = key, kv.commit.id
    out.next_key = out.next_version = None
    return out
