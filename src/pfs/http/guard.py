"""Time and connection bounds that uvicorn does not give: a guard against slow clients.

uvicorn closes idle keep-alive connections, but a connection that sends half a request
line, half its headers or half its body is held for as long as the client likes, and a
client that stops reading a response holds it too. A few hundred such sockets from one
address used to take the whole connection budget, so every other client got 503. This
protocol (uvicorn's httptools protocol, plus timers) bounds each phase:

- headers: the request line and headers must arrive within `header_timeout` of the
  connection (or of the request's first byte on a kept-alive one), and within
  `max_header_bytes`; else 408 / 431 and the connection is closed;
- body: while the server waits for body bytes, the client must send some every
  `body_timeout` seconds (a slow upload that keeps sending is fine; time the server
  spends not reading, because it is busy storing, does not count);
- response: a client that reads nothing of a response for `send_timeout` is dropped;
- one client address may hold at most `max_per_client` connections; beyond that a new
  connection gets 503 at once, so others still have the rest of the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("pfs.http")


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    send_timeout: float = 60.0
    max_per_client: int = 250
    max_header_bytes: int = 64 << 10


def _raw_response(status: str, message: str, extra: str = "") -> bytes:
    body = message.encode() + b"\n"
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {len(body)}\r\n"
        f"{extra}connection: close\r\n\r\n"
    )
    return head.encode() + body


def guarded_protocol(limits: Limits) -> type[HttpToolsProtocol]:
    """A protocol class for `uvicorn.Config(http=...)`, with its own per-address counts."""
    per_client: dict[str, int] = {}

    class Guarded(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None
        _phase = "idle"  # idle (before a request) | headers | body | done (app has the request)
        _header_bytes = 0
        _addr: str | None = None

        # ---- connection ------------------------------------------------------------
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            addr = self.client[0] if self.client else ""
            self._addr = addr
            per_client[addr] = per_client.get(addr, 0) + 1
            if per_client[addr] > limits.max_per_client:
                log.warning("refused a connection: %d open from %s", per_client[addr] - 1, addr)
                self._close_with(
                    _raw_response(
                        "503 Service Unavailable", "too many connections from your address", "retry-after: 1\r\n"
                    )
                )
                return
            self._phase = "headers"
            self._arm(limits.header_timeout, self._headers_too_slow)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._addr is not None:
                n = per_client.get(self._addr, 1) - 1
                if n <= 0:
                    per_client.pop(self._addr, None)
                else:
                    per_client[self._addr] = n
                self._addr = None
            super().connection_lost(exc)

        # ---- request phases ----------------------------------------------------------
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._header_bytes = 0
            if self._phase != "headers":  # a later request on a kept-alive connection
                self._phase = "headers"
                self._arm(limits.header_timeout, self._headers_too_slow)

        def on_url(self, url: bytes) -> None:
            self._count_header(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_header(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._phase = "body"
            self._arm(limits.body_timeout, self._body_stalled)
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self._arm(limits.body_timeout, self._body_stalled)
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._phase = "done"
            self._disarm()
            super().on_message_complete()

        def on_response_complete(self) -> None:
            if self._phase == "done":
                self._phase = "idle"  # uvicorn's keep-alive timeout covers the wait for the next request
            super().on_response_complete()

        # ---- writing to a client that does not read -----------------------------------
        def pause_writing(self) -> None:
            super().pause_writing()
            if self._phase in ("done", "idle"):
                self._arm(limits.send_timeout, self._reader_stalled)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._phase in ("done", "idle"):
                self._disarm()

        # ---- timers --------------------------------------------------------------------
        def _arm(self, seconds: float, callback: Any) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, callback)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _count_header(self, n: int) -> None:
            self._header_bytes += n
            if self._header_bytes > limits.max_header_bytes and not self.transport.is_closing():
                self._close_with(_raw_response("431 Request Header Fields Too Large", "request headers too large"))

        def _headers_too_slow(self) -> None:
            self._timer = None
            log.warning("dropped %s: no complete request headers within %g s", self._addr, limits.header_timeout)
            self._close_with(_raw_response("408 Request Timeout", "request headers not received in time"))

        def _body_stalled(self) -> None:
            self._timer = None
            if self.flow.read_paused:  # we are not reading (busy storing): not the client's fault
                self._arm(limits.body_timeout, self._body_stalled)
                return
            log.warning("dropped %s: request body stalled for %g s", self._addr, limits.body_timeout)
            if self.cycle is not None and not self.cycle.response_started:
                self.transport.write(_raw_response("408 Request Timeout", "request body stalled"))
            if self.cycle is not None:  # the handler sees a disconnect; its answer is not sent
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            self.transport.close()

        def _reader_stalled(self) -> None:
            self._timer = None
            log.warning("dropped %s: read nothing of the response for %g s", self._addr, limits.send_timeout)
            sock = self.transport.get_extra_info("socket")
            if sock is not None:  # reset, so the kernel drops what is still queued for it too
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()

        def _close_with(self, response: bytes) -> None:
            self._disarm()
            if not self.transport.is_closing():
                self.transport.write(response)
                self.transport.close()

    return Guarded
