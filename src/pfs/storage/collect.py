"""What a garbage collection shares with the operations it must not harm (docs/design.md,
section 9): which operations are in flight in this process and since when, which stored
objects they rely on without having written them ("finds"), and, in the metadata database,
each node's heartbeat, each repository's GC row (generation, active flag, lease), the log
of finds, and each node's acknowledgement of a GC.

A write needs nothing from this module: an object written after the oldest operation in
flight began is young, and a sweep deletes only old objects. A find does: the object is
old, and may be one the mark did not reach. So a find is kept in memory (FIND_WINDOW), and
written to the log when a GC activates; while one is active it is logged *before* the
caller looks again (`Flight.found` returns True), under a lock the sweep takes exclusively
for each batch: a find logged before a batch keeps its object, one logged after it sees the
object gone and writes it again or fails cleanly.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from ..errors import Conflict
from .meta import Database, gc_acks_t, gc_log_t, gc_t, nodes_t

log = logging.getLogger("pfs.gc")

COMMIT, TREE, MANIFEST, OBJECT = "c", "t", "m", "o"  # what a logged key is: what the mark walks from it
FIND_WINDOW = 15 * 60.0  # seconds a find is remembered: a transfer's `missing` to its `ref`, a copy's read to its row
FIND_CAP = 200_000  # finds held in memory per repository; past it they go to the log at once
BEAT = 1.0  # seconds between a node's heartbeats (and its looks at the GC rows)
LEASE = 60.0  # seconds a GC's lease lasts unless renewed (it is, every batch)
SKEW = 2.0  # seconds taken off every cutoff: clocks, and S3's whole-second LastModified


def node_ttl() -> float:
    """Seconds after its last heartbeat a node counts as gone: its operations died with it,
    and a GC stops waiting for its acknowledgement."""
    return float(os.environ.get("PFS_GC_NODE_TTL", "30"))


Scope = tuple[str, int]  # (database url, repository id)


class Flight:
    """This process's operations in flight and their finds. One per process: a GC of any
    repository only needs the oldest start, which is conservative across repositories."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ops: dict[int, float] = {}
        self._ids = itertools.count()
        self._finds: dict[Scope, dict[tuple[str, str], float]] = {}
        self._logging: dict[Scope, int] = {}  # repositories with a GC active: finds logged before use

    @contextlib.contextmanager
    def op(self) -> Iterator[None]:
        """An operation that may make a reference durable (a request that writes, a job)."""
        n = next(self._ids)
        with self._lock:
            self._ops[n] = time.time()
        try:
            yield
        finally:
            with self._lock:
                del self._ops[n]

    def oldest(self) -> float | None:
        with self._lock:
            return min(self._ops.values(), default=None)

    def found(self, board: Board, repo: int, items: Iterable[tuple[str, str]]) -> bool:
        """Record finds. True when a GC is active: they were logged first, and the caller
        must look again (the object may have been swept before the log took them)."""
        scope = (board.db.url, repo)
        items = list(items)
        if not items:
            return False
        now = time.time()
        with self._lock:
            if scope not in self._logging:
                held = self._finds.setdefault(scope, {})
                for item in items:
                    held[item] = now
                if len(held) > FIND_CAP:  # to the log, under the lock: an activation waits for it
                    board.log(repo, [(k, key, at) for (k, key), at in held.items()])
                    held.clear()
                return False
        # Logged while a GC is active, so the caller looks again: True even if the GC ended
        # while the log waited for a sweep batch, which may have deleted what was found.
        board.log(repo, [(k, key, now) for k, key in items])
        return True

    def activate(self, scope: Scope, gen: int) -> list[tuple[str, str, float]]:
        """Start logging finds for a GC; the finds held so far (within the window), to log."""
        with self._lock:
            self._logging[scope] = gen
            held = self._finds.pop(scope, {})
        since = time.time() - FIND_WINDOW
        return [(k, key, at) for (k, key), at in held.items() if at >= since]

    def logging(self, scope: Scope) -> int | None:
        with self._lock:
            return self._logging.get(scope)

    def settle(self, url: str, active: dict[int, int]) -> None:
        """Stop logging for the GCs of this database that ended; forget finds out of the window."""
        since = time.time() - FIND_WINDOW
        with self._lock:
            for scope in [s for s in self._logging if s[0] == url and s[1] not in active]:
                del self._logging[scope]
            for held in self._finds.values():
                if held and min(held.values()) < since:
                    for item in [i for i, at in held.items() if at < since]:
                        del held[item]


FLIGHT = Flight()


@dataclass(frozen=True)
class Lease:
    repo: int
    gen: int
    owner: str
    activated: float


