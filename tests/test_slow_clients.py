"""Slow and stalled clients cannot lock others out: headers, bodies and response reads are
bounded in time, and one address cannot take the whole connection budget."""

from __future__ import annotations

import resource
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ServerProc

STALLER = "127.0.0.2"  # another loopback address: "another client" as the server sees it


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))  # the server inherits it
    args = ["--header-timeout", "3", "--body-timeout", "2", "--send-timeout", "2", "--max-connections", "1000"]
    s = ServerProc(tmp_path_factory.mktemp("slow") / "data", args=args).start()
    yield s
    s.stop()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect(srv: ServerProc, source: str = STALLER) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10, source_address=(source, 0))
    return s


def read_all(s: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes (or `timeout` passes)."""
    s.settimeout(timeout)
    out = b""
    try:
        while piece := s.recv(65536):
            out += piece
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def test_1000_stalled_sockets_do_not_slow_other_clients(srv: ServerProc) -> None:
    socks: list[socket.socket] = []
    stop = threading.Event()
    try:
        for i in range(1000):
            try:
                s = connect(srv)
            except OSError:
                continue
            # half a request line, half a header block, or a body cut short
            s.sendall(
                [
                    b"GET /fi",
                    b"POST /file/x HTTP/1.1\r\nHost: a\r\n",
                    b"POST /file/s HTTP/1.1\r\nContent-Length: 100\r\n\r\n0123456789",
                ][i % 3]
            )
            socks.append(s)
        times: list[float] = []
        with httpx.Client(base_url=srv.url, timeout=10) as good:
            deadline = time.monotonic() + 4  # across the header timeout: before and after the drops
            while time.monotonic() < deadline:
                t0 = time.monotonic()
                r = good.get("/ping")
                times.append(time.monotonic() - t0)
                assert r.status_code == 200
                w = good.post("/file/good.txt", content=b"fine")
                assert w.status_code == 201, w.text
        assert max(times) < 1.0, max(times)
    finally:
        stop.set()
        for s in socks:
            s.close()


def test_stalled_headers_and_bodies_are_dropped(srv: ServerProc) -> None:
    half_line = connect(srv)
    half_line.sendall(b"GET /pi")
    t0 = time.monotonic()
    got = read_all(half_line, 10)
    assert got.startswith(b"HTTP/1.1 408"), got
    assert 2.5 < time.monotonic() - t0 < 6

    silent = connect(srv)  # connects and sends nothing at all
    assert read_all(silent, 10).startswith(b"HTTP/1.1 408")

    short_body = connect(srv)  # Content-Length: 100 with 10 bytes sent
    short_body.sendall(b"POST /file/short.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
    t0 = time.monotonic()
    got = read_all(short_body, 10)
    assert time.monotonic() - t0 < 6
    assert b"201" not in got
    assert httpx.get(srv.url + "/file/short.txt").status_code == 404  # nothing staged


def test_a_slow_upload_that_keeps_sending_succeeds(srv: ServerProc) -> None:
    s = connect(srv, "127.0.0.1")
    body = b"x" * 12
    s.sendall(b"POST /file/slow.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 12\r\n\r\n")
    for i in range(12):  # 12 bytes over ~4.8 s: longer than the body timeout (2 s) in all
        time.sleep(0.4)
        s.sendall(body[i : i + 1])
    got = read_all(s, 10)
    assert got.startswith(b"HTTP/1.1 201"), got
    assert httpx.get(srv.url + "/file/slow.txt").content == body


def test_huge_headers_are_refused(srv: ServerProc) -> None:
    s = connect(srv, "127.0.0.1")
    s.sendall(
        b"GET /ping HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + b"X-Junk: " + b"a" * (100 << 10) + b"\r\n\r\n"
    )
    assert read_all(s, 10).startswith(b"HTTP/1.1 431")


def test_one_address_cannot_take_every_connection(srv: ServerProc) -> None:
    socks = []
    try:
        refused = 0
        for _ in range(300):  # the per-address share is a quarter of 1000
            s = connect(srv)
            s.sendall(b"GET /pi")
            socks.append(s)
        for s in socks[250:]:
            if read_all(s, 2).startswith(b"HTTP/1.1 503"):
                refused += 1
        assert refused == 50
        assert httpx.get(srv.url + "/ping", timeout=2).status_code == 200  # another address still gets in
    finally:
        for s in socks:
            s.close()


def test_a_client_that_stops_reading_is_dropped(srv: ServerProc, tmp_path: Path) -> None:
    big = b"\x00" * (48 << 20)  # more than the socket buffers on both sides
    assert httpx.post(srv.url + "/file/big.bin", content=big, timeout=60).status_code == 201
    s = connect(srv, "127.0.0.1")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"GET /file/big.bin HTTP/1.1\r\nHost: a\r\n\r\n")
    time.sleep(5)  # read nothing for longer than the send timeout (2 s)
    t0 = time.monotonic()
    got = read_all(s, 30)
    assert len(got) < len(big)  # cut off, never sent whole
    assert time.monotonic() - t0 < 10  # reset: not even what the kernel had queued keeps coming
