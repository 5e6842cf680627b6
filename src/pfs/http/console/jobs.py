"""Jobs: a repository's job DAG as a picture, its runs, their progress, failures and logs.

Four pages, each a bounded number of queries of the jobs layer (`pfs.jobs.service.Jobs`,
the calls the JSON API makes), in a worker thread:

- `/ui/{repo}/jobs`: the DAG drawn as inline SVG (built by the template from numbers and
  escaped names, coloured by each job's last run), the jobs, the newest runs;
- `/ui/{repo}/jobs/{name}`: a job's spec and its runs, a page at a time, with the reason
  of a failed last run at the top;
- `/ui/{repo}/jobs/{name}/runs/{id}`: one job of the run on commit `id`: its progress, its
  failed files (a page at a time) and a window of its workers' log;
- `/ui/{repo}/runs/{id}`: the run on commit `id`, each of its jobs.

A page about something still running refreshes itself (`<meta http-equiv="refresh">`, which
the pages' CSP allows; no script), so its progress is live; a finished one does not.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from ...errors import BadRequest
from ...jobs.service import Jobs
from ...jobs.spec import JobSpec, check_dag, check_job_name
from ...storage.meta import Failure, JobRun, JobState, Run, RunState
from ..web import Params, accepts, log_text, run
from . import templates
from .pages import q, url, when

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ...repository.repo import Repository
    from .pages import Console

RUNS_PAGE = 25  # a job's runs per page
RECENT_RUNS = 20  # runs listed on the jobs page
FAILURES_PAGE = 100  # failed files per page
LOG_WINDOW = 32 << 10  # characters of a log a page shows (the newest, unless asked)
REASON = 300  # characters of a reason shown on its one line
MAX_DRAWN = 300  # jobs the DAG picture draws; a bigger DAG is only listed
REFRESH = 2  # seconds between reloads of a page about a run still going on
MAX_PATH = 4096  # a failed file's path, as `after`
_OFFSET = re.compile(r"[0-9]{1,12}")
_COMMIT = re.compile(r"[0-9a-f]{64}")

# The picture: boxes in columns (one per layer of the DAG, inputs first), edges between them.
BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 190, 46, 64, 18, 12
LABEL = 24  # characters of a name drawn in a box (the whole name is its tooltip)


def jobs_url(repo: str, *parts: str, **query: str) -> str:
    """`/ui/<repo>/jobs/<name>/runs/<commit>` and the like, every part quoted."""
    out = "/".join([url(repo), "jobs", *map(q, parts)])
    return f"{out}?{urllib.parse.urlencode(query)}" if query else out


def output_url(repo: str, job: str, kind: str, commit: str) -> str:
    """The API's answer with a job's output on a run: a map's files listed, a reduce's file."""
    listed = "/*" if kind == "map" else ""
    return f"/repo/{q(repo)}/job/{q(job)}/file{listed}?commit={commit}"


def run_commit(repo: Repository, ref: str) -> str:
    """The commit a run URL names: a full id as is (runs are looked up by it, the commit
    itself is not read), else a prefix or a branch, resolved as the API resolves it."""
    return ref if _COMMIT.fullmatch(ref) else repo.resolve(ref).id


def run_url(repo: str, commit: str) -> str:
    return f"{url(repo)}/runs/{q(commit)}"


def look(state: JobState | RunState | None) -> str:
    """A state's colour class: ok, running (or waiting to), failed (or skipped), none."""
    if state is None:
        return "none"
    if state in (JobState.SUCCEEDED, JobState.REUSED, RunState.SUCCEEDED):
        return "ok"
    if state in (JobState.FAILED, JobState.SKIPPED, RunState.FAILED):
        return "failed"
    return "running"


