#!/usr/bin/env python3
"""The reduce job: `POST /reduce` with the map's JSON lines answers one report (JSON).

The body is read line by line and folded into counters as it arrives, so memory depends
on the number of distinct players, openings and events, never on the number of games.
The map's records of files that were not games ({"path", "error"}) are counted and the
first few (in path order) listed with their reasons. A line that is neither kind of
record answers 422 naming the line: that is a bug between the two servers, not bad data.
"""

from __future__ import annotations

import bisect
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from jobhttp import HttpError, JobHandler, serve

MAX_LINE = 1 << 20
TOP = 10
REGULAR = 5  # games a player needs to be the most decisive one (if anyone has that many)
RESULT_KEYS = {"1-0": "white_wins", "0-1": "black_wins", "1/2-1/2": "draws", "*": "unfinished"}


@dataclass
class Player:
    games: int = 0
    wins: int = 0
    draws: int = 0
    losses: int = 0

    @property
    def score(self) -> float:
        return self.wins + 0.5 * self.draws


def game_ref(g: dict[str, Any]) -> str:
    """How the report names a game: its file, and which game when the file holds several."""
    return str(g["path"]) if "game" not in g else f"{g['path']} (game {int(g['game'])})"


@dataclass
class Totals:
    games: int = 0
    not_games: int = 0
    first_not_games: list[tuple[str, int, str]] = field(default_factory=list)  # (path, game, reason)
    results: Counter[str] = field(default_factory=Counter)
    plies: int = 0
    max_plies: int = -1
    longest: str = ""
    shortest_mate: tuple[int, str] | None = None
    mates: int = 0
    terminations: Counter[str] = field(default_factory=Counter)
    captures: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    promotions: Counter[str] = field(default_factory=Counter)
    castles: dict[str, Counter[str]] = field(default_factory=lambda: {"white": Counter(), "black": Counter()})
    en_passant: int = 0
    disagreements: int = 0
    openings: dict[str, Counter[str]] = field(default_factory=dict)
    players: dict[str, Player] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)

    def add(self, g: dict[str, Any]) -> None:
        if "error" in g:
            self.add_not_game(str(g["path"]), int(g.get("game", 0)), str(g["error"]))
            return
        result, plies, path = g["result"], int(g["plies"]), game_ref(g)
        if result not in RESULT_KEYS:
            raise ValueError(f"unknown result {result!r}")
        self.games += 1
        self.results[result] += 1
        self.plies += plies
        if plies > self.max_plies:
            self.max_plies, self.longest = plies, path
        if g["mate"]:
            self.mates += 1
            if self.shortest_mate is None or (plies, path) < self.shortest_mate:
                self.shortest_mate = (plies, path)
        self.terminations[g["termination"]] += 1
        for side in ("white", "black"):
            self.captures[side] += int(g["captures"][side])
            self.checks[side] += int(g["checks"][side])
            self.promotions[side] += int(g["promotions"][side])
            self.castles[side][g["castles"][side] or "none"] += 1
        self.en_passant += int(g["en_passant"])
        self.disagreements += not g["result_agrees"]
        self.openings.setdefault(g["opening"], Counter())[result] += 1
        self.events[g["event"]] += 1
        for side, won, lost in (("white", "1-0", "0-1"), ("black", "0-1", "1-0")):
            p = self.players.setdefault(g[side], Player())
            p.games += 1
            p.wins += result == won
            p.losses += result == lost
            p.draws += result == "1/2-1/2"

    def add_not_game(self, path: str, game: int, reason: str) -> None:
        """Count it; keep it if it is among the first TOP by path (the input's order is pfs's
        business, the report's is not), so memory stays bounded."""
        self.not_games += 1
        bisect.insort(self.first_not_games, (path, game, reason))
        del self.first_not_games[TOP:]

    def report(self) -> dict[str, Any]:
        n = self.games

        def share(count: int, of: int = n) -> dict[str, Any]:
            return {"count": count, "percent": round(100.0 * count / of, 1) if of else 0.0}

        def sides(c: Counter[str]) -> dict[str, int]:
            return {"white": c["white"], "black": c["black"], "total": c["white"] + c["black"]}

        players = sorted(self.players.items(), key=lambda kv: (-kv[1].score, -kv[1].wins, kv[0]))
        # A player of one game won is 100% decisive and says nothing: regulars first.
        decisive = [(name, p) for name, p in players if p.games >= REGULAR] or [kv for kv in players if kv[1].games]
        most_decisive = max(
            decisive, key=lambda kv: ((kv[1].wins + kv[1].losses) / kv[1].games, kv[1].games), default=None
        )
        openings = sorted(self.openings.items(), key=lambda kv: (-kv[1].total(), kv[0]))[:TOP]
        return {
            "games": n,
            "not_games": {
                "count": self.not_games,
                "first": [
                    {"path": path, "error": reason} if not game else {"path": path, "game": game, "error": reason}
                    for path, game, reason in self.first_not_games
                ],
            },
            "results": {key: share(self.results[r]) for r, key in RESULT_KEYS.items()},
            "plies": {
                "total": self.plies,
                "average": round(self.plies / n, 1) if n else 0.0,
                "max": max(self.max_plies, 0),
                "longest_game": self.longest or None,
            },
            "mates": self.mates,
            "shortest_mate": {"plies": self.shortest_mate[0], "game": self.shortest_mate[1]}
            if self.shortest_mate
            else None,
            "terminations": dict(self.terminations.most_common()),
            "captures": sides(self.captures),
            "checks": sides(self.checks),
            "promotions": sides(self.promotions),
            "en_passant": self.en_passant,
            "castling": {side: dict(sorted(c.items())) for side, c in self.castles.items()},
            "results_contradicted_by_position": self.disagreements,
            "top_openings": [
                {
                    "opening": name,
                    "games": c.total(),
                    "white_wins": c["1-0"],
                    "black_wins": c["0-1"],
                    "draws": c["1/2-1/2"],
                }
                for name, c in openings
            ],
            "players": [
                {
                    "player": name,
                    "games": p.games,
                    "wins": p.wins,
                    "draws": p.draws,
                    "losses": p.losses,
                    "score": p.score,
                }
                for name, p in players[:TOP]
            ],
            "top_scorer": players[0][0] if players else None,
            "most_decisive_player": (
                {
                    "player": most_decisive[0],
                    "decisive_games": most_decisive[1].wins + most_decisive[1].losses,
                    "games": most_decisive[1].games,
                }
                if most_decisive
                else None
            ),
            "events": dict(sorted(self.events.items())),
        }


def pretty(value: Any, indent: int = 0, width: int = 110) -> str:
    """JSON for people: what fits on a line stays on one line, the rest is indented."""
    flat = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, dict | list) or not value or indent + len(flat) <= width:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {pretty(v, indent + 2, width)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + pretty(v, indent + 2, width) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


class ReduceHandler(JobHandler):
    name = "chess-reduce"
    usage = "POST /reduce with the map's JSON lines"

    def post(self, route: str) -> None:
        if route != "/reduce":
            self.drain()
            raise HttpError(404, f"no route {route}: this is a reduce server (POST /reduce)")
        totals = Totals()
        for number, raw in enumerate(self.lines(MAX_LINE), 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                totals.add(record)
            except (ValueError, KeyError, TypeError) as exc:
                self.drain()
                what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                raise HttpError(422, f"line {number} is not a game record from the map: {what}") from None
        body = pretty(totals.report()) + "\n"
        self.send(200, body.encode(), "application/json")


if __name__ == "__main__":
    try:
        serve(ReduceHandler)
    except KeyboardInterrupt:
        sys.exit(0)
