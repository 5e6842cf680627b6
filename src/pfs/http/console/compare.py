"""Compare: the diff between two commits or branches, and the history of one file.

Each page costs a page, however big the repository or long its history:

- the changed paths (`/ui/<repo>/compare?base=&head=`) come from a walk of the two trees
  that skips equal subtrees (trees are content-addressed) and starts at the page's cursor
  (`after`, the last path shown), so page 50 reads what page 1 does;
- a file's line diff (`/ui/<repo>/compare/<path>?base=&head=`) reads both sides only when
  each is small (DIFF_BYTES);
- a file's history (`/ui/<repo>/history/<ref>/<path>`) walks the log from its cursor
  (`pages.LogWalk`) and compares the file's entry at each commit with its parents',
  one path lookup each (a directory already met is not read again), until a page of
  changes or HISTORY_SCAN commits.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from ...errors import BadRequest, FileNotFound
from ...paths import clean_path, human_bytes, is_commit_like, join
from ...repository.repo import Repository
from ...storage.trees import Commit, Entry, TreeStore, zip_sorted
from ..web import Params, accepts, run
from . import preview as pv
from . import templates
from .pages import LogWalk, commit_view, compare_url, raw_path, url

if TYPE_CHECKING:
    from .pages import Console

COMPARE_PAGE = 200  # changed paths per compare page (each reads its directories on both sides)
DIFF_BYTES = 256 << 10  # a line diff reads files up to this size (each side)
DIFF_CONTEXT = 3  # unchanged lines shown around each change
HISTORY_PAGE = 50  # changes of a file per history page
HISTORY_SCAN = 1000  # commits one history page looks at, at most (then: "look further")
STATUS = {(False, True): "added", (True, False): "deleted", (True, True): "modified"}


def changes(
    trees: TreeStore, a: str | None, b: str | None, after: str = "", prefix: str = ""
) -> Iterator[tuple[str, Entry | None, Entry | None]]:
    """The files that differ between directory trees `a` and `b`, in tree order (a path
    before the paths below it), only those after path `after` (relative to here). Equal
    subtrees are skipped, and names before the cursor are never read: each directory is
    listed from the cursor's name on (`dir_items` finds it through the index)."""
    if (a or trees.empty_tree) == (b or trees.empty_tree):
        return
    first, _, rest = after.partition("/")
    for name, ra, rb in zip_sorted(trees.dir_stored(a, first), trees.dir_stored(b, first)):
        if ra == rb:
            continue  # stored alike: most names of a big directory, compared without making entries
        ea, eb = trees.stored_entry(ra, a or ""), trees.stored_entry(rb, b or "")
        if ea is not None and eb is not None and ea.hash == eb.hash and ea.kind == eb.kind and ea.meta == eb.meta:
            continue  # the same content (and S3 metadata), however stored
        path = join(prefix, name)
        fa = ea if ea is not None and not ea.is_dir else None
        fb = eb if eb is not None and not eb.is_dir else None
        if (fa is not None or fb is not None) and name != first:  # the cursor's own name was shown (or sorts before it)
            yield path, fa, fb
        da = ea.hash if ea is not None and ea.is_dir else None
        db = eb.hash if eb is not None and eb.is_dir else None
        if da is not None or db is not None:  # a directory on either side: its files
            yield from changes(trees, da, db, rest if name == first else "", path)


def line_diff(old: list[str], new: list[str]) -> list[dict[str, Any]]:
    """Hunks of a line diff (difflib), each a header and rows of (kind, old line number,
    new line number, text): kind "ctx", "del" or "add"."""
    hunks = []
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=True)
    for group in matcher.get_grouped_opcodes(DIFF_CONTEXT):
        rows: list[tuple[str, int | str, int | str, str]] = []
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                rows += [("ctx", i + 1, j + 1, old[i]) for i, j in zip(range(i1, i2), range(j1, j2), strict=True)]
                continue
            rows += [("del", i + 1, "", old[i]) for i in range(i1, i2)]
            rows += [("add", "", j + 1, new[j]) for j in range(j1, j2)]
        a0, a1, b0, b1 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        hunks.append({"header": f"@@ -{a0 + 1},{a1 - a0} +{b0 + 1},{b1 - b0} @@", "rows": rows})
    return hunks


