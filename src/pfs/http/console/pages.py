"""The console's handlers: parse the request, call the repository layer as the JSON API
does (in a worker thread, through `run`), render a page. Errors come from the one
exception tree (`pfs.errors`) and keep their status; they are rendered as an HTML page
(or as the API's JSON error for a client that asks for JSON).

Each page reads only what it shows: one page of a directory (`Reader.listdir` from a
name on), one page of a log (the walk stops after it), the first PREVIEW_BYTES of a file.
"""

from __future__ import annotations

import datetime as dt
import http
import itertools
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from ...access.identity import Permission, Principal
from ...errors import (
    BadRequest,
    CommitNotFound,
    FileNotFound,
    InvalidPath,
    MethodNotAllowed,
    NotFound,
    PfsError,
    Unauthorized,
)
from ...paths import clean_path, human_bytes, is_commit_like, join
from ...repository.reader import Reader
from ...repository.registry import RepoInfo
from ...repository.repo import Repository
from ...storage.trees import Commit, Entry
from ..auth import PRINCIPAL_SCOPE, ask
from ..logs import REPO_SCOPE, REQUEST_ID, ROUTE_SCOPE
from ..web import Params, accepts, error_headers, headers_only, pump_file, run, wants_json
from . import graph as gr
from . import preview as pv
from .session import ENDED_SCOPE, SESSION_SCOPE, Sessions
from .templates import ENV, STATIC

if TYPE_CHECKING:
    from ..api import Server

LOG_PAGE = 50  # commits per log page
TREE_PAGE = 500  # names per directory page
BRANCH_PAGE = 200  # branches per repository page
SKEW = 86_400.0  # a log walk looks this far (seconds) past `after` before it calls it absent
MAX_FRONTIER = 16  # commits a log cursor carries (lines of history open at once); more: the walk is redone
FULL_ID = re.compile(r"[0-9a-f]{64}")

# Pages: same origin only, no script at all (the console needs none), no framing, no
# plugins, forms back to itself only.
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# Stored bytes: nothing may run or load, even if a browser is talked into rendering them.
RAW_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox; frame-ancestors 'none'"
SECURITY = {
    "content-security-policy": PAGE_CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-cache",
}
RAW_SECURITY = {**SECURITY, "content-security-policy": RAW_CSP}
# A page that needs its script (upload: drag and drop, progress): the console's own
# static file only, sending only to the console; still no inline script and no eval.
SCRIPT_SECURITY = {**SECURITY, "content-security-policy": PAGE_CSP + "; script-src 'self'; connect-src 'self'"}
ROLE_SHOWN = {"read": "read only", "write": "read and write", "admin": "repository admin"}
WRITE, ADMIN = Permission.WRITE, Permission.ADMIN


def q(segment: str) -> str:
    """One URL path segment (or a path of them), percent-encoded."""
    return urllib.parse.quote(segment, safe="/")


def url(repo: str, view: str = "", ref: str = "", path: str = "", **query: str) -> str:
    """A console URL: `/ui/<repo>/<view>/<ref>/<path>` with every part quoted."""
    out = "/ui/" + q(repo)
    if view:
        out += f"/{view}/{q(ref)}"
        if path:
            out += "/" + q(path)
    if query:
        out += "?" + urllib.parse.urlencode(query)
    return out


def compare_url(repo: str, base: str, head: str, path: str = "", **more: str) -> str:
    """`/ui/<repo>/compare[/<path>]?base=&head=`: what differs, or one file's lines."""
    out = url(repo) + "/compare" + ("/" + q(path) if path else "")
    return out + "?" + urllib.parse.urlencode({"base": base, "head": head, **more})


def when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def commit_view(c: Commit, repo: str) -> dict[str, Any]:
    """What a page shows of a commit; message lines as text (escaped by the template)."""
    subject, _, rest = c.message.partition("\n")
    return {
        "id": c.id,
        "short": c.id[:12],
        "time": when(c.time),
        "branch": c.branch,
        "subject": subject or "(no message)",
        "body": c.message if rest.strip() else "",
        "tree": url(repo, "tree", c.id),
        "parents": [{"id": p, "short": p[:12], "href": url(repo, "log", p)} for p in c.parents],
        "diff": compare_url(repo, c.parents[0], c.id) if c.parents else None,
    }


