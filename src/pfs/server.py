"""The HTTP API (DESIGN.md section 2) on Starlette.

Handlers are thin: parse and validate the request, run the repository call in a worker
thread (storage is blocking I/O), and render plain text for curl or JSON on
`Accept: application/json`. Errors map to statuses in exactly one place, `_error`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import itertools
import logging
import tarfile
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import anyio.from_thread
import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from . import sync
from .errors import (
    BadRequest,
    Conflict,
    FileNotFound,
    InvalidPath,
    JobNotFound,
    JobNotReady,
    PayloadTooLarge,
    PfsError,
    RunNotFound,
)
from .fsck import fsck
from .jobs.scheduler import REDUCE_OUTPUT, Scheduler, check_input_exists
from .jobs.spec import MAX_SPEC_BYTES, check_dag, check_job_name, parse_spec
from .paths import check_branch, clean_path, join
from .repo import Repository
from .staging import View
from .trees import Commit, Entry

log = logging.getLogger("pfs.server")
T = TypeVar("T")
EARLY_CHECK_MIN = 1 << 20  # bodies this small are not checked twice (a few queries each)
UPLOAD_BUFFER = 1 << 20  # bytes handed to the chunker at a time (bigger: more server RSS per upload)
DRAIN_LIMIT = 64 << 20  # beyond this a refused upload is cut off rather than read to the end


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await run_in_threadpool(fn, *args, **kwargs)


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def respond(request: Request, text: str, data: Any, status: int = 200) -> Response:
    if wants_json(request):
        return Response(orjson.dumps(data), status_code=status, media_type="application/json")
    return PlainTextResponse(text, status_code=status)


async def batches(items: Iterator[T], size: int = 500) -> AsyncIterator[list[T]]:
    """Pull a blocking iterator in a worker thread, a batch at a time."""
    while batch := await run(lambda: list(itertools.islice(items, size))):
        yield batch


async def _aiter(items: AsyncIterator[T] | list[T]) -> AsyncIterator[T]:
    if isinstance(items, list):
        for x in items:
            yield x
    else:
        async for x in items:
            yield x


async def respond_many(
    request: Request, items: Iterator[T], text: Callable[[T], str], js: Callable[[T], Any]
) -> Response:
    """Stream a listing of any length: text lines, or one JSON array written piece by piece.

    The first batch is read before the response starts, so errors such as an unknown
    branch still get their proper status code."""
    first = await run(lambda: list(itertools.islice(items, 500)))
    as_json = wants_json(request)

    async def body() -> AsyncIterator[bytes]:
        async def all_batches() -> AsyncIterator[list[T]]:
            yield first
            if len(first) == 500:
                async for b in batches(items):
                    yield b

        if as_json:
            yield b"["
        sep = b""
        async for batch in all_batches():
            if as_json:
                for x in batch:
                    yield sep + orjson.dumps(js(x))
                    sep = b","
            else:
                yield "".join(text(x) for x in batch).encode()
        if as_json:
            yield b"]"

    media = "application/json" if as_json else "text/plain; charset=utf-8"
    return StreamingResponse(body(), media_type=media)


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).isoformat()


def commit_json(c: Commit) -> dict[str, Any]:
    return {**c.to_json(), "time": iso(c.time)}


def commit_line(c: Commit) -> str:
    first = c.message.splitlines()[0] if c.message else ""
    return f"{c.id}    {iso(c.time)}    {c.branch}    {first}\n"


def entry_json(path: str, entry: Entry) -> dict[str, Any]:
    if entry.is_dir:
        return {"path": path, "name": path.rpartition("/")[2], "type": "dir"}
    return {"path": path, "name": path.rpartition("/")[2], "type": "file", "size": entry.size, "hash": entry.hash}


class AnyPathConvertor(PathConvertor):
    """Starlette's `path`, but matching newlines too: such a name must reach the validators
    and get its 400, not the router's bare 404 or, for a final newline, be cut off."""

    regex = "(?s:.*)"


register_url_convertor("anypath", AnyPathConvertor())