def _both(params: Params) -> tuple[str, str]:
    base, head = params.get("base"), params.get("head")
    if base is None or head is None:
        raise BadRequest("give both base and head: a branch or a commit id each")
    return base, head


class Compare:
    """The compare pages, served by the console `c` (its repository lookup, guard, helpers)."""

    def __init__(self, c: Console) -> None:
        self.c = c

    @accepts("base", "head", "after")
    async def compare_page(self, request: Request, params: Params) -> Response:
        """The paths that differ between two refs, COMPARE_PAGE at a time from `after` on;
        with neither ref given, the form to pick them."""
        repo = self.c.repo(request)
        if params.get("base") is None and params.get("head") is None:
            refs = await run(lambda: [n for n, _ in itertools.islice(repo.branches(), 200)])
            return await self.c.page(request, "compare.html", **self._frame(repo, "", "", refs), rows=None)
        base, head = _both(params)
        after = params.get("after")
        if after is not None:
            after = clean_path(after)

        def page() -> tuple[Commit, Commit, list[tuple[str, Entry | None, Entry | None]], list[str]]:
            a, b = repo.resolve(base), repo.resolve(head)
            walk = changes(repo.trees, a.tree, b.tree, after or "")
            refs = [n for n, _ in itertools.islice(repo.branches(), 200)]
            return a, b, list(itertools.islice(walk, COMPARE_PAGE + 1)), refs

        a, b, items, refs = await run(page)
        rows = []
        for path, old, new in items[:COMPARE_PAGE]:
            status = STATUS[(old is not None, new is not None)]
            at = b if new is not None else a
            rows.append(
                {
                    "path": path,
                    "status": status,
                    "old": human_bytes(old.size) if old is not None else "",
                    "new": human_bytes(new.size) if new is not None else "",
                    "blob": url(repo.name, "blob", at.id, path),
                    "diff": compare_url(repo.name, a.id, b.id, path),
                }
            )
        more = None
        if len(items) > COMPARE_PAGE:
            more = compare_url(repo.name, base, head, after=items[COMPARE_PAGE - 1][0])
        return await self.c.page(
            request,
            "compare.html",
            **self._frame(repo, base, head, refs),
            rows=rows,
            a=commit_view(a, repo.name),
            b=commit_view(b, repo.name),
            after=after,
            first=compare_url(repo.name, base, head),
            page=COMPARE_PAGE,
            next=more,
        )

    def _frame(self, repo: Repository, base: str, head: str, refs: list[str]) -> dict[str, Any]:
        return {
            "title": f"compare {base}...{head}" if base else "compare",
            "crumbs": self.c.crumbs(repo.name, tail="compare"),
            "action": url(repo.name) + "/compare",
            "base": base,
            "head": head,
            "refs": refs,
        }

    @accepts("base", "head")
    async def file_diff(self, request: Request, params: Params) -> Response:
        """One file between two refs: its lines added and removed, when both sides are
        text of at most DIFF_BYTES; else what changed (sizes)."""
        repo = self.c.repo(request)
        base, head = _both(params)
        path = clean_path(raw_path(request))

        def sides() -> tuple[Commit, Commit, Entry | None, Entry | None]:
            a, b = repo.resolve(base), repo.resolve(head)
            return a, b, repo.trees.lookup(a.tree, path), repo.trees.lookup(b.tree, path)

        a, b, old, new = await run(sides)
        if old is None and new is None:
            raise FileNotFound(f"{path!r} is at neither {base[:100]} nor {head[:100]}")
        if (old is not None and old.is_dir) or (new is not None and new.is_dir):
            raise BadRequest(f"{path!r} is a directory: compare lists the files that changed in it")
        hunks: list[dict[str, Any]] = []
        why = ""
        if old == new:
            why = "The file is the same at both."
        elif max(old.size if old else 0, new.size if new else 0) > DIFF_BYTES:
            why = f"Too large for a line diff (more than {human_bytes(DIFF_BYTES)} on a side)."
        elif request.method != "HEAD":
            texts = [await self._text(repo, e) for e in (old, new)]
            if texts[0] is None or texts[1] is None:
                why = "Binary file: no line diff."
            else:
                hunks = await run(line_diff, texts[0].splitlines(), texts[1].splitlines())
        return await self.c.page(
            request,
            "filediff.html",
            title=f"{path} {base}...{head}",
            crumbs=self.c.crumbs(repo.name, b.id, path, tail="diff"),
            path=path,
            a=commit_view(a, repo.name),
            b=commit_view(b, repo.name),
            change=STATUS[(old is not None, new is not None)],
            old=human_bytes(old.size) if old is not None else "",
            new=human_bytes(new.size) if new is not None else "",
            old_blob=url(repo.name, "blob", a.id, path) if old is not None else None,
            new_blob=url(repo.name, "blob", b.id, path) if new is not None else None,
            history=url(repo.name, "history", b.id if new is not None else a.id, path),
            back=compare_url(repo.name, base, head),
            why=why,
            hunks=hunks,
        )

    @staticmethod
    async def _text(repo: Repository, entry: Entry | None) -> str | None:
        """A small file's whole text ("" for none), or None if it is not UTF-8 text."""
        if entry is None or entry.size == 0:
            return ""
        await run(repo.check_data, entry)
        data = await run(lambda: b"".join(repo.read_range(entry, 0, entry.size - 1)))
        return pv.as_text(data, True)

    @accepts("after", "walk")
    async def history(self, request: Request, params: Params) -> Response:
        """The commits of `ref`'s history that changed a file, newest first: a commit
        changed it if its entry there (or its absence) differs from each parent's. A page
        stops at HISTORY_PAGE changes or HISTORY_SCAN commits; the next goes on with the
        same log walk."""
        repo = self.c.repo(request)
        ref = request.path_params["ref"]
        path = clean_path(raw_path(request))
        after = params.get("after")

        def page() -> tuple[list[tuple[Commit, str, Entry | None]], dict[str, str], int]:
            walk = LogWalk(repo, ref, after, params.get("walk"))
            at = _Lookup(repo.trees, path)
            found: list[tuple[Commit, str, Entry | None]] = []
            walked: list[Commit] = []
            it = iter(walk)
            c = next(it, None)
            while c is not None and len(found) < HISTORY_PAGE and len(walked) < HISTORY_SCAN:
                walked.append(c)
                here = at.entry(c.tree)
                before = [at.entry(repo.get_commit(p).tree) for p in c.parents]
                if not any(_same(here, e) for e in before) if before else here is not None:
                    existed = any(e is not None for e in before)
                    found.append((c, STATUS[(existed, here is not None)], here))
                c = next(it, None)
            if after is None and not found and at.entry(walk.start.tree) is None:
                raise FileNotFound(f"{path!r} is not at {ref[:100]} and none of its last {len(walked)} commits had it")
            return found, walk.cursor(walked) if c is not None else {}, len(walked)

        found, cursor, scanned = await run(page)
        rows = []
        for c, status, entry in found:
            parent = c.parents[0] if c.parents else None
            rows.append(
                {
                    "commit": commit_view(c, repo.name),
                    "status": status,
                    "size": human_bytes(entry.size) if entry is not None else "",
                    "blob": url(repo.name, "blob", c.id, path) if entry is not None else None,
                    "diff": compare_url(repo.name, parent, c.id, path) if parent else None,
                }
            )
        return await self.c.page(
            request,
            "history.html",
            title=f"history of {path} at {ref}",
            crumbs=self.c.crumbs(repo.name, ref, path, tail="history"),
            path=path,
            ref=ref[:12] if is_commit_like(ref) else ref,
            after=after,
            first=url(repo.name, "history", ref, path),
            rows=rows,
            scanned=scanned,
            full=len(rows) == HISTORY_PAGE,
            next=url(repo.name, "history", ref, path, **cursor) if cursor else None,
        )


