"""What every native front-end handler is built from: the route's method table
(`endpoint`), checked query parameters (`accepts`/`Params`), bounded body readers, and
plain-text or JSON answers. api.py (data routes) and admin.py (users, keys, access, audit)
both build on it."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import itertools
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio
import orjson
from starlette.concurrency import run_in_threadpool
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import request_response
from starlette.types import Receive, Scope, Send

from ..access.identity import Permission
from ..errors import (
    BadRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    PfsError,
    RangeNotSatisfiable,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from ..paths import check_branch

T = TypeVar("T")


DRAIN_LIMIT = 64 << 20  # beyond this a refused upload is cut off rather than read to the end
FILE_BATCH = 4 << 20  # bytes of a stored file read per worker-thread call (`pump_file`)


PRESIGN_PARAMS = frozenset(
    ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature")
)
FLAG_VALUES = {"": True, "1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await run_in_threadpool(fn, *args, **kwargs)


async def pump(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A blocking iterator of byte pieces, each pulled in a worker thread."""
    while (piece := await run(next, pieces, None)) is not None:
        yield piece


async def pump_file(pieces: Iterator[bytes], at_least: int = FILE_BATCH) -> AsyncIterator[bytes]:
    """`pump` for a stored file's chunks: each worker-thread call reads (and verifies) chunks
    until they add up to `at_least` bytes. Every hop to a thread costs the event loop a
    wake-up and the sender a wait; one per ~1 MiB chunk held a download to ~0.75x of a plain
    file server, one per 4 MiB to ~0.85x (bench/). At most `at_least` bytes plus one chunk
    are held."""

    def take() -> list[bytes]:
        batch, size = [], 0
        for piece in pieces:
            batch.append(piece)
            size += len(piece)
            if size >= at_least:
                break
        return batch

    while batch := await run(take):
        for piece in batch:
            yield piece


def error_headers(err: PfsError) -> dict[str, str]:
    """The headers every error answer carries, whichever front end renders it: its code,
    when to retry (503, 429), how to sign in (401), which methods (405), the size (416)."""
    headers = {"x-pfs-error": err.code}
    if isinstance(err, Unavailable | TooManyRequests):
        headers["retry-after"] = str(err.retry_after)
    if isinstance(err, Unauthorized):  # RFC 9110: a 401 names a scheme to answer it with
        headers["www-authenticate"] = 'Basic realm="pfs", charset="UTF-8"'
    if "allow" in err.details:
        headers["allow"] = str(err.details["allow"])
    if isinstance(err, RangeNotSatisfiable):
        headers["content-range"] = f"bytes */{err.details['size']}"
    return headers


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def respond(request: Request, text: str, data: Any, status: int = 200) -> Response:
    if wants_json(request):
        return Response(orjson.dumps(data), status_code=status, media_type="application/json")
    return PlainTextResponse(text, status_code=status)


def headers_only(media_type: str, headers: dict[str, str] | None = None, status: int = 200) -> Response:
    """The answer to HEAD on a streamed route: the GET's headers, and nothing is read."""
    resp = Response(b"", status_code=status, media_type=media_type, headers=headers)
    if headers is None or "content-length" not in headers:
        del resp.headers["content-length"]  # unknown until streamed: say nothing rather than 0
    return resp


async def batches(items: Iterator[T], size: int = 500) -> AsyncIterator[list[T]]:
    """Pull a blocking iterator in a worker thread, a batch at a time."""
    while batch := await run(lambda: list(itertools.islice(items, size))):
        yield batch


async def as_aiter(items: AsyncIterator[T] | list[T]) -> AsyncIterator[T]:
    if isinstance(items, list):
        for x in items:
            yield x
    else:
        async for x in items:
            yield x