class Board:
    """The GC state of one metadata database, and this process's node in it: a heartbeat
    thread that also notices GCs starting and acknowledges them (flushing this process's
    finds to the log first)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.node = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._locks: dict[int, threading.Lock] = {}  # SQLite: one process, so the sweep's lock is a mutex
        self._locks_lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._renewed: dict[int, float] = {}  # repository -> when this node last renewed its GC's lease

    # ---- the node --------------------------------------------------------------------
    def start(self) -> None:
        """Beat once (a node that starts while a GC is active logs its finds from the
        first), then every BEAT seconds in a thread."""
        self.tick()
        self._thread = threading.Thread(target=self._run, name="pfs-gc-node", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with contextlib.suppress(Exception), self.db.write() as c:
            c.execute(nodes_t.delete().where(nodes_t.c.id == self.node))

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(BEAT):
            try:
                self.tick()
            except Exception as exc:  # the database is down: the next beat tries again
                # once per outage, not once a second for as long as it lasts
                log.log(logging.DEBUG if failing else logging.WARNING, "GC heartbeat failed: %s", exc)
                failing = True
            else:
                if failing:
                    log.warning("GC heartbeat works again")
                failing = False

    def tick(self) -> None:
        """Heartbeat first, then look at the GC rows: a GC that read the live nodes before
        this beat landed started before it, so this look sees it active."""
        with self._tick_lock:
            now = time.time()
            with self.db.write() as c:
                if c.execute(nodes_t.update().where(nodes_t.c.id == self.node).values(beat=now)).rowcount == 0:
                    c.execute(nodes_t.insert().values(id=self.node, beat=now))
            active = self.active()
            for repo, gen in active.items():
                scope = (self.db.url, repo)
                if FLIGHT.logging(scope) != gen:
                    self.log(repo, FLIGHT.activate(scope, gen))
                    oldest = FLIGHT.oldest()
                    self._ack(repo, gen, min(oldest, now) if oldest is not None else now)
            FLIGHT.settle(self.db.url, active)

    def _ack(self, repo: int, gen: int, oldest: float) -> None:
        with self.db.write() as c:
            c.execute(gc_acks_t.delete().where(gc_acks_t.c.repo == repo, gc_acks_t.c.node == self.node))
            c.execute(gc_acks_t.insert().values(repo=repo, node=self.node, gen=gen, oldest=oldest))

    def active(self) -> dict[int, int]:
        """Repositories with a GC active (its lease not run out): repository id -> generation."""
        with self.db.read() as c:
            rows = c.execute(sa.select(gc_t.c.repo, gc_t.c.gen).where(gc_t.c.active, gc_t.c.lease > time.time()))
            return {int(r.repo): int(r.gen) for r in rows}

    # ---- the log ---------------------------------------------------------------------
    def log(self, repo: int, rows: list[tuple[str, str, float]]) -> None:
        """Append finds to the log, under the lock each sweep batch holds exclusively."""
        if not rows:
            return
        with self.shared(repo):
            for i in range(0, len(rows), 1000):
                with self.db.write() as c:
                    if not self.db.is_sqlite:
                        c.execute(sa.text("SELECT pg_advisory_xact_lock_shared(7370708, :r)"), {"r": repo})
                    c.execute(
                        gc_log_t.insert(),
                        [{"repo": repo, "kind": k, "key": key, "at": at} for k, key, at in rows[i : i + 1000]],
                    )

    def logged(self, repo: int, after: int, since: float) -> tuple[list[tuple[str, str]], int]:
        """Finds logged after row `after` at `since` or later, and the last row's id."""
        with self.db.read() as c:
            rows = c.execute(
                sa.select(gc_log_t.c.id, gc_log_t.c.kind, gc_log_t.c.key)
                .where(gc_log_t.c.repo == repo, gc_log_t.c.id > after, gc_log_t.c.at >= since)
                .order_by(gc_log_t.c.id)
            ).all()
        return [(r.kind, r.key) for r in rows], (rows[-1].id if rows else after)

    def _mutex(self, repo: int) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(repo, threading.Lock())

    @contextlib.contextmanager
    def shared(self, repo: int) -> Iterator[None]:
        """What a writer of the log holds (PostgreSQL: the shared advisory lock is taken in
        the log's own transaction; SQLite, one process: a mutex)."""
        if self.db.is_sqlite:
            with self._mutex(repo):
                yield
        else:
            yield

    @contextlib.contextmanager
    def exclusive(self, repo: int) -> Iterator[None]:
        """What a sweep batch holds from reading the log to its last delete: no find is
        logged meanwhile. PostgreSQL: a session advisory lock on a connection of its own
        (released by the server if this process dies); SQLite: the process's mutex."""
        if self.db.is_sqlite:
            with self._mutex(repo):
                yield
            return
        with self.db.engine.connect() as c:
            c.execute(sa.text("SELECT pg_advisory_lock(7370708, :r)"), {"r": repo})
            c.commit()
            try:
                yield
            finally:
                c.execute(sa.text("SELECT pg_advisory_unlock(7370708, :r)"), {"r": repo})
                c.commit()

    # ---- a GC ------------------------------------------------------------------------
    def begin(self, repo: int) -> Lease:
        """Take the repository's GC lease and activate it (a new generation); 409 if
        another GC holds it. A lease whose holder is gone or ran out is taken over."""
        now = time.time()
        with self.db.write() as c:
            if not self.db.is_sqlite:
                c.execute(sa.text("SELECT pg_advisory_xact_lock(7370709, :r)"), {"r": repo})
            row = c.execute(sa.select(gc_t).where(gc_t.c.repo == repo)).first()
            if row is not None and row.active and row.lease > now and self._alive(c, row.owner, now):
                raise Conflict(f"a garbage collection of this repository is running (since {row.started:.0f})")
            gen = (row.gen if row is not None else 0) + 1
            values = {"gen": gen, "active": True, "owner": self.node, "lease": now + LEASE, "started": now}
            if row is None:
                c.execute(gc_t.insert().values(repo=repo, **values))
            else:
                c.execute(gc_t.update().where(gc_t.c.repo == repo).values(**values))
            c.execute(gc_acks_t.delete().where(gc_acks_t.c.repo == repo, gc_acks_t.c.gen < gen))
            c.execute(gc_log_t.delete().where(gc_log_t.c.repo == repo, gc_log_t.c.at < now - 2 * FIND_WINDOW))
            c.execute(nodes_t.delete().where(nodes_t.c.beat < now - 86400))  # killed long ago
        self._renewed[repo] = now
        return Lease(repo, gen, self.node, now)

    def _alive(self, c: sa.Connection, node: str, now: float) -> bool:
        beat = c.execute(sa.select(nodes_t.c.beat).where(nodes_t.c.id == node)).scalar()
        return beat is not None and beat > now - node_ttl()

    def renew(self, lease: Lease) -> None:
        """Extend the lease; Conflict if it ran out or another GC took it over: nodes may
        have stopped logging their finds, so this one must stop before deleting more."""
        now = time.time()
        with self.db.write() as c:
            n = c.execute(
                gc_t.update()
                .where(
                    gc_t.c.repo == lease.repo,
                    gc_t.c.gen == lease.gen,
                    gc_t.c.owner == lease.owner,
                    gc_t.c.lease > now,
                )
                .values(lease=now + LEASE)
            ).rowcount
        if n != 1:
            raise Conflict("the garbage collection's lease ran out or was taken over; it stopped")
        self._renewed[lease.repo] = now

    def keep(self, lease: Lease) -> None:
        """Renew the lease if a quarter of it went by (called often during a long mark)."""
        if time.time() - self._renewed.get(lease.repo, 0.0) > LEASE / 4:
            self.renew(lease)

    def end(self, lease: Lease, result: str) -> None:
        with self.db.write() as c:
            c.execute(
                gc_t.update()
                .where(gc_t.c.repo == lease.repo, gc_t.c.gen == lease.gen)
                .values(active=False, result=result)
            )
        self.tick()  # this node stops logging at once

    def acknowledged(self, lease: Lease, timeout: float = 120.0) -> float:
        """Wait until every live node acknowledged this GC (flushed its finds, logs from now
        on); the start of the oldest operation they had in flight then."""
        deadline = time.time() + timeout
        self.tick()
        while True:
            now = time.time()
            with self.db.read() as c:
                live = {r.id for r in c.execute(sa.select(nodes_t.c.id).where(nodes_t.c.beat > now - node_ttl()))}
                acks = {
                    r.node: float(r.oldest)
                    for r in c.execute(
                        sa.select(gc_acks_t.c.node, gc_acks_t.c.oldest).where(
                            gc_acks_t.c.repo == lease.repo, gc_acks_t.c.gen == lease.gen
                        )
                    )
                }
            waiting = live - acks.keys()
            if not waiting:
                return min(acks.values(), default=now)
            if now > deadline:
                raise Conflict(
                    f"{len(waiting)} node(s) did not acknowledge the garbage collection; nothing was deleted"
                )
            time.sleep(0.1)
            self.keep(lease)

    def last(self, repo: int) -> tuple[bool, str | None]:
        """Whether a GC is active, and the last finished one's report (JSON)."""
        with self.db.read() as c:
            row = c.execute(sa.select(gc_t.c.active, gc_t.c.lease, gc_t.c.result).where(gc_t.c.repo == repo)).first()
        if row is None:
            return False, None
        return bool(row.active and row.lease > time.time()), row.result


_boards: dict[int, Board] = {}
_boards_lock = threading.Lock()


def board(db: Database) -> Board:
    """The board of a database (made, and its node started, on first use)."""
    with _boards_lock:
        b = _boards.get(id(db))
        if b is None or b.db is not db:
            b = _boards[id(db)] = Board(db)
            b.start()
        return b


def close_board(db: Database) -> None:
    with _boards_lock:
        b = _boards.pop(id(db), None)
    if b is not None and b.db is db:
        b.stop()
