"""The HTTP API (DESIGN.md section 2) on Starlette.

Handlers are thin: parse and validate the request, run the repository call in a worker
thread (storage is blocking I/O), and render plain text for curl or JSON on
`Accept: application/json`. Errors map to statuses in exactly one place, `_error`.

Each route names one handler per HTTP method (`endpoint(get=..., post=...)`, in web.py),
so a method a route does not list is a 405 by construction and HEAD only ever runs the GET
handler; each handler names the query parameters it takes (`@accepts`), so a typo, an empty
value or a repeated parameter is a 400 instead of being silently ignored. Each route's
permissions come from permissions.py; `Server.guard` checks them (and audits) before any
handler runs.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import re
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio.from_thread
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import metrics
from ..access.identity import Permission
from ..access.service import Access
from ..errors import (
    BadRequest,
    Conflict,
    FileNotFound,
    InvalidPath,
    PayloadTooLarge,
    PfsError,
    RangeNotSatisfiable,
    RunNotFound,
    Unavailable,
)
from ..jobs.service import JobEngine, Jobs
from ..jobs.spec import MAX_SPEC_BYTES, check_job_name
from ..paths import check_branch, clean_path, human_bytes, human_duration, join, parse_duration
from ..repository import gc
from ..repository.fsck import fsck
from ..repository.reader import Reader
from ..repository.registry import RepoInfo, Repositories
from ..repository.repo import Repository
from ..storage import collect
from ..storage.meta import Failure, JobRun, JobState, Run
from ..storage.trees import Commit, Entry
from ..sync import receiver, sender, wire
from . import admin, console
from .auth import PRINCIPAL_SCOPE, Gate
from .logs import REPO_SCOPE, REQUEST_ID, RequestIds
from .permissions import REPO_ROUTES, SERVER_ROUTES
from .web import (
    Params,
    accepts,
    as_aiter,
    batches,
    drain,
    endpoint,
    error_headers,
    headers_only,
    iso,
    log_text,
    one_line,
    pump,
    pump_file,
    read_json,
    read_small,
    respond,
    respond_many,
    run,
    stream_to,
    wants_json,
)

log = logging.getLogger("pfs.server")
# Bytes handed to the chunker at a time: each hand-over is a thread switch and a GIL
# round trip, and 4 MiB instead of 1 MiB made uploads ~12% faster; about 3x this is held
# per upload.
UPLOAD_BUFFER = 4 << 20
SMALL_BODY = 1 << 20  # a body of declared length at most this is received whole and stored in one worker call


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One `Range: bytes=a-b` (or `a-`, `-n`) as (first, last); None for no header, or one
    that is not a single byte range (answered whole, as HTTP allows). 416 if unsatisfiable."""
    m = _RANGE.fullmatch(header.strip()) if header else None
    if m is None or m[1] == m[2] == "":
        return None
    if m[1] == "":
        n = int(m[2])
        if n == 0:
            raise RangeNotSatisfiable(f"range {header!r} is empty", size=size)
        return max(size - n, 0), size - 1
    first = int(m[1])
    last = min(int(m[2]), size - 1) if m[2] else size - 1
    if m[2] and int(m[2]) < first:
        return None  # not a valid range: ignored
    if first >= size:
        raise RangeNotSatisfiable(f"range {header!r} starts past the end of {size} bytes", size=size)
    return first, last


def commit_json(c: Commit) -> dict[str, Any]:
    return {**c.to_json(), "time": iso(c.time)}


def commit_line(c: Commit) -> str:
    first = c.message.splitlines()[0] if c.message else ""
    return f"{c.id}    {iso(c.time)}    {c.branch}    {one_line(first)}\n"


def entry_json(path: str, entry: Entry) -> dict[str, Any]:
    if entry.is_dir:
        return {"path": path, "name": path.rpartition("/")[2], "type": "dir"}
    return {"path": path, "name": path.rpartition("/")[2], "type": "file", "size": entry.size, "hash": entry.hash}


def path_param(request: Request) -> str:
    """The `path` route parameter. The server decodes percent-escapes that are not UTF-8 to
    U+FFFD, which would silently rename the file, so the raw bytes are checked here."""
    try:
        urllib.parse.unquote_to_bytes(request.scope.get("raw_path", b"")).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPath("path is not valid UTF-8") from None
    return str(request.path_params.get("path", ""))


# ---- the node and the server ------------------------------------------------------------


class Node:
    """What the API serves: the repositories and the jobs engine, once the stores answer."""

    @property
    def repos(self) -> Repositories:
        raise NotImplementedError

    @property
    def jobs(self) -> JobEngine | None:
        raise NotImplementedError

    @property
    def access(self) -> Access:
        """Identity and audit (503 while the stores are being opened)."""
        raise NotImplementedError

    def start(self) -> None:
        """Called once the server listens; opening stores must not block liveness."""

    def close(self) -> None: ...

    def readiness(self) -> tuple[bool, str]:
        """Whether requests that need the stores can be served now, and why not."""
        return True, "ready"


class OpenNode(Node):
    """A node whose stores are already open (tests, embedded use)."""

    def __init__(self, repos: Repositories, jobs: JobEngine | None = None, access: Access | None = None) -> None:
        self._repos = repos
        self._jobs = jobs
        self._access = access if access is not None else Access.ephemeral(repos.db)

    @property
    def repos(self) -> Repositories:
        return self._repos

    @property
    def jobs(self) -> JobEngine | None:
        return self._jobs

    @property
    def access(self) -> Access:
        return self._access

    def start(self) -> None:
        if self._jobs is not None:
            self._jobs.start()

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.close()
        self._access.close()
        collect.close_board(self._repos.db)  # leave the cluster's nodes: a GC no longer waits for this one
        self._repos.db.settle()

    def readiness(self) -> tuple[bool, str]:
        return self._repos.default.check_stores()


