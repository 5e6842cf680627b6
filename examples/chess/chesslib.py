"""A small, complete chess rules engine with SAN and PGN, standard library only.

It exists so that the example's containers need nothing but python3 (the base image has
no pip and containers have no network). One module serves both sides: the generator on
the host plays legal games with it, and the map image replays them with it to analyse and
validate. Board: 0x88 (square = 16 * rank + file), so one `& 0x88` test finds the edge.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

START_FEN = "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"
EMPTY = "."
FILES = "abcdefgh"
KNIGHT_STEPS = (33, 31, 18, 14, -14, -18, -31, -33)
KING_STEPS = (16, -16, 1, -1, 17, 15, -15, -17)
BISHOP_DIRS = (17, 15, -15, -17)
ROOK_DIRS = (16, -16, 1, -1)
SLIDES = {"B": BISHOP_DIRS, "R": ROOK_DIRS, "Q": BISHOP_DIRS + ROOK_DIRS}
SQUARES = tuple(sq for sq in range(128) if not sq & 0x88)
VALUES = {"P": 1, "N": 3, "B": 3, "R": 5, "Q": 9, "K": 0}
# A move from or to one of these squares loses the castling rights listed.
CASTLING_LOST = {0: "Q", 7: "K", 4: "KQ", 112: "q", 119: "k", 116: "kq"}
RESULTS = ("1-0", "0-1", "1/2-1/2", "*")
# Mainstream opening lines, known to every player: (name, moves in SAN). The generator
# starts most games with one; the map names a game's opening by the longest that it follows.
OPENINGS: tuple[tuple[str, str], ...] = (
    ("Ruy Lopez", "e4 e5 Nf3 Nc6 Bb5 a6"),
    ("Italian Game", "e4 e5 Nf3 Nc6 Bc4 Bc5"),
    ("Two Knights Defence", "e4 e5 Nf3 Nc6 Bc4 Nf6"),
    ("Scotch Game", "e4 e5 Nf3 Nc6 d4 exd4"),
    ("Petrov Defence", "e4 e5 Nf3 Nf6"),
    ("King's Gambit", "e4 e5 f4 exf4"),
    ("Sicilian Defence", "e4 c5 Nf3 d6 d4 cxd4"),
    ("French Defence", "e4 e6 d4 d5"),
    ("Caro-Kann Defence", "e4 c6 d4 d5"),
    ("Scandinavian Defence", "e4 d5 exd5 Qxd5"),
    ("Pirc Defence", "e4 d6 d4 Nf6 Nc3 g6"),
    ("Queen's Gambit Declined", "d4 d5 c4 e6"),
    ("Queen's Gambit Accepted", "d4 d5 c4 dxc4"),
    ("Slav Defence", "d4 d5 c4 c6"),
    ("King's Indian Defence", "d4 Nf6 c4 g6 Nc3 Bg7"),
    ("Nimzo-Indian Defence", "d4 Nf6 c4 e6 Nc3 Bb4"),
    ("Dutch Defence", "d4 f5"),
    ("English Opening", "c4 e5"),
    ("Reti Opening", "Nf3 d5 g3"),
)
# SAN as PGN writers really spell it: an optional piece letter ("P" for a pawn, as some old
# programs write), origin file/rank, "x", ":" or "-" (long algebraic, "Ng1-f3"), the target,
# and a promotion as "=Q", "Q", "=q" or "(Q)".
SAN_RE = re.compile(r"([NBRQKP])?([a-h])?([1-8])?[x:-]?([a-h][1-8])(?:=?\(?([NBRQnbrq])\)?)?")
# What may trail a move and says nothing about which move it is: check and mate signs,
# annotation glyphs ("!?"), and the en passant suffix some exporters add ("exd6e.p.").
SAN_SUFFIX_RE = re.compile(r"(?:e\.p\.?|[+#!?‼⁇⁈⁉])+$")
CASTLES = {"O-O": False, "O-O-O": True}  # long? ("0-0" and "o-o" are read as "O-O")
# Figurine notation (what some tools export for readers): the piece letter instead.
FIGURINES = str.maketrans("♔♕♖♗♘♚♛♜♝♞", "KQRBNKQRBN", "♙♟")


def castling_side(token: str) -> bool | None:
    """True for long castling, False for short, None when `token` is not castling."""
    return CASTLES.get(token.upper().replace("0", "O"))


def looks_like_san(text: str) -> bool:
    """Is `text` spelt like a move (legal or not)? Tells a game from prose before replaying."""
    token = SAN_SUFFIX_RE.sub("", text.translate(FIGURINES))
    return castling_side(token) is not None or SAN_RE.fullmatch(token) is not None


class ChessError(ValueError):
    """Bad FEN, SAN or PGN: the message says what and where, for a 422 or a test failure."""


class Move(NamedTuple):
    frm: int
    to: int
    promo: str = ""  # "N", "B", "R" or "Q" for a promotion

    def uci(self) -> str:
        return square_name(self.frm) + square_name(self.to) + self.promo.lower()


def square_name(sq: int) -> str:
    return FILES[sq & 7] + str((sq >> 4) + 1)


def parse_square(name: str) -> int:
    if len(name) != 2 or name[0] not in FILES or name[1] not in "12345678":
        raise ChessError(f"bad square {name!r}")
    return (int(name[1]) - 1) * 16 + FILES.index(name[0])


def is_white(piece: str) -> bool:
    return piece.isupper()


class Undo(NamedTuple):
    move: Move
    captured: str
    capture_sq: int
    castling: str
    ep: int | None
    halfmove: int
    key: str


class Board:
    """A position plus the history needed for repetition draws and `pop`."""

    def __init__(self, fen: str = START_FEN) -> None:
        self.board = [EMPTY] * 128
        self.white = True  # side to move
        self.castling = ""
        self.ep: int | None = None  # en passant target square
        self.halfmove = 0
        self.fullmove = 1
        self.kings = [-1, -1]  # [white, black]: a side's king is kings[not white]
        self.stack: list[Undo] = []
        self.seen: dict[str, int] = {}
        self.set_fen(fen)

    # ---- FEN -------------------------------------------------------------------------
    def set_fen(self, fen: str) -> None:
        parts = fen.split()
        if len(parts) == 4:
            parts += ["0", "1"]
        if len(parts) != 6:
            raise ChessError(f"FEN needs 6 fields: {fen!r}")
        rows = parts[0].split("/")
        if len(rows) != 8:
            raise ChessError(f"FEN needs 8 ranks: {fen!r}")
        self.board = [EMPTY] * 128
        for i, row in enumerate(rows):
            rank, file = 7 - i, 0
            for ch in row:
                if ch.isdigit():
                    file += int(ch)
                elif ch.upper() in VALUES and file < 8:
                    self.board[rank * 16 + file] = ch
                    file += 1
                else:
                    raise ChessError(f"bad FEN rank {row!r}")
            if file != 8:
                raise ChessError(f"FEN rank {row!r} is not 8 squares")
        if parts[1] not in ("w", "b"):
            raise ChessError(f"bad side to move {parts[1]!r}")
        self.white = parts[1] == "w"
        self.castling = "" if parts[2] == "-" else parts[2]
        if any(c not in "KQkq" for c in self.castling):
            raise ChessError(f"bad castling field {parts[2]!r}")
        self.ep = None if parts[3] == "-" else parse_square(parts[3])
        try:
            self.halfmove, self.fullmove = int(parts[4]), int(parts[5])
        except ValueError:
            raise ChessError(f"bad move counters in {fen!r}") from None
        kings = [sq for sq in SQUARES if self.board[sq] == "K"], [sq for sq in SQUARES if self.board[sq] == "k"]
        if len(kings[0]) != 1 or len(kings[1]) != 1:
            raise ChessError("a position needs exactly one king per side")
        self.kings = [kings[0][0], kings[1][0]]
        if self.attacked(self.kings[self.white], self.white):
            raise ChessError("the side not to move is in check")
        self.stack = []
        self.seen = {self.key(): 1}

    def fen(self) -> str:
        rows = []
        for rank in range(7, -1, -1):
            row, gap = "", 0
            for file in range(8):
                p = self.board[rank * 16 + file]
                if p == EMPTY:
                    gap += 1
                    continue
                row += (str(gap) if gap else "") + p
                gap = 0
            rows.append(row + (str(gap) if gap else ""))
        ep = square_name(self.ep) if self.ep is not None else "-"
        side = "w" if self.white else "b"
        return f"{'/'.join(rows)} {side} {self.castling or '-'} {ep} {self.halfmove} {self.fullmove}"

    def key(self) -> str:
        """What makes two positions "the same" for repetition: pieces, side, castling, and
        an en passant square only when a pawn could take there."""
        ep = ""
        if self.ep is not None:
            pawn, back = ("P", -16) if self.white else ("p", 16)
            if any(not (s := self.ep + back + d) & 0x88 and self.board[s] == pawn for d in (-1, 1)):
                ep = square_name(self.ep)
        return "".join(self.board) + ("w" if self.white else "b") + self.castling + ep

    # ---- attacks and moves -----------------------------------------------------------
    def attacked(self, sq: int, by_white: bool) -> bool:
        """Is `sq` attacked by the given side? Looked at from the square outwards."""
        b = self.board
        if by_white:
            pawn, knight, king, rook, bishop, queen, fwd = "P", "N", "K", "R", "B", "Q", -16
        else:
            pawn, knight, king, rook, bishop, queen, fwd = "p", "n", "k", "r", "b", "q", 16
        for d in (fwd - 1, fwd + 1):
            s = sq + d
            if not s & 0x88 and b[s] == pawn:
                return True
        for d in KNIGHT_STEPS:
            s = sq + d
            if not s & 0x88 and b[s] == knight:
                return True
        for d in KING_STEPS:
            s = sq + d
            if not s & 0x88 and b[s] == king:
                return True
        for dirs, slider in ((ROOK_DIRS, rook), (BISHOP_DIRS, bishop)):
            for d in dirs:
                s = sq + d
                while not s & 0x88:
                    p = b[s]
                    if p != EMPTY:
                        if p in (slider, queen):
                            return True
                        break
                    s += d
        return False

    def in_check(self) -> bool:
        return self.attacked(self.kings[not self.white], not self.white)

    def pseudo_moves(self) -> list[Move]:
        """Moves that obey how pieces move, before the own-king-in-check test."""
        b, white = self.board, self.white
        out: list[Move] = []
        for sq in SQUARES:
            p = b[sq]
            if p == EMPTY or p.isupper() != white:
                continue
            kind = p.upper()
            if kind == "P":
                fwd, start, last = (16, 1, 7) if white else (-16, 6, 0)
                to = sq + fwd
                if b[to] == EMPTY:
                    self._pawn_move(out, sq, to, last)
                    if sq >> 4 == start and b[to + fwd] == EMPTY:
                        out.append(Move(sq, to + fwd))
                for to in (sq + fwd - 1, sq + fwd + 1):
                    if to & 0x88:
                        continue
                    t = b[to]
                    if (t != EMPTY and t.isupper() != white) or to == self.ep:
                        self._pawn_move(out, sq, to, last)
            elif kind in ("N", "K"):
                for d in KNIGHT_STEPS if kind == "N" else KING_STEPS:
                    to = sq + d
                    if not to & 0x88 and (b[to] == EMPTY or b[to].isupper() != white):
                        out.append(Move(sq, to))
                if kind == "K":
                    self._castles(out, sq)
            else:
                for d in SLIDES[kind]:
                    to = sq + d
                    while not to & 0x88:
                        t = b[to]
                        if t == EMPTY:
                            out.append(Move(sq, to))
                        else:
                            if t.isupper() != white:
                                out.append(Move(sq, to))
                            break
                        to += d
        return out

    @staticmethod
    def _pawn_move(out: list[Move], frm: int, to: int, last: int) -> None:
        if to >> 4 == last:
            out.extend(Move(frm, to, promo) for promo in "QRBN")
        else:
            out.append(Move(frm, to))

    def _castles(self, out: list[Move], sq: int) -> None:
        b, white, rights = self.board, self.white, self.castling
        home, king, rook, side = (4, "K", "R", "KQ") if white else (116, "k", "r", "kq")
        if sq != home or b[sq] != king or not any(c in rights for c in side):
            return
        them = not white
        if self.attacked(sq, them):
            return
        # The king may not pass through or land on an attacked square; the rook may.
        short_free = b[sq + 3] == rook and b[sq + 1] == b[sq + 2] == EMPTY
        if side[0] in rights and short_free and not self.attacked(sq + 1, them) and not self.attacked(sq + 2, them):
            out.append(Move(sq, sq + 2))
        long_free = b[sq - 4] == rook and b[sq - 1] == b[sq - 2] == b[sq - 3] == EMPTY
        if side[1] in rights and long_free and not self.attacked(sq - 1, them) and not self.attacked(sq - 2, them):
            out.append(Move(sq, sq - 2))

    def make(self, m: Move) -> Undo:
        """Play a move with no legality check and no history; `unmake` takes it back
        exactly. The fast way to try a move out (`push` is for moves that stay)."""
        b = self.board
        piece = b[m.frm]
        captured, capture_sq = b[m.to], m.to
        kind = piece.upper()
        if kind == "P" and m.to == self.ep and captured == EMPTY:
            capture_sq = m.to + (-16 if self.white else 16)
            captured = b[capture_sq]
            b[capture_sq] = EMPTY
        undo = Undo(m, captured, capture_sq, self.castling, self.ep, self.halfmove, "")
        b[m.to] = (m.promo if self.white else m.promo.lower()) if m.promo else piece
        b[m.frm] = EMPTY
        if kind == "K":
            self.kings[not self.white] = m.to
            if abs(m.to - m.frm) == 2:  # castling: the rook jumps over
                rook_from, rook_to = (m.frm + 3, m.frm + 1) if m.to > m.frm else (m.frm - 4, m.frm - 1)
                b[rook_to], b[rook_from] = b[rook_from], EMPTY
        if self.castling:
            for sq in (m.frm, m.to):
                lost = CASTLING_LOST.get(sq)
                if lost:
                    self.castling = "".join(c for c in self.castling if c not in lost)
        self.ep = (m.frm + m.to) // 2 if kind == "P" and abs(m.to - m.frm) == 32 else None
        self.halfmove = 0 if kind == "P" or captured != EMPTY else self.halfmove + 1
        if not self.white:
            self.fullmove += 1
        self.white = not self.white
        return undo

    def unmake(self, u: Undo) -> None:
        b, m = self.board, u.move
        self.white = not self.white
        if not self.white:
            self.fullmove -= 1
        piece = b[m.to]
        if m.promo:
            piece = "P" if self.white else "p"
        b[m.frm] = piece
        b[m.to] = EMPTY
        b[u.capture_sq] = u.captured
        if piece.upper() == "K":
            self.kings[not self.white] = m.frm
            if abs(m.to - m.frm) == 2:
                rook_from, rook_to = (m.frm + 3, m.frm + 1) if m.to > m.frm else (m.frm - 4, m.frm - 1)
                b[rook_from], b[rook_to] = b[rook_to], EMPTY
        self.castling, self.ep, self.halfmove = u.castling, u.ep, u.halfmove

    def _legal(self, m: Move) -> bool:
        us = self.white
        u = self.make(m)
        ok = not self.attacked(self.kings[not us], not us)
        self.unmake(u)
        return ok

    def legal_moves(self) -> list[Move]:
        return [m for m in self.pseudo_moves() if self._legal(m)]

    def has_legal_move(self) -> bool:
        return any(self._legal(m) for m in self.pseudo_moves())

    def push(self, m: Move) -> None:
        """Play a move known to be legal (from `legal_moves` or `parse_san`)."""
        u = self.make(m)
        key = self.key()
        self.stack.append(u._replace(key=key))
        self.seen[key] = self.seen.get(key, 0) + 1

    def pop(self) -> Move:
        u = self.stack.pop()
        self.seen[u.key] -= 1
        self.unmake(u)
        return u.move

    def gives_check(self, m: Move) -> bool:
        u = self.make(m)
        check = self.in_check()
        self.unmake(u)
        return check

    def is_capture(self, m: Move) -> bool:
        return self.board[m.to] != EMPTY or (m.to == self.ep and self.board[m.frm].upper() == "P")

    def is_en_passant(self, m: Move) -> bool:
        return m.to == self.ep and self.board[m.frm].upper() == "P" and self.board[m.to] == EMPTY

    def is_castle(self, m: Move) -> bool:
        return self.board[m.frm].upper() == "K" and abs(m.to - m.frm) == 2

    # ---- SAN -------------------------------------------------------------------------
    def san(self, m: Move, legal: list[Move] | None = None) -> str:
        """Standard algebraic notation with the +/# suffix, e.g. "Nbd7", "exd6", "e8=Q#"."""
        text = self.san_base(m, self.legal_moves() if legal is None else legal)
        u = self.make(m)
        if self.in_check():
            text += "+" if self.has_legal_move() else "#"
        self.unmake(u)
        return text

    def san_base(self, m: Move, legal: list[Move]) -> str:
        piece = self.board[m.frm]
        kind = piece.upper()
        if kind == "K" and abs(m.to - m.frm) == 2:
            return "O-O" if m.to > m.frm else "O-O-O"
        capture = "x" if self.is_capture(m) else ""
        to = square_name(m.to)
        if kind == "P":
            return (FILES[m.frm & 7] + capture if capture else "") + to + (f"={m.promo}" if m.promo else "")
        rivals = [o.frm for o in legal if o.to == m.to and o.frm != m.frm and self.board[o.frm] == piece]
        where = ""
        if rivals:
            if all((r & 7) != (m.frm & 7) for r in rivals):
                where = FILES[m.frm & 7]
            elif all((r >> 4) != (m.frm >> 4) for r in rivals):
                where = str((m.frm >> 4) + 1)
            else:
                where = square_name(m.frm)
        return kind + where + capture + to

    def parse_san(self, text: str, legal: list[Move] | None = None) -> Move:
        """The legal move `text` names. Lenient where PGN writers differ ("0-0", "e8Q",
        "Ng1-f3", figurines, annotations like "!?", "e.p."), strict about legality and
        ambiguity."""
        token = SAN_SUFFIX_RE.sub("", text.translate(FIGURINES))
        legal = self.legal_moves() if legal is None else legal
        long = castling_side(token)
        if long is not None:
            for m in legal:
                if self.is_castle(m) and (m.to < m.frm) == long:
                    return m
            raise ChessError(f"{text}: castling is not legal here")
        match = SAN_RE.fullmatch(token)
        if match is None:
            raise ChessError(f"{text[:30]!r} is not a move in algebraic notation")
        kind, file, rank, to_name, promo = match.groups()
        kind = kind or "P"
        promo = (promo or "").upper()
        to = parse_square(to_name)
        found = [
            m
            for m in legal
            if m.to == to
            and self.board[m.frm].upper() == kind
            and (file is None or FILES[m.frm & 7] == file)
            and (rank is None or str((m.frm >> 4) + 1) == rank)
            and m.promo == promo
        ]
        if not found:
            raise ChessError(f"{text}: no such legal move")
        if len(found) > 1:
            raise ChessError(f"{text}: ambiguous ({', '.join(m.uci() for m in found)})")
        return found[0]

    # ---- game end --------------------------------------------------------------------
    def insufficient_material(self) -> bool:
        """Neither side can ever mate: bare kings, one minor piece, or bishops all on one colour."""
        minors: list[tuple[str, int]] = []
        for sq in SQUARES:
            p = self.board[sq].upper()
            if p in ("P", "R", "Q"):
                return False
            if p in ("N", "B"):
                minors.append((p, ((sq >> 4) + sq) & 1))
        if len(minors) <= 1:
            return True
        return all(kind == "B" for kind, _ in minors) and len({colour for _, colour in minors}) == 1

    def outcome(self, legal: list[Move] | None = None) -> tuple[str, str] | None:
        """(result, termination) if the game is over here, else None. Mate comes first, so
        a mate on the fiftieth move still wins; the draws by rule are taken as claimed."""
        if not (self.has_legal_move() if legal is None else legal):
            if self.in_check():
                return ("0-1" if self.white else "1-0"), "checkmate"
            return "1/2-1/2", "stalemate"
        if self.insufficient_material():
            return "1/2-1/2", "insufficient material"
        if self.halfmove >= 100:
            return "1/2-1/2", "fifty-move rule"
        if self.seen.get(self.key(), 0) >= 3:
            return "1/2-1/2", "threefold repetition"
        return None

    def material(self, white: bool) -> int:
        return sum(VALUES[p.upper()] for sq in SQUARES if (p := self.board[sq]) != EMPTY and p.isupper() == white)