def raw_path(request: Request) -> str:
    """The `path` parameter, refused unless it is UTF-8 (the server would decode other
    bytes to U+FFFD, naming another file)."""
    try:
        urllib.parse.unquote_to_bytes(request.scope.get("raw_path", b"")).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPath("path is not valid UTF-8") from None
    return str(request.path_params.get("path", ""))


def error_response(request: Request, exc: PfsError) -> Response:
    """An error as a page with its status (JSON, as the API answers it, on request). The
    same headers as the API's errors: the error code, Retry-After, WWW-Authenticate, Allow."""
    rid = REQUEST_ID.get()
    headers = error_headers(exc)
    if wants_json(request):
        body = orjson.dumps({**exc.to_json(), "request_id": rid})
        return Response(body, status_code=exc.status, media_type="application/json", headers=headers)
    try:
        reason = http.HTTPStatus(exc.status).phrase
    except ValueError:
        reason = "Error"
    html = ENV.get_template("error.html").render(
        title=f"{exc.status} {reason}",
        crumbs=[],
        status=exc.status,
        reason=reason,
        message=exc.message,
        request_id=rid,
    )
    return HTMLResponse(html, status_code=exc.status, headers={**SECURITY, **headers})


def owns(request: Request) -> bool:
    """Is this a request for a console page (so its errors are pages too)?"""
    path = request.url.path
    return path == "/ui" or path.startswith("/ui/")


def routing_error(exc: HTTPException) -> PfsError | None:
    """What the router raises before any console handler runs, as the console's errors:
    an address under /ui that names no page (404), a method a route lacks (405)."""
    if exc.status_code == 404:
        return NotFound("no console page at this address")
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "GET, HEAD")
        return MethodNotAllowed(f"method not allowed here; allowed: {allow}", allow=allow)
    return None


