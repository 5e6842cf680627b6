"""Actions: sign in and out; create a branch, upload and commit, merge, revert.

Each action is a GET that shows what it will do (a confirm page, or the upload form)
and a POST of that page's form that does it, through the same `Repository` calls the
JSON API makes (branch protection, validation and limits are theirs), behind the same
guard with WRITE on the repository (permissions.py). Every POST is checked for CSRF
(session.py) before anything is read or changed, and answers with a redirect (303) to
the resulting page and a one-time notice, or with an error page.

Uploads stream: the multipart body is parsed as it arrives (python-multipart, as
Starlette's `request.form()` parses it, with its limits on files, fields and field
bytes), each file straight into the repository's chunker (the server's `max_file_size`
holds, 413 past it), and all files are staged at once at the end, or none.
"""

from __future__ import annotations

import itertools
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import python_multipart
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ...access.identity import Permission
from ...errors import AlreadyExists, BadRequest, BranchNotFound, Forbidden, MergeConflict, PfsError, Unauthorized
from ...paths import check_branch, clean_path, is_commit_like, join
from ...repository.repo import Repository
from ...storage.chunking import FileWriter
from ...storage.meta import Staged
from ...storage.trees import Commit, Entry
from ..web import Params, accepts, drain, one_line, read_small, run, wants_json
from .pages import SECURITY, commit_view, url
from .session import SESSION_SCOPE, Sessions, cross_site, safe_next
from .templates import ENV, add

if TYPE_CHECKING:
    from .pages import Console

FORM_LIMIT = 64 << 10  # bytes of a form without files (a commit message is at most 8 KiB)
FIELD_LIMIT = 16 << 10  # bytes of one field of an upload form
MAX_FILES = 1000  # files in one upload
MAX_FIELDS = 10  # other fields in one upload
SHOWN = 200  # staged changes or changed paths listed on a page
COUNT_LIMIT = 10_000  # changed files counted for a confirm page (then "more than")
CSRF_HEADER = "x-csrf-token"


def action_url(repo: str, action: str, branch: str = "", **query: str) -> str:
    """`/ui/<repo>/<action>[/<branch>][?query]`, every part quoted."""
    out = f"{url(repo)}/{action}" + (f"/{urllib.parse.quote(branch, safe='')}" if branch else "")
    return out + ("?" + urllib.parse.urlencode(query) if query else "")


def routes(c: Console) -> list[tuple[str, dict[str, Callable[[Request], Awaitable[Response]]]]]:
    """(route, {method: handler}): each route also needs its line in permissions.py."""
    a = Actions(c)
    return [
        ("/ui/_login", {"get": a.login_page, "post": a.login}),
        ("/ui/_logout", {"post": a.logout}),
        ("/ui/{repo}/branch", {"get": a.branch_page, "post": a.branch}),
        ("/ui/{repo}/upload/{branch}", {"get": a.upload_page, "post": a.upload}),
        ("/ui/{repo}/commit/{branch}", {"get": a.commit_page, "post": a.commit}),
        ("/ui/{repo}/merge", {"get": a.merge_page, "post": a.merge}),
        ("/ui/{repo}/revert/{branch}", {"get": a.revert_page, "post": a.revert}),
    ]


def redirect(request: Request, to: str, notice: str) -> Response:
    """After an action: to the page that shows its result, with a one-time notice."""
    response = RedirectResponse(to, status_code=303, headers=SECURITY)
    Sessions.leave_notice(request, response, notice)
    return response


def changed(changes: Any) -> tuple[list[str], str]:
    """The first SHOWN paths of a diff, and how many paths it has (counted up to a limit)."""
    first = [p for p, _, _ in itertools.islice(changes, SHOWN)]
    rest = sum(1 for _ in itertools.islice(changes, COUNT_LIMIT + 1))
    total = len(first) + rest
    return first, f"more than {SHOWN + COUNT_LIMIT}" if rest > COUNT_LIMIT else str(total)


def staged_view(repo: Repository, branch: str) -> dict[str, Any]:
    """A branch's uncommitted changes as a page lists them: the first SHOWN rows, and
    archives (one row each, however many files)."""
    rows: list[Staged] = repo.meta.staged_under(branch, "", limit=SHOWN + 1)
    grafts = repo.meta.grafts(branch)
    items = [{"path": s.path, "what": "deleted" if s.entry is None else f"{s.entry.size} bytes"} for s in rows[:SHOWN]]
    items += [{"path": (g.prefix or "/") + " (archive)", "what": "files"} for g in grafts]
    return {"items": items, "more": len(rows) > SHOWN, "any": bool(rows or grafts)}


