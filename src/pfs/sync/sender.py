"""The sending end of a transfer: answers `ancestors`, `walk` and `fetch` from a repository.

Everything here reads; nothing is written. Streams are built lazily, so an error met on
the way (a damaged object, say) ends the stream with an error the driver raises, rather
than a 200 that looks complete.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

import orjson

from ..errors import PfsError
from . import wire

if TYPE_CHECKING:
    from ..repository.repo import Repository


def ancestors(repo: Repository, starts: list[str], limit: int) -> list[tuple[str, list[str]]]:
    """The commit graph breadth first from `starts` (included), at most `limit` commits."""
    seen = set(starts)
    queue = deque(dict.fromkeys(starts))
    out: list[tuple[str, list[str]]] = []
    while queue and len(out) < limit:
        c = repo.get_commit(queue.popleft())
        out.append((c.id, list(c.parents)))
        for p in c.parents:
            if p not in seen:
                seen.add(p)
                queue.append(p)
    return out


def check_commits(repo: Repository, commits: list[str]) -> None:
    """CommitNotFound (404) before a stream starts, rather than an error frame inside it."""
    for cid in commits:
        repo.get_commit(cid)


def walk_lines(repo: Repository, commits: list[str]) -> Iterator[bytes]:
    """`walk`'s answer: "<kind> <key>" lines for each commit in turn, then "."; an error
    on the way becomes a final "! <json>" line, since the status is sent already."""

    def lines() -> Iterator[bytes]:
        try:
            for cid in commits:
                for kind, key in repo.commit_delta(repo.get_commit(cid)):
                    yield f"{kind} {key}\n".encode()
        except PfsError as exc:
            yield b"! " + orjson.dumps(exc.to_json()) + b"\n"
            return
        yield b".\n"

    return wire.pieces(lines())


def frames(repo: Repository, items: list[tuple[str, str]]) -> Iterator[bytes]:
    """`fetch`'s answer: the object stream for `items`, in their order. Each object goes
    in its stored form, verified first: a damaged object is never sent."""

    def gen() -> Iterator[bytes]:
        yield wire.MAGIC
        try:
            for kind, key in items:
                blob = repo.stored_object(key)
                yield wire.HEADER.pack(kind.encode(), bytes.fromhex(key), len(blob))
                yield blob
        except PfsError as exc:
            yield wire.frame(wire.ERROR, wire.ZERO_KEY, orjson.dumps(exc.to_json()))
            return
        yield wire.frame(wire.END, wire.ZERO_KEY, b"")

    return wire.pieces(gen())
