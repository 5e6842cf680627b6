#!/usr/bin/env python3
"""The map job: `POST /map/<path>` with one PGN game answers one JSON line about it.

The game is replayed move by move with chesslib, so the facts come from the position, not
from trusting the notation: a check is a check because the king is attacked, a mate
because no legal move is left. A file that is not one readable, legal game answers 422
with the reason (pfs then retries and fails the job, naming the file).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from chesslib import OPENINGS, ChessError, read_pgn, start_board, walk
from jobhttp import HttpError, JobHandler, serve

MAX_GAME_BYTES = 1 << 20  # a game of a few hundred moves is a few kilobytes


def opening_name(sans: list[str]) -> str:
    """The longest known line the game follows, or its first move when it follows none."""
    plain = [s.rstrip("+#!?") for s in sans]
    best, best_len = "", 0
    for name, line in OPENINGS:
        moves = line.split()
        if len(moves) > best_len and plain[: len(moves)] == moves:
            best, best_len = name, len(moves)
    if best:
        return best
    return f"Other (1. {plain[0]})" if plain else "(no moves)"


def sides() -> dict[str, int]:
    return {"white": 0, "black": 0}


def analyse(path: str, text: str) -> dict[str, Any]:
    """The facts of one game as a JSON-able dict; raises ChessError on bad input."""
    game = read_pgn(text)
    board = start_board(game)
    captures, checks, promotions = sides(), sides(), sides()
    castles: dict[str, str | None] = {"white": None, "black": None}
    en_passant = plies = 0
    for m in walk(game, board):
        side = "white" if board.white else "black"
        plies += 1
        if board.is_capture(m):
            captures[side] += 1
            en_passant += board.is_en_passant(m)
        if board.is_castle(m):
            castles[side] = "O-O" if m.to > m.frm else "O-O-O"
        if m.promo:
            promotions[side] += 1
        if board.gives_check(m):
            checks[side] += 1
    end = board.outcome()
    termination = end[1] if end else (game.headers.get("Termination") or "unfinished")
    plain = [s.rstrip("+#!?") for s in game.moves]
    return {
        "path": path,
        "event": game.headers.get("Event", "?"),
        "date": game.headers.get("Date", "?"),
        "white": game.headers.get("White", "?"),
        "black": game.headers.get("Black", "?"),
        "result": game.result,
        "plies": plies,
        "opening": opening_name(game.moves),
        "first_moves": " ".join(plain[:2]),
        "captures": captures,
        "checks": checks,
        "castles": castles,
        "promotions": promotions,
        "en_passant": en_passant,
        "mate": end is not None and end[1] == "checkmate",
        "termination": termination,
        # A result the position contradicts (a mated side declared the winner) is a bad record.
        "result_agrees": end is None or end[0] == game.result,
        "material": {"white": board.material(True), "black": board.material(False)},
        "final_fen": board.fen(),
    }


class MapHandler(JobHandler):
    name = "chess-map"
    usage = "POST /map/<path> with one PGN game"

    def post(self, route: str) -> None:
        if not route.startswith("/map/"):
            self.drain()
            raise HttpError(404, f"no route {route}: this is a map server (POST /map/<path>)")
        path = route[len("/map/") :]
        data = self.read_body(MAX_GAME_BYTES)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")  # PGN's traditional character set
        try:
            report = analyse(path, text)
        except ChessError as exc:
            raise HttpError(422, f"{path}: not a legal PGN game: {exc}") from None
        line = json.dumps(report, ensure_ascii=False, separators=(",", ":")) + "\n"
        self.send(200, line.encode(), "application/x-ndjson")


if __name__ == "__main__":
    try:
        serve(MapHandler)
    except KeyboardInterrupt:
        sys.exit(0)