class Server:
    def __init__(self, node: Node, gate: Gate | None = None) -> None:
        self.node = node
        self.gate = gate or Gate()

    def route(
        self, table: dict[str, dict[str, Permission]], path: str, **methods: Callable[[Request], Awaitable[Response]]
    ) -> Route:
        """A route whose handlers run behind `guard`, with the permissions `table` gives it."""
        return Route(path, endpoint(**methods).guarded(path, table[path], self.guard))

    async def guard(
        self, request: Request, need: Permission, action: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Authenticate, authorize on the repository the request addresses, run the handler,
        and audit it if it may change something. Public routes (liveness) skip all of it."""
        if need == Permission.PUBLIC:
            return await handler(request)
        access = self.node.access
        repo = await self._target_repo(request, need)
        status = 500
        try:
            await self.gate.check(request, access, need, repo)
            response = await handler(request)
            status = response.status_code
            return response
        except PfsError as exc:
            status = exc.status
            raise
        except ClientDisconnect:
            status = 499  # nginx's "client closed the request"
            raise
        finally:
            name = repo.name if repo is not None else None
            if name is None and request.url.path.startswith("/repo/"):
                name = str(request.path_params.get("name", ""))[:63] or None
            self.gate.audit(request, access, need, action, name, status)

    async def _target_repo(self, request: Request, need: Permission) -> Repository | None:
        """The repository whose role a request needs: the `/repo/<name>/` one, the one a
        `/repo/<name>` route names, or the default one."""
        if need in (Permission.USER, Permission.SERVER):
            return None
        repo: Repository | None = request.scope.get(REPO_SCOPE)
        if repo is not None:
            return repo
        if request.url.path.startswith("/repo/") and "name" in request.path_params:
            return await run(self.node.repos.get, request.path_params["name"])
        return self.node.repos.default

    def repo(self, request: Request) -> Repository:
        """The repository a request addresses: `/repo/<name>/…` (looked up by `InRepo`
        before the handler), else the default one."""
        repo: Repository | None = request.scope.get(REPO_SCOPE)
        return repo if repo is not None else self.node.repos.default

    def jobs(self, request: Request) -> Jobs:
        engine = self.node.jobs
        if engine is None:
            raise Conflict("jobs are not enabled on this server")
        return engine.of(self.repo(request))

    # ---- health ---------------------------------------------------------------------
    @accepts()
    async def ping(self, request: Request, q: Params) -> Response:
        """Liveness: the process answers (what a supervisor restarts on)."""
        return PlainTextResponse("pong\n")

    @accepts()
    async def ready(self, request: Request, q: Params) -> Response:
        """Readiness: the stores answer (what a load balancer routes on)."""
        ok, why = await run(self.node.readiness)
        if not ok:
            raise Unavailable(f"not ready: {why}")
        return respond(request, "ready\n", {"ready": True})

    @accepts()
    async def metrics_get(self, request: Request, q: Params) -> Response:
        """This process's metrics in Prometheus's text format, for a scraper."""
        body, content_type = await run(metrics.render, request.headers.get("accept"))
        return Response(body, headers={"content-type": content_type})

    # ---- the cluster's image registry ----------------------------------------------
    @accepts()
    async def image_list(self, request: Request, q: Params) -> Response:
        """The images of the cluster registry, each tag with its digest."""
        engine = self.node.jobs
        registry = engine.runtimes.registry if engine is not None else None
        if registry is None:
            raise Conflict("this server has no image registry (the operator sets PFS_REGISTRY_URL)")
        images, truncated = await run(registry.images)
        lines = [
            f"{img['repository']}:{t['tag']}\t{t['digest'] or '(no digest)'}\n" for img in images for t in img["tags"]
        ]
        if truncated:
            lines.append("... (more than listed)\n")
        body = {"registry": registry.address, "images": images, "truncated": truncated}
        return respond(request, "".join(lines), body)

    # ---- repositories --------------------------------------------------------------
    @accepts()
    async def repo_list(self, request: Request, q: Params) -> Response:
        """The repositories the caller may read."""
        identity = self.node.access.identity
        principal = request.scope[PRINCIPAL_SCOPE]

        def readable() -> list[RepoInfo]:
            return [r for r in self.node.repos.list() if identity.allowed(principal, Permission.READ, r.id)]

        infos = await run(readable)
        return respond(request, "".join(repo_line(r) for r in infos), [repo_json(r) for r in infos])

    @accepts()
    async def repo_get(self, request: Request, q: Params) -> Response:
        info = await run(self.node.repos.info, request.path_params["name"])
        return respond(request, repo_line(info), repo_json(info))

    @accepts()
    async def repo_create(self, request: Request, q: Params) -> Response:
        await drain(request)
        info = await run(self.node.repos.create, request.path_params["name"])
        return respond(request, f"Created repository {info.name}.\n", repo_json(info), status=201)

    @accepts(flags=("force",))
    async def repo_delete(self, request: Request, q: Params) -> Response:
        name = request.path_params["name"]
        await run(self.node.repos.delete, name, q.flag("force"))
        return respond(request, f"Deleted repository {name}.\n", {"name": name, "deleted": True})

    # ---- files ---------------------------------------------------------------------
    @accepts("branch", "commit")
    async def get_file(self, request: Request, q: Params) -> Response:
        view = await run(self.repo(request).view, q.get("branch"), q.get("commit"))
        return await self.read_path(request, path_param(request), view)

    @accepts("branch")
    async def put_file(self, request: Request, q: Params) -> Response:
        raw = path_param(request)
        if raw.endswith("/"):
            raise InvalidPath(f"a file path cannot end with '/': {raw[:100]!r}")
        path = clean_path(raw)
        branch = q.branch()
        length = request.headers.get("content-length")
        limit = self.repo(request).max_file_size
        if limit is not None and length and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(f"file larger than the limit of {limit} bytes")
        if length and length.isdigit() and int(length) <= SMALL_BODY:
            # a small body: received whole (its length is declared), then stored and staged
            # in one worker call; checked only when staged
            entry = await run(self.repo(request).put_file, branch, path, await request.body())
            return self._created(request, branch, path, entry)
        # fail before reading a big body (and again when staged: the branch may change meanwhile)
        await run(self.repo(request).check_writable, branch, path)
        writer = self.repo(request).writer()
        try:
            await stream_to(request, writer.write_many, UPLOAD_BUFFER)
            entry = await run(writer.finish)
        except PfsError:
            await run(writer.abort)
            await drain(request)
            raise
        except BaseException:
            writer.abort()
            raise
        await run(self.repo(request).stage_file, branch, path, entry)
        return self._created(request, branch, path, entry)

    @staticmethod
    def _created(request: Request, branch: str, path: str, entry: Entry) -> Response:
        return respond(
            request,
            f"Created {branch}/{one_line(path)}, size: {entry.size}.\n",
            {"branch": branch, "path": path, "size": entry.size, "hash": entry.hash},
            status=201,
        )

    @accepts("branch", flags=("recursive",))
    async def delete_file(self, request: Request, q: Params) -> Response:
        path = clean_path(path_param(request))
        branch = q.branch()
        n = await run(self.repo(request).delete, branch, path, q.flag("recursive"))
        return respond(request, f"Deleted {branch}/{one_line(path)}.\n", {"branch": branch, "path": path, "deleted": n})

    @accepts("branch")
    async def put_tar(self, request: Request, q: Params) -> Response:
        """Many files in one request: a tar stream unpacked under a directory, staged atomically."""
        prefix = clean_path(path_param(request), allow_root=True)
        branch = q.branch()
        reader = BodyReader(request.stream().__aiter__())
        try:  # the branch is checked (404) before the body is read
            archive = await run(self.repo(request).stage_tar, branch, prefix, reader)
        except PfsError:
            await drain(request)
            raise
        files, total = archive.files, archive.size
        return respond(
            request,
            f"Created {files} files under {branch}/{one_line(prefix)}, size: {total}.\n",
            {"branch": branch, "prefix": prefix, "files": files, "size": total},
            status=201,
        )

    async def read_path(self, request: Request, raw: str, view: Reader) -> Response:
        """A file's bytes, a directory's files concatenated (`dir/*`), or a JSON listing."""
        if raw == "*" or raw.endswith("/*"):
            return await self.get_dir(request, view, clean_path(raw[:-1], allow_root=True))
        path = clean_path(raw, allow_root=True)
        entry = await run(view.lookup, path)
        if entry is None:
            raise FileNotFound(f"{path!r} not found")
        if entry.is_dir:
            if wants_json(request):
                return await self.get_dir(request, view, path)
            raise BadRequest(f"{path or '/'} is a directory; read {path + '/' if path else ''}* to list it")
        headers = {"content-length": str(entry.size), "etag": f'"{entry.hash}"', "accept-ranges": "bytes"}
        span = byte_range(request.headers.get("range"), entry.size)
        if span is not None:
            first, last = span
            headers["content-length"] = str(last - first + 1)
            headers["content-range"] = f"bytes {first}-{last}/{entry.size}"
        status = 206 if span is not None else 200
        repo = self.repo(request)
        await run(repo.check_data, entry)
        if request.method == "HEAD":
            return headers_only("application/octet-stream", headers, status)
        body = pump_file(repo.read_range(entry, *span)) if span is not None else self._stream(repo, [entry])
        return StreamingResponse(body, status_code=status, media_type="application/octet-stream", headers=headers)

    async def get_dir(self, request: Request, view: Reader, path: str) -> Response:
        entry = await run(view.lookup, path)
        if entry is None:
            raise FileNotFound(f"directory {path or '/'!r} not found")
        if not entry.is_dir:
            raise BadRequest(f"{path!r} is a file, not a directory")
        children = view.listdir(path)
        if wants_json(request):
            return await respond_many(request, children, lambda c: "", lambda c: entry_json(join(path, c[0]), c[1]))
        if request.method == "HEAD":
            return headers_only("application/octet-stream")

        async def files() -> AsyncIterator[Entry]:
            async for batch in batches(children):
                for _, e in batch:
                    if not e.is_dir:
                        yield e

        return StreamingResponse(self._stream(self.repo(request), files()), media_type="application/octet-stream")

    async def _stream(self, repo: Repository, entries: AsyncIterator[Entry] | list[Entry]) -> AsyncIterator[bytes]:
        # Each chunk is verified before it is sent; a bad one aborts the response, so a
        # client never receives corrupt bytes as a complete, successful body.
        async for entry in as_aiter(entries):
            if entry.data is not None:
                yield entry.data
                continue
            async for piece in pump_file(repo.read_file(entry)):
                yield piece

    # ---- commits and branches ------------------------------------------------------
    @accepts()
    async def list_commits(self, request: Request, q: Params) -> Response:
        return await respond_many(request, self.repo(request).all_commits(), commit_line, commit_json)

    @accepts("branch", "message", "expect", flags=("run",), empty=("expect", "message"))
    async def commit(self, request: Request, q: Params) -> Response:
        branch = q.branch()
        if q.flag("run"):
            await run(self.jobs(request).plan)  # a broken DAG refuses before committing
        c = await run(self.repo(request).commit_branch, branch, q.get("message", "") or "", q.get("expect"))
        data = commit_json(c)
        if q.flag("run"):
            data["jobs"] = await run(self.jobs(request).submit, c.id, branch)
        return respond(request, c.id + "\n", data, status=201)

    @accepts()
    async def commit_one(self, request: Request, q: Params) -> Response:
        c = await run(self.repo(request).resolve, request.path_params["id"])
        return respond(request, commit_line(c), commit_json(c))

    @accepts()
    async def list_branches(self, request: Request, q: Params) -> Response:
        refs = await run(self.repo(request).branches)
        return respond(
            request,
            "".join(f"{name}    {head or '-'}\n" for name, head in refs),
            [{"name": name, "head": head} for name, head in refs],
        )

    @accepts("branch", "commit")
    async def create_branch(self, request: Request, q: Params) -> Response:
        name = q.get("branch")
        if not name:
            raise BadRequest("missing query parameter 'branch'")
        head = await run(self.repo(request).create_branch, name, q.get("commit"))
        return respond(
            request, f"Created branch. ({head or '-'}) -> {name}.\n", {"name": name, "head": head}, status=201
        )

    @accepts()
    async def get_branch(self, request: Request, q: Params) -> Response:
        name = check_branch(request.path_params["name"])
        head = await run(self.repo(request).branch_head, name)
        return respond(request, f"{name}    {head or '-'}\n", {"name": name, "head": head})

    @accepts()
    async def delete_branch(self, request: Request, q: Params) -> Response:
        name = check_branch(request.path_params["name"])
        await run(self.repo(request).delete_branch, name)
        return respond(request, f"Deleted branch {name}.\n", {"name": name, "deleted": True})

    @accepts("branch", "commit", "limit")
    async def log(self, request: Request, q: Params) -> Response:
        if q.get("branch") is not None and q.get("commit") is not None:
            raise BadRequest("give either commit or branch, not both")
        ref = q.get("commit") or q.branch()
        limit_s = q.get("limit")
        if limit_s is not None and not limit_s.isdigit():
            raise BadRequest("limit must be a non-negative integer")
        limit = int(limit_s) if limit_s is not None else None
        return await respond_many(request, self.repo(request).log(ref, limit), commit_line, commit_json)

    @accepts("from", "to")
    async def diff(self, request: Request, q: Params) -> Response:
        a, b = q.get("from"), q.get("to")
        if not a or not b:
            raise BadRequest("diff needs query parameters 'from' and 'to' (commits or branches)")
        changes = await run(self.repo(request).diff, a, b)  # resolves both ends: errors come first

        def item(change: tuple[str, Entry | None, Entry | None]) -> dict[str, Any]:
            path, old, new = change
            status = "A" if old is None else "D" if new is None else "M"
            return {"path": path, "status": status, "old": old and old.hash, "new": new and new.hash}

        def line(change: tuple[str, Entry | None, Entry | None]) -> str:
            d = item(change)
            return f"{d['status']}\t{one_line(d['path'])}\n"

        return await respond_many(request, changes, line, item)

    @accepts("from", "into", "branch", "strategy", "message", empty=("message",))
    async def merge(self, request: Request, q: Params) -> Response:
        if q.get("into") is not None and q.get("branch") is not None:
            raise BadRequest("give either into or branch (the same thing), not both")
        source, into = q.get("from"), q.get("into") or q.get("branch")
        if not source or not into:
            raise BadRequest("merge needs query parameters 'from' and 'into'")
        res = await run(self.repo(request).merge, source, into, q.get("strategy"), q.get("message"))
        return respond(
            request,
            f"{res.commit.id}\n",
            {**commit_json(res.commit), "kind": res.kind},
            status=200 if res.kind == "up-to-date" else 201,
        )

    @accepts("branch", "commit", "message", empty=("message",))
    async def revert(self, request: Request, q: Params) -> Response:
        target = q.get("commit")
        if not target:
            raise BadRequest("revert needs query parameter 'commit' (the commit to go back to)")
        c = await run(self.repo(request).revert, q.branch(), target, q.get("message"))
        return respond(request, c.id + "\n", commit_json(c), status=201)

    @accepts("branch")
    async def discard(self, request: Request, q: Params) -> Response:
        branch = q.branch()
        n = await run(self.repo(request).discard, branch)
        return respond(request, f"Discarded {n} uncommitted change(s) on {branch}.\n", {"discarded": n})

    @accepts(flags=("quick",))
    async def fsck(self, request: Request, q: Params) -> Response:
        rep = await run(fsck, self.repo(request), not q.flag("quick"))
        text = "".join(one_line(p) + "\n" for p in rep.problems) + (
            f"{'ok' if rep.ok else 'FAILED'}: {rep.commits} commits, {rep.trees} trees, "
            f"{rep.files} files, {rep.chunks} chunks\n"
        )
        data = {**rep.__dict__, "ok": rep.ok}
        return respond(request, text, data, status=200 if rep.ok else 500)

    @accepts("grace")
    async def du(self, request: Request, q: Params) -> Response:
        """What the repository stores and what a garbage collection would give back."""
        grace = parse_duration(q.get("grace") or "24h", "grace")
        u = await run(gc.usage, self.repo(request), grace)
        data = {
            "branches": [b.__dict__ for b in u.branches],
            **{k: v for k, v in u.__dict__.items() if k not in ("branches", "orphans_shown")},
            "orphans_shown": [commit_json(c) for c in u.orphans_shown],
            "logical": u.logical,
            "dedupe": round(u.dedupe, 3),
        }
        lines = [f"{'branch':<24} {'logical':>10} {'stored':>10} {'exclusive':>10}\n"]
        for b in u.branches:
            lines.append(
                f"{one_line(b.name):<24} {human_bytes(b.logical):>10} {human_bytes(b.stored):>10} "
                f"{human_bytes(b.exclusive):>10}\n"
            )
        lines += [
            f"stored: {u.objects} objects, {human_bytes(u.stored)}\n",
            f"reachable: {u.reachable} objects, {human_bytes(u.reachable_bytes)} "
            f"(logical {human_bytes(u.logical)}, dedupe {u.dedupe:.2f}x)\n",
            f"reclaimable: {u.reclaimable} objects, {human_bytes(u.reclaimable_bytes)} "
            f"(unreachable, last written over {grace:g} s ago)\n",
            f"unreachable, within the grace period: {u.young} objects, {human_bytes(u.young_bytes)}\n",
            f"commits no branch reaches: {u.orphans}\n",
        ]
        lines += ["  " + commit_line(c) for c in u.orphans_shown]
        lines += [one_line(p) + "\n" for p in u.problems]
        return respond(request, "".join(lines), data, status=500 if u.problems else 200)

    @accepts("grace", flags=("dry_run",))
    async def gc(self, request: Request, q: Params) -> Response:
        """Delete what no root reaches and no operation relies on (docs/design.md §9)."""
        grace = parse_duration(q.get("grace") or "24h", "grace")
        dry = q.flag("dry_run")
        c = await run(gc.collect_garbage, self.repo(request), grace, dry)
        verb = "would delete" if dry else "deleted"
        text = (
            f"{'dry run: ' if dry else ''}{verb} {c.deleted} of {c.objects} objects, {human_bytes(c.deleted_bytes)} "
            f"of {human_bytes(c.stored)}; {c.commits} commit(s) no branch reaches, {c.runs} of their job run(s)"
            f"{f'; {c.tmp_files} temporary file(s)' if c.tmp_files else ''} ({c.seconds:g} s)\n"
        )
        text += "".join(one_line(p) + "\n" for p in c.problems)
        return respond(request, text, c.__dict__, status=500 if c.problems else 200)

    @accepts()
    async def retention_list(self, request: Request, q: Params) -> Response:
        rules = await run(self.repo(request).retention)
        data = [{"branch": b, "keep": keep, "applied": at} for b, (keep, at) in sorted(rules.items())]
        text = "".join(f"{one_line(b)}    {human_duration(keep)}\n" for b, (keep, _) in sorted(rules.items()))
        return respond(request, text, data)

    @accepts("keep")
    async def retention_put(self, request: Request, q: Params) -> Response:
        """Keep the data of the branch's commits younger than `keep` (and of its head)."""
        branch = check_branch(request.path_params["name"])
        given = q.get("keep")
        if not given:
            raise BadRequest("keep is required: PUT /retention/<branch>?keep=30d")
        keep = parse_duration(given, "keep")
        await run(self.repo(request).set_retention, branch, keep)
        text = f"Branch {branch} keeps the data of commits younger than {human_duration(keep)}.\n"
        return respond(request, text, {"branch": branch, "keep": keep})

    @accepts()
    async def retention_delete(self, request: Request, q: Params) -> Response:
        branch = check_branch(request.path_params["name"])
        await run(self.repo(request).drop_retention, branch)
        return respond(request, f"Branch {branch} keeps all its data.\n", {"branch": branch, "deleted": True})

    @accepts()
    async def gc_status(self, request: Request, q: Params) -> Response:
        """Whether a garbage collection of the repository runs now, and what the last one did."""
        running, last = await run(gc.status, self.repo(request))
        text = f"{'running' if running else 'not running'}; last: {last or 'none'}\n"
        return respond(request, text, {"running": running, "last": orjson.loads(last) if last else None})

    # ---- jobs and runs --------------------------------------------------------------
    @accepts()
    async def job_list(self, request: Request, q: Params) -> Response:
        specs = await run(self.jobs(request).specs)
        return respond(
            request,
            "".join(f"{j.name}    {j.type}    {j.input}    {j.image or '(process)'}\n" for j in specs),
            [{"name": j.name, **j.to_json()} for j in specs],
        )

    @accepts()
    async def job_get(self, request: Request, q: Params) -> Response:
        name = check_job_name(request.path_params["name"])
        spec = orjson.loads((await run(self.jobs(request).get_spec, name)).dumps())
        return respond(request, orjson.dumps(spec, option=orjson.OPT_INDENT_2).decode() + "\n", {"name": name, **spec})

    @accepts()
    async def job_delete(self, request: Request, q: Params) -> Response:
        name = check_job_name(request.path_params["name"])
        await run(self.jobs(request).delete_spec, name)
        return respond(request, f"Deleted job {name}.\n", {"name": name, "deleted": True})

    @accepts()
    async def job_put(self, request: Request, q: Params) -> Response:
        """POST and PUT alike (`curl -T spec.json` sends PUT): store or replace a spec."""
        name = check_job_name(request.path_params["name"])
        body = await read_small(request, MAX_SPEC_BYTES, "job spec")
        spec, created = await run(self.jobs(request).put_spec, name, body)
        verb = "Created" if created else "Replaced"
        return respond(
            request, f"{verb} job {name}.\n", {"name": name, **spec.to_json()}, status=201 if created else 200
        )

    def _job_commit(self, request: Request, q: Params) -> str:
        if q.get("branch") is not None and q.get("commit") is not None:
            raise BadRequest("give either commit or branch, not both")
        ref = q.get("commit")
        if ref:
            return self.repo(request).resolve(ref).id
        head = self.repo(request).branch_head(q.branch())
        if head is None:
            raise RunNotFound("the branch has no commits yet")
        return head

    def _job_run(self, request: Request, q: Params, name: str) -> JobRun:
        return self.jobs(request).job_run(self._job_commit(request, q), name)

    @accepts("commit", "branch")
    async def job_file(self, request: Request, q: Params) -> Response:
        name = check_job_name(request.path_params["name"])
        jr = await run(self._job_run, request, q, name)
        view = await run(self.jobs(request).output_reader, jr)
        return await self.read_path(request, self.jobs(request).output_path(jr, path_param(request)), view)

    def _job_run_full(self, request: Request, jr: JobRun) -> dict[str, Any]:
        """A job run's JSON with its first failed files, when it has any."""
        return _job_run_json(jr, self.jobs(request).failures(jr))

    @accepts("commit", "branch")
    async def job_log(self, request: Request, q: Params) -> Response:
        """The error, every failed file with its reason (streamed: there may be thousands),
        then the workers' own logs."""
        name = check_job_name(request.path_params["name"])
        jr = await run(self._job_run, request, q, name)
        if wants_json(request):
            return respond(request, "", await run(self._job_run_full, request, jr))
        if request.method == "HEAD":
            return headers_only("text/plain; charset=utf-8")
        jobs = self.jobs(request)

        def lines() -> Iterator[bytes]:
            if jr.error:
                yield f"error: {one_line(jr.error)}\n".encode()
            if jr.failed:
                skipped = " (skipped: not in the output)" if _skip_failed(jr) and jr.state == JobState.SUCCEEDED else ""
                yield f"{jr.failed} files failed{skipped}:\n".encode()
                page: list[str] = []
                for f in jobs.all_failures(jr):
                    page.append(f"  {one_line(f.path)}: {one_line(f.error)}\n")
                    if len(page) >= 500:
                        yield "".join(page).encode()
                        page = []
                yield "".join(page).encode()
            text = log_text(jr.log or "")  # a job's own output: its lines, but no escape sequences
            yield (text if text.endswith("\n") or not text else text + "\n").encode()

        return StreamingResponse(pump(lines()), media_type="text/plain; charset=utf-8")

    @accepts()
    async def job_runs(self, request: Request, q: Params) -> Response:
        name = check_job_name(request.path_params["name"])
        items = [await run(self._job_run_full, request, jr) for jr in await run(self.jobs(request).job_runs, name)]
        return respond(request, "".join(_job_run_line(j, with_commit=True) for j in items), items)

    @accepts()
    async def run_list(self, request: Request, q: Params) -> Response:
        runs = await run(self.jobs(request).runs)
        return respond(
            request,
            "".join(f"{r.commit}    {r.branch}    {r.state}    {iso(r.created)}\n" for r in runs),  # all validated
            [_run_json(r, None) for r in runs],
        )

    @accepts("older_than")
    async def run_prune(self, request: Request, q: Params) -> Response:
        """Drop the records of old runs (run retention)."""
        given = q.get("older_than")
        if given is None:
            raise BadRequest("older_than is required: DELETE /run?older_than=30d drops the runs that ended before then")
        older_than = parse_duration(given, "older_than")
        n = await run(self.jobs(request).prune_runs, older_than)
        return respond(request, f"Dropped {n} run(s) that ended more than {older_than:g} s ago.\n", {"dropped": n})

    @accepts("wait")
    async def run_one(self, request: Request, q: Params) -> Response:
        cid = (await run(self.repo(request).resolve, request.path_params["id"])).id
        wait = q.get("wait")
        try:
            timeout = float(wait) if wait else 0.0
        except ValueError:
            timeout = -1.0
        if not 0.0 <= timeout < float("inf"):  # NaN fails this too
            raise BadRequest(f"wait must be a number of seconds (up to 600), not {wait!r}")
        timeout = min(timeout, 600.0)
        deadline = anyio.current_time() + timeout
        pause = 0.01  # short runs are seen to end at once; long ones cost 10 queries/s at most
        while True:
            r = await run(self.jobs(request).run, cid)
            if r.state.over or anyio.current_time() >= deadline:
                break
            await anyio.sleep(min(pause, max(deadline - anyio.current_time(), 0)))
            pause = min(pause * 1.5, 0.1)
        jobs = [await run(self._job_run_full, request, jr) for jr in await run(self.jobs(request).run_jobs, cid)]
        text = f"run {cid} on {r.branch}: {r.state}\n" + "".join(_job_run_line(j) for j in jobs)
        return respond(request, text, _run_json(r, jobs))

    # ---- sync: the two ends of a clone, pull or push (pfs.sync drives them) ---------------
    @accepts()
    async def sync_ancestors(self, request: Request, q: Params) -> Response:
        body = await read_json(request, wire.MAX_JSON)
        page = await run(sender.ancestors, self.repo(request), wire.parse_commits(body), wire.parse_limit(body))
        return respond(
            request,
            "".join(f"{cid} {' '.join(parents)}\n" for cid, parents in page),
            {"commits": [{"id": cid, "parents": parents} for cid, parents in page]},
        )

    @accepts()
    async def sync_walk(self, request: Request, q: Params) -> Response:
        commits = wire.parse_commits(await read_json(request, wire.MAX_JSON))
        await run(sender.check_commits, self.repo(request), commits)
        lines = sender.walk_lines(self.repo(request), commits)
        return StreamingResponse(pump(lines), media_type="text/plain; charset=utf-8")

    @accepts()
    async def sync_missing(self, request: Request, q: Params) -> Response:
        items = wire.parse_objects(await read_json(request, wire.MAX_JSON))
        lacking = await run(receiver.missing, self.repo(request), items)
        return respond(
            request, "".join(f"{k} {key}\n" for k, key in lacking), {"missing": [[k, key] for k, key in lacking]}
        )

    @accepts()
    async def sync_fetch(self, request: Request, q: Params) -> Response:
        items = wire.parse_objects(await read_json(request, wire.MAX_JSON))
        return StreamingResponse(pump(sender.frames(self.repo(request), items)), media_type="application/octet-stream")

    @accepts()
    async def sync_objects(self, request: Request, q: Params) -> Response:
        body = request.stream().__aiter__()
        try:
            rep = await run(receiver.receive, self.repo(request), BodyReader(body))
        except PfsError:
            await drain(request)  # a new stream() goes on from where the reader stopped
            raise
        text = f"Received {rep['objects']} objects ({rep['bytes']} bytes), {rep['commits']} new commits.\n"
        return respond(request, text, rep)

    @accepts("branch", "new", "old", flags=("force",), empty=("old",))
    async def sync_ref(self, request: Request, q: Params) -> Response:
        branch, new = q.get("branch"), q.get("new")
        if not branch or not new:
            raise BadRequest("ref update needs query parameters 'branch' and 'new' (a commit id)")
        old = q.get("old")
        result = await run(receiver.update_ref, self.repo(request), branch, new, old, q.flag("force"))
        return respond(
            request,
            f"{branch}: {result} {old or '-'} -> {new}\n",
            {"branch": branch, "old": old, "new": new, "result": result},
        )


def repo_line(r: RepoInfo) -> str:
    mark = "\tdefault" if r.default else ""
    return f"{r.name}\t{iso(r.created)}{mark}\n"


def repo_json(r: RepoInfo) -> dict[str, Any]:
    return {"name": r.name, "created": iso(r.created), "default": r.default}


def _run_json(r: Run, jobs: list[dict[str, Any]] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"commit": r.commit, "branch": r.branch, "state": r.state.value, "error": r.error}
    for k, t in (("created", r.created), ("started", r.started), ("finished", r.finished)):
        out[k] = iso(t) if t else None
    if jobs is not None:
        out["jobs"] = jobs
    return out


def _skip_failed(jr: JobRun) -> bool:
    return bool(orjson.loads(jr.spec).get("skip_failed"))


def _job_run_json(jr: JobRun, failures: list[Failure]) -> dict[str, Any]:
    """`failed` counts the files that failed; `failures` lists the first of them (path
    order) with reasons; with `skip_failed` they are left out of a succeeded job's output."""
    spec = orjson.loads(jr.spec)
    out: dict[str, Any] = {
        "commit": jr.commit,
        "job": jr.job,
        "state": jr.state.value,
        "total": jr.total,
        "done": jr.done,
        "reused": jr.reused,
        "failed": jr.failed,
        "error": jr.error,
        "output_tree": jr.output_tree,
    }
    out.update(type=spec["type"], input=spec["input"], image=spec.get("image"), pinned_image=jr.image)
    out["skip_failed"] = spec.get("skip_failed", False)
    out["failures"] = [{"path": f.path, "error": f.error} for f in failures]
    out["started"] = iso(jr.started) if jr.started else None
    out["finished"] = iso(jr.finished) if jr.finished else None
    out["seconds"] = round(jr.finished - jr.started, 3) if jr.finished and jr.started else None
    out["progress"] = _progress(out)
    return out


def _progress(j: dict[str, Any]) -> str:
    """ "7/10 files mapped, 2 failed, 990 reused": done counts against the work to do, not the input."""
    if j["type"] == "reduce":
        return "reused" if j["state"] == "reused" else f"{j['done']}/1 reduce"
    todo = j["total"] - j["reused"]
    text = f"{j['done']}/{todo} files mapped"
    if j["failed"]:
        skipped = " (skipped)" if j["skip_failed"] and j["state"] == "succeeded" else ""
        text += f", {j['failed']} failed{skipped}"
    return text + (f", {j['reused']} reused" if j["reused"] else "")


def _job_run_line(j: dict[str, Any], with_commit: bool = False) -> str:
    """One line per job, then one per failed file shown (`pfs job log` lists them all)."""
    head = f"{j['commit']}    " if with_commit else "  "
    tail = f"    {one_line(j['error'])}" if j["error"] else ""
    secs = f"    {j['seconds']:.1f} s" if j["seconds"] is not None else ""
    line = f"{head}{j['job']}    {j['type']}    {j['state']}    {j['progress']}{secs}{tail}\n"
    if j["pinned_image"]:
        line += f"      image: {j['pinned_image']}\n"
    failures = "".join(f"      failed: {one_line(f['path'])}: {one_line(f['error'])}\n" for f in j["failures"])
    more = j["failed"] - len(j["failures"])
    if more > 0 and j["failures"]:
        failures += f"      ... and {more} more (pfs job log {j['job']} -c {j['commit'][:12]})\n"
    return line + failures


class BodyReader(io.RawIOBase):
    """A blocking file over the request body, for parsers that run in a worker thread."""

    def __init__(self, it: AsyncIterator[bytes]) -> None:
        self.it = it
        self.buf = b""

    def readable(self) -> bool:
        return True

    async def _next(self) -> bytes:
        return await self.it.__anext__()

    def readinto(self, b: Any) -> int:
        while not self.buf:
            try:
                self.buf = anyio.from_thread.run(self._next)
            except StopAsyncIteration:
                return 0
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


async def _error(request: Request, exc: Exception) -> Response:
    """The one place where exceptions become HTTP responses. Every error names the request
    (header and JSON body) so a user's report can be matched to the server's log; a 503
    says when to retry; a 405 says which methods the route has."""
    rid = REQUEST_ID.get()
    page = console.owns(request)  # the console's errors are pages, whatever raised them
    if isinstance(exc, PfsError):
        err = exc
    elif isinstance(exc, HTTPException) and page and (routed := console.routing_error(exc)) is not None:
        err = routed
    elif isinstance(exc, HTTPException):
        return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code, headers=exc.headers)
    elif isinstance(exc, ClientDisconnect):
        return PlainTextResponse("client disconnected\n", status_code=400)
    else:
        log.exception("internal error on %s %r", request.method, request.url.path[:200])
        err = PfsError(f"internal error; see the server log (request {rid})")
    headers = error_headers(err)  # plain-text errors (file reads) still name their type
    if isinstance(err, Unavailable):
        log.warning("%s", err.message)
    if page:
        return console.error_response(request, err)
    if wants_json(request):
        body = {**err.to_json(), "request_id": rid}
        return Response(orjson.dumps(body), status_code=err.status, media_type="application/json", headers=headers)
    lines = [one_line(err.message)]
    for c in err.details.get("conflicts", []):
        lines.append(f"CONFLICT {one_line(c['path'])}")
    return PlainTextResponse("\n".join(lines) + "\n", status_code=err.status, headers=headers)


