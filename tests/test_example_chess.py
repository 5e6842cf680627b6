"""The chess example (examples/chess).

First, fast and without Docker: the rules engine against known move counts, the generator
(legal, deterministic games whose results the final positions bear out), and the two job
servers in-process. Then `run.sh` for real, as its README says to run it (real Docker,
its own pfs server), with its results checked against what this test reads from the PGN
files itself. The Docker test fails, never skips, when Docker cannot be made to work.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServerProc
from jobenv import ensure_docker

from pfs import Client, errors

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chess"
sys.path.insert(0, str(EXAMPLE))

import chesslib  # noqa: E402
import generate  # noqa: E402
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
        ("", "no game found"),
        ('[Result "1-0"]\n\n1. e4 e5\n', "do not end with a result"),
        ('[Result "1-0"]\n\n1. e4 e5 0-1\n', "disagrees"),
        ("1. e4 e5 1-0\n\n1. d4 1-0\n", "one game per file"),
        ('[Event "x\n\n1. e4 *\n', "malformed tag"),
        ("1. e4 (1. d4 *\n", "never closed"),
    ],
)
def test_read_pgn_refuses_malformed_games(text: str, message: str) -> None:
    with pytest.raises(ChessError, match=message):
        chesslib.read_pgn(text)


def test_replay_names_the_illegal_move() -> None:
    game = chesslib.read_pgn("1. e4 e5 2. Nf3 Ke7 3. Ke3 *\n")
    with pytest.raises(ChessError, match=r"move 3\. Ke3: no such legal move"):
        chesslib.replay(game)


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


@pytest.fixture
def serve_handler(request: pytest.FixtureRequest) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), request.param)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


FOOLS_MATE = '[Event "E"]\n[White "W"]\n[Black "B"]\n[Result "0-1"]\n\n1. f3 e5 2. g4 Qh4# 0-1\n'


@pytest.mark.parametrize("serve_handler", [map_server.MapHandler], indirect=True)
def test_map_server_answers_a_json_line_or_a_clear_422(serve_handler: str) -> None:
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
        assert g["checks"] == {"white": 0, "black": 1} and g["captures"] == {"white": 0, "black": 0}
        assert g["opening"] == "Other (1. f3)" and g["first_moves"] == "f3 e5" and g["result_agrees"]
        bad = h.post("/map/club/bad.pgn", content=b"1. e4 e5 2. Ke3 1-0\n")
        assert bad.status_code == 422
        assert "club/bad.pgn" in bad.text and "move 2. Ke3" in bad.text
        big = h.post("/map/big.pgn", content=b" " * ((1 << 20) + 1))
        assert big.status_code == 413  # refused only after reading it all: the connection lives on
        assert h.post("/map/club/fool.pgn", content=FOOLS_MATE.encode()).json() == g


@pytest.mark.parametrize("serve_handler", [reduce_server.ReduceHandler], indirect=True)
def test_reduce_server_folds_lines_and_names_a_bad_one(serve_handler: str) -> None:
    g = map_server.analyse("a.pgn", FOOLS_MATE)
    lines = [json.dumps(dict(g, path=f"g{i}.pgn", white=f"P{i % 3}")) for i in range(5)]
    with httpx.Client(base_url=serve_handler, timeout=10) as h:
        report = h.post("/reduce", content=("\n".join(lines) + "\n").encode()).json()
        assert report["games"] == 5 and report["results"]["black_wins"] == {"count": 5, "percent": 100.0}
        assert report["plies"] == {"total": 20, "average": 4.0, "max": 4, "longest_game": "g0.pgn"}
        assert report["mates"] == 5 and report["top_openings"][0]["games"] == 5
        assert report["players"][0] == {"player": "B", "games": 5, "wins": 5, "draws": 0, "losses": 0, "score": 5.0}
        empty = h.post("/reduce", content=b"").json()
        assert empty["games"] == 0 and empty["top_scorer"] is None
        bad = h.post("/reduce", content=(lines[0] + "\nnot json\n" + lines[1]).encode())
        assert bad.status_code == 422 and "line 2" in bad.text


# ---- run.sh, for real ------------------------------------------------------------------

N_GAMES, N_NEW = 40, 5


def pgn_facts(path: Path) -> dict[str, Any]:
    """What the report must say about one game, read from the PGN text with no chess
    knowledge at all: tags, and SAN tokens (x: capture, +/#: check, #: mate, =: promotion)."""
    text = path.read_text()
    tags = dict(re.findall(r'^\[(\w+) "(.*)"\]$', text, re.MULTILINE))
    movetext = text.split("\n\n", 1)[1]
    tokens = [t for t in movetext.split() if not re.fullmatch(r"\d+\.", t)]
    assert tokens[-1] == tags["Result"]
    moves = tokens[:-1]
    white, black = moves[0::2], moves[1::2]
    return {
        "result": tags["Result"],
        "event": tags["Event"],
        "plies": len(moves),
        "mate": bool(moves) and moves[-1].endswith("#"),
        "captures": (sum("x" in m for m in white), sum("x" in m for m in black)),
        "checks": (sum(m[-1] in "+#" for m in white), sum(m[-1] in "+#" for m in black)),
        "promotions": sum("=" in m for m in moves),
    }


def expected_report(games: dict[str, Path]) -> dict[str, Any]:
    facts = [pgn_facts(p) for p in games.values()]
    results = Counter(f["result"] for f in facts)
    return {
        "games": len(facts),
        "results": (results["1-0"], results["0-1"], results["1/2-1/2"]),
        "plies": (sum(f["plies"] for f in facts), max(f["plies"] for f in facts)),
        "mates": sum(f["mate"] for f in facts),
        "captures": tuple(sum(f["captures"][i] for f in facts) for i in (0, 1)),
        "checks": tuple(sum(f["checks"][i] for f in facts) for i in (0, 1)),
        "promotions": sum(f["promotions"] for f in facts),
        "events": dict(Counter(f["event"] for f in facts)),
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
        "events": r["events"],
    }


def job_files(c: Client, job: str, commit: str, path: str = "") -> list[str]:
    out: list[str] = []
    for e in c.ls_job(job, path, commit=commit):
        out += job_files(c, job, commit, e["path"]) if e["type"] == "dir" else [e["path"]]
    return out


def mapped_paths(log: str) -> set[str]:
    """The games a map run analysed, from its workers' logs (one line per request)."""
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


def test_run_sh_end_to_end(tmp_path: Path) -> None:
    ensure_docker()  # raises (the test fails) when Docker cannot be made to work
    work = tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k != "PFS_URL"}  # run.sh starts its own server
    env.update(CHESS_GAMES=str(N_GAMES), CHESS_NEW_GAMES=str(N_NEW), CHESS_SEED="11", CHESS_WORKDIR=str(work))
    pfs_cli = Path(sys.executable).parent / "pfs"  # the pfs of the interpreter running the tests
    if pfs_cli.exists():
        env["PFS"] = str(pfs_cli)
    proc = subprocess.run(
        ["bash", str(EXAMPLE / "run.sh")], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, f"run.sh failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    assert f"analysed {N_NEW} game(s), reused {N_GAMES} of {N_GAMES + N_NEW}" in proc.stdout
    instance = (work / "pfs-data" / "instance").read_text().strip()
    assert leftover_containers(instance) == []

    games = {str(p.relative_to(work / "games")): p for p in sorted((work / "games").rglob("*.pgn"))}
    assert len(games) == N_GAMES + N_NEW
    old = {k: p for k, p in games.items() if int(Path(k).stem) < N_GAMES}
    new = {k: p for k, p in games.items() if k not in old}

    # Look at what run.sh left in pfs with a server of our own on its data directory.
    server = ServerProc(work / "pfs-data", env={"PFS_JOB_RUNTIME": "docker"}).start()
    try:
        with Client(server.url) as c:
            c2, c1 = (x["id"] for x in c.log("master", 2))
            for commit, expect in ((c1, old), (c2, games)):
                report = json.loads(c.get_job_file("chess-report", commit=commit))
                assert got_report(report) == expected_report(expect)
                assert report["results_contradicted_by_position"] == 0
                outputs = job_files(c, "chess-analyse", commit)
                assert sorted(outputs) == sorted(expect)  # one output per game, same path
            for rel in list(old)[:5]:
                one = json.loads(c.get_job_file("chess-analyse", rel, commit=c1))
                assert one["path"] == rel and one["plies"] == pgn_facts(old[rel])["plies"]
                assert c.get_job_file("chess-analyse", rel, commit=c2) == c.get_job_file(
                    "chess-analyse", rel, commit=c1
                )

            # Incremental: the second run analysed exactly the new games.
            jobs = {j["job"]: j for j in c.run_status(c2)["jobs"]}
            analyse = jobs["chess-analyse"]
            assert (analyse["state"], analyse["done"], analyse["reused"], analyse["total"]) == (
                "succeeded",
                N_NEW,
                N_GAMES,
                N_GAMES + N_NEW,
            )
            assert mapped_paths(c.job_log("chess-analyse", c1)) == set(old)
            assert mapped_paths(c.job_log("chess-analyse", c2)) == set(new)

            # A malformed game fails the map with the worker's 422, naming the file, and the
            # reduce after it is skipped: no report is readable for that commit.
            c.put_file("games/broken/bad.pgn", b'[Result "1-0"]\n\n1. e4 e5 2. Ke3 1-0\n')
            c3 = c.commit(message="a broken game", run=True)["id"]
            status = c.wait_run(c3, timeout=120)
            jobs = {j["job"]: j for j in status["jobs"]}
            assert status["state"] == "failed"
            err = jobs["chess-analyse"]["error"]
            assert "broken/bad.pgn" in err and "HTTP 422" in err and "Ke3" in err, err
            assert jobs["chess-report"]["state"] == "skipped"
            with pytest.raises(errors.PfsError):
                c.get_job_file("chess-report", commit=c3)
    finally:
        server.stop()
    assert leftover_containers(instance) == []