def in_one_line(text: str | None, limit: int = REASON) -> str:
    """A reason on one line: whitespace (newlines too) folded, cut at `limit` characters."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def duration(started: float | None, finished: float | None) -> str:
    """How long it ran, or has been running."""
    if started is None:
        return ""
    s = max((finished or time.time()) - started, 0.0)
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(s), 60)
    return f"{m} min {s} s" if m < 60 else f"{m // 60} h {m % 60} min"


def progress(jr: JobRun, kind: str) -> dict[str, Any]:
    """What a run's progress bar shows: files handled (done or failed) of those to map
    (the input less the files reused from an earlier run; all reused: a full bar); a
    reduce is one piece of work."""
    todo = 1 if kind == "reduce" else max(jr.total - jr.reused, 0)
    handled = jr.done + jr.failed
    if jr.state == JobState.REUSED:
        todo, handled = 0, 1
    return {"done": jr.done, "failed": jr.failed, "reused": jr.reused, "todo": todo, "max": todo or 1, "value": handled}


def job_run_view(repo: str, jr: JobRun, run_: Run) -> dict[str, Any]:
    """What a page shows of one job's run: its state, progress, times, reason and links."""
    spec = orjson.loads(jr.spec)
    return {
        "job": jr.job,
        "type": spec.get("type", ""),
        "commit": jr.commit,
        "short": jr.commit[:12],
        "branch": run_.branch,
        "created": when(run_.created),
        "state": jr.state.value,
        "look": look(jr.state),
        "over": jr.state.over,
        "progress": progress(jr, spec.get("type", "")),
        "started": when(jr.started) if jr.started else "",
        "took": duration(jr.started, jr.finished) if jr.state != JobState.PENDING else "",
        "reason": in_one_line(jr.error) if jr.error else "",
        "href": jobs_url(repo, jr.job, "runs", jr.commit),
        "job_href": jobs_url(repo, jr.job),
        "run_href": run_url(repo, jr.commit),
        "tree": url(repo, "tree", jr.commit),
        "log": url(repo, "log", jr.commit),
        "output": output_url(repo, jr.job, spec.get("type", ""), jr.commit) if jr.state.has_output else "",
        "output_tree": (jr.output_tree or "")[:12],
        "image": jr.image or spec.get("image") or "",
    }


def failure_view(f: Failure) -> dict[str, str]:
    return {"path": f.path, "error": in_one_line(f.error, 1000)}


# ---- the picture -------------------------------------------------------------------------
@dataclass(frozen=True)
class Box:
    key: str  # "in:<input>", "job:<name>", "out:<name>": also the edges' ends
    kind: str  # input, job, output
    label: str
    sub: str
    title: str
    href: str
    look: str
    x: int
    y: int


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def mx(self) -> int:
        return (self.x1 + self.x2) // 2


def _cut(name: str) -> str:
    return name if len(name) <= LABEL else name[: LABEL - 1] + "…"