class Actions:
    def __init__(self, c: Console) -> None:
        self.c = c
        self.sessions = c.sessions

    async def form(self, request: Request, *fields: str) -> dict[str, str]:
        """A small urlencoded form, refused (403) unless it is same-site and carries this
        browser's CSRF token; 413 past FORM_LIMIT; 400 for an unknown or repeated field,
        a NUL or bytes that are not UTF-8."""
        if cross_site(request):
            await drain(request)
            raise Forbidden("refused: this form was posted from another site")
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            await drain(request)
            raise BadRequest("expected a form (application/x-www-form-urlencoded)")
        body = await read_small(request, FORM_LIMIT, "form")
        try:
            pairs = urllib.parse.parse_qsl(
                body.decode("utf-8"), keep_blank_values=True, errors="strict", max_num_fields=len(fields) + 1
            )
        except ValueError:  # UnicodeDecodeError too
            raise BadRequest("the form is not valid UTF-8 form data, or has too many fields") from None
        out: dict[str, str] = {}
        for name, value in pairs:
            shown = one_line(name[:40])
            if name not in fields and name != "csrf":
                raise BadRequest(f"unknown form field {shown!r}")
            if name in out:
                raise BadRequest(f"form field {shown!r} given more than once")
            if "\x00" in value:
                raise BadRequest(f"form field {shown!r} contains a NUL byte")
            out[name] = value
        self.sessions.check(request, out.pop("csrf", None))
        return out

    # ---- signing in ----------------------------------------------------------------
    async def _login_form(self, request: Request, target: str, status: int = 200, error: str = "") -> Response:
        return await self.c.page(
            request, "login.html", status=status, title="sign in", crumbs=[], next=target, error=error
        )

    @accepts("next", empty=("next",))
    async def login_page(self, request: Request, params: Params) -> Response:
        identity = self.c.s.node.access.identity
        if not await run(identity.enabled):
            return RedirectResponse("/ui", status_code=303, headers=SECURITY)  # nobody to sign in as
        return await self._login_form(request, safe_next(params.get("next")))

    @accepts()
    async def login(self, request: Request, params: Params) -> Response:
        """A key id and secret, checked as HTTP Basic checks them (same lookup, throttle and
        audit), for a session cookie that carries neither."""
        access = self.c.s.node.access
        status = 500
        try:
            fields = await self.form(request, "key_id", "secret", "next")
            target = safe_next(fields.get("next"))
            if not await run(access.identity.enabled):
                status = 303
                return RedirectResponse("/ui", status_code=303, headers=SECURITY)
            try:
                principal = await self.c.s.gate.sign_in(
                    request, access.identity, fields.get("key_id", "").strip(), fields.get("secret", "").strip()
                )
            except Unauthorized as exc:
                status = exc.status
                return await self._login_form(request, target, status=401, error=exc.message)
            value, _ = self.sessions.issue(principal)
            response = redirect(request, target, f"Signed in as {principal.user}.")
            self.sessions.set_session(response, request, value)
            status = 303
            return response
        except PfsError as exc:
            status = exc.status
            raise
        finally:
            self.c.s.gate.audit(request, access, Permission.PUBLIC, "/ui/_login", None, status)

    @accepts()
    async def logout(self, request: Request, params: Params) -> Response:
        """Ends this browser's session (the cookie is dropped). Without a session there is
        nothing to protect, and nothing to check."""
        if SESSION_SCOPE in request.scope:
            await self.form(request)
        else:
            await drain(request)
        response = redirect(request, "/ui/_login", "Signed out.")
        self.sessions.clear_session(response, request)
        return response

    # ---- branches ------------------------------------------------------------------
    @accepts("name", "from", empty=("from",))
    async def branch_page(self, request: Request, params: Params) -> Response:
        repo = self.c.repo(request)
        name, source = params.get("name") or "", params.get("from") or ""
        if not name:
            raise BadRequest("give the new branch a name")

        def check() -> Commit | None:
            check_branch(name)
            try:
                repo.branch_head(name)
            except BranchNotFound:
                pass
            else:
                raise AlreadyExists(f"branch {name!r} exists already")
            if source:
                return repo.resolve(source)
            head = repo.branch_head("master")
            return repo.get_commit(head) if head else None

        at = await run(check)
        where = f"at commit {at.id[:12]} ({commit_view(at, repo.name)['subject']})" if at else "with no commit yet"
        return await self.c.page(
            request,
            "confirm.html",
            title=f"create branch {name}",
            crumbs=self.c.crumbs(repo.name, tail="new branch"),
            heading=f"Create branch {name}",
            summary=[f"A new branch {name} from {source or 'master'}, {where}.", "No file changes."],
            paths=[],
            action=action_url(repo.name, "branch"),
            hidden=[("name", name), ("from", source)],
            message=None,
            button=f"Create branch {name}",
            cancel=url(repo.name),
        )

    @accepts()
    async def branch(self, request: Request, params: Params) -> Response:
        repo = self.c.repo(request)
        fields = await self.form(request, "name", "from")
        name = fields.get("name", "")
        if not name:
            raise BadRequest("give the new branch a name")
        head = await run(repo.create_branch, name, fields.get("from") or None)
        return redirect(request, url(repo.name), f"Created branch {name} at {head[:12] if head else 'no commit'}.")

    # ---- upload and commit ---------------------------------------------------------
    @accepts("dir", empty=("dir",))
    async def upload_page(self, request: Request, params: Params) -> Response:
        repo = self.c.repo(request)
        branch = request.path_params["branch"]
        folder = clean_path(params.get("dir") or "", allow_root=True)

        def look() -> dict[str, Any]:
            repo.branch_head(check_branch(branch))  # 404 for no such branch
            return staged_view(repo, branch)

        staged = await run(look)
        return await self.c.page(
            request,
            "upload.html",
            script=True,
            title=f"upload to {branch}",
            crumbs=self.c.crumbs(repo.name, branch, tail="upload"),
            branch=branch,
            folder=folder,
            action=action_url(repo.name, "upload", branch),
            commit=action_url(repo.name, "commit", branch),
            limit=repo.max_file_size,
            staged=staged,
        )

    @accepts()
    async def upload(self, request: Request, params: Params) -> Response:
        """Files of a multipart form, streamed into the repository, then staged on the
        branch together (all or none). A script's request (Accept: JSON) gets JSON."""
        repo = self.c.repo(request)
        branch = request.path_params["branch"]
        try:
            if cross_site(request):
                raise Forbidden("refused: this form was posted from another site")

            def writable() -> None:  # before the body is read: no such branch, or a protected one
                repo.branch_head(check_branch(branch))
                repo.guard(branch, "a write")

            await run(writable)
            parsed = UploadForm(repo, self.sessions, request)
            items = await parsed.read()
        except (PfsError, ClientDisconnect):
            await drain(request)
            raise
        if not items:
            raise BadRequest("choose at least one file to upload")
        await run(repo.stage_files, branch, items)
        size = sum(e.size for _, e in items)
        notice = f"Staged {len(items)} file(s), {size} bytes, on {branch}: commit them below."
        after = action_url(repo.name, "commit", branch)
        if wants_json(request):
            body = {"branch": branch, "staged": len(items), "size": size, "paths": [p for p, _ in items], "next": after}
            return JSONResponse(body, status_code=201)
        return redirect(request, after, notice)

    @accepts()
    async def commit_page(self, request: Request, params: Params) -> Response:
        repo = self.c.repo(request)
        branch = request.path_params["branch"]

        def look() -> dict[str, Any]:
            repo.branch_head(check_branch(branch))
            return staged_view(repo, branch)

        staged = await run(look)
        n = f"more than {SHOWN}" if staged["more"] else str(len(staged["items"]))
        return await self.c.page(
            request,
            "commit.html",
            title=f"commit to {branch}",
            crumbs=self.c.crumbs(repo.name, branch, tail="commit"),
            branch=branch,
            staged=staged,
            count=n,
            action=action_url(repo.name, "commit", branch),
            upload=action_url(repo.name, "upload", branch),
        )

    @accepts()
    async def commit(self, request: Request, params: Params) -> Response:
        repo = self.c.repo(request)
        branch = request.path_params["branch"]
        fields = await self.form(request, "message")
        c = await run(repo.commit_branch, branch, fields.get("message", ""))
        return redirect(request, url(repo.name, "log", branch), f"Committed {c.id[:12]} to {branch}.")

    # ---- merge ---------------------------------------------------------------------
    @accepts("from", "into")
    async def merge_page(self, request: Request, params: Params) -> Response:
        """What a merge would do: up to date, fast-forward or a merge commit, and the files
        the source changed since the two branches parted."""
        repo = self.c.repo(request)
        source, into = params.get("from") or "", params.get("into") or ""
        if not source or not into:
            raise BadRequest("a merge needs a branch (or commit) to merge from and a branch to merge into")

        def preview() -> tuple[str, list[str], str, bool]:
            theirs = repo.resolve(source)
            ours = repo.branch_head(check_branch(into))
            if ours is not None and repo.is_ancestor(theirs.id, ours):
                kind = f"{into} is up to date: nothing changes"
            elif ours is None or repo.is_ancestor(ours, theirs.id):
                kind = f"a fast-forward: {into} moves to {theirs.id[:12]}"
            else:
                kind = "a merge commit with both heads as parents (unless the branches conflict)"
            base = repo.merge_base(ours, theirs.id) if ours is not None else None
            base_tree = repo.get_commit(base).tree if base else None
            first, total = changed(repo.trees.diff(base_tree, theirs.tree))
            return kind, first, total, repo.meta.has_staged(into)

        kind, paths, total, dirty = await run(preview)
        summary = [f"Merge {source} into {into}: {total} file(s) change.", f"It will be {kind}."]
        if dirty:
            summary.append(f"{into} has uncommitted changes: commit them first, or the merge is refused.")
        return await self.c.page(
            request,
            "confirm.html",
            title=f"merge {source} into {into}",
            crumbs=self.c.crumbs(repo.name, tail="merge"),
            heading=f"Merge {source} into {into}",
            summary=summary,
            paths=paths,
            action=action_url(repo.name, "merge"),
            hidden=[("from", source), ("into", into)],
            message="",
            button=f"Merge {source} into {into}",
            cancel=url(repo.name),
        )

    @accepts()
    async def merge(self, request: Request, params: Params) -> Response:
        repo = self.c.repo(request)
        fields = await self.form(request, "from", "into", "message")
        source, into = fields.get("from", ""), fields.get("into", "")
        if not source or not into:
            raise BadRequest("a merge needs a branch (or commit) to merge from and a branch to merge into")
        try:
            res = await run(repo.merge, source, into, None, fields.get("message") or None)
        except MergeConflict as exc:
            return await self.c.page(
                request,
                "conflict.html",
                status=exc.status,
                title=f"merge of {source} into {into} conflicts",
                crumbs=self.c.crumbs(repo.name, tail="merge"),
                message=exc.message,
                conflicts=[c["path"] for c in exc.details.get("conflicts", [])],
                back=url(repo.name),
            )
        done = {"up-to-date": "already up to date", "fast-forward": "fast-forward", "merge": "merge commit"}
        notice = f"Merged {source} into {into} ({done.get(res.kind, res.kind)}): now at {res.commit.id[:12]}."
        return redirect(request, url(repo.name, "log", into), notice)

    # ---- revert --------------------------------------------------------------------
    @accepts("commit")
    async def revert_page(self, request: Request, params: Params) -> Response:
        repo = self.c.repo(request)
        branch = request.path_params["branch"]
        target = params.get("commit") or ""
        if not target:
            raise BadRequest("revert needs the commit to go back to")

        def preview() -> tuple[Commit, str, list[str]]:
            dest = repo.resolve(target)
            head = repo.branch_head(check_branch(branch))
            tree = repo.get_commit(head).tree if head else None
            first, total = changed(repo.trees.diff(tree, dest.tree))
            return dest, total, first

        dest, total, paths = await run(preview)
        return await self.c.page(
            request,
            "confirm.html",
            title=f"revert {branch}",
            crumbs=self.c.crumbs(repo.name, branch, tail="revert"),
            heading=f"Revert {branch} to {dest.id[:12]}",
            summary=[
                f"Revert {branch} to {dest.id[:12]} ({commit_view(dest, repo.name)['subject']}): "
                f"{total} file(s) change.",
                f"A new commit on {branch} with the files of {dest.id[:12]}; the history is kept.",
            ],
            paths=paths,
            action=action_url(repo.name, "revert", branch),
            hidden=[("commit", dest.id)],
            message="",
            button=f"Revert {branch}",
            cancel=url(repo.name, "log", branch),
        )

    @accepts()
    async def revert(self, request: Request, params: Params) -> Response:
        repo = self.c.repo(request)
        branch = request.path_params["branch"]
        fields = await self.form(request, "commit", "message")
        target = fields.get("commit", "")
        if not target:
            raise BadRequest("revert needs the commit to go back to")
        c = await run(repo.revert, branch, target, fields.get("message") or None)
        return redirect(request, url(repo.name, "log", branch), f"Reverted {branch} to {target[:12]}: {c.id[:12]}.")