def _same(a: Entry | None, b: Entry | None) -> bool:
    """The same file (or both absent): by content and kind, not by how it is stored."""
    if a is None or b is None:
        return a is b
    return (a.kind, a.hash) == (b.kind, b.hash)


class _Lookup:
    """One path looked up in many trees of one history: a directory met before (same
    key) gives its answer without being read again, so a commit that did not touch the
    path's directories costs a read of the root's node only."""

    def __init__(self, trees: TreeStore, path: str) -> None:
        self.trees, self.parts = trees, path.split("/")
        self.memo: dict[tuple[int, str], Entry | None] = {}

    def entry(self, tree: str) -> Entry | None:
        key: str | None = tree
        met: list[tuple[int, str]] = []
        found: Entry | None = None
        for depth, part in enumerate(self.parts):
            if key is None:
                break
            if (depth, key) in self.memo:
                found = self.memo[(depth, key)]
                break
            met.append((depth, key))
            e = self.trees.dir_get(key, part)
            if e is None or depth == len(self.parts) - 1:
                found = e
                break
            key = e.hash if e.is_dir else None
        for m in met:
            self.memo[m] = found
        return found


COMPARE = """{% extends "base.html" %}
{% block main %}
<h1>Compare</h1>
<form class="compare" method="get" action="{{ action }}">
<label>base <input name="base" value="{{ base }}" list="refs" required size="24"></label>
<span class="dots">…</span>
<label>head <input name="head" value="{{ head }}" list="refs" required size="24"></label>
<button type="submit">compare</button>
<datalist id="refs">{% for r in refs %}<option value="{{ r }}">{% endfor %}</datalist>
</form>
{% if rows is none %}
<p class="note">Pick two branches or commit ids: the files that differ between them, a page at a time.</p>
{% else %}
<p class="note">from <a class="id" href="{{ a.tree }}" title="{{ a.id }}">{{ a.short }}</a> {{ a.subject }}
to <a class="id" href="{{ b.tree }}" title="{{ b.id }}">{{ b.short }}</a> {{ b.subject }}</p>
{% if after %}<p class="note">paths after “{{ after }}” · <a href="{{ first }}">first page</a></p>{% endif %}
{% if rows %}
<table class="list" id="changes">
<thead><tr><th>path</th><th>change</th><th class="num">base</th><th class="num">head</th><th></th></tr></thead>
<tbody>
{% for r in rows %}
<tr class="{{ r.status }}"><td><a href="{{ r.blob }}">{{ r.path }}</a></td>
<td><span class="status {{ r.status }}">{{ r.status }}</span></td>
<td class="num">{{ r.old }}</td><td class="num">{{ r.new }}</td>
<td class="links"><a href="{{ r.diff }}">diff</a></td></tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="note" id="same">No {{ "more " if after }}differences.</p>
{% endif %}
{% if next %}<p class="pager"><a rel="next" href="{{ next }}">next {{ page }} paths →</a></p>{% endif %}
{% endif %}
{% endblock %}
"""