def draw(repo: str, specs: list[JobSpec], last: dict[str, JobRun | None]) -> dict[str, Any]:
    """The DAG laid out in layers, left to right: the inputs the jobs read (directories,
    S3 prefixes), then each job one column after the one it reads from (its longest path
    from an input: each job reads one input), then the output of each job nobody reads.
    Within a column, boxes follow their parent's row (few crossings). Numbers only: the
    template writes the SVG and escapes every name."""
    order = check_dag(specs)  # the stored specs form a DAG: topological order
    layer: dict[str, int] = {}
    parent: dict[str, str] = {}
    boxes: dict[str, tuple[str, str, str, str, str, str]] = {}  # key -> kind, label, sub, title, href, look
    for inp in sorted({s.input for s in specs if s.upstream is None}):
        key = f"in:{inp}"
        layer[key] = 0
        s3 = inp.startswith("s3://")
        shown = inp if s3 else "/" + inp
        boxes[key] = ("input", _cut(shown), "S3 input" if s3 else "directory", shown, "", "none")
    readers = {s.upstream for s in specs if s.upstream is not None}
    for s in order:
        key = f"job:{s.name}"
        parent[key] = f"job:{s.upstream}" if s.upstream is not None else f"in:{s.input}"
        layer[key] = layer[parent[key]] + 1
        jr = last.get(s.name)
        state = jr.state.value if jr is not None else "never run"
        boxes[key] = (
            "job",
            _cut(s.name),
            f"{s.type} · {state}",
            f"{s.name}: {state}",
            jobs_url(repo, s.name),
            look(jr.state if jr else None),
        )
        if s.name not in readers:
            out = f"out:{s.name}"
            parent[out] = key
            layer[out] = layer[key] + 1
            boxes[out] = ("output", _cut(f"job/{s.name}"), "output", f"the output of {s.name}", "", "none")
    rows: dict[str, int] = {}
    columns: dict[int, list[str]] = {}
    for key in sorted(layer, key=lambda k: layer[k]):
        columns.setdefault(layer[key], []).append(key)
    for n in sorted(columns):
        keys = sorted(columns[n], key=lambda k: (rows.get(parent.get(k, ""), 0), k))
        for i, key in enumerate(keys):
            rows[key] = i

    def at(key: str) -> tuple[int, int]:
        return PAD + layer[key] * (BOX_W + GAP_X), PAD + rows[key] * (BOX_H + GAP_Y)

    drawn = [Box(key, *boxes[key][:3], boxes[key][3], boxes[key][4], boxes[key][5], *at(key)) for key in layer]
    edges = []
    for child, src in sorted(parent.items()):
        (x1, y1), (x2, y2) = at(src), at(child)
        edges.append(Edge(src, child, x1 + BOX_W, y1 + BOX_H // 2, x2 - 2, y2 + BOX_H // 2))
    width = PAD * 2 + (max(layer.values(), default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max((len(c) for c in columns.values()), default=1) * (BOX_H + GAP_Y) - GAP_Y
    return {"boxes": drawn, "edges": edges, "width": width, "height": height, "w": BOX_W, "h": BOX_H}


# ---- the pages ---------------------------------------------------------------------------
class JobPages:
    """The handlers, on the console's server and guard."""

    def __init__(self, c: Console) -> None:
        self.c = c

    def jobs(self, request: Request) -> Jobs:
        return self.c.s.jobs(request)  # 409 on a server without jobs

    @accepts()
    async def dag(self, request: Request, params: Params) -> Response:
        """The picture, the jobs with their last runs, and the newest runs."""
        repo = self.c.repo(request)
        jobs = self.jobs(request)

        def read() -> tuple[list[JobSpec], dict[str, tuple[Run, JobRun] | None], list[Run]]:
            specs = jobs.specs()
            newest = {s.name: jobs.job_run_page(s.name, 1) for s in specs}  # one row each
            return specs, {n: page[0] if page else None for n, page in newest.items()}, jobs.runs()[:RECENT_RUNS]

        specs, newest, runs = await run(read)
        last = {name: pair[1] if pair else None for name, pair in newest.items()}
        rows = []
        for s in specs:
            pair = newest[s.name]
            rows.append(
                {
                    "name": s.name,
                    "href": jobs_url(repo.name, s.name),
                    "type": s.type,
                    "input": s.input or "/",
                    "input_href": jobs_url(repo.name, s.upstream) if s.upstream else "",
                    "last": job_run_view(repo.name, pair[1], pair[0]) if pair is not None else None,
                }
            )
        recent = [
            {
                "short": r.commit[:12],
                "href": run_url(repo.name, r.commit),
                "branch": r.branch,
                "state": r.state.value,
                "look": look(r.state),
                "created": when(r.created),
                "took": duration(r.started, r.finished),
            }
            for r in runs
        ]
        picture = await run(draw, repo.name, specs, last) if 0 < len(specs) <= MAX_DRAWN else None
        live = any(jr is not None and not jr.state.over for jr in last.values())
        return await self.c.page(
            request,
            "jobs.html",
            title=f"jobs of {repo.name}",
            crumbs=self.c.crumbs(repo.name, tail="jobs"),
            repo=repo.name,
            g=picture,
            too_many=len(specs) > MAX_DRAWN,
            jobs=rows,
            runs=recent,
            refresh=REFRESH if live else 0,
        )

    @accepts("before")
    async def job(self, request: Request, params: Params) -> Response:
        """A job's spec and its runs, newest first, RUNS_PAGE at a time (`before`: the
        commit of the last run of the previous page)."""
        repo = self.c.repo(request)
        name = check_job_name(request.path_params["name"])
        before = params.get("before")
        if before is not None and not _COMMIT.fullmatch(before):
            raise BadRequest(f"before must be the commit id of a run, not {before[:100]!r}")
        jobs = self.jobs(request)

        def read() -> tuple[JobSpec, list[tuple[Run, JobRun]], Failure | None]:
            spec = jobs.get_spec(name)
            page = jobs.job_run_page(name, RUNS_PAGE + 1, before)
            first = None
            if before is None and page and page[0][1].state == JobState.FAILED:
                found = jobs.failures(page[0][1], 1)
                first = found[0] if found else None
            return spec, page, first

        spec, page, first = await run(read)
        runs = [job_run_view(repo.name, jr, r) for r, jr in page[:RUNS_PAGE]]
        failed = runs[0] if before is None and runs and runs[0]["look"] == "failed" else None  # or skipped
        more = jobs_url(repo.name, name, before=page[RUNS_PAGE - 1][0].commit) if len(page) > RUNS_PAGE else None
        return await self.c.page(
            request,
            "job.html",
            title=f"job {name}",
            crumbs=[*self.c.crumbs(repo.name)[:1], ("jobs", jobs_url(repo.name)), (name, None)],
            name=name,
            spec=orjson.dumps(spec.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode(),
            kind=spec.type,
            input=spec.input or "/",
            input_href=jobs_url(repo.name, spec.upstream) if spec.upstream else "",
            failed=failed,
            first=failure_view(first) if first is not None else None,
            runs=runs,
            before=before,
            first_page=jobs_url(repo.name, name),
            next=more,
            refresh=REFRESH if before is None and runs and not runs[0]["over"] else 0,
        )

    @accepts("after", "log")
    async def job_run(self, request: Request, params: Params) -> Response:
        """One job of a run: progress, failed files FAILURES_PAGE at a time from the path
        after `after`, and LOG_WINDOW characters of its workers' log (the newest, or from
        character `log`)."""
        repo = self.c.repo(request)
        name = check_job_name(request.path_params["name"])
        after = params.get("after")
        if after is not None and len(after.encode()) > MAX_PATH:
            raise BadRequest(f"after must be a path of at most {MAX_PATH} bytes")
        at = params.get("log")
        if at is not None and not _OFFSET.fullmatch(at):
            raise BadRequest(f"log must be a character offset, such as 0, not {at[:100]!r}")
        jobs = self.jobs(request)

        def read() -> tuple[Run, JobRun, list[Failure], tuple[str, int], int]:
            commit = run_commit(repo, request.path_params["id"])
            r = jobs.run(commit)
            jr = jobs.job_run(commit, name, log=False)
            failures = jobs.failures(jr, FAILURES_PAGE + 1, after)
            start = int(at) if at is not None else max(jobs.log_piece(jr, 0, 0)[1] - LOG_WINDOW, 0)
            return r, jr, failures, jobs.log_piece(jr, start, LOG_WINDOW), start

        r, jr, failures, (piece, total), start = await run(read)
        view = job_run_view(repo.name, jr, r)
        end = start + len(piece)
        here = view["href"]
        log = {
            "lines": log_text(piece).split("\n") if piece else [],
            "start": start,
            "end": end,
            "total": total,
            "earlier": f"{here}?log={max(start - LOG_WINDOW, 0)}" if start > 0 else None,
            "later": f"{here}?log={end}" if end < total else None,
            "newest": here if at is not None else None,
        }
        more = None
        if len(failures) > FAILURES_PAGE:
            more = jobs_url(repo.name, name, "runs", jr.commit, after=failures[FAILURES_PAGE - 1].path)
        return await self.c.page(
            request,
            "job_run.html",
            title=f"{name} on {jr.commit[:12]}",
            crumbs=[
                *self.c.crumbs(repo.name)[:1],
                ("jobs", jobs_url(repo.name)),
                (name, jobs_url(repo.name, name)),
                (jr.commit[:12], None),
            ],
            r=view,
            run_state=r.state.value,
            spec=orjson.dumps(orjson.loads(jr.spec), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode(),
            failures=[failure_view(f) for f in failures[:FAILURES_PAGE]],
            after=after,
            first_page=here,
            next=more,
            log=log,
            window=LOG_WINDOW,
            refresh=0 if jr.state.over else REFRESH,
        )

    @accepts()
    async def run_page(self, request: Request, params: Params) -> Response:
        """The run on a commit: each job in the order they run, with its state and reason."""
        repo = self.c.repo(request)
        jobs = self.jobs(request)

        def read() -> tuple[Run, list[JobRun]]:
            commit = run_commit(repo, request.path_params["id"])
            return jobs.run(commit), jobs.run_jobs(commit, log=False)

        r, jrs = await run(read)
        return await self.c.page(
            request,
            "run.html",
            title=f"run on {r.commit[:12]}",
            crumbs=[*self.c.crumbs(repo.name)[:1], ("jobs", jobs_url(repo.name)), (f"run {r.commit[:12]}", None)],
            run={
                "commit": r.commit,
                "short": r.commit[:12],
                "branch": r.branch,
                "state": r.state.value,
                "look": look(r.state),
                "created": when(r.created),
                "took": duration(r.started, r.finished),
                "error": in_one_line(r.error) if r.error else "",
                "tree": url(repo.name, "tree", r.commit),
                "log": url(repo.name, "log", r.commit),
            },
            jobs=[job_run_view(repo.name, jr, r) for jr in jrs],
            refresh=0 if r.state.over else REFRESH,
        )


def routes(c: Console) -> list[tuple[str, dict[str, Callable[[Request], Awaitable[Response]]]]]:
    """(route, {method: handler}): each route also needs its line in permissions.py."""
    p = JobPages(c)
    return [
        ("/ui/{repo}/jobs", {"get": p.dag}),
        ("/ui/{repo}/jobs/{name}", {"get": p.job}),
        ("/ui/{repo}/jobs/{name}/runs/{id}", {"get": p.job_run}),
        ("/ui/{repo}/runs/{id}", {"get": p.run_page}),
    ]


# ---- templates -----------------------------------------------------------------------------
REFRESH_HEAD = """{% block head %}
{% if refresh %}<meta http-equiv="refresh" content="{{ refresh }}">{% endif %}
{% endblock %}
"""

PROGRESS = """{% macro bar(p) %}<progress max="{{ p.max }}" value="{{ p.value }}"></progress>
<span class="count">{{ p.done }} / {{ p.todo }}
{%- if p.failed %} · <span class="bad">{{ p.failed }} failed</span>{% endif %}
{% if p.reused %} · {{ p.reused }} reused{% endif %}</span>{% endmacro %}
"""

JOBS = (
    """{% extends "base.html" %}
{% from "progress.html" import bar %}
"""
    + REFRESH_HEAD
    + """{% block main %}
<h1>Jobs of {{ repo }}</h1>
{% if g %}
<div class="scroll dag-wrap">
<svg id="dag" class="dag" xmlns="http://www.w3.org/2000/svg" width="{{ g.width }}" height="{{ g.height }}"
 viewBox="0 0 {{ g.width }} {{ g.height }}" role="img" aria-label="the jobs of {{ repo }}: inputs, jobs, outputs">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto">
<path class="arrowhead" d="M0,0 L10,5 L0,10 z"/></marker></defs>
{% for e in g.edges %}
<path class="edge" data-from="{{ e.src }}" data-to="{{ e.dst }}"
 d="M{{ e.x1 }},{{ e.y1 }} C{{ e.mx }},{{ e.y1 }} {{ e.mx }},{{ e.y2 }} {{ e.x2 }},{{ e.y2 }}"
 marker-end="url(#arrow)"/>
{% endfor %}
{% for b in g.boxes %}
{% if b.href %}<a href="{{ b.href }}">{% endif %}
<g class="node {{ b.kind }} {{ b.look }}" data-key="{{ b.key }}">
<title>{{ b.title }}</title>
<rect x="{{ b.x }}" y="{{ b.y }}" width="{{ g.w }}" height="{{ g.h }}" rx="6"/>
<text class="label" x="{{ b.x + 10 }}" y="{{ b.y + 19 }}">{{ b.label }}</text>
<text class="sub" x="{{ b.x + 10 }}" y="{{ b.y + 36 }}">{{ b.sub }}</text>
</g>
{% if b.href %}</a>{% endif %}
{% endfor %}
</svg>
</div>
<p class="legend note"><span class="key ok"></span>succeeded <span class="key running"></span>running
<span class="key failed"></span>failed <span class="key none"></span>never run · a job's box leads to its runs</p>
{% elif too_many %}
<p class="note">Too many jobs to draw; they are listed below.</p>
{% endif %}
{% if jobs %}
<table class="list" id="jobs">
<thead><tr><th>job</th><th>type</th><th>input</th><th>output</th><th>last run</th><th>progress</th>
<th>when</th></tr></thead>
<tbody>
{% for j in jobs %}
<tr>
<td><a href="{{ j.href }}">{{ j.name }}</a></td>
<td>{{ j.type }}</td>
<td>{% if j.input_href %}<a href="{{ j.input_href }}">{{ j.input }}</a>{% else %}{{ j.input }}{% endif %}</td>
<td class="id">job/{{ j.name }}</td>
{% if j.last %}
<td><a class="state {{ j.last.look }}" href="{{ j.last.href }}">{{ j.last.state }}</a></td>
<td>{{ bar(j.last.progress) }}</td>
<td class="time">{{ j.last.created }}</td>
{% else %}
<td colspan="3" class="note">never run</td>
{% endif %}
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="note">No jobs in this repository.</p>
{% endif %}
<h2>Recent runs</h2>
{% if runs %}
<table class="list" id="runs">
<thead><tr><th>commit</th><th>branch</th><th>state</th><th>created</th><th>took</th></tr></thead>
<tbody>
{% for r in runs %}
<tr><td><a class="id" href="{{ r.href }}">{{ r.short }}</a></td><td>{{ r.branch }}</td>
<td><span class="state {{ r.look }}">{{ r.state }}</span></td><td class="time">{{ r.created }}</td>
<td>{{ r.took }}</td></tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="note">No runs yet: commit with <code>?run</code> to run the jobs.</p>
{% endif %}
{% endblock %}
"""
)

JOB = (
    """{% extends "base.html" %}
{% from "progress.html" import bar %}
"""
    + REFRESH_HEAD
    + """{% block main %}
<h1>{{ name }} <span class="badge">{{ kind }}</span></h1>
{% if failed %}
<div class="error reason" id="reason">
<span class="oneline"><strong>Last run {{ failed.state }}:</strong> {{ failed.reason or "no reason recorded" }}</span>
{% if first %}
<span class="oneline">first failed file: <span class="id">{{ first.path }}</span>: {{ first.error }}</span>
{% endif %}
<a href="{{ failed.href }}">the run</a>
{% if first %} · <a href="{{ failed.href }}#failures">its failed files</a>{% endif %}
 · <a href="{{ failed.href }}#log">its log</a></div>
{% endif %}
<p class="note">reads {% if input_href %}<a href="{{ input_href }}">{{ input }}</a>{% else %}{{ input }}{% endif %};
its output is read as <span class="id">job/{{ name }}</span> with the run's commit id</p>
<details><summary>spec</summary><pre class="message" id="spec">{{ spec }}</pre></details>
<h2>Runs</h2>
{% if before %}<p class="note">older runs · <a href="{{ first_page }}">newest</a></p>{% endif %}
{% if runs %}
<table class="list" id="job-runs">
<thead><tr><th>input commit</th><th>branch</th><th>state</th><th>progress</th><th>took</th><th>output</th>
<th>created</th></tr></thead>
<tbody>
{% for r in runs %}
<tr class="{{ r.look }}">
<td><a class="id" href="{{ r.href }}" title="{{ r.commit }}">{{ r.short }}</a>
<span class="links"><a href="{{ r.tree }}">tree</a> <a href="{{ r.log }}">log</a></span></td>
<td>{{ r.branch }}</td>
<td><a class="state {{ r.look }}" href="{{ r.href }}">{{ r.state }}</a>
{% if r.reason %}<div class="why" title="{{ r.reason }}">{{ r.reason }}</div>{% endif %}</td>
<td>{{ bar(r.progress) }}</td>
<td>{{ r.took }}</td>
<td>{% if r.output %}<a class="id" href="{{ r.output }}">{{ r.output_tree or "files" }}</a>{% endif %}</td>
<td class="time">{{ r.created }}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="note">No runs of this job{% if before %} before that one{% endif %}.</p>
{% endif %}
{% if next %}<p class="pager"><a rel="next" href="{{ next }}">older runs →</a></p>{% endif %}
{% endblock %}
"""
)

JOB_RUN = (
    """{% extends "base.html" %}
{% from "progress.html" import bar %}
"""
    + REFRESH_HEAD
    + """{% block main %}
<h1>{{ r.job }} on <span class="id">{{ r.short }}</span>
<span class="state {{ r.look }}" id="state">{{ r.state }}</span></h1>
{% if r.reason %}<p class="error reason oneline" id="reason" title="{{ r.reason }}">{{ r.reason }}</p>{% endif %}
{% if refresh %}<p class="note live">Still {{ r.state }}: this page reloads every {{ refresh }} s.</p>{% endif %}
<table class="facts">
<tr><th>progress</th><td id="progress">{{ bar(r.progress) }}</td></tr>
<tr><th>input commit</th><td><a class="id" href="{{ r.tree }}" title="{{ r.commit }}">{{ r.short }}</a>
on {{ r.branch }}
· <a href="{{ r.log }}">log</a> · <a href="{{ r.run_href }}">the whole run</a> ({{ run_state }})</td></tr>
<tr><th>output</th><td>
{% if r.output %}<a class="id" href="{{ r.output }}">{{ r.output_tree or "files" }}</a>
{% else %}<span class="note">none{% if not r.over %} yet{% endif %}</span>{% endif %}
</td></tr>
<tr><th>started</th><td class="time">{{ r.started or "not yet" }}{% if r.took %} · {{ r.took }}{% endif %}</td></tr>
{% if r.image %}<tr><th>image</th><td class="id">{{ r.image }}</td></tr>{% endif %}
</table>
<details><summary>spec of this run</summary><pre class="message">{{ spec }}</pre></details>
<h2 id="failures">Failed files{% if r.progress.failed %} ({{ r.progress.failed }}){% endif %}</h2>
{% if after %}
<p class="note">paths after “{{ after }}” · <a href="{{ first_page }}#failures">first page</a></p>
{% endif %}
{% if failures %}
<table class="list" id="failed">
<thead><tr><th>path</th><th>error</th></tr></thead>
<tbody>
{% for f in failures %}<tr><td class="id">{{ f.path }}</td><td class="why-cell">{{ f.error }}</td></tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="note">None{% if after %} after that path{% endif %}.</p>
{% endif %}
{% if next %}<p class="pager"><a rel="next" href="{{ next }}#failures">more failed files →</a></p>{% endif %}
<h2 id="log">Workers' log</h2>
{% if log.total %}
<p class="note">characters {{ log.start }}–{{ log.end }} of {{ log.total }}
{% if log.earlier %} · <a href="{{ log.earlier }}#log">earlier</a>{% endif %}
{% if log.later %} · <a href="{{ log.later }}#log">later</a>{% endif %}
{% if log.newest %} · <a href="{{ log.newest }}#log">newest</a>{% endif %}</p>
<div class="scroll"><pre class="code logtext" id="logtext">
{%- for line in log.lines %}<span class="line">{{ line }}</span>
{% endfor -%}
</pre></div>
{% elif r.over %}
<p class="note">No log.</p>
{% else %}
<p class="note">The workers' log is saved when the job ends.</p>
{% endif %}
{% endblock %}
"""
)

RUN = (
    """{% extends "base.html" %}
{% from "progress.html" import bar %}
"""
    + REFRESH_HEAD
    + """{% block main %}
<h1>Run on <span class="id">{{ run.short }}</span>
<span class="state {{ run.look }}" id="state">{{ run.state }}</span></h1>
{% if run.error %}<p class="error reason oneline" id="reason" title="{{ run.error }}">{{ run.error }}</p>{% endif %}
<p class="note">commit <a class="id" href="{{ run.tree }}" title="{{ run.commit }}">{{ run.short }}</a>
on {{ run.branch }}
· <a href="{{ run.log }}">log</a> · created {{ run.created }}{% if run.took %} · took {{ run.took }}{% endif %}</p>
<table class="list" id="run-jobs">
<thead><tr><th>job</th><th>type</th><th>state</th><th>progress</th><th>took</th></tr></thead>
<tbody>
{% for j in jobs %}
<tr class="{{ j.look }}">
<td><a href="{{ j.job_href }}">{{ j.job }}</a></td><td>{{ j.type }}</td>
<td><a class="state {{ j.look }}" href="{{ j.href }}">{{ j.state }}</a>
{% if j.reason %}<div class="why" title="{{ j.reason }}">{{ j.reason }}</div>{% endif %}</td>
<td>{{ bar(j.progress) }}</td><td>{{ j.took }}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% endblock %}
"""
)

CSS = """
.dag-wrap { padding: .5em; background: #fff; }
svg.dag { display: block; font: 13px system-ui, -apple-system, "Segoe UI", sans-serif; }
svg.dag .edge { fill: none; stroke: #8c959f; stroke-width: 1.5; }
svg.dag .arrowhead { fill: #8c959f; }
svg.dag rect { stroke-width: 1.5; fill: #f6f8fa; stroke: #8c959f; }
svg.dag .label { font-weight: 600; fill: #1f2328; }
svg.dag .sub { fill: #59636e; font-size: 11.5px; }
svg.dag .input rect { fill: #ddf4ff; stroke: #54aeff; }
svg.dag .output rect { fill: #fff; stroke: #8c959f; stroke-dasharray: 4 3; }
svg.dag .job.ok rect { fill: #dafbe1; stroke: #1a7f37; }
svg.dag .job.running rect { fill: #fff8c5; stroke: #bf8700; }
svg.dag .job.failed rect { fill: #ffebe9; stroke: #cf222e; }
svg.dag a:hover rect { stroke-width: 3; }
.legend .key { display: inline-block; width: 1em; height: .8em; border: 1px solid #8c959f; margin: 0 .2em 0 .8em;
  vertical-align: middle; background: #f6f8fa; }
.legend .key.ok { background: #dafbe1; } .legend .key.running { background: #fff8c5; }
.legend .key.failed { background: #ffebe9; }
.state { font-weight: 600; }
.state.ok { color: #1a7f37; } .state.running { color: #9a6700; } .state.failed { color: #cf222e; }
.bad { color: #cf222e; }
.why { color: #cf222e; font-size: 12.5px; max-width: 40em; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.why-cell { overflow-wrap: anywhere; }
.reason { white-space: normal; overflow-wrap: anywhere; margin: 1em 0; }
.oneline { display: block; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
progress { width: 8em; vertical-align: middle; }
.count { font-variant-numeric: tabular-nums; margin-left: .4em; }
table.facts th { text-align: left; padding: .2em 1em .2em 0; color: var(--muted); font-weight: 500; }
.links a { font-size: 12px; margin-left: .4em; }
pre.logtext { white-space: pre-wrap; overflow-wrap: anywhere; }
"""

templates.add(
    {"jobs.html": JOBS, "job.html": JOB, "job_run.html": JOB_RUN, "run.html": RUN, "progress.html": PROGRESS}, css=CSS
)