class Console:
    """The pages, served by the node the API serves (`server`), behind its guard."""

    def __init__(self, server: Server) -> None:
        self.s = server
        self.sessions = Sessions(server)

    # ---- access --------------------------------------------------------------------
    async def guard(
        self, request: Request, need: Permission, action: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """The API's guard, after what only the console needs: the page's repository looked
        up (so READ is checked on it) once the caller has signed in, so that an anonymous
        caller learns nothing, not even whether a repository exists; errors as pages."""
        request.scope[ROUTE_SCOPE] = action  # the metrics' route label: the full template
        try:
            await self.sessions.attach(request)  # a session cookie: who, for /ui routes only
            if need != Permission.PUBLIC and "repo" in request.path_params:
                access = self.s.node.access
                principal = await self.s.gate.principal(request, access.identity)
                access.identity.require(principal, Permission.USER)
                request.scope[REPO_SCOPE] = await run(self.s.node.repos.get, request.path_params["repo"])
            return await self.s.guard(request, need, action, handler)
        except Unauthorized as exc:
            return self.sign_in_first(request, exc)
        except PfsError as exc:
            return error_response(request, exc)

    def sign_in_first(self, request: Request, exc: Unauthorized) -> Response:
        """A browser that has not signed in goes to the login page (and comes back to this
        page after it); the browser's Basic prompt is not offered unless Basic credentials
        were sent (wrong ones: ask again). JSON clients get the API's 401."""
        basic = "authorization" in request.headers
        if request.method in ("GET", "HEAD") and not basic and not wants_json(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            login = "/ui/_login?" + urllib.parse.urlencode({"next": target})
            response: Response = RedirectResponse(login, status_code=303, headers=SECURITY)
            if request.scope.get(ENDED_SCOPE):
                self.sessions.leave_notice(request, response, "Your session has ended: sign in again.")
        else:
            response = error_response(request, exc)
            if not basic and not wants_json(request):
                del response.headers["www-authenticate"]
        self.sessions.finish(request, response)
        return response

    @staticmethod
    def repo(request: Request) -> Repository:
        repo: Repository = request.scope[REPO_SCOPE]
        return repo

    # ---- rendering -----------------------------------------------------------------
    async def page(
        self, request: Request, template: str, *, status: int = 200, script: bool = False, **context: Any
    ) -> Response:
        """A page rendered in a worker thread (a long file preview is many lines), with the
        console's security headers (`script`: its own static script may run). HEAD gets the
        same headers and no body. Every page knows who is signed in and what they may do
        (`ui`), so it offers only the actions the server would allow."""
        ui = await self.ui(request)
        html = await run(ENV.get_template(template).render, ui=ui, **context)
        response = HTMLResponse(html, status_code=status, headers=SCRIPT_SECURITY if script else SECURITY)
        self.sessions.finish(request, response)
        return response

    async def ui(self, request: Request) -> dict[str, Any]:
        """What every page shows or decides with: the user, how they signed in, their role
        on the page's repository, the CSRF token of its forms, the last action's notice."""
        principal: Principal | None = request.scope.get(PRINCIPAL_SCOPE)
        repo: Repository | None = request.scope.get(REPO_SCOPE)
        identity = self.s.node.access.identity
        write = admin = False
        role = ""
        if principal is not None and repo is not None:  # what the guard would allow, as it decides it

            def may() -> tuple[bool, bool, str | None]:
                allowed = identity.allowed
                return (
                    allowed(principal, WRITE, repo.id),
                    allowed(principal, ADMIN, repo.id),
                    identity.role(principal, repo.id),
                )

            write, admin, held = await ask(identity, may, who=principal)
            role = ROLE_SHOWN.get(held or "", "")
        if principal is not None and principal.admin:
            role = "server admin"
        elif principal is not None and principal.open:
            role = "access control off"
        return {
            "user": principal.user if principal is not None else None,
            "session": SESSION_SCOPE in request.scope,
            "repo": repo.name if repo is not None else "",
            "write": write,
            "admin": admin,
            "role": role,
            "csrf": self.sessions.token(request),
            "notice": self.sessions.notice(request),
        }

    @staticmethod
    def crumbs(repo: str, ref: str = "", path: str = "", tail: str = "") -> list[tuple[str, str | None]]:
        """Breadcrumbs: the repository, the ref (its tree), each directory of `path`, then
        `tail`; the last one is where we are, not a link."""
        out: list[tuple[str, str | None]] = [(repo, url(repo))]
        if ref:
            out.append((ref[:12] if is_commit_like(ref) else ref, url(repo, "tree", ref)))
        done = ""
        for part in path.split("/") if path else ():
            done = join(done, part)
            out.append((part, url(repo, "tree", ref, done)))
        if tail:
            out.append((tail, None))
        else:
            out[-1] = (out[-1][0], None)
        return out

    @staticmethod
    def at(repo: Repository, ref: str) -> tuple[Commit, Reader]:
        """A branch's last commit or a commit, and a reader of it: the console shows
        committed files (stable, linkable by id), not a branch's dirty writes."""
        commit = repo.resolve(ref)
        return commit, repo.view(commit=commit.id)

    # ---- static --------------------------------------------------------------------
    @accepts()
    async def static(self, request: Request, params: Params) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            raise FileNotFound(f"no static file {name[:100]!r}")
        media, body = STATIC[name]
        return Response(body, media_type=media, headers={**SECURITY, "cache-control": "public, max-age=3600"})

    # ---- pages ---------------------------------------------------------------------
    @accepts()
    async def repos_page(self, request: Request, params: Params) -> Response:
        """The repositories the caller may read, as `GET /repo` lists them."""
        identity = self.s.node.access.identity
        principal = request.scope[PRINCIPAL_SCOPE]

        def readable() -> list[RepoInfo]:
            return [r for r in self.s.node.repos.list() if identity.allowed(principal, Permission.READ, r.id)]

        infos = await run(readable)
        repos = [{"name": r.name, "href": url(r.name), "created": when(r.created), "default": r.default} for r in infos]
        return await self.page(request, "repos.html", title="repositories", crumbs=[], repos=repos)

    @accepts("after")
    async def repo_page(self, request: Request, params: Params) -> Response:
        """A repository's branches with their heads, a page of names at a time."""
        repo = self.repo(request)
        after = params.get("after") or ""

        def branches() -> tuple[list[dict[str, Any]], str | None]:
            refs = [(n, h) for n, h in repo.branches() if n > after]
            out = []
            for name, head in refs[:BRANCH_PAGE]:
                out.append(
                    {
                        "name": name,
                        "log": url(repo.name, "log", name),
                        "tree": url(repo.name, "tree", name),
                        "head": commit_view(repo.get_commit(head), repo.name) if head else None,
                    }
                )
            more = url(repo.name, after=refs[BRANCH_PAGE - 1][0]) if len(refs) > BRANCH_PAGE else None
            return out, more

        rows, more = await run(branches)
        return await self.page(
            request,
            "repo.html",
            title=repo.name,
            crumbs=self.crumbs(repo.name),
            repo=repo.name,
            jobs=url(repo.name) + "/jobs",
            compare=url(repo.name) + "/compare",
            branches=rows,
            next=more,
        )

    @accepts("after", "walk")
    async def log_page(self, request: Request, params: Params) -> Response:
        """A branch's or commit's history, newest first, LOG_PAGE commits at a time; the
        next page goes on with the same walk from where this one stopped (`LogWalk`)."""
        repo = self.repo(request)
        ref = request.path_params["ref"]
        after = params.get("after")

        def page() -> tuple[list[Commit], dict[str, str], gr.Graph]:
            walk = LogWalk(repo, ref, after, params.get("walk"))
            commits = list(itertools.islice(walk, LOG_PAGE + 1))
            shown = commits[:LOG_PAGE]
            # the lines open at the top: the ones the previous page left open, in its order
            layout = gr.lanes(((c.id, c.parents) for c in shown), walk.ids)
            cursor = walk.cursor(shown) if len(commits) > LOG_PAGE else {}
            if "walk" in cursor:  # in lane order, so that the next page's lines go on in theirs
                cursor["walk"] = ",".join(gr.in_lane_order(cursor["walk"].split(","), layout.open))
            return commits, cursor, gr.draw(layout)

        commits, cursor, graph = await run(page)
        more = url(repo.name, "log", ref, **cursor) if len(commits) > LOG_PAGE else None
        views = [commit_view(c, repo.name) for c in commits[:LOG_PAGE]]
        for v, drawing in zip(views, graph.rows, strict=True):
            v["graph"] = drawing
        return await self.page(
            request,
            "log.html",
            title=f"log of {ref}",
            crumbs=self.crumbs(repo.name, ref, tail="log"),
            ref=ref,
            after=after,
            first=url(repo.name, "log", ref),
            commits=views,
            graph=graph,
            next=more,
        )

    @accepts("after")
    async def tree_page(self, request: Request, params: Params) -> Response:
        """A directory at a ref, TREE_PAGE names at a time, read from the name after
        `after` on (never the whole directory)."""
        repo = self.repo(request)
        ref = request.path_params["ref"]
        path = clean_path(raw_path(request), allow_root=True)
        after = params.get("after")

        def page() -> tuple[Commit, Entry | None, list[tuple[str, Entry]]]:
            commit, view = self.at(repo, ref)
            entry = view.lookup(path)
            if entry is None or not entry.is_dir:
                return commit, entry, []
            names = (item for item in view.listdir(path, after or "") if item[0] != after)
            return commit, entry, list(itertools.islice(names, TREE_PAGE + 1))

        commit, entry, items = await run(page)
        if entry is None:
            raise FileNotFound(f"{path!r} not found at {ref[:100]}")
        if not entry.is_dir:
            return RedirectResponse(url(repo.name, "blob", ref, path), status_code=303, headers=SECURITY)
        entries = [
            {
                "name": name,
                "kind": "dir" if e.is_dir else "file",
                "size": human_bytes(e.size),
                "href": url(repo.name, "tree" if e.is_dir else "blob", ref, join(path, name)),
            }
            for name, e in items[:TREE_PAGE]
        ]
        more = url(repo.name, "tree", ref, path, after=items[TREE_PAGE - 1][0]) if len(items) > TREE_PAGE else None
        return await self.page(
            request,
            "tree.html",
            title=f"{path or '/'} at {ref}",
            crumbs=self.crumbs(repo.name, ref, path),
            ref=ref,
            path=path,
            commit=commit_view(commit, repo.name),
            log=url(repo.name, "log", commit.id),
            after=after,
            first=url(repo.name, "tree", ref, path),
            parent=url(repo.name, "tree", ref, path.rpartition("/")[0]) if path else None,
            entries=entries,
            page=TREE_PAGE,
            next=more,
        )

    async def _file(self, request: Request) -> tuple[Commit, str, Entry]:
        """The file a blob or raw request names: 404 if absent; data that retention has
        expired is a 410 (`check_data`), as on the API."""
        repo = self.repo(request)
        ref = request.path_params["ref"]
        path = clean_path(raw_path(request))

        def find() -> tuple[Commit, Entry | None]:
            commit, view = self.at(repo, ref)
            return commit, view.lookup(path)

        commit, entry = await run(find)
        if entry is None:
            raise FileNotFound(f"{path!r} not found at {ref[:100]}")
        if not entry.is_dir:
            await run(repo.check_data, entry)
        return commit, path, entry

    @accepts()
    async def blob_page(self, request: Request, params: Params) -> Response:
        """A file: its first PREVIEW_BYTES as text, a table or JSON; an image; or its size
        and a download link."""
        repo = self.repo(request)
        ref = request.path_params["ref"]
        commit, path, entry = await self._file(request)
        if entry.is_dir:
            return RedirectResponse(url(repo.name, "tree", ref, path), status_code=303, headers=SECURITY)
        head = b""
        if pv.is_parquet(path) and entry.size and request.method != "HEAD":
            shown = await run(pv.parquet, entry.size, lambda first, last: b"".join(repo.read_range(entry, first, last)))
        else:
            if entry.size and pv.image_type(path) is None and request.method != "HEAD":
                last = min(entry.size, pv.PREVIEW_BYTES) - 1
                head = await run(lambda: b"".join(repo.read_range(entry, 0, last)))
            shown = await run(pv.preview, path, entry.size, head)
        return await self.page(
            request,
            "blob.html",
            title=f"{path} at {ref}",
            crumbs=self.crumbs(repo.name, ref, path),
            name=path.rpartition("/")[2],
            size=f"{human_bytes(entry.size)} ({entry.size} bytes)",
            commit=commit_view(commit, repo.name),
            log=url(repo.name, "log", commit.id),
            raw=url(repo.name, "raw", ref, path),
            history=url(repo.name, "history", ref, path),
            download=url(repo.name, "raw", ref, path, download="1"),
            p=shown,
            limit=human_bytes(pv.PREVIEW_BYTES),
            rows=pv.CSV_ROWS,
        )

    @accepts(flags=("download",))
    async def raw(self, request: Request, params: Params) -> Response:
        """A file's bytes, streamed and verified as the API streams them, under a type a
        browser will not run: an image type, text/plain or application/octet-stream, with
        nosniff and a CSP that forbids scripts."""
        repo = self.repo(request)
        _, path, entry = await self._file(request)
        if entry.is_dir:
            raise BadRequest(f"{path!r} is a directory")
        sniff = b""
        if entry.size and pv.image_type(path) is None:
            last = min(entry.size, pv.SNIFF_BYTES) - 1
            sniff = await run(lambda: b"".join(repo.read_range(entry, 0, last)))
        media = pv.raw_type(path, sniff, len(sniff) == entry.size)
        name = path.rpartition("/")[2]
        disposition = "attachment" if params.flag("download") else "inline"
        headers = {
            **RAW_SECURITY,
            "content-length": str(entry.size),
            "etag": f'"{entry.hash}"',
            "content-disposition": f"{disposition}; filename*=UTF-8''{urllib.parse.quote(name, safe='')}",
        }
        if request.method == "HEAD":
            return headers_only(media, headers)
        return StreamingResponse(pump_file(repo.read_file(entry)), media_type=media, headers=headers)


def _key(c: Commit) -> tuple[float, str]:
    """Where a log walk meets a commit: newest first, then by id (`Repository.walk_log`)."""
    return (-c.time, c.id)


class LogWalk:
    """A log walk of `ref`, newest first, that a later page continues from its cursor:
    `after` (the last commit shown) and `walk` (the commits the walk had queued then: its
    frontier). Going on from the frontier costs a page, however deep the page. It is the
    same walk as long as every commit is newer than its parents (true unless clocks
    disagree): the walk then meets commits in order, so none it met before comes again,
    a merge's second line included. Where that does not hold, or a cursor has no
    frontier, the walk is redone from the top (`_skip_to`), which is always right."""

    def __init__(self, repo: Repository, ref: str, after: str | None, walk: str | None) -> None:
        if after is not None and not is_commit_like(after.lower()):
            raise BadRequest(f"after must be a commit id, not {after[:100]!r}")
        if walk is not None and after is None:
            raise BadRequest("walk is part of a page's cursor: it needs after")
        ids = walk.split(",") if walk is not None else []
        if len(ids) > MAX_FRONTIER or len(set(ids)) != len(ids) or not all(FULL_ID.fullmatch(i) for i in ids):
            raise BadRequest(f"walk must be up to {MAX_FRONTIER} distinct full commit ids, comma-separated")
        self.repo, self.ref = repo, ref
        self.ids = ids  # the frontier as the cursor gave it: the lines open above this page
        self.start = repo.resolve(ref)  # 404 for an unknown ref or a branch without commits
        self.after = repo.resolve(after) if after is not None else None
        self.seeds: list[Commit] | None = [self.start] if after is None else None
        if ids and self.after is not None:
            self.seeds = self._frontier(ids, self.after)
        self.it = self._commits()

    def _frontier(self, ids: list[str], after: Commit) -> list[Commit]:
        seeds = [self.repo.get_commit(i) for i in ids]
        if any(_key(c) <= _key(after) for c in seeds):
            raise BadRequest("walk does not continue the log after that commit")
        return seeds

    def _commits(self) -> Iterator[Commit]:
        if self.after is None:
            yield from self.repo.log(self.start.id)
            return
        if self.seeds is None:
            yield from _skip_to(self.repo.log(self.start.id), self.after, self.ref)
            return
        bound = _key(self.after)
        for shown, c in enumerate(self.repo.walk_log(self.seeds)):
            if _key(c) <= bound:
                # Clocks disagree: this commit may have been shown already. The full walk
                # met the same commits up to here; it goes on from here.
                self.seeds = None
                full = _skip_to(self.repo.log(self.start.id), self.after, self.ref)
                yield from itertools.islice(full, shown, None)
                return
            yield c

    def __iter__(self) -> Iterator[Commit]:
        return self.it

    def cursor(self, walked: list[Commit]) -> dict[str, str]:
        """The cursor after the last of `walked` (everything this walk met, in order):
        its id, and the frontier when it is sure (no clock skew met, a few lines)."""
        last = walked[-1]
        out = {"after": last.id}
        if self.seeds is None:
            return out
        queued = {c.id: c for c in self.seeds}
        for c in walked:
            for p in c.parents:
                pc = self.repo.get_commit(p)
                if _key(pc) <= _key(c):
                    return out  # a parent newer than its child: the next page walks again
                queued[p] = pc
        frontier = sorted(i for i, c in queued.items() if _key(c) > _key(last))
        if frontier and len(frontier) <= MAX_FRONTIER:
            out["walk"] = ",".join(frontier)
        return out


def _skip_to(walk: Iterator[Commit], after: Commit, ref: str) -> Iterator[Commit]:
    """The rest of a log walk after commit `after`. The walk runs newest first, so once it
    is more than SKEW older than `after` (room for clocks that disagree), `after` is not
    in it: a 404 rather than a walk to the root."""
    for c in walk:
        if c.id == after.id:
            return walk
        if c.time < after.time - SKEW:
            break
    raise CommitNotFound(f"commit {after.id[:12]} is not in the history of {ref[:100]}")
