#!/usr/bin/env python3
"""The map job: `POST /map/<path>` with a PGN file answers one JSON line per game in it.

The game is replayed move by move with chesslib, so the facts come from the position, not
from trusting the notation: a check is a check because the king is attacked, a mate
because no legal move is left. A file that is not a readable, legal game still answers
200, with a line that says so: {"path": ..., "error": "why"} (and "game": n when the file
holds several games and only some are bad). One stray file, a README or a game with an
illegal move, must not fail a job over thousands of good ones; the report lists them.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from chesslib import OPENINGS, ChessError, Game, read_games, start_board, walk
from jobhttp import HttpError, JobHandler, serve

# A game is a kilobyte or a few; a file of up to about a thousand games is read well within
# the job's per-file timeout (60 s) at some 8000 plies a second. A bigger file is reported
# as not read, not half read: split big databases into smaller files (more parallel, too).
MAX_FILE_BYTES = 1 << 20
MAX_ERROR = 300  # characters of a reason: enough to say what and where


def opening_name(plain: list[str]) -> str:
    """The longest known line the game follows (moves in SAN without +/#), or its first
    move when it follows none."""
    best, best_len = "", 0
    for name, line in OPENINGS:
        moves = line.split()
        if len(moves) > best_len and plain[: len(moves)] == moves:
            best, best_len = name, len(moves)
    if best:
        return best
    return f"Other (1. {plain[0]})" if plain else "(no moves)"


# How a game ended that the position does not end, when no Termination tag says.
UNENDED = {"*": "unfinished", "1/2-1/2": "draw agreed", "1-0": "resignation", "0-1": "resignation"}
OPENING_PLIES = max(len(line.split()) for _, line in OPENINGS)


def sides() -> dict[str, int]:
    return {"white": 0, "black": 0}


def analyse(path: str, game: Game) -> dict[str, Any]:
    """The facts of one game as a JSON-able dict; raises ChessError on an illegal move."""
    board = start_board(game)
    captures, checks, promotions = sides(), sides(), sides()
    castles: dict[str, str | None] = {"white": None, "black": None}
    en_passant = plies = 0
    plain: list[str] = []  # the first moves in canonical SAN, however the file spelt them
    for m, legal in walk(game, board):
        side = "white" if board.white else "black"
        plies += 1
        if plies <= OPENING_PLIES:
            plain.append(board.san_base(m, legal))
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
    termination = end[1] if end else (game.headers.get("Termination") or UNENDED[game.result])
    return {
        "path": path,
        "event": game.headers.get("Event", "?"),
        "date": game.headers.get("Date", "?"),
        "white": game.headers.get("White", "?"),
        "black": game.headers.get("Black", "?"),
        "result": game.result,
        "plies": plies,
        "opening": opening_name(plain),
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


def decode(data: bytes) -> str:
    """PGN text from a file's bytes: UTF-16 with a byte order mark, else UTF-8, else
    Latin-1 (PGN's traditional character set); bytes with NULs are no text at all."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    if b"\x00" in data:
        raise ChessError("binary data (NUL bytes), not PGN text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def not_a_game(path: str, reason: str, game: int | None = None) -> dict[str, Any]:
    reason = reason if len(reason) <= MAX_ERROR else reason[: MAX_ERROR - 3] + "..."
    return {"path": path, "error": reason} if game is None else {"path": path, "game": game, "error": reason}


def analyse_file(path: str, data: bytes) -> list[dict[str, Any]]:
    """One record per game in the file, in order; a bad game is a `not_a_game` record and
    the others still count. A file with no readable game at all is one such record, for
    the file (a README is one thing that is not a game, not one per paragraph)."""
    try:
        games = list(read_games(decode(data)))
    except ChessError as exc:
        return [not_a_game(path, str(exc))]
    if not games:
        return [not_a_game(path, "empty file" if not data.strip() else "no game in it: no tags and no moves")]
    several = len(games) > 1
    records: list[dict[str, Any]] = []
    bad: list[str] = []
    for number, game in enumerate(games, 1):
        reason = game.error
        if reason is None:
            try:
                records.append(analyse(path, game) | ({"game": number} if several else {}))
                continue
            except ChessError as exc:
                reason = f"game at line {game.line}: {exc}" if several else str(exc)
        bad.append(reason)
        records.append(not_a_game(path, reason, number if several else None))
    if len(bad) == len(games):
        more = f" (and {len(bad) - 1} more part(s) that are not games either)" if len(bad) > 1 else ""
        return [not_a_game(path, bad[0] + more)]
    return records


class MapHandler(JobHandler):
    name = "chess-map"
    usage = "POST /map/<path> with a PGN file (one or more games)"

    def post(self, route: str) -> None:
        if not route.startswith("/map/"):
            self.drain()
            raise HttpError(404, f"no route {route}: this is a map server (POST /map/<path>)")
        path = route[len("/map/") :]
        try:
            records = analyse_file(path, self.read_body(MAX_FILE_BYTES))
        except HttpError as exc:
            if exc.status != 413:
                raise
            records = [not_a_game(path, f"not read: {exc.message}")]  # read_body has drained it
        for r in records:
            if "error" in r:
                where = f" (game {r['game']})" if "game" in r else ""
                sys.stderr.write(f"{self.name}: {path}{where} is not a game: {r['error']}\n")
        body = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
        self.send(200, body.encode(), "application/x-ndjson")


if __name__ == "__main__":
    try:
        serve(MapHandler)
    except KeyboardInterrupt:
        sys.exit(0)
