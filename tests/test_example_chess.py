"""The chess example (examples/chess).

First, fast and without Docker: the rules engine against known move counts, the PGN reader
against PGN that real tools write (python-chess, used here only, on the host) and against
tricky-but-legal PGN typed by hand, the generator (legal, deterministic games whose results
the final positions bear out), and the two job servers in-process on a mix of games and
files that are not games. Then `run.sh` for real, as its README says to run it (real
Docker, its own pfs server), with its results checked against what python-chess reads
from the same files, and its output against the README's. The Docker test fails, never
skips, when Docker cannot be made to work.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import chess
import chess.pgn
import httpx
import pytest
from conftest import ServerProc
from jobenv import ensure_docker

from pfs import Client

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chess"
sys.path.insert(0, str(EXAMPLE))

import chesslib  # noqa: E402
import generate  # noqa: E402
import jobhttp  # noqa: E402
import map_server  # noqa: E402
import reduce_server  # noqa: E402
from chesslib import Board, ChessError  # noqa: E402

# ---- the rules engine ------------------------------------------------------------------

# Published perft node counts (the number of legal move sequences of a given length): a
# move generator that matches them handles castling, en passant, promotion and pins.
PERFT = [
    (chesslib.START_FEN, [20, 400, 8902]),
    ("r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1", [48, 2039, 97862]),
    ("8/2p5/3p4/KP5r/1R3p1k/8/4P1P1/8 w - - 0 1", [14, 191, 2812, 43238]),
    ("r3k2r/Pppp1ppp/1b3nbN/nP6/BBP1P3/q4N2/Pp1P2PP/R2Q1RK1 w kq - 0 1", [6, 264, 9467]),
    ("rnbq1k1r/pp1Pbppp/2p5/8/2B5/8/PPP1NnPP/RNBQK2R w KQ - 1 8", [44, 1486, 62379]),
]


def perft(board: Board, depth: int) -> int:
    if depth == 1:
        return len(board.legal_moves())
    total = 0
    for m in board.legal_moves():
        board.push(m)
        total += perft(board, depth - 1)
        board.pop()
    return total


@pytest.mark.parametrize("fen,counts", PERFT, ids=["start", "kiwipete", "endgame", "promotions", "checks"])
def test_perft_matches_published_counts(fen: str, counts: list[int]) -> None:
    board = Board(fen)
    assert [perft(board, d) for d in range(1, len(counts) + 1)] == counts
    assert board.fen() == fen  # push/pop restored every detail


def sans(fen: str) -> set[str]:
    board = Board(fen)
    legal = board.legal_moves()
    return {board.san(m, legal) for m in legal}


def test_san_disambiguation_castling_en_passant_promotion() -> None:
    moves = sans("6k1/8/8/R7/8/Q7/8/Q1Q1K2R w K - 0 1")
    assert {"Qa1b2", "Qcb2", "Q3b2", "Rah5", "Rhh5", "Ra4", "O-O"} <= moves
    assert "exd6" in sans("4k3/8/8/3pP3/8/8/8/4K3 w - d6 0 2")
    assert {"e8=Q+", "e8=R+", "e8=N", "e8=B"} <= sans("2k5/4P3/8/8/8/8/8/4K3 w - - 0 1")
    board = Board("4k3/8/8/3pP3/8/8/8/4K3 w - d6 0 2")
    board.push(board.parse_san("exd6"))
    assert board.fen() == "4k3/8/3P4/8/8/8/8/4K3 b - - 0 2"  # the passed pawn is gone


def test_parse_san_is_lenient_in_spelling_and_strict_in_legality() -> None:
    board = Board("r3k2r/8/8/8/8/8/8/R3K1NR w KQkq - 0 1")
    assert board.parse_san("0-0-0") == board.parse_san("O-O-O!?")
    assert board.parse_san("Nf3") == board.parse_san("Ng1f3")
    with pytest.raises(ChessError, match="no such legal move"):
        board.parse_san("Nd4")
    with pytest.raises(ChessError, match="ambiguous"):
        Board("3k4/8/8/8/8/8/4K3/R6R w - - 0 1").parse_san("Rd1")
    with pytest.raises(ChessError, match="not a move"):
        board.parse_san("hello")


def outcome_after(*moves: str, fen: str = chesslib.START_FEN) -> tuple[str, str] | None:
    board = Board(fen)
    for san in moves:
        board.push(board.parse_san(san))
    return board.outcome()


def test_game_endings() -> None:
    assert outcome_after("f3", "e5", "g4", "Qh4#") == ("0-1", "checkmate")
    assert outcome_after(fen="7k/5Q2/6K1/8/8/8/8/8 b - - 0 1") == ("1/2-1/2", "stalemate")
    shuffle = ["Nf3", "Nf6", "Ng1", "Ng8"]
    assert outcome_after(*shuffle) is None  # the start position twice: not yet
    assert outcome_after(*shuffle, *shuffle) == ("1/2-1/2", "threefold repetition")
    assert outcome_after(fen="8/8/4k3/8/8/3K4/8/R7 w - - 100 80") == ("1/2-1/2", "fifty-move rule")
    for fen in ("8/8/4k3/8/8/3K4/8/8 w - - 0 1", "8/8/4k3/8/8/3KN3/8/8 w - - 0 1", "8/2b5/4k3/8/8/3K4/3B4/8 w - - 0 1"):
        assert outcome_after(fen=fen) == ("1/2-1/2", "insufficient material"), fen
    for fen in ("8/3b4/4k3/8/8/3K4/3B4/8 w - - 0 1", "8/8/4k3/8/8/3KNN2/8/8 w - - 0 1"):
        assert outcome_after(fen=fen) is None, fen  # a mate is still possible


# ---- the PGN reader --------------------------------------------------------------------


def test_read_pgn_skips_comments_nags_and_variations() -> None:
    text = (
        '[Event "Test"]\n[White "A \\"the\\" B"]\n[Result "0-1"]\n\n'
        "1.f3 {a weak move} e5 $2 2. g4 (2. e4 Nc6) 2... Qh4# ; mate\n0-1\n"
    )
    game = chesslib.read_pgn(text)
    assert game.headers["White"] == 'A "the" B'
    assert game.moves == ["f3", "e5", "g4", "Qh4#"]
    board, _ = chesslib.replay(game)
    assert board.outcome() == ("0-1", "checkmate")


@pytest.mark.parametrize(
    "text,message",
    [
        ('[Result "1-0"]\n\n1. e4 e5 0-1\n', "disagrees"),
        ('[Event "x"]\n\n1. e4 (1. d4 *\n', "never closed"),
        ("1. e4 ) e5 *\n", "')' without '('"),
        ("1. e4 e5 {a comment that never ends\n", "comment '{' is never closed"),
        ("1. e4 -- 2. d4 *\n", "null move"),
        ('[Variant "Chess960"]\n\n1. e4 *\n', "only standard chess"),
        ("Dear club members, the games are attached.\n", "'Dear' is not a move"),
        ("1. e4 e5 2. Nf3 @ *\n", "unexpected '@'"),
        ("12 3 45\n", "not a game"),
    ],
)
def test_read_games_says_why_a_game_cannot_be_read(text: str, message: str) -> None:
    (game,) = chesslib.read_games(text)
    assert game.error is not None and message in game.error, game.error
    with pytest.raises(ChessError, match=re.escape(message)):
        chesslib.read_pgn(text)


def test_read_games_resumes_after_a_bad_game_and_splits_at_tags_and_results() -> None:
    text = (
        '[Event "one"]\n\n1. e4 e5 1-0\n'  # a result ends a game...
        "1. d4 d5\n"  # ...and moves after it start one without tags (and without a result)
        '[Event "three"]\n1. e4 ) e5 *\n'  # tags after moves start a game; this one is bad
        '[Event "four"]\n[Result "0-1"]\n1. c4 *\n'  # "*" says less than the tag
    )
    games = list(chesslib.read_games(text))
    assert [(g.headers.get("Event"), g.moves, g.result, g.error is None, g.line) for g in games] == [
        ("one", ["e4", "e5"], "1-0", True, 1),
        (None, ["d4", "d5"], "*", True, 4),
        ("three", ["e4", "e5"], "*", False, 5),
        ("four", ["c4"], "0-1", True, 7),
    ]
    assert list(chesslib.read_games("")) == [] and list(chesslib.read_games("{only a comment}\n")) == []
    with pytest.raises(ChessError, match="2 games where one was expected"):
        chesslib.read_pgn("1. e4 1-0\n\n1. d4 1-0\n")


def test_replay_names_the_illegal_move() -> None:
    game = chesslib.read_pgn("1. e4 e5 2. Nf3 Ke7 3. Ke3 *\n")
    with pytest.raises(ChessError, match=r"move 3\. Ke3: no such legal move"):
        chesslib.replay(game)


def test_parse_san_reads_the_spellings_of_real_files() -> None:
    board = Board("4k3/8/8/3pP3/8/8/8/4K3 w - d6 0 2")
    for spelling in ("exd6", "exd6e.p.", "exd6e.p", "e5xd6", "e5-d6", "exd6!?", "exd6+"):
        assert board.parse_san(spelling) == board.parse_san("exd6"), spelling
    board = Board()
    assert board.parse_san("e2-e4") == board.parse_san("e4") == board.parse_san("Pe4")
    assert board.parse_san("Ng1-f3") == board.parse_san("\u2658f3") == board.parse_san("Nf3")
    promo = Board("8/P6k/8/8/8/8/6K1/8 w - - 0 1")
    queen = chesslib.Move(chesslib.parse_square("a7"), chesslib.parse_square("a8"), "Q")
    assert {promo.parse_san(s) for s in ("a8=Q", "a8Q", "a8=q", "a8(Q)", "a8=Q+")} == {queen}
    castle = Board("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1")
    assert castle.parse_san("0-0") == castle.parse_san("O-O") == castle.parse_san("o-o")


# ---- PGN as other tools and people write it, checked against python-chess --------------


@dataclass
class Facts:
    """What python-chess says about one game: what the map's record must say too."""

    result: str
    plies: int
    fen: str
    mate: bool
    captures: tuple[int, int]
    checks: tuple[int, int]
    promotions: int
    en_passant: int
    event: str = field(default="?", compare=False)