class InRepo:
    """Routes under `/repo/<name>/`: the repository is looked up once, in a worker thread
    (a database read), before the handler runs; a name not in the catalog is a 404."""

    def __init__(self, node: Node, app: ASGIApp) -> None:
        self.node = node
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            name = scope["path_params"]["repo"]
            scope[REPO_SCOPE] = await run(self.node.repos.get, name)
        await self.app(scope, receive, send)


def routes(s: Server) -> list[BaseRoute]:
    """Every route and, for each, its handler per method: the whole API at a glance (what
    each needs is in permissions.py). The repository routes are also under `/repo/<name>/`;
    unprefixed, they address the default repository (the seed's routes)."""
    per_repo = repo_routes(s)
    route = functools.partial(s.route, SERVER_ROUTES)
    return [
        route("/ping", get=s.ping),
        route("/ready", get=s.ready),
        route("/metrics", get=s.metrics_get),
        route("/repo", get=s.repo_list),
        route("/image", get=s.image_list),
        route("/repo/{name}", get=s.repo_get, post=s.repo_create, put=s.repo_create, delete=s.repo_delete),
        *admin.server_routes(s, route),
        *console.routes(s),  # the web console under /ui
        Mount("/repo/{repo}", app=InRepo(s.node, Router(per_repo))),
        *per_repo,
    ]


