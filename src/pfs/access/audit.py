"""The audit log: one entry per mutation (who, when, from where, what, outcome), refused
ones included, kept in the metadata database and readable by server admins.

Entries are written by one background thread in batches (every `FLUSH_EVERY` seconds or
`BATCH` entries), not in the request: on SQLite every transaction is an fsync, and an
entry per small write would halve small-write throughput. The price: entries of the last
fraction of a second before a crash can be lost; reading the log (`entries`) first writes
everything queued, so a reader sees its own requests. If the database does not answer,
entries wait in memory (at most `MAX_QUEUED`; beyond that the oldest are dropped, counted
and logged) and are written when it does.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from ..errors import Unavailable
from ..storage.identity import AUDIT_FIELDS, AuditRow, IdentityStore

log = logging.getLogger("pfs.audit")
FLUSH_EVERY = 0.2  # seconds
BATCH = 500
MAX_QUEUED = 100_000
MAX_TARGET = 512  # characters of an entry's target (a path can be 4 KiB)


class AuditLog:
    def __init__(self, store: IdentityStore) -> None:
        self.store = store
        self._queue: collections.deque[tuple[int, dict[str, Any]]] = collections.deque()
        self._cond = threading.Condition()
        self._queued = 0  # sequence number of the last entry queued
        self._written = 0  # sequence number of the last entry in the database
        self.dropped = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def record(self, **entry: Any) -> None:
        """Queue one entry (fields: `AUDIT_FIELDS`; `at` defaults to now)."""
        entry.setdefault("at", time.time())
        entry["target"] = str(entry.get("target", ""))[:MAX_TARGET]
        row = {name: entry.get(name) for name in AUDIT_FIELDS}
        with self._cond:
            if len(self._queue) >= MAX_QUEUED:
                self._queue.popleft()
                self.dropped += 1
                if self.dropped in (1, 10, 100) or self.dropped % 10_000 == 0:
                    log.error("audit log: %d entries dropped (the database does not answer)", self.dropped)
            self._queued += 1
            self._queue.append((self._queued, row))
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="pfs-audit", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                if not self._closed and len(self._queue) < BATCH:
                    self._cond.wait(FLUSH_EVERY)
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            try:
                self.store.append_audit(row for _, row in batch)
            except Exception as exc:  # the database is down: keep them, try again
                with self._cond:
                    self._queue.extendleft(reversed(batch))
                    if self._closed:
                        log.error("audit log: %d entries not written at shutdown: %s", len(self._queue), exc)
                        self._queue.clear()
                        self._cond.notify_all()
                        return
                log.warning("audit log: cannot write %d entries yet: %s", len(batch), exc)
                time.sleep(1.0)
                continue
            with self._cond:
                self._written = batch[-1][0]
                self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every entry queued so far is in the database (Unavailable if it does
        not answer within `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._queued
            while self._written < target and self._thread is not None and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable("the audit log cannot be written: the metadata database does not answer")
                self._cond.notify_all()
                self._cond.wait(left)

    def entries(
        self, limit: int = 100, before: int | None = None, user: str | None = None, repo: str | None = None
    ) -> list[AuditRow]:
        self.flush()
        return self.store.audit(limit, before, user, repo)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