class UploadForm:
    """A multipart/form-data body read as it arrives. Fields (the CSRF token, the target
    directory) come first, as a browser sends a form's inputs in order; the token is
    checked before the first file's first byte is stored. Each file goes straight into a
    `FileWriter`, one at a time, so at most one file's chunking window is held."""

    def __init__(self, repo: Repository, sessions: Sessions, request: Request) -> None:
        self.repo, self.sessions, self.request = repo, sessions, request
        self.events: list[tuple[str, Any]] = []
        self.fields: dict[str, str] = {}
        self.items: list[tuple[str, Entry]] = []
        self.files = 0
        self.ended = False
        self._header = (b"", b"")
        self._disposition = b""
        self._field: bytearray | None = None  # the value of the field being read
        self._name = ""  # its name
        self._writer: FileWriter | None = None  # where the file being read goes
        self._path = ""  # its path
        self._checked = False  # the CSRF token

    # ---- the parser's callbacks (synchronous: they only queue what they saw) ------------
    def _part_begin(self) -> None:
        self._disposition = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header = (self._header[0] + data[start:end], self._header[1])

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._header = (self._header[0], self._header[1] + data[start:end])

    def _header_end(self) -> None:
        if self._header[0].lower() == b"content-disposition":
            self._disposition = self._header[1]
        self._header = (b"", b"")

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise BadRequest("a form part has no Content-Disposition name")
        if b"filename" in options:
            self.files += 1
            if self.files > MAX_FILES:
                raise BadRequest(f"more than {MAX_FILES} files in one upload")
            self.events.append(("file", options[b"filename"]))
        else:
            if len(self.fields) >= MAX_FIELDS:
                raise BadRequest("too many form fields")
            self.events.append(("field", options[b"name"]))

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.events.append(("data", data[start:end]))

    def _part_end(self) -> None:
        self.events.append(("end", None))

    def _end(self) -> None:
        self.ended = True

    # ---- reading -------------------------------------------------------------------
    async def read(self) -> list[tuple[str, Entry]]:
        """The files of the form, stored (not staged): (path, entry) each."""
        kind, options = parse_options_header(self.request.headers.get("content-type", ""))
        if kind != b"multipart/form-data" or b"boundary" not in options:
            raise BadRequest("expected a multipart/form-data upload")
        callbacks: Any = {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }
        parser = python_multipart.MultipartParser(options[b"boundary"], callbacks)
        try:
            async for piece in self.request.stream():
                try:
                    parser.write(piece)
                finally:
                    await self._apply()
            parser.finalize()
        except FormParserError:
            raise BadRequest("the upload is not valid multipart/form-data") from None
        finally:
            if self._writer is not None:
                self._writer.abort()
        if not self.ended:
            raise BadRequest("the upload ended before its last part")
        self._check()
        return self.items

    def _check(self) -> None:
        if not self._checked:
            self.sessions.check(self.request, self.request.headers.get(CSRF_HEADER) or self.fields.get("csrf"))
            self._checked = True

    async def _apply(self) -> None:
        """What the parser saw in the last piece, in order: fields kept, file bytes handed
        to the chunker in a worker thread (one hop per piece)."""
        events, self.events = self.events, []
        pieces: list[bytes] = []
        for kind, value in events:
            if kind == "field":
                self._field = bytearray()
                self._name = self._text(value, "field name")
            elif kind == "file":
                await self._file(self._text(value, "file name"))
            elif kind == "data" and self._field is not None:
                self._field += value
                if len(self._field) > FIELD_LIMIT:
                    raise BadRequest(f"form field {one_line(self._name[:40])!r} longer than {FIELD_LIMIT} bytes")
            elif kind == "data" and self._writer is not None:
                pieces.append(value)
            elif kind == "end":
                if self._field is not None:
                    self._keep_field(self._name, self._text(bytes(self._field), "form field"))
                    self._field = None
                elif self._writer is not None:
                    await run(self._writer.write_many, pieces)
                    pieces = []
                    entry = await run(self._writer.finish)
                    self.items.append((self._path, entry))
                    self._writer = None
        if pieces and self._writer is not None:
            await run(self._writer.write_many, pieces)

    def _keep_field(self, name: str, value: str) -> None:
        if name in self.fields:
            raise BadRequest(f"form field {one_line(name[:40])!r} given more than once")
        if name not in ("csrf", "dir"):
            raise BadRequest(f"unknown form field {one_line(name[:40])!r}")
        if name == "dir" and self._checked:  # a file part came before it
            raise BadRequest("the form's dir field must come before its files")
        if "\x00" in value:
            raise BadRequest(f"form field {one_line(name[:40])!r} contains a NUL byte")
        self.fields[name] = value

    async def _file(self, name: str) -> None:
        """A file part begins: the token is checked before the first file (nothing has been
        stored yet); a part with no name is an empty file input, skipped."""
        self._check()
        if not name:
            return
        path = clean_path(join(clean_path(self.fields.get("dir", "").strip("/"), allow_root=True), name))
        if any(p == path for p, _ in self.items):
            raise BadRequest(f"{path!r} is in the upload twice")
        self._path, self._writer = path, self.repo.writer()

    @staticmethod
    def _text(raw: bytes, what: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"a {what} is not valid UTF-8") from None


