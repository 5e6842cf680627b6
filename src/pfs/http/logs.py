"""Request ids and the server's log format.

Every request gets an id: the client's `X-Request-Id` when it is well formed (so a proxy's
or a client's id carries through), else a new one. It is echoed in the response header and
in error bodies, and every log line written while the request runs carries it (worker
threads too: anyio copies the context into them), so a 5xx can be tied to its log lines.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import metrics
from ..storage import collect

REQUEST_ID: ContextVar[str] = ContextVar("pfs_request_id", default="-")
HEADER = "x-request-id"
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+=-]{0,127}")
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

access_log = logging.getLogger("pfs.access")


def request_id(given: str | None) -> str:
    """The client's id if it is a short token (it ends up in logs: no spaces, no control
    characters, bounded), else a fresh one."""
    if given is not None and _WELL_FORMED.fullmatch(given):
        return given
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def setup_logging(level: str = "warning") -> None:
    """pfs's own log lines, on stderr, each with its request id (`-` outside requests)."""
    logger = logging.getLogger("pfs")
    if any(isinstance(f, RequestIdFilter) for h in logger.handlers for f in h.filters):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter(FORMAT))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"))
ROUTE_SCOPE = "pfs.route"  # what a front end names the request by, for metrics (else its route's template)
REPO_SCOPE = "pfs.repo"  # the repository a `/repo/<name>/` route addresses (set by api.InRepo)


def route_label(scope: Scope) -> str:
    """A bounded name for the request: the S3 operation or the route's template (with the
    `/repo/{repo}` prefix when it came through it), never the path itself."""
    named = scope.get(ROUTE_SCOPE)
    if named:
        return str(named)
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return "unmatched"
    template = template.replace(":anypath", "")
    return "/repo/{repo}" + template if REPO_SCOPE in scope else template


class RequestIds:
    """ASGI middleware, outermost: sets the id before anything can log or fail, so even the
    last-resort 500 handler sees it. Logs one access line per request at INFO, and every
    5xx at WARNING (path only: a query string may one day carry a signature); counts it in
    the metrics of its front end (`front`: api, s3)."""

    def __init__(self, app: ASGIApp, front: str = "api") -> None:
        self.app = app
        self.front = front

    def __getattr__(self, name: str) -> Any:  # `app.state` and friends of the wrapped app
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None)
        rid = request_id(given)
        token = REQUEST_ID.set(rid)
        start = time.monotonic()
        status = 0
        front = self.front
        metrics.HTTP_IN_FLIGHT.labels(front).inc()
        received = metrics.HTTP_RECEIVED.labels(front)
        sent = metrics.HTTP_SENT.labels(front)

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                received.inc(len(message.get("body", b"")))
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[HEADER] = rid
            elif message["type"] == "http.response.body":
                sent.inc(len(message.get("body", b"")))
            await send(message)

        # A request that may write is an operation in flight: a garbage collection keeps the
        # objects written since it began (storage/collect.py). GET and HEAD never write.
        flight = contextlib.nullcontext() if scope.get("method") in ("GET", "HEAD") else collect.FLIGHT.op()
        try:
            with flight:
                await self.app(scope, counted_receive, send_with_id)
        except Exception:
            # Starlette re-raises a bug after its 500 went out, for the server to log once
            # more, without the request id: it was logged with it already.
            if not status:
                raise
        finally:
            seconds = time.monotonic() - start
            ms = seconds * 1000
            method = scope.get("method")
            method = method if method in METHODS else "other"  # a label may not take any string
            route = route_label(scope)
            metrics.HTTP_IN_FLIGHT.labels(front).dec()
            metrics.HTTP_REQUESTS.labels(front, method, route, str(status or 499)).inc()
            metrics.HTTP_SECONDS.labels(front, method, route).observe(seconds)
            level = logging.WARNING if status >= 500 else logging.INFO
            if access_log.isEnabledFor(level):
                path = scope.get("path", "")
                access_log.log(level, "%s %r -> %s in %.1f ms", scope.get("method"), path[:200], status or "-", ms)
            REQUEST_ID.reset(token)