def repo_routes(s: Server) -> list[BaseRoute]:
    """The routes of one repository."""
    route = functools.partial(s.route, REPO_ROUTES)
    return [
        route("/file/{path:anypath}", get=s.get_file, post=s.put_file, put=s.put_file, delete=s.delete_file),
        route("/file", get=s.get_file),
        route("/tar/{path:anypath}", post=s.put_tar),
        route("/tar", post=s.put_tar),
        route("/commit", get=s.list_commits, post=s.commit),
        route("/commit/{id}", get=s.commit_one),
        route("/branch", get=s.list_branches, post=s.create_branch),
        route("/branch/{name:anypath}", get=s.get_branch, delete=s.delete_branch),
        route("/log", get=s.log),
        route("/diff", get=s.diff),
        route("/merge", post=s.merge),
        route("/revert", post=s.revert),
        route("/discard", post=s.discard),
        route("/fsck", get=s.fsck),
        route("/du", get=s.du),
        route("/gc", get=s.gc_status, post=s.gc),
        route("/retention", get=s.retention_list),
        route("/retention/{name:anypath}", put=s.retention_put, delete=s.retention_delete),
        route("/job", get=s.job_list),
        route("/job/{name}", get=s.job_get, post=s.job_put, put=s.job_put, delete=s.job_delete),
        route("/job/{name}/file/{path:anypath}", get=s.job_file),
        route("/job/{name}/file", get=s.job_file),
        route("/job/{name}/log", get=s.job_log),
        route("/job/{name}/runs", get=s.job_runs),
        route("/run", get=s.run_list, delete=s.run_prune),
        route("/run/{id}", get=s.run_one),
        route("/sync/ancestors", post=s.sync_ancestors),
        route("/sync/walk", post=s.sync_walk),
        route("/sync/missing", post=s.sync_missing),
        route("/sync/fetch", post=s.sync_fetch),
        route("/sync/objects", post=s.sync_objects),
        route("/sync/ref", post=s.sync_ref),
        *admin.repo_routes(s, route),
    ]


def create_app(node: Node | Repositories, jobs: JobEngine | None = None, gate: Gate | None = None) -> RequestIds:
    """The ASGI app. `node` may be open repositories (with the jobs engine) or a `Node`
    that opens its stores once the server listens."""
    if isinstance(node, Repositories):
        node = OpenNode(node, jobs)
    s = Server(node, gate)
    handlers = {PfsError: _error, HTTPException: _error, ClientDisconnect: _error, Exception: _error}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run(s.node.start)
        try:
            yield
        finally:
            await run(s.node.close)

    app = Starlette(routes=routes(s), exception_handlers=handlers, lifespan=lifespan)
    app.state.node = node
    return RequestIds(app)