def path_param(request: Request) -> str:
    """The `path` route parameter. The server decodes percent-escapes that are not UTF-8 to
    U+FFFD, which would silently rename the file, so the raw bytes are checked here."""
    try:
        urllib.parse.unquote_to_bytes(request.scope.get("raw_path", b"")).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidPath("path is not valid UTF-8") from None
    return str(request.path_params.get("path", ""))


def q(request: Request, name: str, default: str | None = None) -> str | None:
    value = request.query_params.get(name)
    if value is None:
        return default
    if "\x00" in value:
        raise BadRequest(f"query parameter {name!r} contains a NUL byte")
    return value


def q_branch(request: Request) -> str:
    return check_branch(q(request, "branch") or "master")


def flag(request: Request, name: str) -> bool:
    return name in request.query_params and request.query_params[name].lower() not in ("0", "false", "no")


class Server:
    def __init__(self, repo: Repository, scheduler: Scheduler | None = None) -> None:
        self.repo = repo
        self.scheduler = scheduler

    @property
    def jobs(self) -> Scheduler:
        if self.scheduler is None:
            raise Conflict("jobs are not enabled on this server")
        return self.scheduler

    # ---- files ---------------------------------------------------------------------
    async def file(self, request: Request) -> Response:
        raw = path_param(request)
        if request.method == "GET":
            return await self.get_file(request, raw)
        if request.method in ("POST", "PUT") and raw.endswith("/"):
            raise InvalidPath(f"a file path cannot end with '/': {raw[:100]!r}")
        path = clean_path(raw)
        branch = q_branch(request)
        if request.method == "DELETE":
            n = await run(self.repo.delete, branch, path, flag(request, "recursive"))
            return respond(request, f"Deleted {branch}/{path}.\n", {"branch": branch, "path": path, "deleted": n})
        return await self.put_file(request, branch, path)

    async def put_file(self, request: Request, branch: str, path: str) -> Response:
        length = request.headers.get("content-length")
        limit = self.repo.max_file_size
        if limit is not None and length and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(f"file larger than the limit of {limit} bytes")
        if not (length and length.isdigit() and int(length) <= EARLY_CHECK_MIN):
            # fail before reading a big body; a small one is checked only when staged
            # (that check is needed anyway: the branch may change during the upload)
            await run(self.repo.check_writable, branch, path)
        writer = self.repo.writer()
        buf = bytearray()
        try:
            async for piece in request.stream():
                buf += piece
                if len(buf) >= UPLOAD_BUFFER:
                    data, buf = bytes(buf), bytearray()
                    await run(writer.write, data)
            if buf:
                await run(writer.write, bytes(buf))
            entry = await run(writer.finish)
        except PfsError:
            await run(writer.abort)
            await drain(request)
            raise
        except BaseException:
            writer.abort()
            raise
        await run(self.repo.stage_file, branch, path, entry)
        return respond(
            request,
            f"Created {branch}/{path}, size: {entry.size}.\n",
            {"branch": branch, "path": path, "size": entry.size, "hash": entry.hash},
            status=201,
        )

    async def put_tar(self, request: Request) -> Response:
        """Many files in one request: a tar stream unpacked under a directory, staged atomically."""
        prefix = clean_path(path_param(request), allow_root=True)
        branch = q_branch(request)
        await run(self.repo.meta.get_ref, branch)  # 404 before reading the body
        reader = BodyReader(request.stream().__aiter__())
        try:
            items = await run(unpack_tar, self.repo, reader, prefix)
        except PfsError:
            await drain(request)
            raise
        await run(self.repo.stage_files, branch, items)
        total = sum(e.size for _, e in items)
        return respond(
            request,
            f"Created {len(items)} files under {branch}/{prefix}, size: {total}.\n",
            {"branch": branch, "prefix": prefix, "files": len(items), "size": total},
            status=201,
        )

    async def get_file(self, request: Request, raw: str, view: View | None = None) -> Response:
        if view is None:
            view = await run(self.repo.view, q(request, "branch"), q(request, "commit"))
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
        return StreamingResponse(
            self._stream([entry]),
            media_type="application/octet-stream",
            headers={"content-length": str(entry.size), "etag": f'"{entry.hash}"'},
        )

    async def get_dir(self, request: Request, view: View, path: str) -> Response:
        entry = await run(view.lookup, path)
        if entry is None:
            raise FileNotFound(f"directory {path or '/'!r} not found")
        if not entry.is_dir:
            raise BadRequest(f"{path!r} is a file, not a directory")
        children = view.listdir(path)
        if wants_json(request):
            return await respond_many(request, children, lambda c: "", lambda c: entry_json(join(path, c[0]), c[1]))

        async def files() -> AsyncIterator[Entry]:
            async for batch in batches(children):
                for _, e in batch:
                    if not e.is_dir:
                        yield e

        return StreamingResponse(self._stream(files()), media_type="application/octet-stream")

    async def _stream(self, entries: AsyncIterator[Entry] | list[Entry]) -> AsyncIterator[bytes]:
        # Each chunk is verified before it is sent; a bad one aborts the response, so a
        # client never receives corrupt bytes as a complete, successful body.
        async for entry in _aiter(entries):
            if entry.data is not None:
                yield entry.data
                continue
            chunks = await run(self.repo.trees.chunks, entry)
            for key, _ in chunks:
                yield await run(self.repo.objects.get, key)

    # ---- commits and branches ------------------------------------------------------
    async def commit(self, request: Request) -> Response:
        if request.method == "GET":
            return await respond_many(request, self.repo.meta.list_commits(), commit_line, commit_json)
        branch = q_branch(request)
        if flag(request, "run"):
            self.jobs  # noqa: B018 - refuse before committing when jobs are off
            await run(check_dag, self.jobs.specs())  # a broken DAG refuses before committing
        c = await run(self.repo.commit_branch, branch, q(request, "message", "") or "", q(request, "expect"))
        data = commit_json(c)
        if flag(request, "run"):
            data["jobs"] = await run(self.jobs.submit, c.id, branch)
        return respond(request, c.id + "\n", data, status=201)

    async def commit_one(self, request: Request) -> Response:
        c = await run(self.repo.resolve, request.path_params["id"])
        return respond(request, commit_line(c), commit_json(c))

    async def branch(self, request: Request) -> Response:
        if request.method == "GET":
            refs = await run(self.repo.meta.list_refs)
            return respond(
                request,
                "".join(f"{name}    {head or '-'}\n" for name, head in refs),
                [{"name": name, "head": head} for name, head in refs],
            )
        name = q(request, "branch")
        if not name:
            raise BadRequest("missing query parameter 'branch'")
        head = await run(self.repo.create_branch, name, q(request, "commit"))
        return respond(
            request, f"Created branch. ({head or '-'}) -> {name}.\n", {"name": name, "head": head}, status=201
        )

    async def branch_one(self, request: Request) -> Response:
        name = check_branch(request.path_params["name"])
        if request.method == "DELETE":
            await run(self.repo.delete_branch, name)
            return respond(request, f"Deleted branch {name}.\n", {"name": name, "deleted": True})
        head = await run(self.repo.meta.get_ref, name)
        return respond(request, f"{name}    {head or '-'}\n", {"name": name, "head": head})

    async def log(self, request: Request) -> Response:
        ref = q(request, "commit") or q_branch(request)
        limit_s = q(request, "limit")
        if limit_s is not None and not limit_s.isdigit():
            raise BadRequest("limit must be a non-negative integer")
        limit = int(limit_s) if limit_s is not None else None
        return await respond_many(request, self.repo.log(ref, limit), commit_line, commit_json)

    async def diff(self, request: Request) -> Response:
        a, b = q(request, "from"), q(request, "to")
        if not a or not b:
            raise BadRequest("diff needs query parameters 'from' and 'to' (commits or branches)")
        changes = await run(self.repo.diff, a, b)  # resolves both ends: errors come first

        def item(change: tuple[str, Entry | None, Entry | None]) -> dict[str, Any]:
            path, old, new = change
            status = "A" if old is None else "D" if new is None else "M"
            return {"path": path, "status": status, "old": old and old.hash, "new": new and new.hash}

        return await respond_many(request, changes, lambda c: "{status}\t{path}\n".format(**item(c)), item)

    async def merge(self, request: Request) -> Response:
        source, into = q(request, "from"), q(request, "into") or q(request, "branch")
        if not source or not into:
            raise BadRequest("merge needs query parameters 'from' and 'into'")
        res = await run(self.repo.merge, source, into, q(request, "strategy"), q(request, "message"))
        return respond(
            request,
            f"{res.commit.id}\n",
            {**commit_json(res.commit), "kind": res.kind},
            status=200 if res.kind == "up-to-date" else 201,
        )

    async def revert(self, request: Request) -> Response:
        target = q(request, "commit")
        if not target:
            raise BadRequest("revert needs query parameter 'commit' (the commit to go back to)")
        c = await run(self.repo.revert, q_branch(request), target, q(request, "message"))
        return respond(request, c.id + "\n", commit_json(c), status=201)

    async def discard(self, request: Request) -> Response:
        branch = q_branch(request)
        n = await run(self.repo.discard, branch)
        return respond(request, f"Discarded {n} uncommitted change(s) on {branch}.\n", {"discarded": n})

    async def fsck(self, request: Request) -> Response:
        rep = await run(fsck, self.repo, not flag(request, "quick"))
        text = "".join(p + "\n" for p in rep.problems) + (
            f"{'ok' if rep.ok else 'FAILED'}: {rep.commits} commits, {rep.trees} trees, "
            f"{rep.files} files, {rep.chunks} chunks\n"
        )
        data = {**rep.__dict__, "ok": rep.ok}
        return respond(request, text, data, status=200 if rep.ok else 500)

    # ---- jobs and runs --------------------------------------------------------------
    async def job_list(self, request: Request) -> Response:
        specs = await run(self.jobs.specs)
        return respond(
            request,
            "".join(f"{j.name}    {j.type}    {j.input}    {j.image or '(process)'}\n" for j in specs),
            [{"name": j.name, **j.to_json()} for j in specs],
        )

    async def job(self, request: Request) -> Response:
        name = check_job_name(request.path_params["name"])
        if request.method == "POST":
            return await self.put_job(request, name)
        text = await run(self.repo.meta.get_job, name)
        if text is None:
            raise JobNotFound(f"job {name!r} not found")
        if request.method == "DELETE":
            users = [j.name for j in await run(self.jobs.specs) if j.upstream == name]
            if users:
                raise Conflict(f"job {name!r} is the input of {', '.join(users)}; delete or change those first")
            await run(self.repo.meta.delete_job, name)
            return respond(request, f"Deleted job {name}.\n", {"name": name, "deleted": True})
        spec = orjson.loads(text)
        return respond(request, orjson.dumps(spec, option=orjson.OPT_INDENT_2).decode() + "\n", {"name": name, **spec})

    async def put_job(self, request: Request, name: str) -> Response:
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > MAX_SPEC_BYTES:
                await drain(request)
                raise PayloadTooLarge(f"job spec larger than {MAX_SPEC_BYTES} bytes")
        spec = parse_spec(name, bytes(body))
        others = [j for j in await run(self.jobs.specs) if j.name != name]
        check_dag([*others, spec])
        await run(check_input_exists, self.repo, spec)
        if spec.image is not None and (spec.runtime or self.jobs.default_runtime_name()) == "docker":
            await run(self.jobs.runtime(spec.runtime).image_id, spec.image)  # 400 if not built here
        existed = await run(self.repo.meta.get_job, name) is not None
        await run(self.repo.meta.put_job, name, spec.dumps())
        verb = "Replaced" if existed else "Created"
        return respond(
            request, f"{verb} job {name}.\n", {"name": name, **spec.to_json()}, status=200 if existed else 201
        )

    def _job_commit(self, request: Request) -> str:
        ref = q(request, "commit")
        if ref:
            return self.repo.resolve(ref).id
        head = self.repo.meta.get_ref(q_branch(request))
        if head is None:
            raise RunNotFound("the branch has no commits yet")
        return head

    def _job_run(self, request: Request, name: str) -> dict[str, Any]:
        cid = self._job_commit(request)
        jr = self.repo.meta.get_job_run(cid, name)
        if jr is None:
            if self.repo.meta.get_job(name) is None:
                raise JobNotFound(f"job {name!r} not found")
            raise RunNotFound(f"job {name!r} has not run on commit {cid[:12]}; commit with ?run to run the jobs")
        return jr

    async def job_file(self, request: Request) -> Response:
        name = check_job_name(request.path_params["name"])
        jr = await run(self._job_run, request, name)
        short = jr["commit"][:12]
        if jr["state"] in ("pending", "running"):
            raise JobNotReady(f"job {name!r} on commit {short} is {jr['state']} ({jr['done']}/{jr['total']} files)")
        if jr["state"] not in ("succeeded", "reused"):
            raise JobNotReady(f"job {name!r} on commit {short} {jr['state']}: {jr['error'] or 'no output'}")
        view = View(self.repo.trees, self.repo.meta, jr["output_tree"], None)
        raw = path_param(request)
        if raw == "" and orjson.loads(jr["spec"])["type"] == "reduce":
            raw = REDUCE_OUTPUT  # a reduce's single output file
        return await self.get_file(request, raw, view)

    async def job_log(self, request: Request) -> Response:
        name = check_job_name(request.path_params["name"])
        jr = await run(self._job_run, request, name)
        text = jr["log"] or ""
        if jr["error"]:
            text = f"error: {jr['error']}\n{text}"
        return respond(request, text if text.endswith("\n") or not text else text + "\n", _job_run_json(jr))

    async def job_runs(self, request: Request) -> Response:
        name = check_job_name(request.path_params["name"])
        if await run(self.repo.meta.get_job, name) is None:
            raise JobNotFound(f"job {name!r} not found")
        runs = await run(self.repo.meta.list_runs, 100, name)
        rows = [await run(self.repo.meta.get_job_run, r["commit"], name) for r in runs]
        items = [_job_run_json(jr) for jr in rows if jr is not None]
        return respond(request, "".join(_job_run_line(j, with_commit=True) for j in items), items)

    async def run_list(self, request: Request) -> Response:
        runs = await run(self.repo.meta.list_runs, 100)
        return respond(
            request,
            "".join(f"{r['commit']}    {r['branch']}    {r['state']}    {iso(r['created'])}\n" for r in runs),
            [_run_json(r, None) for r in runs],
        )

    async def run_one(self, request: Request) -> Response:
        cid = (await run(self.repo.resolve, request.path_params["id"])).id
        wait = q(request, "wait")
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
            r = await run(self.repo.meta.get_run, cid)
            if r is None:
                raise RunNotFound(f"no run on commit {cid[:12]}; commit with ?run to run the jobs")
            if r["state"] in ("succeeded", "failed") or anyio.current_time() >= deadline:
                break
            await anyio.sleep(min(pause, max(deadline - anyio.current_time(), 0)))
            pause = min(pause * 1.5, 0.1)
        jobs = [_job_run_json(jr) for jr in await run(self.repo.meta.job_runs, cid)]
        text = f"run {cid} on {r['branch']}: {r['state']}\n" + "".join(_job_run_line(j) for j in jobs)
        return respond(request, text, _run_json(r, jobs))

    async def ping(self, request: Request) -> Response:
        return PlainTextResponse("pong\n")

    # ---- sync: the two ends of a clone, pull or push (pfs.sync drives them) ---------------
    async def sync_ancestors(self, request: Request) -> Response:
        body = await read_json(request, sync.MAX_JSON)
        page = await run(sync.ancestors, self.repo, sync.parse_commits(body), sync.parse_limit(body))
        return respond(
            request,
            "".join(f"{cid} {' '.join(parents)}\n" for cid, parents in page),
            {"commits": [{"id": cid, "parents": parents} for cid, parents in page]},
        )

    async def sync_walk(self, request: Request) -> Response:
        commits = sync.parse_commits(await read_json(request, sync.MAX_JSON))
        await run(sync.check_commits, self.repo, commits)
        lines = sync.walk_lines(self.repo, commits)
        return StreamingResponse(pump(lines), media_type="text/plain; charset=utf-8")

    async def sync_missing(self, request: Request) -> Response:
        items = sync.parse_objects(await read_json(request, sync.MAX_JSON))
        lacking = await run(sync.missing, self.repo, items)
        return respond(
            request, "".join(f"{k} {key}\n" for k, key in lacking), {"missing": [[k, key] for k, key in lacking]}
        )

    async def sync_fetch(self, request: Request) -> Response:
        items = sync.parse_objects(await read_json(request, sync.MAX_JSON))
        return StreamingResponse(pump(sync.frames(self.repo.objects, items)), media_type="application/octet-stream")

    async def sync_objects(self, request: Request) -> Response:
        body = request.stream().__aiter__()
        try:
            rep = await run(sync.receive, self.repo, BodyReader(body))
        except PfsError:
            await drain_iter(body)
            raise
        text = f"Received {rep['objects']} objects ({rep['bytes']} bytes), {rep['commits']} new commits.\n"
        return respond(request, text, rep)

    async def sync_ref(self, request: Request) -> Response:
        branch, new = q(request, "branch"), q(request, "new")
        if not branch or not new:
            raise BadRequest("ref update needs query parameters 'branch' and 'new' (a commit id)")
        old = q(request, "old")
        result = await run(sync.update_ref, self.repo, branch, new, old, flag(request, "force"))
        return respond(
            request,
            f"{branch}: {result} {old or '-'} -> {new}\n",
            {"branch": branch, "old": old, "new": new, "result": result},
        )