async def respond_many(
    request: Request, items: Iterator[T], text: Callable[[T], str], js: Callable[[T], Any]
) -> Response:
    """Stream a listing of any length: text lines, or one JSON array written piece by piece.

    The first batch is read before the response starts, so errors such as an unknown
    branch still get their proper status code."""
    first = await run(lambda: list(itertools.islice(items, 500)))
    as_json = wants_json(request)
    media = "application/json" if as_json else "text/plain; charset=utf-8"
    if request.method == "HEAD":
        return headers_only(media)

    async def body() -> AsyncIterator[bytes]:
        async def all_batches() -> AsyncIterator[list[T]]:
            yield first
            if len(first) == 500:
                async for b in batches(items):
                    yield b

        if as_json:
            yield b"["
        sep = b""
        async for batch in all_batches():
            if as_json:
                for x in batch:
                    yield sep + orjson.dumps(js(x))
                    sep = b","
            else:
                yield "".join(text(x) for x in batch).encode()
        if as_json:
            yield b"]"

    return StreamingResponse(body(), media_type=media)


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).isoformat()


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


_LOG_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")  # all but tab and newline


def one_line(text: str) -> str:
    """Text from users on one line of a plain-text answer: control characters (newlines,
    escape sequences) are shown escaped, so a value can neither forge lines nor drive a
    terminal."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1] if m.group() != "\n" else "\\n", text)


def log_text(text: str) -> str:
    """A log as plain text: its own lines and tabs kept, every other control character
    (escape sequences, carriage returns) shown escaped, so no line can be forged by a
    lone CR nor the reader's terminal driven by what a job printed."""
    return _LOG_UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


class AnyPathConvertor(PathConvertor):
    """Starlette's `path`, but matching newlines too: such a name must reach the validators
    and get its 400, not the router's bare 404 or, for a final newline, be cut off."""

    regex = "(?s:.*)"


register_url_convertor("anypath", AnyPathConvertor())


class Params:
    """A request's query parameters, checked against what its handler accepts: an unknown,
    repeated or (where that means nothing) empty parameter is a 400 naming it, so a typo
    such as `?brnach=test` cannot silently write to master."""

    def __init__(self, request: Request, names: frozenset[str], flags: frozenset[str], empty: frozenset[str]) -> None:
        self.values: dict[str, str] = {}
        unknown: list[str] = []
        repeated: list[str] = []
        blank: list[str] = []
        for name, value in request.query_params.multi_items():
            if name in PRESIGN_PARAMS:  # a presigned URL's signature: checked by the gate
                continue
            shown = one_line(name[:40])
            if name not in names and name not in flags:
                unknown.append(shown)
            elif name in self.values:
                if shown not in repeated:
                    repeated.append(shown)
            elif value == "" and name not in flags and name not in empty:
                blank.append(shown)
            if "\x00" in value:
                raise BadRequest(f"query parameter {shown!r} contains a NUL byte")
            self.values.setdefault(name, value)
        if unknown:
            takes = ", ".join(sorted(names | flags)) or "none"
            raise BadRequest(f"unknown query parameter(s): {', '.join(unknown[:10])} (this route takes: {takes})")
        if repeated:
            raise BadRequest(f"query parameter(s) given more than once: {', '.join(repeated[:10])}")
        if blank:
            raise BadRequest(f"query parameter(s) may not be empty: {', '.join(blank[:10])}")
        for name in flags & self.values.keys():
            if self.values[name].lower() not in FLAG_VALUES:
                raise BadRequest(f"{name} is a flag: give it as ?{name} or ?{name}=1 (or 0)")

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.values.get(name, default)

    def flag(self, name: str) -> bool:
        return name in self.values and FLAG_VALUES[self.values[name].lower()]

    def branch(self) -> str:
        return check_branch(self.values.get("branch", "master"))


Handler = Callable[[Any, Request, Params], Awaitable[Response]]


def accepts(
    *names: str, flags: tuple[str, ...] = (), empty: tuple[str, ...] = ()
) -> Callable[[Handler], Callable[[Any, Request], Awaitable[Response]]]:
    """Declare a handler's query parameters; it receives them checked, as `Params`.
    `flags` are present-or-not (`?run`), `empty` may be given with an empty value."""
    spec = (frozenset(names), frozenset(flags), frozenset(empty))

    def wrap(fn: Handler) -> Callable[[Any, Request], Awaitable[Response]]:
        @functools.wraps(fn)
        async def handler(self: Any, request: Request) -> Response:
            return await fn(self, request, Params(request, *spec))

        return handler

    return wrap