def facts_of(game: chess.pgn.Game, result: str | None = None) -> Facts:
    board = game.board()
    captures, checks = [0, 0], [0, 0]
    promotions = en_passant = plies = 0
    for move in game.mainline_moves():
        side = 0 if board.turn == chess.WHITE else 1
        captures[side] += board.is_capture(move)
        en_passant += board.is_en_passant(move)
        checks[side] += board.gives_check(move)
        promotions += move.promotion is not None
        board.push(move)
        plies += 1
    return Facts(
        result=result or game.headers.get("Result", "*"),
        plies=plies,
        fen=board.fen(en_passant="fen"),  # chesslib's FEN names the square after every double step
        mate=board.is_checkmate(),
        captures=(captures[0], captures[1]),
        checks=(checks[0], checks[1]),
        promotions=promotions,
        en_passant=en_passant,
        event=game.headers.get("Event", "?"),
    )


def facts_in(text: str) -> list[Facts]:
    """Every game python-chess reads without an error in PGN text."""
    out, stream = [], io.StringIO(text)
    while (game := chess.pgn.read_game(stream)) is not None:
        if not game.errors:
            out.append(facts_of(game))
    return out


def facts_from_san(fen: str | None, sans: str, result: str) -> Facts:
    board = chess.Board(fen) if fen else chess.Board()
    game = chess.pgn.Game()
    if fen:
        game.setup(board)
    node: chess.pgn.GameNode = game
    for san in sans.split():
        node = node.add_variation(node.board().parse_san(san))
    return facts_of(game, result)