# ---- templates ---------------------------------------------------------------------

LOGIN = """{% extends "base.html" %}
{% block main %}
<h1>Sign in</h1>
{% if error %}<p class="error" id="error">{{ error }}</p>{% endif %}
<form method="post" action="/ui/_login" class="stack" id="login">
<input type="hidden" name="csrf" value="{{ ui.csrf }}">
<input type="hidden" name="next" value="{{ next }}">
<label>access key id <input name="key_id" id="key_id" autocomplete="username" required maxlength="64"
 spellcheck="false" autocapitalize="characters"></label>
<label>secret <input name="secret" id="secret" type="password" autocomplete="current-password" required
 maxlength="200"></label>
<button type="submit" id="sign-in">Sign in</button>
</form>
<p class="note">With the access key pair <code>pfs user create</code> or <code>pfs key create</code> printed. The
console keeps a session cookie for 12 hours (it holds no secret); disabling or rotating the key ends it.</p>
{% endblock %}
"""

CONFIRM = """{% extends "base.html" %}
{% block main %}
<h1>{{ heading }}</h1>
<ul class="summary" id="summary">
{% for line in summary %}<li>{{ line }}</li>
{% endfor %}
</ul>
{% if paths %}<pre class="paths" id="paths">
{%- for p in paths %}{{ p }}
{% endfor -%}
</pre>{% endif %}
<form method="post" action="{{ action }}" class="stack" id="confirm">
<input type="hidden" name="csrf" value="{{ ui.csrf }}">
{% for name, value in hidden %}<input type="hidden" name="{{ name }}" value="{{ value }}">
{% endfor %}
{% if message is not none %}<label>message (optional)
<textarea name="message" rows="3" maxlength="8192">{{ message }}</textarea></label>{% endif %}
<p><button type="submit" id="do">{{ button }}</button> <a href="{{ cancel }}">cancel</a></p>
</form>
{% endblock %}
"""