def _run_json(r: dict[str, Any], jobs: list[dict[str, Any]] | None) -> dict[str, Any]:
    out = {k: r[k] for k in ("commit", "branch", "state", "error")}
    for k in ("created", "started", "finished"):
        out[k] = iso(r[k]) if r[k] else None
    if jobs is not None:
        out["jobs"] = jobs
    return out


def _job_run_json(jr: dict[str, Any]) -> dict[str, Any]:
    spec = orjson.loads(jr["spec"])
    out = {k: jr[k] for k in ("commit", "job", "state", "total", "done", "reused", "error", "output_tree")}
    out.update(type=spec["type"], input=spec["input"], image=spec.get("image"))
    for k in ("started", "finished"):
        out[k] = iso(jr[k]) if jr[k] else None
    out["seconds"] = round(jr["finished"] - jr["started"], 3) if jr["finished"] and jr["started"] else None
    out["progress"] = _progress(out)
    return out


def _progress(j: dict[str, Any]) -> str:
    """ "7/10 files mapped, 990 reused": done counts against the work to do, not the input."""
    if j["type"] == "reduce":
        return "reused" if j["state"] == "reused" else f"{j['done']}/1 reduce"
    todo = j["total"] - j["reused"]
    return f"{j['done']}/{todo} files mapped" + (f", {j['reused']} reused" if j["reused"] else "")