def facts_of_record(r: dict[str, Any]) -> Facts:
    return Facts(
        result=r["result"],
        plies=r["plies"],
        fen=r["final_fen"],
        mate=r["mate"],
        captures=(r["captures"]["white"], r["captures"]["black"]),
        checks=(r["checks"]["white"], r["checks"]["black"]),
        promotions=r["promotions"]["white"] + r["promotions"]["black"],
        en_passant=r["en_passant"],
        event=r["event"],
    )


NAGS = (1, 2, 3, 4, 5, 6, 10, 13, 14, 16, 18, 146)


def tool_game(seed: int, fen: str | None = None) -> chess.pgn.Game:
    """A random legal game built and annotated with python-chess as analysis tools do it:
    comments (with lichess's clock and eval commands), NAGs, variations inside variations.
    En passant captures and promotions are taken when they come up, so they occur."""
    rng = random.Random(seed)
    board = chess.Board(fen) if fen else chess.Board()
    game = chess.pgn.Game()
    if fen:
        game.setup(board)
    game.headers.update(Event=f"Tool Cup {seed % 3}", White=f"Engine {seed}", Black=f"Engine {seed + 1}")
    game.comment = "Annotated by a tool."
    node: chess.pgn.GameNode = game
    for _ in range(rng.randint(10, 90)):
        moves = list(board.legal_moves)
        if not moves or board.is_insufficient_material():
            break
        special = [m for m in moves if board.is_en_passant(m) or m.promotion == chess.QUEEN]
        move = rng.choice(special) if special else rng.choice(moves)
        child = node.add_variation(move)  # the first variation added is the main line
        if rng.random() < 0.3:
            child.comment = f"[%clk 0:0{rng.randint(0, 9)}:{rng.randint(10, 59)}] [%eval {rng.uniform(-3, 3):.2f}]"
        if rng.random() < 0.2:
            child.nags.add(rng.choice(NAGS))
        others = [m for m in moves if m != move]
        if others and rng.random() < 0.25:
            alt = node.add_variation(rng.choice(others), comment="Also possible:", nags={rng.choice(NAGS)})
            replies = list(alt.board().legal_moves)
            if len(replies) >= 2:
                deeper = alt.add_variation(replies[0])
                if answers := list(deeper.board().legal_moves):
                    deeper.add_variation(answers[0])
                alt.add_variation(replies[1], comment="a variation inside a variation")
        board.push(move)
        node = child
    game.headers["Result"] = board.result() if board.is_game_over() else rng.choice(["1-0", "0-1", "1/2-1/2", "*"])
    return game


def export(game: chess.pgn.Game) -> str:
    return game.accept(chess.pgn.StringExporter(headers=True, variations=True, comments=True))


def tool_files() -> dict[str, bytes]:
    """PGN files as python-chess exports them: one game each, one from a set-up position,
    and a database file of several games."""
    files = {f"tool/game{i}.pgn": export(tool_game(i)).encode() for i in range(6)}
    setup = "r3k2r/1P4p1/8/3pP3/8/8/6p1/R3K2R w KQkq d6 0 30"
    files["tool/setup.pgn"] = export(tool_game(99, fen=setup)).encode()
    files["tool/database.pgn"] = "\n\n".join(export(tool_game(100 + i)) for i in range(5)).encode()
    return files


