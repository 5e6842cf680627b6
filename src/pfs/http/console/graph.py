"""The log page's commit graph, as `git log --graph` draws it: one column ("lane") per line
of history open at a row, a dot for each commit, edges from a merge to each of its parents
and from the lanes that meet at a branch point.

Two pure steps, so that each can be tested without a page: `lanes` places the commits of
one log page (in walk order, newest first) in lanes; `draw` turns each row into the lines,
curves and dot of that row's SVG, in pixels, for the template. The layout is that of one
page: a later page starts from the lanes still open at the bottom of the page before it
(the ids its walk continues from, carried in the page's cursor), so its lines go on from
the top of the page.

Bounded work for any history: each row costs the lanes open at it and the commit's
parents, and the drawing has at most MAX_LANES columns plus one "…" column, so a history
with hundreds of open lines, or a commit with hundreds of parents, still makes a narrow
page. The graph carries no text from the repository: only numbers and class names.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MAX_LANES = 16  # columns drawn; lines of history beyond them share one "…" column
COLOURS = 8  # lane-0 … lane-7, cycling: neighbouring lanes differ
LANE_W = 14  # px between columns
X0 = 9  # px from the left edge to the first column
DOT_Y = 19  # px from the top of a row to its dot: the middle of the subject's line
BEND = 14  # px a lane takes to move to another column, above or below the dot
DOT_R = 4


@dataclass(frozen=True, slots=True)
class Row:
    """Where one commit sits and which lanes cross its row. Lanes are column numbers.

    - `through`: lanes that pass the row without touching the commit (drawn top to bottom);
    - `incoming`: lanes from above that end at the dot: every lane that waited for this
      commit (its own lane first, if it was open; more than one at a branch point);
    - `outgoing`: lanes below that start at the dot, one per parent: the first parent's
      (the commit's own lane) first, then each further parent's (a merge fans out).
    """

    lane: int
    through: tuple[int, ...] = ()
    incoming: tuple[int, ...] = ()
    outgoing: tuple[int, ...] = ()

    @property
    def width(self) -> int:
        """The columns this row needs: one past the rightmost lane it touches."""
        return 1 + max((self.lane, *self.through, *self.incoming, *self.outgoing))


@dataclass(frozen=True, slots=True)
class Layout:
    """The rows of a page, in its order, and the ids the lanes left open at its bottom wait
    for, left to right: the next page's `top`."""

    rows: tuple[Row, ...]
    open: tuple[str, ...]


def lanes(commits: Iterable[tuple[str, Sequence[str]]], top: Sequence[str] = ()) -> Layout:
    """Place each of `commits` (id and parent ids, in walk order: newest first) in a lane.

    `top` are the ids the lanes open above the page wait for, left to right: nothing for
    the first page of a log, the ids its walk continues from for a later one.

    A slot list holds, per lane, the id it waits for (None: free). A commit takes the
    leftmost lane waiting for it, or the leftmost free one (a branch head: nothing above
    leads to it); other lanes waiting for it end at it (a branch point, where lines join).
    Its first parent goes on in its lane; each further parent joins the lane already
    waiting for it, or takes the leftmost free lane. Lanes keep their column while open, so
    a line of history is a straight line until it meets another."""
    slots: list[str | None] = list(dict.fromkeys(top))  # a repeated id would be one line
    rows: list[Row] = []
    for cid, parents in commits:
        waiting = [i for i, s in enumerate(slots) if s == cid]
        through = tuple(i for i, s in enumerate(slots) if s is not None and s != cid)
        for i in waiting:
            slots[i] = None
        free = _Free(slots)
        lane = waiting[0] if waiting else free.take()
        outgoing: list[int] = []
        ps = list(dict.fromkeys(parents))  # a parent named twice is one edge
        if ps:
            slots[lane] = ps[0]
            outgoing.append(lane)
            # leftmost lane per id, once per row: a commit with many parents costs each one
            # a look-up, not a scan of every lane
            at: dict[str, int] = {}
            for i, s in enumerate(slots):
                if s is not None:
                    at.setdefault(s, i)
            for p in ps[1:]:
                j = at.get(p)
                if j is None:
                    j = free.take()
                    slots[j], at[p] = p, j
                outgoing.append(j)
        while slots and slots[-1] is None:
            slots.pop()
        rows.append(Row(lane, through, tuple(waiting), tuple(outgoing)))
    return Layout(tuple(rows), tuple(s for s in slots if s is not None))


def in_lane_order(ids: Iterable[str], open_lanes: Sequence[str]) -> list[str]:
    """`ids` (a page's cursor: the commits its walk continues from) in the order of the
    lanes open at the page's bottom, the others after them by id. The next page takes them
    as its `top`, so its lines go on in the columns they had (the walk itself does not
    depend on their order)."""
    lane: dict[str, int] = {}
    for n, i in enumerate(open_lanes):
        lane.setdefault(i, n)
    return sorted(ids, key=lambda i: (lane.get(i, len(lane)), i))


class _Free:
    """The leftmost free slots of one row, in turn. A row only fills slots, so the search
    goes on from where the last one stopped: a row's free slots cost one pass in all."""

    def __init__(self, slots: list[str | None]) -> None:
        self.slots, self.i = slots, 0

    def take(self) -> int:
        s = self.slots
        while self.i < len(s) and s[self.i] is not None:
            self.i += 1
        if self.i == len(s):
            s.append(None)
        i = self.i
        self.i += 1
        return i


@dataclass(slots=True)
class Drawing:
    """One row's SVG, in pixels: straight lines (`y2` may be "100%": to the bottom of the
    row, however tall its text makes it), curves (SVG path data: numbers only), the dot
    (None when the commit's lane is beyond MAX_LANES) and whether the "…" column shows.
    Each shape comes with its classes: what it is (`pass`: a lane passing the row, `up`: a
    lane ending at the dot, `down`: an edge from the dot to a parent's lane, `tail`: that
    lane's line on below the edge's bend; `dot`, `merge`) and `lane-N` for its colour."""

    lines: list[tuple[str, int, int, int, int | str]] = field(default_factory=list)
    curves: list[tuple[str, str]] = field(default_factory=list)
    dot: tuple[str, int, int] | None = None
    more: bool = False


@dataclass(frozen=True, slots=True)
class Graph:
    """A page's graph: its rows' drawings and the width all share (so that the rows line
    up): `columns` columns, `width` px."""

    rows: tuple[Drawing, ...]
    columns: int
    width: int
    more_x: int  # the "…" column
    dot_y: int = DOT_Y
    dot_r: int = DOT_R


def column_x(i: int) -> int:
    return X0 + min(i, MAX_LANES) * LANE_W


def colour(i: int) -> str:
    return f"lane-{i % COLOURS}" if i < MAX_LANES else "lane-more"


def draw(layout: Layout) -> Graph:
    """Each row of `layout` as SVG shapes. Lanes from MAX_LANES on are not drawn: an edge
    between a drawn lane and one of them goes to the "…" column, one between two of them
    is left out, and the row shows "…". Shapes are deduplicated, so a row draws at most
    a few per column, whatever the number of lanes or parents."""
    out: list[Drawing] = []
    for r in layout.rows:
        d = Drawing()
        lines: dict[tuple[str, int, int, int, int | str], None] = {}
        curves: dict[tuple[str, str], None] = {}
        x = column_x(r.lane)
        for i in r.through:
            if i < MAX_LANES:
                lines[("pass " + colour(i), column_x(i), 0, column_x(i), "100%")] = None
        for i in r.incoming:
            if i >= MAX_LANES and r.lane >= MAX_LANES:
                continue
            if column_x(i) == x:
                lines[("up " + colour(i), x, 0, x, DOT_Y)] = None
            else:
                curves[("up " + colour(i), _curve(column_x(i), 0, x, DOT_Y))] = None
        for i in r.outgoing:
            if i >= MAX_LANES and r.lane >= MAX_LANES:
                continue
            xi = column_x(i)
            if xi == x:
                lines[("down " + colour(i), x, DOT_Y, x, "100%")] = None
            else:
                curves[("down " + colour(i), _curve(x, DOT_Y, xi, DOT_Y + BEND))] = None
                lines[("tail " + colour(i), xi, DOT_Y + BEND, xi, "100%")] = None
        d.lines, d.curves = list(lines), list(curves)
        if r.lane < MAX_LANES:
            d.dot = (colour(r.lane) + (" merge" if len(r.outgoing) > 1 else ""), x, DOT_Y)
        d.more = r.width > MAX_LANES
        out.append(d)
    columns = min(max((r.width for r in layout.rows), default=0), MAX_LANES + 1)
    return Graph(tuple(out), columns, graph_width(columns), column_x(MAX_LANES))


def graph_width(columns: int) -> int:
    """The px a graph of `columns` columns takes: its columns and a margin each side."""
    return 2 * X0 + (columns - 1) * LANE_W if columns else 0


def _curve(x1: int, y1: int, x2: int, y2: int) -> str:
    """An S-curve from one column to another, leaving and arriving vertically."""
    m = (y1 + y2) / 2
    return f"M{x1} {y1}C{x1} {m:g} {x2} {m:g} {x2} {y2}"


# The graph's rules for the console's stylesheet: the columns' colours, and per page width
# (`graph-N` on the log's list) the room the rows leave for it.
CSS = (
    "ol.log li.commit { position: relative; }\n"
    "svg.graph { position: absolute; left: 0; top: 0; height: calc(100% + 1px); overflow: visible; }\n"
    "svg.graph line, svg.graph path { fill: none; stroke-width: 2; stroke-linecap: round; }\n"
    "svg.graph .dot { stroke: #fff; stroke-width: 1.5; }\n"
    "svg.graph .dot.merge { fill: #fff; stroke-width: 2.5; }\n"
    "svg.graph .more circle { fill: #8c959f; }\n"
    + "".join(
        f"svg.graph .lane-{i} {{ stroke: {c}; }}\nsvg.graph .dot.lane-{i} {{ fill: {c}; stroke: #fff; }}\n"
        f"svg.graph .dot.merge.lane-{i} {{ fill: #fff; stroke: {c}; }}\n"
        for i, c in enumerate(("#0969da", "#1a7f37", "#bf3989", "#bc4c00", "#8250df", "#0a7b83", "#cf222e", "#9a6700"))
    )
    + "svg.graph .lane-more { stroke: #8c959f; }\n"
    + "".join(
        f"ol.log.graph-{n} li.commit {{ padding-left: {graph_width(n) + 4}px; }}\n" for n in range(1, MAX_LANES + 2)
    )
)