STAGED = """{% if staged.any %}
<ul class="staged" id="staged">
{% for s in staged["items"] %}<li><span class="path">{{ s.path }}</span> <span class="note">{{ s.what }}</span></li>
{% endfor %}
</ul>
{% if staged.more %}<p class="note">Only the first {{ staged["items"]|length }} are listed.</p>{% endif %}
{% else %}<p class="note" id="staged">No uncommitted changes.</p>{% endif %}
"""

UPLOAD = """{% extends "base.html" %}
{% block head %}<script src="/ui/_static/upload.js" defer></script>{% endblock %}
{% block main %}
<h1>Upload to {{ branch }}</h1>
<p class="note">Files are staged on {{ branch }} (as <code>POST /file</code> stages them) and committed only when you
commit them{% if limit %}; at most {{ limit }} bytes a file{% endif %}.</p>
<form method="post" action="{{ action }}" enctype="multipart/form-data" class="stack" id="upload">
<input type="hidden" name="csrf" value="{{ ui.csrf }}">
<label>into directory <input name="dir" id="dir" value="{{ folder }}" maxlength="4096" placeholder="(top)"></label>
<div class="drop" id="drop"><label>files <input type="file" name="files" id="files" multiple required></label>
<span class="note">or drop them here</span></div>
<ul class="chosen" id="chosen"></ul>
<p><button type="submit" id="send">Upload</button>
<progress id="progress" max="100" value="0">0%</progress> <span id="percent"></span></p>
<p id="status" role="status"></p>
</form>
<section id="uncommitted">
<h2>Uncommitted changes on {{ branch }}</h2>
{% include "staged.html" %}
<p><a href="{{ commit }}" id="to-commit">commit them…</a></p>
</section>
{% endblock %}
"""