def _job_run_line(j: dict[str, Any], with_commit: bool = False) -> str:
    head = f"{j['commit']}    " if with_commit else "  "
    tail = f"    {j['error']}" if j["error"] else ""
    secs = f"    {j['seconds']:.1f} s" if j["seconds"] is not None else ""
    return f"{head}{j['job']}    {j['type']}    {j['state']}    {j['progress']}{secs}{tail}\n"


async def drain(request: Request, limit: int = DRAIN_LIMIT) -> None:
    """Read and drop the rest of a refused body (bounded), so the client reads our error
    response instead of a connection reset in the middle of its upload."""
    seen = 0
    with contextlib.suppress(ClientDisconnect, RuntimeError):
        async for piece in request.stream():
            seen += len(piece)
            if seen > limit:
                return


async def drain_iter(body: AsyncIterator[bytes], limit: int = DRAIN_LIMIT) -> None:
    """`drain` for a body whose stream was already opened (and partly read)."""
    seen = 0
    with contextlib.suppress(ClientDisconnect, RuntimeError):
        async for piece in body:
            seen += len(piece)
            if seen > limit:
                return


async def read_json(request: Request, limit: int) -> Any:
    """A small JSON request body; 413 beyond `limit` bytes, 400 if it is not JSON."""
    body = bytearray()
    async for piece in request.stream():
        body += piece
        if len(body) > limit:
            await drain(request)
            raise PayloadTooLarge(f"request body larger than {limit} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON") from None


