"""The log page's commit graph (`pfs.http.console.graph`): the lanes of linear history, of
merges, of branch points, of a history wider than the drawing, across a page boundary;
then a log page in process that draws it, continues it on the next page, and keeps it to
numbers and class names (no stored text, no inline style)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from conftest import AppServer
from console_kit import next_link, page

from pfs.http.console import graph as gr
from pfs.http.console import pages
from pfs.http.console.graph import MAX_LANES, Row, draw, lanes

History = list[tuple[str, Sequence[str]]]


def shapes(d: gr.Drawing, kind: str) -> list[str]:
    """The classes of a row's shapes of one kind (pass, up, down, tail)."""
    return [c for c, *_ in d.lines + d.curves if c.split()[0] == kind]


# ---- lanes ----------------------------------------------------------------------------


def test_linear_history_is_one_lane() -> None:
    layout = lanes([("c", ["b"]), ("b", ["a"]), ("a", [])])
    assert layout.rows == (Row(0, (), (), (0,)), Row(0, (), (0,), (0,)), Row(0, (), (0,), ()))
    assert layout.open == ()
    g = draw(layout)
    assert g.columns == 1 and all(d.dot is not None and not d.curves and not d.more for d in g.rows)
    assert [len(shapes(d, "down")) for d in g.rows] == [1, 1, 0]  # the root ends the line
    assert [len(shapes(d, "up")) for d in g.rows] == [0, 1, 1]  # the head starts it


def test_a_merge_fans_out_to_two_lanes_that_join_at_the_branch_point() -> None:
    layout = lanes([("m", ["a", "b"]), ("a", ["base"]), ("b", ["base"]), ("base", [])])
    assert layout.rows == (
        Row(0, (), (), (0, 1)),  # the merge: first parent in its lane, the second in a new one
        Row(0, (1,), (0,), (0,)),
        Row(1, (0,), (1,), (1,)),
        Row(0, (), (0, 1), ()),  # the branch point: both lanes end at it, in the leftmost
    )
    g = draw(layout)
    merge, _, _, base = g.rows
    assert merge.dot is not None and "merge" in merge.dot[0].split()
    assert shapes(merge, "down") == ["down lane-0", "down lane-1"] and shapes(merge, "tail") == ["tail lane-1"]
    assert shapes(base, "up") == ["up lane-0", "up lane-1"] and base.curves  # lane 1 bends into lane 0
    assert g.columns == 2 and g.width == gr.graph_width(2)


def test_two_merges_in_a_row() -> None:
    history: History = [
        ("m2", ["m1", "x"]),
        ("m1", ["a", "y"]),
        ("x", ["root"]),
        ("y", ["a"]),
        ("a", ["root"]),
        ("root", []),
    ]
    layout = lanes(history)
    assert layout.rows == (
        Row(0, (), (), (0, 1)),
        Row(0, (1,), (0,), (0, 2)),  # the second merge's other parent: the next free lane
        Row(1, (0, 2), (1,), (1,)),
        Row(2, (0, 1), (2,), (2,)),  # y's parent a is already waited for in lane 0: two lanes wait
        Row(0, (1,), (0, 2), (0,)),  # a: where they join
        Row(0, (), (0, 1), ()),
    )
    assert [len(shapes(d, "down")) for d in draw(layout).rows] == [2, 2, 1, 1, 1, 0]


def test_a_merge_into_a_lane_already_open_and_a_freed_lane_reused() -> None:
    # b's second parent is the one lanes 0 and 1 already wait for: an edge into the leftmost,
    # no new lane; after the join at p, the next branch head takes the freed lane 1 again
    layout = lanes([("a", ["p"]), ("c", ["p"]), ("b", ["q", "p"]), ("p", ["r"]), ("h", ["t"])])
    assert layout.rows == (
        Row(0, (), (), (0,)),
        Row(1, (0,), (), (1,)),
        Row(2, (0, 1), (), (2, 0)),
        Row(0, (2,), (0, 1), (0,)),
        Row(1, (0, 2), (), (1,)),
    )
    assert layout.open == ("r", "t", "q")


def test_the_drawing_is_bounded_however_wide_the_history() -> None:
    n = 2000
    parents = [f"p{i}" for i in range(n)]
    history: History = [("octopus", parents), *((p, ["root"]) for p in parents[::-1]), ("root", [])]
    layout = lanes(history)
    assert layout.rows[0].outgoing == tuple(range(n)) and layout.rows[-1].incoming == tuple(range(n))
    g = draw(layout)
    assert g.columns == MAX_LANES + 1 and g.width == gr.graph_width(MAX_LANES + 1)
    octopus, beyond, inside, root = g.rows[0], g.rows[1], g.rows[-2], g.rows[-1]
    # one edge per drawn lane and one to the "…" column, not one per parent
    assert len(shapes(octopus, "down")) == MAX_LANES + 1 and octopus.more
    assert all(x <= g.more_x for _, x1, _, x2, _ in octopus.lines for x in (x1, x2))
    assert beyond.dot is None and beyond.more  # p1999's lane is not drawn: no dot, the marker
    assert not beyond.curves and all(c.startswith("pass") for c, *_ in beyond.lines)
    assert len(beyond.lines) == MAX_LANES
    assert inside.dot is not None and inside.more  # p0, in lane 0; the lanes beyond wait for root
    assert len(shapes(root, "up")) == MAX_LANES + 1  # each drawn lane and the "…" column, not 2000
    assert max(len(d.lines) + len(d.curves) for d in g.rows) <= 2 * (MAX_LANES + 1)
    # once the lanes beyond the drawing end, the marker goes
    ends = draw(lanes([("o", parents[:20]), *((p, []) for p in parents[19:0:-1])])).rows
    assert [d.more for d in ends] == [True] * 5 + [False] * 15
    # a parent named twice is one edge
    assert lanes([("m", ["a", "a", "b"])]).rows[0].outgoing == (0, 1)