# Tricky but legal: PGN as people and old programs write it. Each file's games are given
# again as plain SAN (start FEN, moves, result), which python-chess replays for the facts.
TRICKY: dict[str, tuple[bytes, list[tuple[str | None, str, str]]]] = {
    "tricky/ep-suffix.pgn": (  # the "16. b4 cxb3 e.p."
        b'[Event "Club"]\n[Result "0-1"]\n\n1. e4 e6 2. d4 d5 3. e5 c5 4. c3 Nc6 5. Nf3 Qb6 6. a3 c4\n'
        b"7. Nbd2 Na5 8. Be2 Bd7 9. O-O Ne7 10. Re1 Nec6 11. Bf1 h6 12. h3 g5 13. Nh2 h5\n"
        b"14. Qf3 O-O-O 15. Qf6 Rh7 16. b4 cxb3 e.p. 17. Qf3 g4 0-1\n",
        [
            (
                None,
                "e4 e6 d4 d5 e5 c5 c3 Nc6 Nf3 Qb6 a3 c4 Nbd2 Na5 Be2 Bd7 O-O Ne7 Re1 Nec6 Bf1 h6 h3 g5 Nh2 h5 "
                "Qf3 O-O-O Qf6 Rh7 b4 cxb3 Qf3 g4",
                "0-1",
            )
        ],
    ),
    "tricky/ep-glued.pgn": (b"1. e4 Nf6 2. e5 d5 3. exd6e.p. cxd6 *\n", [(None, "e4 Nf6 e5 d5 exd6 cxd6", "*")]),
    "tricky/windows-export.pgn": (  # a byte order mark, CRLF, "%" lines, comments, nested variations
        (
            "\ufeff% written by a program; escape lines are for programs\r\n"
            '[Event "Casual game"]\r\n[Site "Paris FRA"]\r\n[White "Morphy, Paul"]\r\n[Result "1-0"]\r\n\r\n'
            "{The Opera Game.} 1. e4 e5 2. Nf3 d6 {Philidor} 3. d4 Bg4 $2 (3... exd4 4. Nxd4 Nf6 (4... g6 5. Nc3)\r\n"
            "5. Nc3 Be7) 4. dxe5 Bxf3 5. Qxf3 dxe5 6. Bc4 Nf6 $2 7. Qb3 $1 Qe7 8. Nc3 c6 9. Bg5\r\n"
            "b5?! {[%clk 0:12:00]}\r\n"
            "10. Nxb5! cxb5 11. Bxb5+ Nbd7 12. O-O-O Rd8 13. Rxd7!! Rxd7 14. Rd1 Qe6 ; the queen stays near\r\n"
            "%an escape line in the middle\r\n"
            "15. Bxd7+ Nxd7 16. Qb8+! +- Nxb8 17. Rd8# 1-0\r\n"
        ).encode(),
        [
            (
                None,
                "e4 e5 Nf3 d6 d4 Bg4 dxe5 Bxf3 Qxf3 dxe5 Bc4 Nf6 Qb3 Qe7 Nc3 c6 Bg5 b5 Nxb5 cxb5 Bxb5+ Nbd7 "
                "O-O-O Rd8 Rxd7 Rxd7 Rd1 Qe6 Bxd7+ Nxd7 Qb8+ Nxb8 Rd8#",
                "1-0",
            )
        ],
    ),
    "tricky/old-mac.pgn": (  # CR line ends; move numbers glued, "2...", "6. ...", "7 ..."
        b'[White "A"]\r[Black "B"]\r[Result "1/2-1/2"]\r\r1.d4 Nf6 2.c4 {note} 2...e6 3.Nc3 Bb4 4.a3 Bxc3+\r'
        b"5.bxc3 O-O 6.e3 {x} 6. ... d6 7.Bd3 7 ... e5 1/2-1/2\r",
        [(None, "d4 Nf6 c4 e6 Nc3 Bb4 a3 Bxc3+ bxc3 O-O e3 d6 Bd3 e5", "1/2-1/2")],
    ),
    "tricky/several.pgn": (  # odd tag sections, a game without tags, one without a result, ^Z
        b'[Event "Odd tags"] [Site "one line"] [white "lowercase name"]\n[Annotator "J. [Jr.]"]\n'
        b'[Black "Said "hello" in a tag"]\n\n[Result "1-0"]\n1. e4 e5 2. Qh5 Nc6 3. Bc4 Nf6 4. Qxf7# 1-0\n\n'
        b"1. d4 d5 2. c4 e6 *\n\n"
        b'[Event "No result"]\n\n1. c4 e5 2. Nc3\n\x1a',
        [
            (None, "e4 e5 Qh5 Nc6 Bc4 Nf6 Qxf7#", "1-0"),
            (None, "d4 d5 c4 e6", "*"),
            (None, "c4 e5 Nc3", "*"),
        ],
    ),
    "tricky/notation.pgn": (  # long algebraic, figurines, 0-0, a FEN without SetUp, "½-½"
        "1. e2-e4 e7-e5 2. \u2658g1-f3 \u265eb8-c6 3. \u2657f1-c4 \u265dc5 4. 0-0 \u265ef6 *\n\n"
        '[Event "Endgame"]\n[FEN "8/P6k/8/8/8/8/6K1/8 w - - 0 1"]\n\n1. a8Q Kg6 2. Qb7 \u00bd-\u00bd\n'.encode(),
        [
            (None, "e4 e5 Nf3 Nc6 Bc4 Bc5 O-O Nf6", "*"),
            ("8/P6k/8/8/8/8/6K1/8 w - - 0 1", "a8=Q Kg6 Qb7", "1/2-1/2"),
        ],
    ),
    "tricky/latin1.pgn": (
        '[Event "Schach"]\n[White "M\u00fcller, J\u00fcrgen"]\n\n1. e4 c5 *\n'.encode("latin-1"),
        [(None, "e4 c5", "*")],
    ),
    "tricky/utf16.pgn": (
        '[Event "Wide"]\n[White "\u00c5se"]\n\n1. Nf3 d5 2. g3 *\n'.encode("utf-16"),
        [(None, "Nf3 d5 g3", "*")],
    ),
}


def test_tool_written_pgn_replays_as_python_chess_replays_it() -> None:
    files = tool_files()
    text = b"".join(files.values()).decode()
    assert "$" in text and "{ [%clk" in text and "( " in text and "[FEN " in text  # what real tools write
    games = 0
    for path, data in files.items():
        expected = facts_in(data.decode())
        records = map_server.analyse_file(path, data)
        assert [r.get("error") for r in records] == [None] * len(expected), path
        assert [facts_of_record(r) for r in records] == expected, path
        assert [r["event"] for r in records] == [f.event for f in expected]
        games += len(records)
    assert games == 12
    assert len(map_server.analyse_file("db.pgn", files["tool/database.pgn"])) == 5


