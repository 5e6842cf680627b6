"""A store that is down is a 503 with Retry-After, never a 500; a node waits for its
stores instead of exiting; `pfs serve` announces only what is true."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import ServerProc, free_port
from pg import PostgresServer

pytestmark = pytest.mark.cluster


def pg_root() -> Path:
    return Path(f"/tmp/pfs-pg-{uuid.uuid4().hex[:8]}")  # not under pytest's 0700 dirs: postgres may not be us


def test_kill9_of_postgresql_under_load_gives_503_never_500(tmp_path: Path) -> None:
    pg = PostgresServer(pg_root()).start()
    pg.wait_ready()
    srv = ServerProc(tmp_path / "data", env={"PFS_META_URL": pg.url()}).start()
    statuses: Counter[int] = Counter()
    no_retry_after: list[str] = []
    acked: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def load(worker: int) -> None:
        with httpx.Client(base_url=srv.url, timeout=30) as h:
            i = 0
            while not stop.is_set():
                i += 1
                path = f"w{worker}/f{i}.txt"
                for method, url, body in (
                    ("POST", f"/file/{path}", b"x" * 100),
                    ("GET", f"/file/{path}", None),
                    ("GET", "/log?limit=3", None),
                    ("GET", "/branch", None),
                    ("POST", "/commit", None),
                ):
                    try:
                        r = h.request(method, url, content=body)
                    except httpx.TransportError:
                        continue
                    with lock:
                        statuses[r.status_code] += 1
                        if r.status_code == 503 and "retry-after" not in r.headers:
                            no_retry_after.append(url)
                        if method == "POST" and url.startswith("/file") and r.status_code == 201:
                            acked.append(path)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        pg.kill9()
        time.sleep(4)  # requests keep coming while the database is gone
        pg.restart()
        time.sleep(4)  # ... and after it is back
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    try:
        assert statuses[500] == 0, (statuses, srv.log_path.read_text()[-3000:])
        assert statuses[503] > 0, statuses  # the outage was seen
        assert not no_retry_after
        assert set(statuses) <= {200, 201, 404, 409, 503}, statuses
        # back to normal: writes and reads work, acknowledged writes are there
        with httpx.Client(base_url=srv.url, timeout=30) as h:
            deadline = time.monotonic() + 30
            while h.post("/file/after.txt", content=b"ok").status_code != 201:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert h.post("/commit").status_code == 201
            missing = [p for p in acked if h.get(f"/file/{p}").status_code != 200]
            assert not missing, missing[:5]
    finally:
        srv.stop()
        pg.stop()


def test_a_node_started_while_postgresql_is_down_waits_and_then_serves(tmp_path: Path) -> None:
    pg = PostgresServer(pg_root())  # made, not started: its port refuses connections
    srv = ServerProc(tmp_path / "data", env={"PFS_META_URL": pg.url()})
    srv.start(wait=False)
    try:
        deadline = time.monotonic() + 20
        while True:  # liveness answers at once...
            try:
                if httpx.get(srv.url + "/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.05)
        ready = httpx.get(srv.url + "/ready")
        assert ready.status_code == 503 and "retry-after" in ready.headers  # ... readiness does not
        r = httpx.post(srv.url + "/file/a.txt", content=b"x")
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
        assert httpx.get(srv.url + "/branch").status_code == 503
        time.sleep(2)
        assert srv.proc is not None and srv.proc.poll() is None  # still running, not exited
        assert "retrying in" in srv.log_path.read_text()  # and says what it waits for

        pg.start()
        pg.wait_ready()
        deadline = time.monotonic() + 60
        while httpx.get(srv.url + "/ready").status_code != 200:
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.2)
        assert httpx.post(srv.url + "/file/a.txt", content=b"x").status_code == 201
        assert httpx.post(srv.url + "/commit").status_code == 201
        assert "password" not in srv.log_path.read_text() and pg.password not in srv.log_path.read_text()
    finally:
        srv.stop()
        pg.stop()


def test_serve_on_a_busy_port_fails_without_announcing_or_creating_anything(tmp_path: Path) -> None:
    port = free_port()
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        data = tmp_path / "never"
        r = subprocess.run(
            [sys.executable, "-m", "pfs.cli", "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", str(data)],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "HOME": str(tmp_path)},
        )
    assert r.returncode == 1
    assert "pfs serving" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "127.0.0.1" in lines[0], r.stderr
    assert not data.exists()
    assert not (tmp_path / ".pfs").exists()


def test_serve_announces_once_listening_with_the_real_port(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pfs.cli", "serve", "--addr", "127.0.0.1:0", "--data-dir", str(tmp_path / "d")],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        for _ in range(20):  # log lines may come first (no Docker Engine here, say)
            if not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ", line):
                break
            line = proc.stderr.readline()
        assert line.startswith("pfs serving "), line
        url = line.split(" on ")[-1].strip()
        assert not url.endswith(":0")
        assert httpx.get(url + "/ping", timeout=5).status_code == 200  # true the moment it is said
        assert httpx.get(url + "/ready", timeout=5).status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_object_store_down_gives_503_and_back_up_serves_again(tmp_path: Path) -> None:
    from seaweed import SeaweedServer

    weed = SeaweedServer(tmp_path / "weed").start()
    bucket = weed.new_bucket("down")
    srv = ServerProc(tmp_path / "data", env={"PFS_OBJECTS_URL": f"s3://{bucket}/r", **weed.env()}).start()
    try:
        big = os.urandom(64 << 10)  # stored as an object, not inline in its tree
        assert httpx.post(srv.url + "/file/big.bin", content=big).status_code == 201
        assert httpx.post(srv.url + "/commit").status_code == 201
        weed.stop()
        for method, path, body in (
            ("GET", "/file/big.bin", None),
            ("POST", "/file/new.bin", os.urandom(64 << 10)),
            ("GET", "/ready", None),
        ):
            r = httpx.request(method, srv.url + path, content=body, timeout=60)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert "retry-after" in r.headers
            assert weed.secret_key not in r.text
        assert httpx.get(srv.url + "/branch").status_code == 200  # what needs no object still works
        weed.start()
        deadline = time.monotonic() + 60
        while httpx.get(srv.url + "/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert httpx.get(srv.url + "/file/big.bin").content == big
    finally:
        srv.stop()
        weed.stop()
