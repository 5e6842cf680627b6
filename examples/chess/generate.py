#!/usr/bin/env python3
"""Writes legal chess games as PGN, one file per game: games/<event>/<nnnn>.pgn.

The games are made up here, not copied: fictional players play a short book opening,
then random but plausible moves (mates are taken, captures, checks, promotions and
castling are preferred) until the game ends by the rules, or is adjudicated at a move cap.
Game i depends only on (seed, i), so `--count 250` rewrites the first 200 games of
`--count 200` byte for byte and adds 50: the example's incremental rerun relies on it.

    python3 generate.py --out games --count 200 --seed 1
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import random
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chesslib import OPENINGS, VALUES, Board, Move, write_pgn  # noqa: E402

BOOK_RATE = 0.85  # the share of games that start with a book line
PLAYERS = (
    "Almeida, Rosa",
    "Brandt, Oskar",
    "Castellanos, Ines",
    "Dubois, Leon",
    "Eriksen, Sofie",
    "Fujita, Ren",
    "Gallagher, Niamh",
    "Horvath, Bence",
    "Iyer, Meera",
    "Jansen, Pieter",
    "Kowalczyk, Zofia",
    "Lindqvist, Axel",
)
EVENTS = (("Harbour Open", "Harbour Chess Club"), ("Spring Rapid", "Old Town Library"), ("Club Cup", "Riverside Hall"))
MAX_PLIES = 300  # then the game is adjudicated
ADJUDICATE_MARGIN = 5  # pawns of material ahead that win an adjudicated game
START_DATE = datetime.date(2024, 3, 2)


def slug(text: str) -> str:
    return "-".join(text.lower().split())


def choose(board: Board, legal: list[Move], rng: random.Random) -> Move:
    """A plausible move: a mate in one almost always, else a weighted pick that favours
    winning material, checks, promotions and castling, and avoids aimless king walks."""
    weights = []
    mates = []
    for m in legal:
        w = 1.0
        piece = board.board[m.frm].upper()
        target = board.board[m.to].upper() if board.board[m.to] != "." else "P"  # "P": en passant
        if board.is_capture(m):
            w += 2.0 * VALUES[target]
        if m.promo:
            w += 8.0 if m.promo == "Q" else 0.5
        if board.is_castle(m):
            w += 6.0
        elif piece == "K":
            w *= 0.3
        gained = VALUES[target] if board.is_capture(m) else 0
        undo = board.make(m)
        if board.in_check():
            if not board.has_legal_move():
                mates.append(m)
            w += 2.0
        if piece != "K" and VALUES[piece] > gained and board.attacked(m.to, board.white):
            w *= 0.2  # the piece could simply be taken: a careless but not suicidal player
        board.unmake(undo)
        weights.append(w)
    if mates and rng.random() < 0.95:
        return rng.choice(mates)
    return rng.choices(legal, weights)[0]


def play(rng: random.Random) -> tuple[list[str], str, str]:
    """One game: (SAN moves, result, PGN Termination tag)."""
    board = Board()
    sans: list[str] = []
    if rng.random() < BOOK_RATE:
        _, line = rng.choice(OPENINGS)
        for san in line.split():
            m = board.parse_san(san)  # raises if a book line were wrong
            sans.append(board.san(m))
            board.push(m)
    while True:
        legal = board.legal_moves()
        end = board.outcome(legal)
        if end is not None:
            return sans, end[0], "normal"
        if len(sans) >= MAX_PLIES:
            lead = board.material(True) - board.material(False)
            result = "1-0" if lead >= ADJUDICATE_MARGIN else "0-1" if lead <= -ADJUDICATE_MARGIN else "1/2-1/2"
            return sans, result, "adjudication"
        m = choose(board, legal, rng)
        sans.append(board.san(m, legal))
        board.push(m)


def game_pgn(seed: int, index: int) -> tuple[str, str]:
    """(relative path, PGN text) of game `index`: depends on nothing else."""
    rng = random.Random(f"pfs-chess/{seed}/{index}")
    event, site = EVENTS[index % len(EVENTS)]
    rnd = index // len(EVENTS) + 1
    white, black = rng.sample(PLAYERS, 2)
    sans, result, termination = play(rng)
    headers = {
        "Event": event,
        "Site": site,
        "Date": (START_DATE + datetime.timedelta(days=7 * ((rnd - 1) // 4))).strftime("%Y.%m.%d"),
        "Round": str(rnd),
        "White": white,
        "Black": black,
        "Result": result,
        "PlyCount": str(len(sans)),
        "Termination": termination,
    }
    return f"{slug(event)}/{index:04d}.pgn", write_pgn(headers, sans, result)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="games", help="directory to write into (created)")
    ap.add_argument("--count", type=int, default=200, help="number of games")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--first", type=int, default=0, help="index of the first game (to add games later)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (games are independent)")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args(argv)
    started = time.monotonic()
    indices = range(args.first, args.first + args.count)
    jobs = max(1, min(args.jobs, args.count // 8))  # processes pay off for more than a few games
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            games = list(pool.map(functools.partial(game_pgn, args.seed), indices, chunksize=4))
    else:
        games = [game_pgn(args.seed, i) for i in indices]
    for rel, text in games:
        path = os.path.join(args.out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    if not args.quiet:
        secs = time.monotonic() - started
        print(f"wrote {len(games)} games to {args.out} in {secs:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