COMMIT = """{% extends "base.html" %}
{% block main %}
<h1>Commit to {{ branch }}</h1>
{% include "staged.html" %}
{% if staged.any %}
<form method="post" action="{{ action }}" class="stack" id="confirm">
<input type="hidden" name="csrf" value="{{ ui.csrf }}">
<label>message <textarea name="message" id="message" rows="4" maxlength="8192" required></textarea></label>
<p><button type="submit" id="do">Commit {{ count }} change(s) to {{ branch }}</button></p>
</form>
{% endif %}
<p><a href="{{ upload }}">upload files…</a></p>
{% endblock %}
"""

CONFLICT = """{% extends "base.html" %}
{% block main %}
<h1>Merge conflict</h1>
<p class="error" id="error">{{ message }}. Nothing was changed.</p>
<p>Conflicted paths ({{ conflicts|length }}), changed differently on both sides:</p>
<pre class="paths" id="conflicts">
{%- for p in conflicts %}{{ p }}
{% endfor -%}
</pre>
<p class="note">Change one side so they agree, commit, and merge again (or merge with a strategy from the CLI:
<code>pfs merge --strategy ours|theirs</code>). <a href="{{ back }}">back</a></p>
{% endblock %}
"""

REPO_ACTIONS = """{% if ui.write %}
<section class="actions" id="actions">
<h2>Change</h2>
<form method="get" action="{{ action_url(ui.repo, 'branch') }}" class="row" id="new-branch">
<label>new branch <input name="name" required maxlength="100"></label>
<label>from <input name="from" placeholder="master" maxlength="100"></label>
<button type="submit">create…</button>
</form>
<form method="get" action="{{ action_url(ui.repo, 'merge') }}" class="row" id="merge">
<label>merge <input name="from" required maxlength="100"></label>
<label>into <input name="into" required maxlength="100" value="master"></label>
<button type="submit">merge…</button>
</form>
</section>
{% endif %}
"""

