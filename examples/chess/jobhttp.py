"""The HTTP side of a pfs job server, shared by the map and the reduce image (stdlib only).

What pfs expects of a job server, and what this module takes care of:
- listen on $PORT (pfs sets it) and answer any GET, which is pfs's readiness probe;
- read each POST body to its end BEFORE answering, even to refuse it: pfs sends the whole
  body before it reads the response, so answering early can deadlock or reset the request;
- answer 2xx with the output, anything else with a message that ends up in the job's error.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PIECE = 64 << 10


class HttpError(Exception):
    """An answer other than 200, with a message for the job's error and log."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class JobHandler(BaseHTTPRequestHandler):
    """Subclasses implement `post(route)` and call `read_body` or `lines`, then `send`."""

    protocol_version = "HTTP/1.1"  # keep-alive: pfs reuses its connections
    server_version = "pfs-example-chess"
    name = "job"
    usage = "POST /map/<path> or POST /reduce"

    # ---- the body ----------------------------------------------------------------
    _remaining = -1  # bytes of the current request's body not read yet; -1: not known yet

    def _left(self) -> int:
        if self._remaining < 0:
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.close_connection = True
                raise HttpError(411, "a Content-Length is required (pfs always sends one)")
            self._remaining = int(length)
        return self._remaining

    def pieces(self) -> Iterator[bytes]:
        """The rest of the body, in pieces of at most PIECE bytes."""
        while (left := self._left()) > 0:
            piece = self.rfile.read(min(left, PIECE))
            if not piece:
                self.close_connection = True
                raise HttpError(400, f"the request body ended {left} bytes early")
            self._remaining -= len(piece)
            yield piece

    def drain(self) -> None:
        for _ in self.pieces():
            pass

    def read_body(self, limit: int) -> bytes:
        """The whole body, which must fit in `limit` bytes (a 413 otherwise, after draining)."""
        if (size := self._left()) > limit:
            self.drain()
            raise HttpError(413, f"body of {size} bytes is over the limit of {limit}")
        return b"".join(self.pieces())

    def lines(self, max_line: int) -> Iterator[bytes]:
        """The body line by line, without the newline; memory stays bounded by `max_line`."""
        rest = b""
        for piece in self.pieces():
            *complete, rest = (rest + piece).split(b"\n")
            yield from complete
            if len(rest) > max_line:
                self.drain()
                raise HttpError(422, f"a line is longer than {max_line} bytes")
        if rest:
            yield rest

    # ---- answers -----------------------------------------------------------------
    def send(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send(200, f"{self.name} job server: {self.usage}\n".encode(), "text/plain")

    def do_POST(self) -> None:  # noqa: N802
        started = time.monotonic()
        self._remaining = -1  # one handler serves every request of a keep-alive connection
        route = urllib.parse.unquote(self.path.split("?", 1)[0])
        status = 200
        try:
            self.post(route)
        except HttpError as exc:
            status = exc.status
            self._finish_with_error(exc.status, exc.message)
        except Exception:
            status = 500
            sys.stderr.write(traceback.format_exc())
            self._finish_with_error(500, f"internal error in the {self.name} server; see the job log")
        ms = (time.monotonic() - started) * 1000
        sys.stderr.write(f"{self.name}: POST {route} -> {status} in {ms:.0f} ms\n")

    def _finish_with_error(self, status: int, message: str) -> None:
        try:
            self.drain()  # the protocol rule holds for errors too
        except HttpError:
            self.close_connection = True
        self.send(status, (message.rstrip() + "\n").encode(), "text/plain; charset=utf-8")

    def post(self, route: str) -> None:
        raise NotImplementedError

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        """Quiet: do_POST logs one line per request itself."""


def serve(handler: type[JobHandler]) -> None:
    port = int(os.environ.get("PORT") or 80)
    server = ThreadingHTTPServer(("0.0.0.0", port), handler)
    server.daemon_threads = True
    sys.stderr.write(f"{handler.name}: listening on 0.0.0.0:{port}\n")
    server.serve_forever()
