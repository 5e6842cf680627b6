"""Shared fixtures: the server under test, in this process or as a real `pfs serve` process.

The HTTP-contract tests (routes, answers, errors, the Python client) talk to `pfs serve`'s
ASGI app in this process: fixtures `app`, `client`, `http` (`AppServer`). No process is
started per test, which is what made those tests slow. What only a process shows stays on a
real `pfs serve` subprocess (`ServerProc`, fixtures `server` and `url`): kill -9 and
restarts, slow or stalled clients and the guard in front of uvicorn, a busy port and the
announcement, the log file, the CLI, several nodes on shared stores.

Markers (registered in pyproject.toml, `--strict-markers`) are also set here, at
collection: `cluster` and `docker` from the fixtures a test uses, so a new test cannot
forget them; what fixtures do not show, and `slow`, from the MARKS table below.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
import anyio.from_thread
import httpx
import pytest
from pg import PostgresServer, postgres_fixture  # noqa: F401
from seaweed import SeaweedServer, seaweed_fixture  # noqa: F401
from starlette.types import ASGIApp, Message, Scope

from pfs import Client
from pfs.config import Config
from pfs.http.api import create_app

# SQLite + local directory; PostgreSQL + S3 (SeaweedFS), which starts servers: `cluster`.
BACKENDS = ["embedded", pytest.param("cluster", marks=pytest.mark.cluster)]
# Fixtures that start PostgreSQL or SeaweedFS, or need a Docker engine: a test that uses one
# (directly or through another fixture) gets the marker. Fixtures reached only through
# `request.getfixturevalue` are not seen: mark their params (like BACKENDS) or the tests.
MARK_BY_FIXTURE = {"postgres": "cluster", "seaweed": "cluster", "job_image": "docker"}
# What fixtures do not show, and `slow`, by test file, then test name, "*" (every test in
# the file) or "[value]" (the cases with that fixture or parametrize value). `slow`: more
# than ~3.5 s on its own on a quiet 2-core machine, or a file of such tests (crash
# recovery, concurrency): `scripts/test.sh --quick` leaves them out.
MARKS: dict[str, dict[str, tuple[str, ...]]] = {
    "test_backends.py": {"[s3]": ("cluster",), "[postgres]": ("cluster",)},
    "test_bigfile.py": {"*": ("slow",)},
    "test_many_files.py": {"*": ("slow",)},
    "test_concurrency.py": {"*": ("slow",)},
    "test_crash.py": {"*": ("slow",)},
    "test_deploy.py": {
        "*": ("docker", "slow"),
        "test_compose_two_nodes_share_postgres_and_s3": ("cluster",),
        "test_stack_with_swarm_runtime": ("cluster",),
    },
    "test_job_failures.py": {"test_a_job_broken_as_a_whole_stops_early": ("slow",)},
    "test_jobs.py": {
        "test_s3_input_through_a_job": ("cluster",),
        "test_changing_1_of_10000_files_maps_1": ("slow",),
        "test_cli_job_verbs": ("slow",),
        "test_commit_run_returns_at_once_and_reports_progress": ("slow",),
        "test_hanging_worker_times_out": ("slow",),
        "test_kill9_during_a_run_resumes_and_leaves_no_workers": ("slow",),
        "test_worker_that_never_starts_fails_the_job": ("slow",),
    },
    "test_runtime.py": {"[docker]": ("docker",), "[swarm]": ("docker",)},
    "test_s3input.py": {"test_unreachable_endpoint_is_unavailable": ("slow",)},
    "test_slow_clients.py": {
        "test_1000_stalled_sockets_do_not_slow_other_clients": ("slow",),
        "test_a_client_that_stops_reading_is_dropped": ("slow",),
        "test_a_slow_upload_that_keeps_sending_succeeds": ("slow",),
        "test_stalled_headers_and_bodies_are_dropped": ("slow",),
    },
    "test_sync.py": {
        "[s3]": ("cluster",),
        "test_clone_copies_all_branches_and_history_then_pull_sends_only_the_change": ("slow",),
        "test_interrupted_transfer_moves_no_ref_and_resumes_with_fewer_bytes": ("slow",),
        "test_push_is_a_compare_and_swap_fast_forward_unless_forced": ("slow",),
    },
}


def _listed_marks(item: pytest.Item) -> set[str]:
    callspec = getattr(item, "callspec", None)
    values = [v for v in callspec.params.values() if isinstance(v, str)] if callspec is not None else []
    function = getattr(item, "originalname", item.name)
    out: set[str] = set()
    for key, marks in MARKS.get(item.path.name, {}).items():
        if key == "*" or key == function or (key.startswith("[") and key[1:-1] in values):
            out.update(marks)
    return out


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    seen: set[str] = set()
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        marks = {mark for fixture, mark in MARK_BY_FIXTURE.items() if fixture in used} | _listed_marks(item)
        for name in sorted(marks):
            item.add_marker(getattr(pytest.mark, name))
        module = getattr(item, "module", None)
        if module is not None and item.path.name not in seen:
            seen.add(item.path.name)
            gone = [k for k in MARKS.get(item.path.name, {}) if k != "*" and k[0] != "[" and not hasattr(module, k)]
            if gone:
                raise pytest.UsageError(f"tests/conftest.py MARKS names tests {item.path.name} no longer has: {gone}")


class Storage:
    """Where a test server keeps its data, with backdoors for tests that look at (or
    damage) the stored bytes themselves: the embedded data dir, or PostgreSQL + S3."""

    def __init__(self, data_dir: Path, pg: PostgresServer | None = None, weed: SeaweedServer | None = None) -> None:
        self.data_dir = data_dir
        self.pg_url = pg.new_database() if pg is not None else None
        self.weed = weed
        self.bucket = weed.new_bucket("pfs") if weed is not None else None

    @property
    def kind(self) -> str:
        return "cluster" if self.pg_url else "embedded"

    def env(self) -> dict[str, str]:
        if self.pg_url is None or self.weed is None:
            return {}
        return {"PFS_META_URL": self.pg_url, "PFS_OBJECTS_URL": f"s3://{self.bucket}/repo", **self.weed.env()}

    def sql_url(self) -> str:
        if self.pg_url is None:
            return "sqlite:///" + os.path.join(self.data_dir, "meta.sqlite")
        return self.pg_url.replace("postgresql://", "postgresql+psycopg://", 1)

    def object_sizes(self) -> dict[str, int]:
        """Stored size of every object, by storage name."""
        if self.weed is None:
            root = Path(self.data_dir) / "objects"
            return {str(p): p.stat().st_size for p in root.rglob("*") if p.is_file()}
        pages = self.weed.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix="repo/")
        return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents") or ()}

    @staticmethod
    def key_of(name: str) -> str:
        """The object key (64 hex digits) stored under a storage name."""
        parts = name.replace("\\", "/").split("/")
        return parts[-2] + parts[-1]

    def delete(self, name: str) -> None:
        if self.weed is None:
            Path(name).unlink()
        else:
            self.weed.client().delete_object(Bucket=self.bucket, Key=name)

    def corrupt(self, name: str) -> None:
        """Flip a byte in the middle of a stored object, behind pfs's back."""
        if self.weed is None:
            raw = bytearray(Path(name).read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            Path(name).write_bytes(bytes(raw))
            return
        s3 = self.weed.client()
        raw = bytearray(s3.get_object(Bucket=self.bucket, Key=name)["Body"].read())
        raw[len(raw) // 2] ^= 0xFF
        s3.put_object(Bucket=self.bucket, Key=name, Body=bytes(raw))


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """Each test that takes it runs once per backend."""
    if request.param == "embedded":
        return Storage(tmp_path / "data")
    return Storage(tmp_path / "data", request.getfixturevalue("postgres"), request.getfixturevalue("seaweed"))


def tar_of(files: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> io.BytesIO:
    """A tar archive (PAX: names of any length) of regular files, in the order given,
    ready to be read: what most tests upload (the archive reader's own tests, which vary
    formats and member types, build theirs member by member)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items() if isinstance(files, Mapping) else files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProc:
    """A pfs server subprocess that tests can start, kill -9 and restart on one data dir."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        storage: Storage | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.storage = storage or Storage(data_dir)
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.args = [*(args or []), *(["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])] if tls else [])]
        self.verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(tls[0])) if tls else True
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self, env: dict[str, str] | None = None, wait: bool = True) -> ServerProc:
        full_env = {
            **os.environ,
            "PFS_DATA_DIR": str(self.data_dir),
            **self.storage.env(),
            **self.extra_env,
            **(env or {}),
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pfs.cli", "serve", "--addr", f"127.0.0.1:{self.port}", *self.args],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait:
            return self
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pfs serve exited with {self.proc.returncode}: {self.log()}")
            try:
                if httpx.get(self.url + "/ready", timeout=1, verify=self.verify).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("pfs serve did not come up: " + self.log())

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


# ---- `pfs serve`'s app in this process ------------------------------------------------
log = logging.getLogger("pfs.tests.app")


class _Exchange:
    """One request and its answer between a caller's thread and the app on the event loop,
    with what uvicorn does at the edges: the request body is handed over piece by piece as
    the app reads it (a generator is not drained first); the caller gets the response once
    its headers are sent, and the body piece by piece as it reads; an app that fails after
    its headers leaves the body cut short, which the caller sees as a dropped connection;
    a caller that stops reading is a client gone away (`http.disconnect`, sends ignored)."""

    def __init__(self, head: bool) -> None:  # on the event loop (portal.call): Events need it
        self.head = head
        self.body_tx, self.body_rx = anyio.create_memory_object_stream[bytes](0)
        self.out_tx, self.out_rx = anyio.create_memory_object_stream[bytes](0)
        self.answered = anyio.Event()  # the response's headers are out, or the app ended
        self.ended = anyio.Event()  # the response is complete, or the client went away
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body_read = False
        self.complete = False
        self.gone = False

    async def receive(self) -> Message:
        if not self.body_read and not self.gone:
            try:
                return {"type": "http.request", "body": await self.body_rx.receive(), "more_body": True}
            except anyio.EndOfStream:
                self.body_read = True
                if not self.gone:
                    return {"type": "http.request", "body": b"", "more_body": False}
        await self.ended.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.gone:
            return
        if message["type"] == "http.response.start":
            self.status, self.headers = message["status"], list(message.get("headers", []))
            self.answered.set()
        elif message["type"] == "http.response.body":
            body = bytes(message.get("body", b""))
            try:
                if body and not self.head:  # a HEAD answer has no body on the wire
                    await self.out_tx.send(body)
            except anyio.BrokenResourceError:
                self.gone = True
                return
            if not message.get("more_body", False):
                self.complete = True
                self.out_tx.close()
                self.ended.set()

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        """The app on one request, with uvicorn's last resort: a 500 when it fails (or
        returns) before answering, a connection closed mid-body when it fails after."""
        try:
            await app(scope, self.receive, self.send)
            if not self.answered.is_set() and not self.gone:
                raise RuntimeError("ASGI callable returned without starting response.")
        except Exception:
            log.exception("Exception in ASGI application")
            if not self.answered.is_set():
                headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21")]
                await self.send({"type": "http.response.start", "status": 500, "headers": headers})
                await self.send({"type": "http.response.body", "body": b"Internal Server Error"})
        finally:
            self.out_tx.close()  # a body not complete by now is cut short
            self.answered.set()
            self.ended.set()

    async def push(self, chunk: bytes) -> bool:
        """Hand the app one piece of the request body, once it reads; False if it answered
        first: pfs's handlers read the whole body before they answer, so one that answers
        early (an error, a 413) reads no more, and the rest is not sent."""
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def stop_when_answered() -> None:
                    await self.answered.wait()
                    scope.cancel()

                tg.start_soon(stop_when_answered)
                await self.body_tx.send(chunk)
                tg.cancel_scope.cancel()
            return True
        return False

    def hang_up(self) -> None:
        """The client is done: it closed the response (read to the end or not), or its
        request body failed on its side."""
        if not self.complete:
            self.gone = True
        self.out_rx.close()
        self.ended.set()


class _ResponseBody(httpx.SyncByteStream):
    def __init__(self, portal: anyio.from_thread.BlockingPortal, exchange: _Exchange) -> None:
        self.portal = portal
        self.exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        while True:
            try:
                piece = self.portal.call(self.exchange.out_rx.receive)
            except anyio.EndOfStream:
                break
            except RuntimeError as exc:  # the portal is not running: the app has been stopped
                raise httpx.ReadError("the server stopped") from exc
            yield piece
        if not self.exchange.complete:
            raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # the app has been stopped already
            self.portal.call(self.exchange.hang_up)


class AppTransport(httpx.BaseTransport):
    """httpx (and so `pfs.Client`) to an ASGI app in this process, the app running on one
    event loop thread. Requests reach it as uvicorn hands them over: the scope built from the
    raw request target (`raw_path` byte for byte, `path` percent-decoded), headers as sent.

    Starlette's TestClient reads a request body whole before the app sees a byte, and
    httpx's ASGITransport is async only, keeps a response whole and runs no lifespan; this
    streams both ways, so streamed uploads, early 413s and cut-short downloads mean the same
    as over a socket."""

    def __init__(self, app: ASGIApp, portal: anyio.from_thread.BlockingPortal, state: dict[str, Any]) -> None:
        self.app = app
        self.portal = portal
        self.state = state
        self.running: set[Future[None]] = set()
        self.stopped = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.stopped:
            raise httpx.ConnectError("the server has been stopped", request=request)
        target, _, query = request.url.raw_path.partition(b"?")
        path = target.decode("ascii")
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": (request.url.host, request.url.port or 80),
            "client": ("127.0.0.1", 40000),
            "scheme": request.url.scheme,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "state": self.state.copy(),
            "method": request.method,
            "path": unquote(path) if "%" in path else path,
            "raw_path": target,
            "query_string": query,
        }
        exchange = self.portal.call(_Exchange, request.method == "HEAD")
        task = self.portal.start_task_soon(exchange.run, self.app, scope)
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        assert isinstance(request.stream, httpx.SyncByteStream)
        try:
            for piece in request.stream:
                if piece and not self.portal.call(exchange.push, bytes(piece)):
                    break
        except BaseException:  # the body failed at the client: the connection drops mid-request
            self.portal.call(exchange.hang_up)
            raise
        finally:
            self.portal.call(exchange.body_tx.close)
        self.portal.call(exchange.answered.wait)
        return httpx.Response(
            exchange.status, headers=exchange.headers, stream=_ResponseBody(self.portal, exchange), request=request
        )


class AppServer:
    """`pfs serve`'s app in this process: a Repository opened by `Config` from the same
    environment a `ServerProc` gets (embedded, or PostgreSQL + S3 for the `cluster`
    backend), the node's jobs service, the app's lifespan run as uvicorn runs it. Left out:
    the process and the HTTP server (sockets, uvicorn's parser, the slow-client guard, the
    log file): tests of those use `ServerProc`."""

    url = "http://pfs.test"

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, storage: Storage | None = None) -> None:
        self.data_dir = data_dir
        self.storage = storage or Storage(data_dir)
        self.extra_env = env or {}
        self.state: dict[str, Any] = {}

    def start(self) -> AppServer:
        # The environment is read once, as `pfs serve` reads it when it starts; it is not
        # left set, where it would reach other servers the test starts.
        with pytest.MonkeyPatch.context() as mp:
            for key, value in {**self.storage.env(), **self.extra_env}.items():
                mp.setenv(key, value)
            cfg = Config.from_env(str(self.data_dir))
            self.repos = cfg.open_repos()
            self.repo = self.repos.default
            self.app = create_app(self.repos, cfg.jobs(self.repos))
        self._portal_cm: AbstractContextManager[anyio.from_thread.BlockingPortal] = (
            anyio.from_thread.start_blocking_portal(name="pfs-app")
        )
        self.portal = self._portal_cm.__enter__()
        to_app, from_app = anyio.create_memory_object_stream[Message](math.inf)
        to_us, self._from_app = anyio.create_memory_object_stream[Message](math.inf)
        self._to_app = to_app
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        self._lifespan = self.portal.start_task_soon(self.app, scope, from_app.receive, to_us.send)
        try:
            self._lifespan_step("startup")
        except BaseException:
            self._stop_loop()
            raise
        self.transport = AppTransport(self.app, self.portal, self.state)
        return self

    def _lifespan_step(self, step: str) -> None:
        self.portal.call(self._to_app.send, {"type": f"lifespan.{step}"})
        reply = self.portal.call(self._from_app.receive)
        if reply["type"] != f"lifespan.{step}.complete":
            raise RuntimeError(f"the app's lifespan {step} failed: {reply.get('message', '')}")

    def _stop_loop(self) -> None:
        try:
            self.portal.call(self.portal.stop, True)
        finally:
            self._portal_cm.__exit__(None, None, None)
            for part in (self.repos.db, self.repos.objects):  # `pfs serve` leaves that to its exit
                close = getattr(part, "close", None)
                if close is not None:
                    close()

    def stop(self) -> None:
        """Like uvicorn's shutdown: requests still running are cancelled (long polls), then
        the lifespan's shutdown (the jobs service stops)."""
        self.transport.stopped = True
        for task in list(self.transport.running):
            task.cancel()
        try:
            self._lifespan_step("shutdown")
        finally:
            self._stop_loop()

    def client(self, timeout: float = 300.0) -> Client:
        return Client(self.url, timeout=timeout, transport=self.transport)

    def http(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout, transport=self.transport)


# ---- fixtures ------------------------------------------------------------------------
@pytest.fixture
def app(storage: Storage) -> Iterator[AppServer]:
    """The app on each backend, fresh for each test."""
    a = AppServer(storage.data_dir, storage=storage).start()
    yield a
    a.stop()


@pytest.fixture
def client(app: AppServer) -> Iterator[Client]:
    with app.client() as c:
        yield c


@pytest.fixture
def http(app: AppServer) -> Iterator[httpx.Client]:
    with app.http() as h:
        yield h


@pytest.fixture
def server(storage: Storage) -> Iterator[ServerProc]:
    """A real `pfs serve` process on each backend, for tests of what only a process shows."""
    s = ServerProc(storage.data_dir, storage=storage).start()
    yield s
    s.stop()


@pytest.fixture
def url(server: ServerProc) -> str:
    return server.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, through its chromedriver (the console's tests)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not Path(driver_path).exists():
        pytest.fail("chromedriver is missing: apt-get install chromium chromium-driver (.ci/run does)")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(arg)
    if Path("/usr/bin/chromium").exists():
        opts.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def h(srv: AppServer) -> Iterator[httpx.Client]:
    """An HTTP client of the module's `srv` (each module that uses `h` defines `srv`)."""
    with srv.http(timeout=60) as c:
        yield c
