"""The console's pages: Jinja2 templates, autoescaped, kept in Python so that every way pfs
is installed (a wheel, the image) carries them without package-data settings.

Every value a page shows is escaped by Jinja (`autoescape=True` for all templates, and no
template marks anything `|safe`); URLs are built in pages.py from quoted segments under
`/ui/`, so a stored name can neither close an attribute nor pick a scheme."""

from __future__ import annotations

import jinja2

from .graph import CSS as GRAPH_CSS

BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>{{ title }} · pfs</title>
<link rel="stylesheet" href="/ui/_static/console.css">
{% block head %}{% endblock %}
</head>
<body>
<header>
<a class="brand" href="/ui">pfs</a>
<nav class="crumbs" aria-label="breadcrumbs">
{%- for label, href in crumbs -%}
<span class="sep">/</span>{% if href %}<a href="{{ href }}">{{ label }}</a>{% else %}<span>{{ label }}</span>{% endif %}
{%- endfor -%}
</nav>
{% if ui is defined and ui.user %}
<div class="who"><span id="user">signed in as {{ ui.user }}</span>
{% if ui.session %}<form class="inline" method="post" action="/ui/_logout">
<input type="hidden" name="csrf" value="{{ ui.csrf }}"><button type="submit" id="logout">sign out</button>
</form>{% endif %}
</div>
{% endif %}
</header>
<main>
{% if ui is defined and ui.notice %}<p class="notice" id="notice" role="status">{{ ui.notice }}</p>{% endif %}
{% block main %}{% endblock %}
</main>
<footer id="footer">pfs web console{% if ui is defined and ui.role %} · {{ ui.role }}{% endif %}</footer>
</body>
</html>
"""

REPOS = """{% extends "base.html" %}
{% block main %}
<h1>Repositories</h1>
{% if repos %}
<table class="list" id="repos">
<thead><tr><th>name</th><th>created</th><th></th></tr></thead>
<tbody>
{% for r in repos %}
<tr><td><a href="{{ r.href }}">{{ r.name }}</a></td><td>{{ r.created }}</td>
<td>{% if r.default %}<span class="badge">default</span>{% endif %}</td></tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="note">No repository you may read.</p>
{% endif %}
{% endblock %}
"""

REPO = """{% extends "base.html" %}
{% block main %}
<h1>{{ repo }}</h1>
<p class="note"><a href="{{ jobs }}" id="jobs-link">jobs and runs</a> ·
<a href="{{ compare }}">compare branches or commits</a></p>
<h2>Branches</h2>
{% if branches %}
<table class="list" id="branches">
<thead><tr><th>branch</th><th>head</th><th>time</th><th>message</th><th></th></tr></thead>
<tbody>
{% for b in branches %}
<tr>
<td><a href="{{ b.log }}">{{ b.name }}</a></td>
{% if b.head %}
<td><a class="id" href="{{ b.tree }}" title="{{ b.head.id }}">{{ b.head.short }}</a></td>
<td class="time">{{ b.head.time }}</td>
<td>{{ b.head.subject }}</td>
<td class="links"><a href="{{ b.log }}">log</a> <a href="{{ b.tree }}">tree</a>
{%- include "branch_actions.html" ignore missing %}</td>
{% else %}
<td colspan="3" class="note">no commits yet</td>
<td class="links">{% include "branch_actions.html" ignore missing %}</td>
{% endif %}
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="note">No branches.</p>
{% endif %}
{% if next %}<p class="pager"><a rel="next" href="{{ next }}">more branches →</a></p>{% endif %}
{% include "repo_actions.html" ignore missing %}
{% endblock %}
"""

LOG = """{% extends "base.html" %}
{% macro lanes(d, g) %}
<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{{ g.width }}" aria-hidden="true"
 focusable="false">
{%- for cls, x1, y1, x2, y2 in d.lines %}
<line class="{{ cls }}" x1="{{ x1 }}" y1="{{ y1 }}" x2="{{ x2 }}" y2="{{ y2 }}"/>
{%- endfor %}
{%- for cls, path in d.curves %}<path class="{{ cls }}" d="{{ path }}"/>{% endfor %}
{%- if d.dot %}<circle class="dot {{ d.dot[0] }}" cx="{{ d.dot[1] }}" cy="{{ d.dot[2] }}" r="{{ g.dot_r }}"/>{% endif %}
{%- if d.more %}<g class="more">
{%- for dx in (-4, 0, 4) %}<circle cx="{{ g.more_x + dx }}" cy="{{ g.dot_y }}" r="1.5"/>{% endfor -%}
</g>{% endif -%}
</svg>
{% endmacro %}
{% block main %}
<h1>History of {{ ref }}</h1>
{% include "ref_actions.html" ignore missing %}
{% if after %}
<p class="note">after commit <span class="id">{{ after }}</span> · <a href="{{ first }}">newest</a></p>
{% endif %}
<ol class="log{% if graph.columns %} graph-{{ graph.columns }}{% endif %}" id="log">
{% for c in commits %}
<li class="commit">
{{ lanes(c.graph, graph) }}
<div class="subject">{{ c.subject }}</div>
{% if c.body %}<details><summary>full message</summary><pre class="message">{{ c.body }}</pre></details>{% endif %}
<div class="meta">
<a class="id" href="{{ c.tree }}" title="browse the files of {{ c.id }}">{{ c.short }}</a>
<span class="time">{{ c.time }}</span>
<span class="branch">on {{ c.branch }}</span>
{% if c.parents|length > 1 %}<span class="badge">merge</span>{% endif %}
{% include "commit_actions.html" ignore missing %}
<span class="parents">{% if c.parents %}parent{{ "s" if c.parents|length > 1 }}:
{% for p in c.parents %}<a class="id parent" href="{{ p.href }}" title="{{ p.id }}">{{ p.short }}</a> {% endfor %}
{% else %}no parent{% endif %}</span>
{% if c.diff %}<a class="diff" href="{{ c.diff }}">diff against parent</a>{% endif %}
</div>
</li>
{% endfor %}
</ol>
{% if not commits %}<p class="note">No commits.</p>{% endif %}
{% if next %}<p class="pager"><a rel="next" href="{{ next }}">older commits →</a></p>{% endif %}
{% endblock %}
"""

TREE = """{% extends "base.html" %}
{% block main %}
<h1>{{ path or "/" }}</h1>
<p class="note">at <a class="id" href="{{ log }}" title="{{ commit.id }}">{{ commit.short }}</a>
{{ commit.time }} · {{ commit.subject }}</p>
{% include "ref_actions.html" ignore missing %}
{% if after %}<p class="note">names after “{{ after }}” · <a href="{{ first }}">first page</a></p>{% endif %}
<table class="list" id="tree">
<thead><tr><th>name</th><th class="num">size</th></tr></thead>
<tbody>
{% if parent %}<tr><td><a href="{{ parent }}">..</a></td><td></td></tr>{% endif %}
{% for e in entries %}
<tr class="{{ e.kind }}"><td><a href="{{ e.href }}">{{ e.name }}{% if e.kind == "dir" %}/{% endif %}</a></td>
<td class="num">{{ e.size }}</td></tr>
{% endfor %}
</tbody>
</table>
{% if not entries %}<p class="note">Empty directory.</p>{% endif %}
{% if next %}<p class="pager"><a rel="next" href="{{ next }}">next {{ page }} names →</a></p>{% endif %}
{% endblock %}
"""

BLOB = """{% extends "base.html" %}
{% macro table(rows) %}<div class="scroll"><table class="csv" id="csv">
{% for row in rows %}
{% if loop.first %}<thead><tr>{% for cell in row %}<th>{{ cell }}</th>{% endfor %}</tr></thead><tbody>
{% else %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endif %}
{% endfor %}
</tbody></table></div>
{% endmacro %}
{% block main %}
<h1>{{ name }}</h1>
<p class="note">{{ size }} at <a class="id" href="{{ log }}" title="{{ commit.id }}">{{ commit.short }}</a>
· <a href="{{ raw }}">raw</a> · <a href="{{ download }}">download</a> · <a href="{{ history }}">history</a></p>
{% if p.cut %}<p class="note cut">Only the first {{ limit }} are shown.</p>{% endif %}
{% if p.kind == "empty" %}
<p class="note">Empty file.</p>
{% elif p.kind == "image" %}
<p><img class="preview" src="{{ raw }}" alt="{{ name }}"></p>
{% elif p.kind == "binary" %}
<p class="note">Binary file, {{ size }}: <a href="{{ download }}">download</a>.</p>
{% if p.note %}<p class="note" id="why">{{ p.note }}</p>{% endif %}
{% elif p.kind == "parquet" %}
<p class="note" id="parquet-summary">Parquet: {{ p.summary }}.</p>
{% if p.note %}<p class="note cut" id="why">{{ p.note }}</p>{% endif %}
<h2>Schema</h2>
<table class="list" id="schema"><thead><tr><th>column</th><th>type</th></tr></thead><tbody>
{% for name, type in p.schema %}<tr><td>{{ name }}</td><td class="id">{{ type }}</td></tr>
{% endfor %}</tbody></table>
{% if p.rows %}
<h2>First rows</h2>
{{ table(p.rows) }}
{% if p.more_rows %}<p class="note cut">Only the first {{ p.rows|length - 1 }} rows are shown.</p>{% endif %}
{% endif %}
{% elif p.kind == "table" %}
{{ table(p.rows) }}
{% if p.more_rows %}<p class="note cut">Only the first {{ rows }} rows are shown.</p>{% endif %}
{% else %}
<div class="scroll"><pre class="code {{ p.kind }}" id="code">
{%- for line in p.lines %}<span class="line">{{ line }}</span>
{% endfor -%}
</pre></div>
{% endif %}
{% endblock %}
"""

ERROR = """{% extends "base.html" %}
{% block main %}
<h1>{{ status }} {{ reason }}</h1>
<p class="error" id="error">{{ message }}</p>
<p class="note">request {{ request_id }} · <a href="/ui">repositories</a></p>
{% endblock %}
"""

CSS = """:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg2: #f6f8fa; --link: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); }
header { display: flex; gap: 1em; align-items: baseline; padding: .6em 1.5em; background: #24292f; color: #fff; }
header a { color: #fff; }
.brand { font-weight: 700; text-decoration: none; font-size: 1.2em; }
.crumbs .sep { margin: 0 .35em; color: #8c959f; }
main { padding: 1em 1.5em; max-width: 1200px; }
footer { padding: 1em 1.5em; color: var(--muted); font-size: 12px; }
a { color: var(--link); text-decoration: none; }
a:hover { text-decoration: underline; }
h1 { font-size: 1.5em; margin: .3em 0; overflow-wrap: anywhere; }
h2 { font-size: 1.15em; }
.note { color: var(--muted); }
.cut { color: #9a6700; }
.error { padding: .8em 1em; border: 1px solid #ff818266; background: #ffebe9; border-radius: 6px;
  white-space: pre-wrap; }
.badge { border: 1px solid var(--line); border-radius: 1em; padding: 0 .5em; font-size: 12px; color: var(--muted); }
.id { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 13px; }
table.list, table.csv { border-collapse: collapse; width: 100%; }
table.list th, table.list td, table.csv th, table.csv td { text-align: left; padding: .35em .7em;
  border-bottom: 1px solid var(--line); }
table.list th, table.csv th { background: var(--bg2); font-weight: 600; }
table.csv td, table.csv th { border: 1px solid var(--line); white-space: pre; }
table.list .num { text-align: right; font-variant-numeric: tabular-nums; width: 10em; }
tr.dir a { font-weight: 600; }
td.links a { margin-right: .6em; }
.time { color: var(--muted); white-space: nowrap; }
ol.log { list-style: none; padding: 0; border: 1px solid var(--line); border-radius: 6px; }
li.commit { padding: .6em 1em; border-bottom: 1px solid var(--line); }
li.commit:last-child { border-bottom: none; }
.subject { font-weight: 600; overflow-wrap: anywhere; }
.meta { display: flex; flex-wrap: wrap; gap: 1em; color: var(--muted); font-size: 13px; }
pre.message { white-space: pre-wrap; background: var(--bg2); padding: .5em; }
.scroll { overflow: auto; border: 1px solid var(--line); border-radius: 6px; }
pre.code { margin: 0; padding: .5em 0; counter-reset: line;
  font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; }
pre.code .line { counter-increment: line; }
pre.code .line::before { content: counter(line); display: inline-block; width: 4.5em; padding-right: 1em;
  margin-right: .8em; text-align: right; color: #8c959f; border-right: 1px solid var(--line); user-select: none; }
img.preview { max-width: 100%; border: 1px solid var(--line); }
.pager { margin-top: 1em; }
.who { margin-left: auto; display: flex; gap: .8em; align-items: baseline; }
form.inline { display: inline; margin: 0; }
.notice { padding: .6em 1em; border: 1px solid #4ac26b66; background: #dafbe1; border-radius: 6px; }
"""
CSS += GRAPH_CSS  # the log's commit graph (graph.py)

SOURCES = {
    "base.html": BASE,
    "repos.html": REPOS,
    "repo.html": REPO,
    "log.html": LOG,
    "tree.html": TREE,
    "blob.html": BLOB,
    "error.html": ERROR,
}
STATIC = {"console.css": ("text/css; charset=utf-8", CSS.encode())}


def add(sources: dict[str, str], css: str = "", static: dict[str, tuple[str, bytes]] | None = None) -> None:
    """A part of the console (compare, jobs, actions: each its own module) adds its
    templates, its rules to the one stylesheet, and any other static file, at import."""
    clash = (set(sources) & set(SOURCES)) | (set(static or {}) & set(STATIC))
    if clash:
        raise ValueError(f"console templates defined twice: {sorted(clash)}")
    SOURCES.update(sources)
    STATIC.update(static or {})
    if css:
        media, body = STATIC["console.css"]
        STATIC["console.css"] = (media, body + css.encode())


ENV = jinja2.Environment(
    loader=jinja2.DictLoader(SOURCES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