FILEDIFF = """{% extends "base.html" %}
{% block main %}
<h1>{{ path }}</h1>
<p class="note"><span class="status {{ change }}">{{ change }}</span>
from <a class="id" href="{{ a.tree }}" title="{{ a.id }}">{{ a.short }}</a>{% if old %} ({{ old }}){% endif %}
to <a class="id" href="{{ b.tree }}" title="{{ b.id }}">{{ b.short }}</a>{% if new %} ({{ new }}){% endif %}
{% if old_blob %}· <a href="{{ old_blob }}">base file</a> {% endif %}
{% if new_blob %}· <a href="{{ new_blob }}">head file</a> {% endif %}
· <a href="{{ history }}">history</a> · <a href="{{ back }}">all changes</a></p>
{% if why %}<p class="note" id="why">{{ why }}</p>{% endif %}
{% if hunks %}
<div class="scroll"><table class="diff" id="diff">
{% for h in hunks %}
<tr class="hunk"><td class="ln"></td><td class="ln"></td><td>{{ h.header }}</td></tr>
{% for kind, o, n, text in h.rows %}
<tr class="{{ kind }}"><td class="ln">{{ o }}</td><td class="ln">{{ n }}</td><td class="text">{{ text }}</td></tr>
{% endfor %}
{% endfor %}
</table></div>
{% endif %}
{% endblock %}
"""