Guard = Callable[[Request, Permission, str, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]


class endpoint:  # noqa: N801 - reads as a function in the route table
    """One route, one handler per HTTP method. HEAD runs the GET handler (the server sends
    its headers, never a body) and is never routed to anything that writes; any other
    method gets 405 with `Allow`. An ASGI app rather than a function, so Starlette routes
    every method here instead of answering non-GET methods itself.

    `guarded` gives each method the permission it needs and the guard that checks it (and
    writes the audit entry) around the handler."""

    def __init__(self, **methods: Callable[[Request], Awaitable[Response]]) -> None:
        self.table = {m.upper(): h for m, h in methods.items()}
        if "GET" in self.table:
            self.table["HEAD"] = self.table["GET"]
        self.allow = ", ".join(sorted(self.table))
        self.app = request_response(self.dispatch)
        self.needs: dict[str, Permission] = {}
        self.guard: Guard | None = None
        self.path = ""

    def guarded(self, path: str, needs: dict[str, Permission], guard: Guard) -> endpoint:
        """Every method of the route must have exactly one permission (a route missing from
        the permission table is a programming error, found at start)."""
        listed = set(self.table) - {"HEAD"}
        if listed != set(needs):
            raise ValueError(f"permissions of {path} name {sorted(needs)}, its handlers {sorted(listed)}")
        self.needs = dict(needs)
        if "GET" in needs:
            self.needs["HEAD"] = needs["GET"]
        self.guard, self.path = guard, path.replace(":anypath", "")
        return self

    async def dispatch(self, request: Request) -> Response:
        handler = self.table.get(request.method)
        if handler is None:
            raise MethodNotAllowed(
                f"method {request.method} is not allowed here; allowed: {self.allow}", allow=self.allow
            )
        if self.guard is None:
            return await handler(request)
        return await self.guard(request, self.needs[request.method], self.path, handler)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


async def drain(request: Request, limit: int = DRAIN_LIMIT) -> None:
    """Read and drop the rest of a refused body (bounded), so the client reads our error
    response instead of a connection reset in the middle of its upload. Also after a
    partial read: Starlette's `stream()` goes on from where the last reader stopped."""
    seen = 0
    with contextlib.suppress(ClientDisconnect, RuntimeError):
        async for piece in request.stream():
            seen += len(piece)
            if seen > limit:
                return


async def stream_to(request: Request, write: Callable[[list[bytes]], None], size: int) -> None:
    """Hand the request body to `write` (blocking: it runs in a worker thread) in lists of
    pieces of about `size` bytes, as they came (not copied). The next list is received
    while `write` works on the last one, so network receive and storing overlap; at most
    one list waits besides the one being written and the one being gathered, so about
    3 x `size` bytes are held. When this returns or raises, `write` is not running.
    An error of either side is raised as it is (the other side is stopped first)."""
    send, recv = anyio.create_memory_object_stream[list[bytes]](1)

    async def consume() -> None:
        async with recv:
            async for pieces in recv:
                await run(write, pieces)

    async def produce() -> None:
        async with send:
            pieces: list[bytes] = []
            held = 0
            async for piece in request.stream():
                pieces.append(piece)
                held += len(piece)
                if held >= size:
                    await send.send(pieces)
                    pieces, held = [], 0
            if pieces:
                await send.send(pieces)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            tg.start_soon(produce)
    except BaseExceptionGroup as group:  # the first failure, as a plain exception
        raise group.exceptions[0] from None


async def read_small(request: Request, limit: int, what: str = "request body") -> bytes:
    """A body that is read whole (JSON, a job spec): 413 beyond `limit` bytes, found
    without holding more than that."""
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            await drain(request)
            raise PayloadTooLarge(f"{what} larger than {limit} bytes")
    return bytes(body)


async def read_json(request: Request, limit: int) -> Any:
    """A small JSON request body; 413 beyond `limit` bytes, 400 if it is not JSON."""
    body = await read_small(request, limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON") from None
