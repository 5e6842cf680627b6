"""Who a native API request is: HTTP Basic with an access key pair (`curl -u ID:SECRET`),
or AWS SigV4 (an Authorization header or a presigned URL, checked as the S3 gateway checks
it), or no credentials (anonymous). Then whether it may do what its route needs, and the
audit entry of any request that may change something.

Repeated failures from one address are slowed down: after `free` failed sign-ins within
`window` seconds each further failure is answered later and later (up to `MAX_DELAY`), and
after `block` failures the address gets 429 with Retry-After until the window has passed,
without its credentials being looked at. A SigV4 request whose body hash is declared
(`x-amz-content-sha256: <hex>`) has its body checked against it as it is read: a body that
does not match fails the request before anything it carried is staged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool as run
from starlette.requests import Request
from starlette.types import Message, Receive

from ..access.identity import ANONYMOUS, OPEN, Identity, Permission, Principal
from ..access.service import Access
from ..errors import BadRequest, TooManyRequests, Unauthorized
from ..repository.repo import Repository
from .logs import REQUEST_ID
from .permissions import is_mutation
from .s3 import sigv4
from .s3.protocol import STREAMING_PAYLOADS, UNSIGNED_PAYLOAD, S3Error

T = TypeVar("T")
PRINCIPAL_SCOPE = "pfs.principal"
MAX_DELAY = 5.0  # seconds a failed sign-in may be held back
MAX_ADDRESSES = 10_000  # addresses whose failures are remembered
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_SECRET_PARAMS = ("x-amz-signature", "x-amz-credential", "x-amz-security-token")


class Throttle:
    """Failed sign-ins per client address, in a sliding window."""

    def __init__(self, free: int = 10, block: int = 100, window: float = 60.0) -> None:
        self.free, self.block, self.window = free, block, window
        self._fails: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def _recent(self, addr: str) -> collections.deque[float]:
        q = self._fails.get(addr)
        if q is None:
            q = collections.deque()
            self._fails[addr] = q
            if len(self._fails) > MAX_ADDRESSES:
                self._fails.popitem(last=False)
        cutoff = time.monotonic() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def check(self, addr: str) -> None:
        """TooManyRequests if the address has failed too often of late."""
        q = self._fails.get(addr)
        if q is not None and len(self._recent(addr)) >= self.block:
            exc = TooManyRequests(f"too many failed sign-ins from {addr}; try again later")
            exc.retry_after = max(1, int(q[0] + self.window - time.monotonic()) + 1)
            raise exc

    def failed(self, addr: str) -> float:
        """Count a failure; the seconds to hold its answer back."""
        q = self._recent(addr)
        q.append(time.monotonic())
        self._fails.move_to_end(addr)
        over = len(q) - self.free
        return 0.0 if over <= 0 else min(MAX_DELAY, 0.05 * (2**over))


async def ask(
    identity: Identity, fn: Callable[..., T], *args: Any, key: str | None = None, who: Principal | None = None
) -> T:
    """`fn(*args)`, from a worker thread only if it may have to read the database (about the
    key `key`, or the roles of `who`)."""
    if identity.needs_lookup(key, who):
        return await run(fn, *args)
    return fn(*args)


def client_addr(scope: Mapping[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


def audit_target(request: Request) -> str:
    """The path and query of a request, without any signature or credential parameter."""
    path = request.url.path
    params = [(k, v) for k, v in request.query_params.multi_items() if k.lower() not in _SECRET_PARAMS]
    if params:
        path += "?" + "&".join(f"{k}={v}" if v else k for k, v in params)
    return "".join(c if c.isprintable() else "?" for c in path)


class Gate:
    """Authentication, authorization and audit of the native API."""

    def __init__(self, throttle: Throttle | None = None) -> None:
        self.throttle = throttle or Throttle()

    async def principal(self, request: Request, identity: Identity) -> Principal:
        """Who the request is (kept in its scope); Unauthorized for credentials that do
        not check out, after the throttle's delay."""
        known: Principal | None = request.scope.get(PRINCIPAL_SCOPE)
        if known is not None:
            return known
        addr = client_addr(request.scope)
        try:
            principal = await self._authenticate(request, identity, addr)
        except Unauthorized:
            await self._held_back(addr)
            raise
        request.scope[PRINCIPAL_SCOPE] = principal
        return principal

    async def sign_in(self, request: Request, identity: Identity, key_id: str, secret: str) -> Principal:
        """A key id and secret given some other way than a header (the console's login
        form), checked as HTTP Basic checks them: the same lookup, the same throttle."""
        addr = client_addr(request.scope)
        self.throttle.check(addr)
        try:
            principal = await ask(identity, identity.check_password, key_id, secret, key=key_id)
        except Unauthorized:
            await self._held_back(addr)
            raise
        request.scope[PRINCIPAL_SCOPE] = principal
        return principal

    async def _held_back(self, addr: str) -> None:
        """Count a failed sign-in and wait as long as the throttle says."""
        delay = self.throttle.failed(addr)
        if delay:
            await asyncio.sleep(delay)

    async def _authenticate(self, request: Request, identity: Identity, addr: str) -> Principal:
        header = request.headers.get("authorization")
        presigned = sigv4.presigned_kind(request.query_params.multi_items()) is not None
        if not await ask(identity, identity.enabled):
            return OPEN  # no users: access control is off, credentials or not
        if header is None and not presigned:
            return ANONYMOUS
        self.throttle.check(addr)
        if header is not None and header[:6].lower() == "basic ":
            key_id, secret = _basic(header)
            return await ask(identity, identity.check_password, key_id, secret, key=key_id)
        return await run(self._sigv4, request, identity)

    def _sigv4(self, request: Request, identity: Identity) -> Principal:
        scope = request.scope
        pairs = request.query_params.multi_items()
        try:
            auth = sigv4.authenticate(request.headers, pairs)
            if auth is None:  # an Authorization header of another scheme
                raise Unauthorized("unsupported Authorization scheme: use Basic (key id, secret) or AWS4-HMAC-SHA256")
            principal, secret = identity.key_secret(auth.access_key)
            declared = sigv4.payload_hash(auth, request.headers)
            sigv4.verify(
                auth, request.method, scope.get("raw_path") or scope["path"], pairs, request.headers, declared, secret
            )
        except S3Error as exc:
            raise Unauthorized(f"{exc.code}: {exc.message}") from None
        if declared in STREAMING_PAYLOADS:
            raise BadRequest("aws-chunked bodies are for the S3 gateway: sign native requests with UNSIGNED-PAYLOAD")
        if declared != UNSIGNED_PAYLOAD and _HEX64.fullmatch(declared):
            request._receive = _hash_checked(request.receive, declared.lower())
        return principal

    async def check(self, request: Request, access: Access, need: Permission, repo: Repository | None) -> Principal:
        principal = await self.principal(request, access.identity)
        if repo is None:
            access.identity.require(principal, need)
        else:
            identity = access.identity
            await ask(identity, identity.require, principal, need, repo.id, repo.name, who=principal)
        return principal

    def audit(
        self, request: Request, access: Access, need: Permission, action: str, repo: str | None, status: int
    ) -> None:
        if not is_mutation(request.method, need):
            return
        principal: Principal | None = request.scope.get(PRINCIPAL_SCOPE)

        access.audit.record(
            user=principal.user if principal else None,
            key=principal.key if principal else None,
            addr=client_addr(request.scope),
            listener="api",
            method=request.method,
            action=action,
            repo=repo,
            target=audit_target(request),
            status=status,
            request_id=REQUEST_ID.get(),
        )


def _basic(header: str) -> tuple[str, str]:
    try:
        text = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Unauthorized("malformed Basic credentials") from None
    key_id, sep, secret = text.partition(":")
    if not sep or not key_id or not secret:
        raise Unauthorized("Basic credentials must be ACCESS_KEY_ID:SECRET")
    return key_id, secret


def _hash_checked(receive: Receive, expected: str) -> Receive:
    """`receive`, hashing the body as it passes; the last piece fails if it does not match
    the SHA-256 the request signed."""
    h = hashlib.sha256()
    done = False

    async def checked() -> Message:
        nonlocal done
        if done:  # a reader after the end (draining on an error) must not wait for more
            return {"type": "http.request", "body": b"", "more_body": False}
        message = await receive()
        if message["type"] == "http.request":
            h.update(message.get("body", b""))
            if not message.get("more_body", False):
                done = True
                if not hmac.compare_digest(h.hexdigest(), expected):
                    raise BadRequest("the body does not match its x-amz-content-sha256")
        return message

    return checked