BRANCH_ACTIONS = """{% if ui.write %} <a href="{{ action_url(ui.repo, 'upload', b.name) }}">upload</a> \
<a href="{{ action_url(ui.repo, 'commit', b.name) }}">commit</a>{% endif %}"""

COMMIT_ACTIONS = """{% if ui.write and ref is not commit_id %}\
<a class="revert" href="{{ action_url(ui.repo, 'revert', ref, commit=c.id) }}">revert {{ ref }} to this</a>
{% endif %}"""

REF_ACTIONS = """{% if ui.write and ref is defined and ref is not commit_id %}
<p class="actions"><a href="{{ action_url(ui.repo, 'upload', ref, dir=path or '') if path is defined \
else action_url(ui.repo, 'upload', ref) }}" id="upload-here">upload files here</a> ·
<a href="{{ action_url(ui.repo, 'commit', ref) }}">commit staged changes</a></p>
{% endif %}"""

CSS = """
form.stack { display: flex; flex-direction: column; gap: .6em; max-width: 40em; }
form.row { display: flex; flex-wrap: wrap; gap: .6em; align-items: baseline; margin: .5em 0; }
label { display: flex; flex-direction: column; gap: .2em; color: var(--muted); }
form.row label { flex-direction: row; align-items: baseline; }
input, textarea, button { font: inherit; padding: .3em .5em; border: 1px solid var(--line); border-radius: 6px; }
button { background: #1f883d; color: #fff; border-color: #1a7f37; cursor: pointer; }
button:disabled { opacity: .5; }
header button { background: transparent; color: #fff; border-color: #8c959f; padding: .1em .6em; }
.drop { border: 2px dashed var(--line); border-radius: 6px; padding: 1em; }
.drop.over { border-color: var(--link); background: #ddf4ff; }
progress { width: 20em; vertical-align: middle; }
pre.paths { background: var(--bg2); padding: .5em; white-space: pre-wrap; overflow-wrap: anywhere; }
ul.staged .path, ul.chosen li { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; overflow-wrap: anywhere; }
a.revert { font-size: 12px; }
"""

