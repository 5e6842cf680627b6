"""A job server for pfs's tests: stdlib only, so it runs in the test image and on the host.

Usage: jobserver.py MODE [ARG]; listens on 0.0.0.0:$PORT (default 80).

Every GET answers 200 (pfs's readiness probe), so the modes below apply to POSTs only;
that lets a worker that fails on work still start. Modes:

    upper            POST /map/<path>: the body upper-cased; POST /reduce: the body as is
    cat              the body as is
    wc               map: "<path> <lines> <words> <bytes>"; reduce: the sums of the last three
                     columns of all lines, "<lines> <words> <bytes>"
    fail500          always 500 with a text message
    failon SUBSTR    500 if the path contains SUBSTR, else like upper
    failbody TEXT    422 naming the file if its content contains TEXT, else like upper: a
                     bad file is fixed by changing its content, as real bad data is
    crash            os._exit(3) on the first request
    crashon SUBSTR   os._exit(3) if the path contains SUBSTR, else like upper
    hang             accepts requests and never answers
    noserve          never listens; sleeps forever
    exit             prints "boom" to stderr and exits 2 at once
    slowstart SECS   sleeps, then listens and behaves like upper
    flaky N          the first N requests answer 500 (counted per process), then like upper
    slow SECS        like upper, but sleeps SECS per request

Bodies are read as a stream, with Content-Length or `Transfer-Encoding: chunked`; an
answer is built in a spooled temporary file and sent once the whole request is read (as
the job protocol asks), so big files need little memory. One line per request goes to
stderr, which is the worker's log.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PIECE = 64 << 10
MODES = {
    "upper": 0,
    "cat": 0,
    "wc": 0,
    "fail500": 0,
    "failon": 1,
    "failbody": 1,
    "crash": 0,
    "crashon": 1,
    "hang": 0,
    "noserve": 0,
    "exit": 0,
    "slowstart": 1,
    "flaky": 1,
    "slow": 1,
    "evil": 0,
    "probe": 0,
    "meet": 1,
}
EVIL = "\x1b]0;pwned\x07\x1b[2Jforged\r\n2026-01-01 forged record\u2028x"  # escape codes and line breaks


class Config:
    mode = "upper"
    arg = ""
    failures_left = 0
    lock = threading.Lock()


def log(line: str) -> None:
    sys.stderr.write(f"jobserver[{Config.mode}] {line}\n")
    sys.stderr.flush()


def probe(targets: str) -> str:
    """One line per target, `host:port result` (connected, refused, timeout, unreachable...),
    then `uid N`."""
    import socket

    out = []
    for target in filter(None, targets.split(",")):
        host, _, port = target.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=3):
                result = "connected"
        except TimeoutError:
            result = "timeout"
        except ConnectionRefusedError:
            result = "refused"
        except OSError as exc:
            result = f"error-{exc.errno}"
        out.append(f"{target} {result}\n")
    return "".join(out) + f"uid {os.getuid()}\n"


class BadBody(Exception):
    """The request body is not valid chunked encoding."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as pfs's client reuses connections
    disable_nagle_algorithm = True  # headers and body are two writes: no ~40 ms delayed-ACK stall
    server_version = "pfs-test-jobserver"

    # ---- request bodies ------------------------------------------------------------
    def body(self) -> Iterator[bytes]:
        """The request body in pieces of at most PIECE bytes."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            yield from self._chunked()
            return
        left = int(self.headers.get("Content-Length") or 0)
        while left > 0:
            piece = self.rfile.read(min(left, PIECE))
            if not piece:
                raise BadBody(f"body ended {left} bytes early")
            left -= len(piece)
            yield piece

    def _chunked(self) -> Iterator[bytes]:
        while True:
            line = self.rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise BadBody("bad chunk size line")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise BadBody("bad chunk size") from exc
            if size == 0:
                while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            while size > 0:
                piece = self.rfile.read(min(size, PIECE))
                if not piece:
                    raise BadBody("body ended inside a chunk")
                size -= len(piece)
                yield piece
            if self.rfile.readline(1024) not in (b"\r\n", b"\n"):
                raise BadBody("missing CRLF after a chunk")

    def drain(self) -> int:
        return sum(len(p) for p in self.body())

    # ---- answers -------------------------------------------------------------------
    def send_text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_stream(self, pieces: Iterator[bytes]) -> None:
        """Answer with the transformed body, spooled to a temporary file first: the job
        protocol asks a server to read the whole request before it answers (pfs sends the
        body, then reads the answer), and spooling keeps memory bounded at any size."""
        with tempfile.SpooledTemporaryFile(max_size=PIECE * 16) as spool:
            for piece in pieces:
                spool.write(piece)
            size = spool.tell()
            spool.seek(0)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            while piece := spool.read(PIECE):
                self.wfile.write(piece)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        log(f"{self.address_string()} {format % args}")

    # ---- routes --------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_text(200, f"pfs test job server ({Config.mode})\n")

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        try:
            self.handle_post()
        except BadBody as exc:
            self.close_connection = True
            self.send_text(400, f"bad request body: {exc}\n")

    def handle_post(self) -> None:
        raw = self.path.split("?", 1)[0]
        if raw.startswith("/map/"):
            kind, path = "map", urllib.parse.unquote(raw[len("/map/") :])
        elif raw == "/reduce":
            kind, path = "reduce", ""
        else:
            self.drain()
            self.send_text(404, f"no route {raw}\n")
            return
        mode, arg = Config.mode, Config.arg
        if mode == "crash" or (mode == "crashon" and arg in path):
            log(f"crashing on {self.requestline}")
            os._exit(3)
        if mode == "hang":
            log(f"hanging on {self.requestline}")
            threading.Event().wait()
        if mode == "slow":
            time.sleep(float(arg))
        if mode == "meet":  # MINE:THEIRS: make file MINE, then answer only once THEIRS exists
            mine, theirs = arg.split(":", 1)
            open(mine, "a").close()
            deadline = time.monotonic() + 20
            while not os.path.exists(theirs):
                if time.monotonic() > deadline:
                    self.drain()
                    self.send_text(500, f"meet: {theirs} never appeared\n")
                    return
                time.sleep(0.05)
        if mode == "flaky":
            with Config.lock:
                fail = Config.failures_left > 0
                Config.failures_left -= fail
            if fail:
                self.drain()
                self.send_text(500, "flaky: failing on purpose\n")
                return
        if mode == "probe":  # what a job can reach from where it runs: PROBE_TARGETS=host:port,...
            self.drain()
            self.send_text(200, probe(os.environ.get("PROBE_TARGETS", "")))
            return
        if mode == "evil":  # what a hostile job prints and answers, to be shown inert
            self.drain()
            log(EVIL)
            self.send_text(500, EVIL)
            return
        if mode == "fail500" or (mode == "failon" and arg in path):
            self.drain()
            self.send_text(500, f"{mode}: failing on purpose for {path or kind!r}\n")
            return
        if mode == "failbody":
            data = b"".join(self.body())
            if arg.encode() in data:
                self.send_text(422, f"failbody: {path or kind!r} contains {arg!r}\n")
            else:
                self.send_stream(iter([data.upper()]))
            return
        if mode == "wc":
            self.send_text(200, wc_map(path, self.body()) if kind == "map" else wc_reduce(self.body()))
        elif mode == "cat" or kind == "reduce":
            self.send_stream(self.body())
        else:
            self.send_stream(p.upper() for p in self.body())


def wc_map(path: str, pieces: Iterator[bytes]) -> str:
    lines = words = size = 0
    in_word = False
    for piece in pieces:
        size += len(piece)
        lines += piece.count(b"\n")
        words += len(piece.split())
        if in_word and not piece[:1].isspace():
            words -= 1  # a word that goes on from the previous piece
        in_word = not piece[-1:].isspace()
    return f"{path} {lines} {words} {size}\n"


def wc_reduce(pieces: Iterator[bytes]) -> str:
    totals = [0, 0, 0]
    rest = b""

    def add(line: bytes) -> None:
        fields = line.split()
        if len(fields) >= 3:
            for i, value in enumerate(fields[-3:]):
                totals[i] += int(value)

    for piece in pieces:
        *lines, rest = (rest + piece).split(b"\n")
        for line in lines:
            add(line)
    add(rest)
    return "{} {} {}\n".format(*totals)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in MODES or len(argv) - 1 < MODES[argv[0]]:
        sys.stderr.write(f"usage: jobserver.py MODE [ARG]; modes: {', '.join(MODES)}\n")
        return 64
    Config.mode = argv[0]
    Config.arg = argv[1] if len(argv) > 1 else ""
    if Config.mode == "exit":
        sys.stderr.write("boom\n")
        sys.stderr.flush()
        return 2
    if Config.mode == "noserve":
        log("not serving; sleeping forever")
        while True:
            time.sleep(3600)
    if Config.mode == "slowstart":
        time.sleep(float(Config.arg))
    if Config.mode == "flaky":
        Config.failures_left = int(Config.arg)
    port = int(os.environ.get("PORT") or 80)
    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True
    log(f"listening on 0.0.0.0:{port}")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