async def pump(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A blocking iterator of byte pieces, each pulled in a worker thread."""
    while (piece := await run(next, pieces, None)) is not None:
        yield piece


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


def unpack_tar(repo: Repository, raw: io.RawIOBase, prefix: str) -> list[tuple[str, Entry]]:
    """Store every regular file of a tar stream; nothing is staged here, so a bad archive
    changes nothing. Links and devices are refused: they could point outside the tree."""
    items: dict[str, Entry] = {}
    with repo.objects.batch() as batch:
        try:
            with tarfile.open(fileobj=io.BufferedReader(raw, 1 << 20), mode="r|*") as tar:
                for member in tar:
                    if member.isdir():
                        continue
                    if not member.isfile():
                        raise BadRequest(f"archive member {member.name[:200]!r} is not a regular file")
                    name = member.name[2:] if member.name.startswith("./") else member.name
                    path = clean_path(f"{prefix}/{name}" if prefix else name)
                    writer = repo.writer(batch)
                    src = tar.extractfile(member)
                    assert src is not None
                    while piece := src.read(UPLOAD_BUFFER):
                        writer.write(piece)
                    items[path] = writer.finish()
        except tarfile.TarError as exc:
            raise BadRequest(f"not a valid tar archive: {exc}") from None
    return sorted(items.items())


async def _error(request: Request, exc: Exception) -> Response:
    """The one place where exceptions become HTTP responses."""
    if isinstance(exc, PfsError):
        err = exc
    elif isinstance(exc, HTTPException):
        return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code)
    elif isinstance(exc, ClientDisconnect):
        return PlainTextResponse("client disconnected\n", status_code=400)
    else:
        log.exception("internal error on %s %s", request.method, request.url.path)
        err = PfsError("internal error; see the server log")
    if wants_json(request):
        return Response(orjson.dumps(err.to_json()), status_code=err.status, media_type="application/json")
    lines = [err.message]
    for c in err.details.get("conflicts", []):
        lines.append(f"CONFLICT {c['path']}")
    # The code in a header too: file reads take plain-text errors, and clients still want the type.
    return PlainTextResponse("\n".join(lines) + "\n", status_code=err.status, headers={"x-pfs-error": err.code})


def create_app(repo: Repository, scheduler: Scheduler | None = None) -> Starlette:
    s = Server(repo, scheduler)
    routes = [
        Route("/ping", s.ping),
        Route("/file/{path:anypath}", s.file, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/file", s.file, methods=["GET"]),
        Route("/tar/{path:anypath}", s.put_tar, methods=["POST"]),
        Route("/tar", s.put_tar, methods=["POST"]),
        Route("/commit", s.commit, methods=["GET", "POST"]),
        Route("/commit/{id}", s.commit_one),
        Route("/branch", s.branch, methods=["GET", "POST"]),
        Route("/branch/{name:anypath}", s.branch_one, methods=["GET", "DELETE"]),
        Route("/log", s.log),
        Route("/diff", s.diff),
        Route("/merge", s.merge, methods=["POST"]),
        Route("/revert", s.revert, methods=["POST"]),
        Route("/discard", s.discard, methods=["POST"]),
        Route("/fsck", s.fsck),
        Route("/job", s.job_list),
        Route("/job/{name}", s.job, methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/job/{name}/file/{path:anypath}", s.job_file),
        Route("/job/{name}/file", s.job_file),
        Route("/job/{name}/log", s.job_log),
        Route("/job/{name}/runs", s.job_runs),
        Route("/run", s.run_list),
        Route("/run/{id}", s.run_one),
        Route("/sync/ancestors", s.sync_ancestors, methods=["POST"]),
        Route("/sync/walk", s.sync_walk, methods=["POST"]),
        Route("/sync/missing", s.sync_missing, methods=["POST"]),
        Route("/sync/fetch", s.sync_fetch, methods=["POST"]),
        Route("/sync/objects", s.sync_objects, methods=["POST"]),
        Route("/sync/ref", s.sync_ref, methods=["POST"]),
    ]
    handlers = {PfsError: _error, HTTPException: _error, ClientDisconnect: _error, Exception: _error}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if scheduler is not None:
            await run(scheduler.start)
        try:
            yield
        finally:
            if scheduler is not None:
                await run(scheduler.close)

    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.repo = repo
    return app
