"""The bench's trivial map function behind the job protocol: upper-cases each file.

stdlib only, so the same file runs as a local process and in a container built FROM
pfs-python-base:local. Listens on $PORT (default 80)."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm on, the body waits
    # for the client's delayed ACK of the headers, ~40 ms per request.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._answer(200, b"ok\n")

    def do_POST(self) -> None:
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n)
        self._answer(200, body.upper())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 128
ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "80"))), Handler).serve_forever()
