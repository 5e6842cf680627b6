"""`pfs serve`: one node, from an address and a configuration to a listening server.

Order matters to the people and tools around a node:
1. bind the address first: a busy port fails at once, before anything is created or
   announced (a client once trusted the announcement and wrote to another server);
2. announce only once the server accepts connections;
3. shared stores (PostgreSQL, S3) are opened in the background, with backoff, saying so
   in the log: the node answers its liveness route (`/ping`) at once and its readiness
   route (`/ready`) with 503 until the stores answer, which is what compose, Swarm and
   load balancers check. Embedded storage opens before serving: it is local, quick, and
   an error there (a bad data directory) is a mistake to report, not to wait out.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import PfsError, Unavailable
from ..storage import collect
from .api import Node, OpenNode, create_app
from .auth import Gate, Throttle
from .guard import Limits, guarded_protocol
from .logs import RequestIds, setup_logging

if TYPE_CHECKING:
    from ..access.service import Access
    from ..config import Config
    from ..jobs.service import JobEngine
    from ..repository.registry import Repositories

log = logging.getLogger("pfs.node")
FIRST_RETRY = 0.5  # seconds; doubles up to MAX_RETRY
MAX_RETRY = 30.0


class StartingNode(Node):
    """A node whose stores are opened by a background thread, retried with backoff until
    they answer. Until then every route that needs them answers 503 with Retry-After."""

    def __init__(self, cfg: Config, on_fatal: Callable[[str], None], need_users: str | None = None) -> None:
        self.cfg = cfg
        self.on_fatal = on_fatal
        self.need_users = need_users  # the refusal to give if the server has no users
        self._repos: Repositories | None = None
        self._jobs: JobEngine | None = None
        self._access: Access | None = None
        self._why = "opening the stores"
        self._delay = FIRST_RETRY
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def repos(self) -> Repositories:
        if self._repos is None:
            exc = Unavailable(f"pfs is starting: {self._why}")
            exc.retry_after = max(1, math.ceil(self._delay))
            raise exc
        return self._repos

    @property
    def jobs(self) -> JobEngine | None:
        self.repos  # noqa: B018 - 503 while starting
        return self._jobs

    @property
    def access(self) -> Access:
        self.repos  # noqa: B018 - 503 while starting
        assert self._access is not None
        return self._access

    def start(self) -> None:
        self._thread = threading.Thread(target=self._open, name="pfs-open-stores", daemon=True)
        self._thread.start()

    def _open(self) -> None:
        while not self._stop.is_set():
            try:
                repos = self.cfg.open_repos()
                access = self.cfg.open_access(repos)
                if self.need_users and not access.identity.enabled():
                    self.on_fatal(self.need_users)
                    return
                jobs = self.cfg.jobs(repos)
                jobs.start()
            except Unavailable as exc:
                self._why = exc.message
                log.warning("%s; retrying in %.1f s", exc.message, self._delay)
            except PfsError as exc:  # a configuration mistake: waiting will not fix it
                log.error("cannot start: %s", exc.message)
                self.on_fatal(exc.message)
                return
            except Exception as exc:
                self._why = f"{type(exc).__name__}: {exc}"
                log.exception("opening the stores failed; retrying in %.1f s", self._delay)
            else:
                self._access, self._jobs, self._repos = access, jobs, repos
                if self._delay > FIRST_RETRY:
                    log.warning("the stores answer: ready")
                return
            self._stop.wait(self._delay)
            self._delay = min(self._delay * 2, MAX_RETRY)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._jobs is not None:
            self._jobs.close()
        if self._access is not None:
            self._access.close()
        if self._repos is not None:
            collect.close_board(self._repos.db)  # leave the cluster's nodes: a GC no longer waits for this one
            self._repos.db.settle()

    def readiness(self) -> tuple[bool, str]:
        if self._repos is None:
            return False, self._why
        return self._repos.default.check_stores()


def _shown(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class ByListener:
    """One server, two listeners: a request that came in on the S3 gateway's port goes to
    the gateway, everything else (the lifespan too) to the native API."""

    def __init__(self, api: ASGIApp, s3: ASGIApp, s3_port: int) -> None:
        self.api, self.s3, self.s3_port = api, s3, s3_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] == "http" and server is not None and server[1] == self.s3_port:
            await self.s3(scope, receive, send)
        else:
            await self.api(scope, receive, send)


def is_loopback(sock: socket.socket) -> bool:
    """Whether a listening socket is reachable from this machine only."""
    try:
        return ipaddress.ip_address(sock.getsockname()[0]).is_loopback
    except ValueError:
        return False


def insecure_refusal(exposed: list[str]) -> str:
    where = " and ".join(exposed)
    return (
        f"refusing to serve on {where} with no users: anyone who reaches it could read, write and delete "
        "everything. Create the first admin (`pfs admin init`, or PFS_ADMIN_KEY_FILE), listen on 127.0.0.1, "
        "or pass --insecure to serve anonymously anyway"
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or OSError (address in use, not an address of this machine)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.create_server(addr[:2], family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


class _Uvicorn(uvicorn.Server):
    """uvicorn, telling us once it accepts connections."""

    def __init__(self, config: uvicorn.Config, on_listening: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_listening = on_listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and not self.should_exit:
            self.on_listening()


def serve(
    cfg: Config,
    host: str,
    port: int,
    limits: Limits,
    max_connections: int,
    log_level: str = "warning",
    announce: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    s3: tuple[str, int] | None = None,
    tls: tuple[str, str] | None = None,
    insecure: bool = False,
) -> int:
    """Run a node until SIGINT/SIGTERM; returns the process's exit code. `s3`: the S3
    gateway's address, served by the same server on a second socket. `tls`: (certificate,
    key) files: both listeners speak HTTPS."""
    setup_logging(log_level)
    if tls is not None:
        import ssl

        try:  # what uvicorn will load: a bad file is one line and exit 1, before anything listens
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(*tls)
        except (OSError, ssl.SSLError) as exc:
            announce(f"error: cannot use the TLS certificate {tls[0]} and key {tls[1]}: {exc}")
            return 1
    socks: list[socket.socket] = []
    for h, p in [(host, port), *([s3] if s3 else [])]:
        try:
            socks.append(bind(h, p))
        except OSError as exc:
            for done in socks:
                done.close()
            announce(f"error: cannot listen on {h}:{p}: {exc.strerror or exc}")
            return 1
    sock = socks[0]
    fatal: list[str] = []
    server: _Uvicorn | None = None

    def on_fatal(message: str) -> None:
        fatal.append(message)
        if server is not None:
            server.should_exit = True

    exposed = [_shown(s).split("://")[1] for s in socks if not is_loopback(s)]
    need_users = insecure_refusal(exposed) if exposed and not insecure else None
    node: Node
    if cfg.shared or (cfg.objects_url or "").startswith("s3://"):
        node = StartingNode(cfg, on_fatal, need_users)
    else:
        try:
            repos = cfg.open_repos()
            access = cfg.open_access(repos)
            if need_users and not access.identity.enabled():
                raise PfsError(need_users)
            node = OpenNode(repos, cfg.jobs(repos), access)
        except (PfsError, OSError) as exc:
            for done in socks:
                done.close()
            announce(f"error: {exc.message if isinstance(exc, PfsError) else exc}")
            return 1
    if exposed and insecure:
        log.warning("serving on %s with --insecure: without users, anyone who reaches it may do anything", exposed)
    gate = Gate(Throttle(free=cfg.auth_free_failures))
    app: ASGIApp = create_app(node, gate=gate)
    scheme = "https" if tls else "http"
    where = _shown(sock, scheme)
    if s3:
        from .s3.gateway import create_s3_app

        app = ByListener(app, RequestIds(create_s3_app(node, gate=gate), front="s3"), socks[1].getsockname()[1])
        where += f", S3 gateway on {_shown(socks[1], scheme)}"
    config = uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        log_level=log_level,
        access_log=False,  # pfs's own (logs.RequestIds) has the request id and never the query string
        timeout_keep_alive=30,
        timeout_graceful_shutdown=5,  # long-polls (`/run/<id>?wait=`) must not hold up a shutdown
        limit_concurrency=max_connections,
        lifespan="on",
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    server = _Uvicorn(config, lambda: announce(f"pfs serving {cfg.describe()} on {where}"))
    server.run(sockets=socks)
    if fatal:
        announce(f"error: {fatal[0]}")
        return 1
    return 0 if server.started else 1