def test_a_later_page_goes_on_from_the_lanes_open_at_its_top() -> None:
    history: History = [("m", ["a", "b"]), ("a", ["base"]), ("b", ["base"]), ("base", [])]
    whole = lanes(history).rows
    for cut in (1, 2):  # below the merge, below a: the two lanes are still apart
        first = lanes(history[:cut])
        second = lanes(history[cut:], first.open)
        assert first.rows + second.rows == whole, cut
    first = lanes(history[:1])
    assert first.open == ("a", "b")
    # b first on its page: it waits in lane 1, a goes on past it in lane 0
    assert lanes([history[2]], ["a", "b"]).rows == (Row(1, (0,), (1,), (1,)),)
    top = draw(lanes(history[1:], first.open)).rows[0]
    assert shapes(top, "up") == ["up lane-0"] and shapes(top, "pass") == ["pass lane-1"]
    # the cursor lists the ids the next page's walk continues from in lane order, not by id
    assert gr.in_lane_order(["a", "b", "z"], ("z", "b", "z")) == ["z", "b", "a"]
    assert gr.in_lane_order(["b", "a"], ()) == ["a", "b"]
    # the first page of a log: its head starts a line, nothing comes from above
    assert not shapes(draw(lanes(history)).rows[0], "up")
    # a page whose walk continues from an id twice (it cannot: a set) draws one line
    assert lanes([("a", [])], ["a", "a"]).rows == (Row(0, (), (0,), ()),)


# ---- the log page ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    s = AppServer(tmp_path_factory.mktemp("console-graph") / "data").start()
    with s.client() as c:
        c.put_file("base.txt", b"b")
        c.commit(message="base")
        c.create_branch("feature")
        c.put_file("feature.txt", b"<svg onload=alert(1)>", branch="feature")
        c.commit(branch="feature", message='on feature"><script>alert(1)</script>')
        c.put_file("master.txt", b"m")
        c.commit(message="on master")
        s.state["merge"] = c.merge("feature", "master").id
        c.put_file("after.txt", b"a")
        c.commit(message="after")
    yield s
    s.stop()


SVG = re.compile(r"<svg class=\"graph\".*?</svg>", re.S)


def test_the_log_draws_the_graph_beside_each_commit(h: httpx.Client, srv: AppServer) -> None:
    html = page(h, "/ui/default/log/master")
    items = html.split('<li class="commit">')[1:]
    assert len(items) == 5 and all(len(SVG.findall(li)) == 1 for li in items)
    merge = srv.state["merge"]
    row = next(li for li in items if f"/ui/default/tree/{merge}" in li)
    svg = SVG.search(row).group(0)  # type: ignore[union-attr]
    assert len(re.findall(r'class="down lane-\d"', svg)) == 2  # to each parent's lane
    assert re.search(r'<circle class="dot lane-0 merge"', svg)
    head = SVG.search(items[0]).group(0)  # type: ignore[union-attr]
    assert 'class="up ' not in head and len(re.findall(r'class="down ', head)) == 1
    assert '<ol class="log graph-2" id="log">' in html
    # the drawing: numbers and class names only; nothing stored, no inline style
    for svg in SVG.findall(html):
        text = re.sub(r'\s(class|d|x1|y1|x2|y2|cx|cy|r|width|xmlns|aria-hidden|focusable)="[^"<>]*"', "", svg)
        assert re.fullmatch(r"(</?(svg|line|path|circle|g)\s*/?>\s*)+", text), text
    assert "style=" not in html and "<script>alert" not in html
    css = h.get("/ui/_static/console.css").text
    assert "ol.log.graph-2 li.commit" in css and "svg.graph .lane-7" in css


def test_the_next_page_goes_on_with_the_lanes_in_their_order(
    h: httpx.Client, srv: AppServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "LOG_PAGE", 2)  # after, the merge | on master, on feature | base
    merge = srv.repo.get_commit(srv.state["merge"])
    html = page(h, "/ui/default/log/master")
    more = next_link(html)
    assert more is not None
    # the merge's first parent's lane is the left one: the walk lists it first (not by id)
    assert parse_qs(urlsplit(more).query)["walk"] == [",".join(merge.parents)]
    html = page(h, more)
    first, second = (SVG.search(li).group(0) for li in html.split('<li class="commit">')[1:])  # type: ignore[union-attr]
    # on master: its lane comes from above, on feature's lane passes it, as on one long page
    assert re.findall(r'class="(up|pass) (lane-\d)"', first) == [("pass", "lane-1"), ("up", "lane-0")]
    assert re.findall(r'class="(up|pass) (lane-\d)"', second) == [("pass", "lane-0"), ("up", "lane-1")]
    html = page(h, next_link(html) or "")
    base = SVG.search(html).group(0)  # type: ignore[union-attr]
    assert 'class="up lane-0"' in base and not re.search(r'class="(down|tail) ', base)