@pytest.mark.parametrize("path", sorted(TRICKY))
def test_tricky_but_legal_pgn_is_read(path: str) -> None:
    data, games = TRICKY[path]
    records = map_server.analyse_file(path, data)
    assert [r.get("error") for r in records] == [None] * len(games)
    assert [facts_of_record(r) for r in records] == [facts_from_san(*g) for g in games]
    if len(games) > 1:
        assert [r["game"] for r in records] == list(range(1, len(games) + 1))
    if path == "tricky/several.pgn":
        assert (records[0]["event"], records[0]["black"]) == ("Odd tags", 'Said "hello" in a tag')
    if path == "tricky/latin1.pgn":
        assert records[0]["white"] == "M\u00fcller, J\u00fcrgen"
    if path == "tricky/utf16.pgn":
        assert records[0]["white"] == "\u00c5se"


# ---- the generator ---------------------------------------------------------------------


def test_generated_games_are_legal_and_their_results_follow_from_the_position(tmp_path: Path) -> None:
    assert generate.main(["--out", str(tmp_path / "g"), "--count", "24", "--seed", "3", "-q"]) == 0
    files = sorted((tmp_path / "g").rglob("*.pgn"))
    assert len(files) == 24
    assert {f.parent.name for f in files} == {generate.slug(e) for e, _ in generate.EVENTS}
    endings: Counter[str] = Counter()
    for f in files:
        game = chesslib.read_pgn(f.read_text())
        assert set(chesslib.SEVEN_TAGS) <= set(game.headers), f
        assert int(game.headers["PlyCount"]) == len(game.moves)
        board = Board()
        for san in game.moves:
            m = board.parse_san(san)
            assert board.san(m) == san, f"{f}: {san!r} is not the canonical SAN"
            board.push(m)
        end = board.outcome()
        if game.headers["Termination"] == "normal":
            assert end is not None and end[0] == game.result, f
            endings[end[1]] += 1
        else:  # stopped at the move cap, adjudicated by material
            assert game.headers["Termination"] == "adjudication" and end is None, f
            assert len(game.moves) == generate.MAX_PLIES
            lead = board.material(True) - board.material(False)
            expected = "1-0" if lead >= 5 else "0-1" if lead <= -5 else "1/2-1/2"
            assert game.result == expected, f
            endings["adjudication"] += 1
    assert endings["checkmate"] >= 5, endings  # the games are not all draws
    assert len(endings) >= 3, endings


def test_generator_is_deterministic_and_extends_without_changing_games(tmp_path: Path) -> None:
    def gen(out: str, *args: str) -> None:
        assert generate.main(["--out", str(tmp_path / out), "--seed", "5", "-q", *args]) == 0

    gen("a", "--count", "16", "--jobs", "2")  # in two processes
    gen("b", "--count", "10", "--jobs", "1")  # in this one, then six more
    gen("b", "--first", "10", "--count", "6", "--jobs", "1")
    gen("c", "--count", "16", "--seed", "6")

    def read(d: str) -> dict[str, bytes]:
        return {str(p.relative_to(tmp_path / d)): p.read_bytes() for p in (tmp_path / d).rglob("*.pgn")}

    assert read("a") == read("b")
    assert read("a").keys() == read("c").keys() and read("a") != read("c")


# ---- the job servers, in-process -------------------------------------------------------