# ---- PGN -----------------------------------------------------------------------------
SEVEN_TAGS = ("Event", "Site", "Date", "Round", "White", "Black", "Result")
# Results as the standard writes them, and the spellings real files use for them.
RESULT_SPELLINGS = {"1-0": "1-0", "0-1": "0-1", "1/2-1/2": "1/2-1/2", "*": "*", "\u00bd-\u00bd": "1/2-1/2"}
# Variants whose games are standard chess (lichess writes "From Position" for a set-up board).
STANDARD_VARIANTS = ("", "standard", "chess", "normal", "from position")
# One token of PGN text. Real files are not as tidy as the standard: a tag may share its
# line or lose its quotes, move numbers come as "12." "12..." or "12 ...", moves carry
# glyphs and "e.p.", and tools add comments, variations, NAGs and evaluation symbols.
TOKEN_RE = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>\{[^}]*\})
    | (?P<unclosed>\{)
    | (?P<rest_of_line>;[^\n]*)
    | (?P<tag>\[[ \t]*(?P<tag_name>\w+)[ \t]*(?P<tag_value>"(?:[^"\\\n]|\\.)*"|[^\]\n]*?)[ \t]*\])
    | (?P<open>\()
    | (?P<close>\))
    | (?P<nag>\$\d+)
    | (?P<result>(?:1-0|0-1|1/2-1/2|\u00bd-\u00bd|\*)(?![\w/-]))
    | (?P<null>(?:--|Z0)(?![\w-]))
    | (?P<number>\d+[ \t]*\.+|\d+(?![\w/:-])|\.\.+)
    | (?P<ep>e\.p\.?(?!\w))
    | (?P<san>[\w\u2654-\u265f](?:e\.p\.?|[\w\u2654-\u265f=+#!?/:-])*)
    | (?P<glyph>[!?]{1,2}|[+\-=/~\u00b1\u2213\u221e\u2a72\u2a71\u25a1\u2206\u2192\u2191\u21c6\u27f3\u2295]{1,3})
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
# What never changes which game is read: white space, comments, NAGs, move numbers, glyphs.
IGNORED = frozenset(("space", "comment", "rest_of_line", "nag", "number", "ep", "glyph"))


@dataclass
class Game:
    headers: dict[str, str] = field(default_factory=dict)
    moves: list[str] = field(default_factory=list)  # the main line's SAN as written
    result: str = "*"  # the termination marker, else the Result tag, else "*"
    line: int = 1  # where the game starts in its file
    error: str | None = None  # why this is not a readable game (the first problem found)
    marker: str | None = None  # the termination marker after the moves, if there was one

    def fail(self, message: str) -> None:
        if self.error is None:
            self.error = message


def quote_tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def write_pgn(headers: dict[str, str], sans: list[str], result: str) -> str:
    """Export format: the seven tags first, then the rest, then moves wrapped at 79 columns."""
    order = [t for t in SEVEN_TAGS if t in headers] + [t for t in headers if t not in SEVEN_TAGS]
    lines = [f'[{t} "{quote_tag(headers[t])}"]' for t in order]
    tokens = []
    for i, san in enumerate(sans):
        tokens.append(f"{i // 2 + 1}. {san}" if i % 2 == 0 else san)
    tokens.append(result)
    text, line = [], ""
    for tok in tokens:
        if line and len(line) + 1 + len(tok) > 79:
            text.append(line)
            line = tok
        else:
            line = f"{line} {tok}" if line else tok
    text.append(line)
    return "\n".join(lines) + "\n\n" + "\n".join(text) + "\n\n"


def clean_text(text: str) -> str:
    """PGN text with what is not PGN taken out: byte order marks (also mid-file, where files
    were concatenated), CR line ends (Windows and old Mac), the DOS end-of-file mark ^Z, and
    "%" escape lines, which the standard reserves for other programs' data."""
    text = text.replace("\ufeff", "").replace("\x1a", "").replace("\r\n", "\n").replace("\r", "\n")
    if "%" in text:
        text = "\n".join("" if line.startswith("%") else line for line in text.split("\n"))
    return text


def tag_value(raw: str) -> str:
    """A tag's value: quoted and escaped as the standard says, or as broken tools write it."""
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        raw = raw[1:-1]
    return re.sub(r'\\([\\"])', r"\1", raw).strip()


def read_games(text: str) -> Iterator[Game]:
    """Every game in PGN text, in order; a game that cannot be read comes with its `error`
    set, and reading goes on with the next one. A game ends at its result, or where the
    next one's tags begin; games without tags (or without a result) are read too.
    Comments, NAGs, glyphs and variations (nested to any depth) are skipped."""
    text = clean_text(text)
    game, depth, in_moves, line, at = Game(), 0, False, 1, 0

    def finish(g: Game, depth: int) -> Game:
        if not g.headers and not g.moves and g.marker is None:
            g.fail(f"line {g.line}: no tags, moves or result: not a game")
        if depth:
            g.fail(f"line {g.line}: a variation '(' is never closed")
        tag = RESULT_SPELLINGS.get(g.headers.get("Result", "").strip())
        marker = g.marker
        if marker is None or marker == "*":
            g.result = tag or marker or "*"  # "*" in the moves says less than a tag that knows
        elif tag in (None, "*", marker):
            g.result = marker
        else:
            g.fail(f"line {g.line}: Result tag {tag} disagrees with the result {marker} after the moves")
        variant = g.headers.get("Variant", "").strip().lower()
        if variant not in STANDARD_VARIANTS:
            g.fail(f"variant {g.headers['Variant']!r}: only standard chess is read")
        return g

    for match in TOKEN_RE.finditer(text):
        kind = match.lastgroup or "other"
        line += text.count("\n", at, match.start())
        at = match.start()
        if kind in ("space", "comment", "rest_of_line"):
            continue
        value = match.group(kind)
        if kind == "tag":
            if in_moves or game.marker is not None:  # tags after moves: the next game begins
                yield finish(game, depth)
                game, depth, in_moves = Game(line=line), 0, False
            elif not game.headers:
                game.line = line
            game.headers[match.group("tag_name")] = tag_value(match.group("tag_value"))
            continue
        if game.marker is not None and depth == 0:  # moves after a result: a game without tags
            yield finish(game, depth)
            game, depth = Game(line=line), 0
        if not in_moves and not game.headers:
            game.line = line
        in_moves = True
        if kind == "open":
            depth += 1
        elif kind == "close":
            if depth:
                depth -= 1
            else:
                game.fail(f"line {line}: ')' without '('")
        elif depth or kind in IGNORED:
            continue  # inside a variation: not the game's moves
        elif kind == "result":
            game.marker = RESULT_SPELLINGS[value]
        elif kind == "san":
            if not looks_like_san(value):
                game.fail(f"line {line}: {value[:30]!r} is not a move in algebraic notation")
            game.moves.append(value)
        elif kind == "null":
            game.fail(f"line {line}: a null move {value!r} in the main line is not a chess move")
        elif kind == "unclosed":
            game.fail(f"line {line}: a comment '{{' is never closed")
        else:
            game.fail(f"line {line}: unexpected {value[:30]!r} in the moves")
    if in_moves or game.headers:
        yield finish(game, depth)


def read_pgn(text: str) -> Game:
    """The one game in PGN text; a ChessError when there is none, more than one, or it
    cannot be read."""
    games = list(read_games(text))
    if not games:
        raise ChessError("no game found")
    if len(games) > 1:
        raise ChessError(f"{len(games)} games where one was expected")
    if games[0].error:
        raise ChessError(games[0].error)
    return games[0]


def start_board(game: Game) -> Board:
    """The game's initial position: the FEN tag's when the game has one (some tools leave
    out the SetUp tag the standard asks for; "0" still means the usual start)."""
    fen = game.headers.get("FEN")
    return Board(fen if fen and game.headers.get("SetUp", "1") != "0" else START_FEN)


def walk(game: Game, board: Board) -> Iterator[tuple[Move, list[Move]]]:
    """Each move of the game with the legal moves of its position, yielded before it is
    played on `board` (so the caller sees the position it is played in); an illegal move
    is a ChessError naming it."""
    for san in game.moves:
        number = f"{board.fullmove}{'.' if board.white else '...'}"
        legal = board.legal_moves()
        try:
            m = board.parse_san(san, legal)
        except ChessError as exc:
            raise ChessError(f"move {number} {exc}") from None
        yield m, legal
        board.push(m)


def replay(game: Game) -> tuple[Board, list[Move]]:
    """The final position and the moves."""
    board = start_board(game)
    return board, [m for m, _ in walk(game, board)]