HISTORY = """{% extends "base.html" %}
{% block main %}
<h1>History of {{ path }}</h1>
<p class="note">commits of <span class="id">{{ ref }}</span> that changed it, newest first
{% if after %} · after commit <span class="id">{{ after }}</span> · <a href="{{ first }}">newest</a>{% endif %}</p>
{% if rows %}
<ol class="log" id="history">
{% for r in rows %}
<li class="commit">
<div class="subject">{{ r.commit.subject }}</div>
<div class="meta">
<span class="status {{ r.status }}">{{ r.status }}</span>
<a class="id" href="{{ r.commit.tree }}" title="{{ r.commit.id }}">{{ r.commit.short }}</a>
<span class="time">{{ r.commit.time }}</span>
<span class="branch">on {{ r.commit.branch }}</span>
{% if r.size %}<span>{{ r.size }}</span>{% endif %}
<span class="links">{% if r.blob %}<a class="file" href="{{ r.blob }}">file</a> {% endif %}
{% if r.diff %}<a class="diff" href="{{ r.diff }}">diff against parent</a>{% endif %}</span>
</div>
</li>
{% endfor %}
</ol>
{% else %}
<p class="note" id="none">No change to this file in the {{ scanned }} commits looked at here.</p>
{% endif %}
{% if next %}
<p class="pager"><a rel="next" href="{{ next }}">{{ "older changes" if full else "look further back" }} →</a></p>
{% endif %}
{% endblock %}
"""

CSS = """form.compare { display: flex; flex-wrap: wrap; gap: .6em; align-items: center; margin: .8em 0; }
form.compare input { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; padding: .2em .4em; }
.status { border-radius: 1em; padding: 0 .5em; font-size: 12px; border: 1px solid var(--line); }
.status.added { background: #dafbe1; }
.status.deleted { background: #ffebe9; }
.status.modified { background: #fff8c5; }
table.diff { border-collapse: collapse; width: 100%; font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; }
table.diff td { padding: 0 .6em; white-space: pre-wrap; overflow-wrap: anywhere; vertical-align: top; }
table.diff td.ln { width: 4.5em; text-align: right; color: #8c959f; user-select: none; white-space: nowrap; }
table.diff tr.add { background: #e6ffec; } table.diff tr.add td.text::before { content: "+ "; }
table.diff tr.del { background: #ffebe9; } table.diff tr.del td.text::before { content: "- "; }
table.diff tr.ctx td.text::before { content: "  "; }
table.diff tr.hunk { background: #ddf4ff; color: var(--muted); }
.meta .links a { margin-right: .6em; }
"""

templates.add({"compare.html": COMPARE, "filediff.html": FILEDIFF, "history.html": HISTORY}, css=CSS)


def routes(c: Console) -> list[tuple[str, dict[str, Callable[[Request], Awaitable[Response]]]]]:
    """(route, {method: handler}): each route also needs its line in permissions.py."""
    p = Compare(c)
    return [
        ("/ui/{repo}/compare", {"get": p.compare_page}),
        ("/ui/{repo}/compare/{path:anypath}", {"get": p.file_diff}),
        ("/ui/{repo}/history/{ref}/{path:anypath}", {"get": p.history}),
    ]