@contextlib.contextmanager
def serving(handler: type[jobhttp.JobHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def serve_handler(request: pytest.FixtureRequest) -> Iterator[str]:
    with serving(request.param) as url:
        yield url


FOOLS_MATE = '[Event "E"]\n[White "W"]\n[Black "B"]\n[Result "0-1"]\n\n1. f3 e5 2. g4 Qh4# 0-1\n'


@pytest.mark.parametrize("serve_handler", [map_server.MapHandler], indirect=True)
def test_map_server_answers_json_lines_and_marks_what_is_not_a_game(serve_handler: str) -> None:
    with httpx.Client(base_url=serve_handler, timeout=10) as h:
        assert h.get("/").status_code == 200  # the readiness probe
        resp = h.post("/map/club/fool.pgn", content=FOOLS_MATE.encode())
        assert resp.status_code == 200 and resp.text.endswith("}\n") and resp.text.count("\n") == 1
        g = resp.json()
        assert (g["path"], g["result"], g["plies"], g["mate"], g["termination"]) == (
            "club/fool.pgn",
            "0-1",
            4,
            True,
            "checkmate",
        )
        assert "game" not in g and "error" not in g  # one game in the file
        assert g["checks"] == {"white": 0, "black": 1} and g["captures"] == {"white": 0, "black": 0}
        assert g["opening"] == "Other (1. f3)" and g["first_moves"] == "f3 e5" and g["result_agrees"]
        # Not a game: still a 200, so one stray file does not fail the job; the line says why.
        bad = h.post("/map/club/bad.pgn", content=b"1. e4 e5 2. Ke3 1-0\n")
        assert bad.status_code == 200
        assert bad.json() == {"path": "club/bad.pgn", "error": "move 2. Ke3: no such legal move"}
        big = h.post("/map/big.pgn", content=b" " * (map_server.MAX_FILE_BYTES + 1))
        assert big.status_code == 200
        assert big.json() == {
            "path": "big.pgn",
            "error": f"not read: body of {map_server.MAX_FILE_BYTES + 1} bytes is over the limit of 1048576",
        }
        # Both were read to their end: the connection lives on.
        assert h.post("/map/club/fool.pgn", content=FOOLS_MATE.encode()).json() == g
        two = h.post("/map/two.pgn", content=(FOOLS_MATE + "\n1. e4 Ke7 2. Ke2 *\n" + FOOLS_MATE).encode())
        lines = [json.loads(x) for x in two.text.splitlines()]
        assert [(x["game"], "error" in x) for x in lines] == [(1, False), (2, True), (3, False)]
        assert lines[1]["error"] == "game at line 8: move 1... Ke7: no such legal move"
        assert h.post("/nope", content=b"x").status_code == 404


@pytest.mark.parametrize("serve_handler", [reduce_server.ReduceHandler], indirect=True)
def test_reduce_server_folds_lines_lists_not_games_and_names_a_bad_line(serve_handler: str) -> None:
    g = map_server.analyse("a.pgn", chesslib.read_pgn(FOOLS_MATE))
    lines = [json.dumps(dict(g, path=f"g{i}.pgn", white=f"P{i % 3}")) for i in range(5)]
    # Twelve records of files that are not games, in reverse order: the report keeps the
    # first ten by path whatever order they came in.
    not_games = [json.dumps({"path": f"junk/{i:02d}.txt", "error": f"reason {i}"}) for i in reversed(range(12))]
    not_games.append(json.dumps({"path": "a-db.pgn", "game": 7, "error": "game at line 80: move 3. Ke3: ..."}))
    with httpx.Client(base_url=serve_handler, timeout=10) as h:
        report = h.post("/reduce", content=("\n".join(lines + not_games) + "\n").encode()).json()
        assert report["games"] == 5 and report["results"]["black_wins"] == {"count": 5, "percent": 100.0}
        assert report["plies"] == {"total": 20, "average": 4.0, "max": 4, "longest_game": "g0.pgn"}
        assert report["mates"] == 5 and report["top_openings"][0]["games"] == 5
        assert report["players"][0] == {"player": "B", "games": 5, "wins": 5, "draws": 0, "losses": 0, "score": 5.0}
        assert report["not_games"] == {
            "count": 13,
            "first": [{"path": "a-db.pgn", "game": 7, "error": "game at line 80: move 3. Ke3: ..."}]
            + [{"path": f"junk/{i:02d}.txt", "error": f"reason {i}"} for i in range(9)],
        }
        several = dict(g, path="db.pgn", game=3, plies=9)
        assert h.post("/reduce", content=json.dumps(several).encode()).json()["plies"]["longest_game"] == (
            "db.pgn (game 3)"
        )
        empty = h.post("/reduce", content=b"").json()
        assert empty["games"] == 0 and empty["top_scorer"] is None and empty["not_games"] == {"count": 0, "first": []}
        bad = h.post("/reduce", content=(lines[0] + "\nnot json\n" + lines[1]).encode())
        assert bad.status_code == 422 and "line 2" in bad.text


def not_game_files() -> dict[str, bytes]:
    """What a directory of games also holds in real life, and one file of three games of
    which the second is illegal."""
    return {
        "junk/readme.txt": b"Games of the 2024 season, one file per round.\n",
        "junk/empty.pgn": b"",
        "junk/blob.bin": bytes(random.Random(7).randrange(256) for _ in range(3000)) + b"\x00",
        "junk/illegal.pgn": b'[Event "x"]\n\n1. e4 e5 2. Ke3 1-0\n',
        "junk/comment-only.pgn": b"{ nothing here but a comment }\n",
        "junk/huge.pgn": b"1. e4 e5 " * (map_server.MAX_FILE_BYTES // 9 + 1),
        "junk/chess960.pgn": b'[Variant "Chess960"]\n'
        b'[FEN "bqnb1rkr/pp3ppp/3ppn2/2p5/5P2/P2P4/NPP1P1PP/BQ1BNRKR w HFhf - 2 9"]\n\n1. e4 *\n',
        "junk/truncated.pgn": b'[Event "cut"]\n\n1. e4 e5 2. Nf3 {the file ends in a comm',
        "junk/mixed.pgn": FOOLS_MATE.encode() + b"\n1. e4 e5 2. Ke3 *\n\n" + FOOLS_MATE.encode(),
    }


# Which entries are not games, and a word of each reason.
NOT_GAME_REASONS = {
    ("junk/blob.bin", None): "binary data",
    ("junk/chess960.pgn", None): "only standard chess",
    ("junk/comment-only.pgn", None): "no game in it",
    ("junk/empty.pgn", None): "empty file",
    ("junk/huge.pgn", None): "over the limit",
    ("junk/illegal.pgn", None): "move 2. Ke3: no such legal move",
    ("junk/mixed.pgn", 2): "move 2. Ke3: no such legal move",
    ("junk/readme.txt", None): "'Games' is not a move",
    ("junk/truncated.pgn", None): "comment '{' is never closed",
}


def test_messy_data_goes_through_map_and_reduce_and_the_report_names_what_is_not_a_game() -> None:
    """Real-tool PGN, tricky-but-legal PGN and files that are not games, together, through
    both servers as pfs would send them: every game is counted, nothing fails, and the
    report lists each thing that is not a game with its reason."""
    files = tool_files() | {path: data for path, (data, _) in TRICKY.items()} | not_game_files()
    expected_games = sum(len(facts_in(d.decode())) for p, d in files.items() if p.startswith("tool/"))
    expected_games += sum(len(games) for _, games in TRICKY.values()) + 2  # and junk/mixed.pgn's two
    with serving(map_server.MapHandler) as map_url, serving(reduce_server.ReduceHandler) as reduce_url:
        outputs: list[str] = []
        with httpx.Client(base_url=map_url, timeout=30) as h:
            for path in sorted(files):
                resp = h.post(f"/map/{path}", content=files[path])
                assert resp.status_code == 200, (path, resp.text)
                outputs.append(resp.text)
        with httpx.Client(base_url=reduce_url, timeout=30) as h:
            report = h.post("/reduce", content="".join(outputs).encode()).json()
    assert report["games"] == expected_games == 25
    not_games = report["not_games"]
    assert not_games["count"] == len(NOT_GAME_REASONS)
    assert [(x["path"], x.get("game")) for x in not_games["first"]] == sorted(NOT_GAME_REASONS)
    for x in not_games["first"]:
        assert NOT_GAME_REASONS[x["path"], x.get("game")] in x["error"], x
    assert report["en_passant"] >= 3 and report["promotions"]["total"] >= 2  # the tricky cases counted
    assert report["results_contradicted_by_position"] == 0


# ---- run.sh, for real ------------------------------------------------------------------

# run.sh's defaults, which its README's expected output shows.
N_GAMES, N_NEW = 100, 10
# examples/chess/samples, which run.sh adds to the games: what is not a game in them.
SAMPLE_NOT_GAMES = {
    ("samples/board.png", None): "binary data",
    ("samples/club-archive.pgn", 3): "move 7. Ke2: no such legal move",
    ("samples/empty.pgn", None): "empty file",
    ("samples/notes.txt", None): "'Riverside' is not a move",
}


def expected_report(facts: list[Facts]) -> dict[str, Any]:
    results = Counter(f.result for f in facts)
    return {
        "games": len(facts),
        "results": (results["1-0"], results["0-1"], results["1/2-1/2"]),
        "plies": (sum(f.plies for f in facts), max(f.plies for f in facts)),
        "mates": sum(f.mate for f in facts),
        "captures": tuple(sum(f.captures[i] for f in facts) for i in (0, 1)),
        "checks": tuple(sum(f.checks[i] for f in facts) for i in (0, 1)),
        "promotions": sum(f.promotions for f in facts),
        "en_passant": sum(f.en_passant for f in facts),
        "events": dict(Counter(f.event for f in facts)),
    }


def got_report(r: dict[str, Any]) -> dict[str, Any]:
    res = r["results"]
    return {
        "games": r["games"],
        "results": (res["white_wins"]["count"], res["black_wins"]["count"], res["draws"]["count"]),
        "plies": (r["plies"]["total"], r["plies"]["max"]),
        "mates": r["mates"],
        "captures": (r["captures"]["white"], r["captures"]["black"]),
        "checks": (r["checks"]["white"], r["checks"]["black"]),
        "promotions": r["promotions"]["total"],
        "en_passant": r["en_passant"],
        "events": r["events"],
    }


def job_files(c: Client, job: str, commit: str, path: str = "") -> list[str]:
    out: list[str] = []
    for e in c.ls_job(job, path, commit=commit):
        out += job_files(c, job, commit, e.path) if e.is_dir else [e.path]
    return out


def mapped_paths(log: str) -> set[str]:
    """The files a map run analysed, from its workers' logs (one line per request)."""
    return set(re.findall(r"chess-map: POST /map/(\S+) -> 200", log))


def leftover_containers(instance: str) -> list[str]:
    proc = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", "label=pfs=1", "--filter", f"label=pfs.instance={instance}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout.split()


def normalized(line: str) -> str:
    """A line of run.sh's output without what changes from run to run: the work directory,
    ids (commits, images), the port, and timings."""
    line = re.sub(r"\S*/pfs-chess\.\w+", "<work>", line)
    line = re.sub(r"\b[0-9a-f]{12,64}\b", "<id>", line)
    line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", line)
    return re.sub(r"\bin \d+(?:\.\d+)? s\b", "in <t> s", line).rstrip()


def readme_lines() -> list[str]:
    """The lines of the README's "Expected output" block, less those it abridges ("...")."""
    text = (EXAMPLE / "README.md").read_text()
    block = text.split("## Expected output", 1)[1].split("```", 2)[1]
    return [line for line in block.splitlines() if line.strip() and "..." not in line]


def assert_output_shows(output: str, shown: list[str]) -> None:
    """Each shown line is in the output, in the same order (after `normalized`)."""
    lines = [normalized(x) for x in output.splitlines()]
    at = 0
    for want in shown:
        want_n = normalized(want)
        try:
            at = lines.index(want_n, at) + 1
        except ValueError:
            context = "\n".join(lines[max(0, at - 3) : at + 12])
            raise AssertionError(
                f"README line not in run.sh's output (from line {at}):\n{want}\n---\n{context}"
            ) from None


@pytest.mark.docker
@pytest.mark.slow
def test_run_sh_end_to_end(tmp_path: Path) -> None:
    ensure_docker()  # raises (the test fails) when Docker cannot be made to work
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k not in ("PFS_URL", "CHESS_GAMES", "CHESS_NEW_GAMES", "CHESS_SEED")}
    env["CHESS_WORKDIR"] = str(work)  # keep what it made, to look at; the rest as the README runs it
    pfs_cli = Path(sys.executable).parent / "pfs"  # the pfs of the interpreter running the tests
    if pfs_cli.exists():
        env["PFS"] = str(pfs_cli)
    proc = subprocess.run(  # stdout and stderr together, as a terminal shows them
        ["bash", str(EXAMPLE / "run.sh")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"run.sh failed:\n{proc.stdout[-6000:]}"
    # The README shows what really happens (its run had a temporary work directory).
    assert_output_shows(proc.stdout.replace(str(work), "/tmp/pfs-chess.work"), readme_lines())
    instance = (work / "pfs-data" / "instance").read_text().strip()
    assert leftover_containers(instance) == []

    root = work / "games"
    files = {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.is_file()}
    samples = {k: p for k, p in files.items() if k.startswith("samples/")}
    assert sorted(samples) == sorted(str(p.relative_to(EXAMPLE)) for p in (EXAMPLE / "samples").iterdir())
    generated = {k: p for k, p in files.items() if k not in samples}
    assert len(generated) == N_GAMES + N_NEW
    old = {k: p for k, p in files.items() if k in samples or int(Path(k).stem) < N_GAMES}
    new = {k: p for k, p in files.items() if k not in old}
    # python-chess reads prose as a game with no moves: it is told which files are not games.
    not_games = {path for path, game in SAMPLE_NOT_GAMES if game is None}
    facts = {k: [] if k in not_games else facts_in(p.read_text()) for k, p in files.items()}
    assert sum(len(f) for k, f in facts.items() if k in samples) == 3

    # Look at what run.sh left in pfs with a server of our own on its data directory.
    server = ServerProc(work / "pfs-data", env={"PFS_JOB_RUNTIME": "docker"}).start()
    try:
        with Client(server.url) as c:
            c2, c1 = (x.id for x in c.log("master", 2))
            for commit, expect in ((c1, old), (c2, files)):
                report = json.loads(c.get_job_file("chess-report", commit=commit))
                assert got_report(report) == expected_report([f for k in expect for f in facts[k]])
                assert report["results_contradicted_by_position"] == 0
                assert report["not_games"]["count"] == len(SAMPLE_NOT_GAMES)
                first = {(x["path"], x.get("game")): x["error"] for x in report["not_games"]["first"]}
                assert first.keys() == SAMPLE_NOT_GAMES.keys()
                assert all(SAMPLE_NOT_GAMES[k] in first[k] for k in first), first
                outputs = job_files(c, "chess-analyse", commit)
                assert sorted(outputs) == sorted(expect)  # one output per file, same path
            for rel in [*list(generated)[:3], "samples/opera-game.pgn", "samples/club-archive.pgn"]:
                records = [json.loads(x) for x in c.get_job_file("chess-analyse", rel, commit=c1).splitlines()]
                good = [facts_of_record(r) for r in records if "error" not in r]
                assert good == facts[rel] and all(r["path"] == rel for r in records)
                assert c.get_job_file("chess-analyse", rel, commit=c2) == c.get_job_file(
                    "chess-analyse", rel, commit=c1
                )

            # Incremental: the second run analysed exactly the new games.
            jobs = {j.job: j for j in c.run_status(c2).jobs}
            analyse = jobs["chess-analyse"]
            assert (analyse.state, analyse.done, analyse.reused, analyse.total) == (
                "succeeded",
                N_NEW,
                len(old),
                len(files),
            )
            assert mapped_paths(c.job_log("chess-analyse", c1)) == set(old)
            assert mapped_paths(c.job_log("chess-analyse", c2)) == set(new)

            # More messy data through pfs and Docker: PGN written by python-chess, the issue's
            # "cxb3 e.p.", an illegal game and binary junk. The job succeeds; the report
            # counts the games and lists what is not a game, with the reasons.
            messy = {
                "tool/database.pgn": tool_files()["tool/database.pgn"],
                "tricky/ep-suffix.pgn": TRICKY["tricky/ep-suffix.pgn"][0],
                "broken/bad.pgn": b'[Result "1-0"]\n\n1. e4 e5 2. Ke3 1-0\n',
                "broken/junk.bin": bytes(range(256)) * 4,
            }
            for rel, data in messy.items():
                c.put_file(f"games/{rel}", data)
            c3 = c.commit(message="messy data", run=True).id
            status = c.wait_run(c3, timeout=180)
            jobs = {j.job: j for j in status.jobs}
            assert status.state == "succeeded", status
            assert (jobs["chess-analyse"].done, jobs["chess-analyse"].reused) == (len(messy), len(files))
            report = json.loads(c.get_job_file("chess-report", commit=c3))
            all_facts = [f for k in files for f in facts[k]] + facts_in(messy["tool/database.pgn"].decode())
            all_facts += facts_in(messy["tricky/ep-suffix.pgn"].decode())  # python-chess skips the "e.p."
            assert got_report(report) == expected_report(all_facts)
            assert report["not_games"]["count"] == len(SAMPLE_NOT_GAMES) + 2
            listed = {x["path"]: x["error"] for x in report["not_games"]["first"]}
            assert list(listed)[:2] == ["broken/bad.pgn", "broken/junk.bin"]
            assert "move 2. Ke3" in listed["broken/bad.pgn"] and "binary" in listed["broken/junk.bin"]
            line = json.loads(c.get_job_file("chess-analyse", "broken/bad.pgn", commit=c3))
            assert line == {"path": "broken/bad.pgn", "error": "move 2. Ke3: no such legal move"}
    finally:
        server.stop()
    assert leftover_containers(instance) == []
