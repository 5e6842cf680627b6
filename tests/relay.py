"""A TCP relay for fault injection and stand-ins: a listener in a thread of its own whose
every connection is paired with a stream `connect()` opens (another port, a unix socket),
bytes copied both ways; the far side's bytes may be slowed to `rate` bytes a second."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Awaitable, Callable

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Relay:
    def __init__(
        self,
        host: str,
        connect: Callable[[], Awaitable[Streams]],
        tls: ssl.SSLContext | None = None,
        rate: int = 0,
    ) -> None:
        self.host = host
        self.connect = connect
        self.tls = tls
        self.rate = rate  # bytes a second from the far side to the client; 0: full speed
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-relay", daemon=True)
        self.server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Relay:
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, self.host, 0, ssl=self.tls), self.loop
        ).result(10)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            far_r, far_w = await self.connect()
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, far_w, 0), self._pipe(far_r, writer, self.rate))

    @staticmethod
    async def _pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, rate: int) -> None:
        try:
            while data := await r.read(1 << 16):
                w.write(data)
                await w.drain()
                if rate:
                    await asyncio.sleep(len(data) / rate)
        except OSError:  # ssl.SSLError too
            pass
        finally:
            with contextlib.suppress(Exception):
                w.close()

    def stop(self) -> None:
        if self.server is not None:
            self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