SCRIPT = r"""// The upload page's one script: choose or drop files, then send them with a progress
// bar. Without it the form posts as it is. Names are shown with textContent only.
(function () {
  "use strict";
  var form = document.getElementById("upload");
  if (!form) { return; }
  var input = document.getElementById("files");
  var drop = document.getElementById("drop");
  var chosen = document.getElementById("chosen");
  var bar = document.getElementById("progress");
  var percent = document.getElementById("percent");
  var status = document.getElementById("status");
  var button = document.getElementById("send");

  function progress(fraction) {
    var n = Math.max(0, Math.min(100, Math.round(fraction * 100)));
    bar.value = n;
    bar.textContent = n + "%";
    percent.textContent = n + "%";
  }

  function show(files) {
    while (chosen.firstChild) { chosen.removeChild(chosen.firstChild); }
    for (var i = 0; i < files.length; i++) {
      var li = document.createElement("li");
      li.textContent = files[i].name + " (" + files[i].size + " bytes)";
      chosen.appendChild(li);
    }
    button.disabled = files.length === 0;
    progress(0);
    status.textContent = "";
  }

  // Chosen with the input or dropped: both end in the input's change handler.
  input.addEventListener("change", function () { show(input.files); });
  drop.addEventListener("dragover", function (e) { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", function () { drop.classList.remove("over"); });
  drop.addEventListener("drop", function (e) {
    e.preventDefault();
    drop.classList.remove("over");
    input.files = e.dataTransfer.files;
    input.dispatchEvent(new Event("change"));
  });

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    if (!input.files.length) { return; }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", function (ev) {
      if (ev.lengthComputable) { progress(ev.loaded / ev.total); }
    });
    xhr.addEventListener("load", function () {
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
      button.disabled = false;
      if (xhr.status >= 200 && xhr.status < 300 && body) {
        progress(1);
        var stale = document.getElementById("uncommitted");  // listed before this upload
        if (stale) { stale.hidden = true; }
        status.className = "notice";
        status.textContent = "Staged " + body.staged + " file(s), " + body.size + " bytes, on " + body.branch + ". ";
        if (typeof body.next === "string" && body.next.indexOf("/ui/") === 0) {
          var a = document.createElement("a");
          a.href = body.next;
          a.id = "commit-link";
          a.textContent = "Commit them";
          status.appendChild(a);
        }
      } else {
        status.className = "error";
        status.textContent = (body && body.message) ? body.message : "Upload failed (" + xhr.status + ").";
      }
    });
    xhr.addEventListener("error", function () {
      button.disabled = false;
      status.className = "error";
      status.textContent = "Upload failed: the connection was lost.";
    });
    button.disabled = true;
    status.className = "";
    status.textContent = "Uploading…";
    progress(0);
    xhr.send(new FormData(form));
  });
}());
"""

add(
    {
        "login.html": LOGIN,
        "confirm.html": CONFIRM,
        "staged.html": STAGED,
        "upload.html": UPLOAD,
        "commit.html": COMMIT,
        "conflict.html": CONFLICT,
        "repo_actions.html": REPO_ACTIONS,
        "branch_actions.html": BRANCH_ACTIONS,
        "commit_actions.html": COMMIT_ACTIONS,
        "ref_actions.html": REF_ACTIONS,
    },
    css=CSS,
    static={"upload.js": ("text/javascript; charset=utf-8", SCRIPT.encode())},
)
ENV.globals["action_url"] = action_url
ENV.tests["commit_id"] = is_commit_like
