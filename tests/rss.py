"""The peak resident memory of a process while a block runs: what the memory bounds of the
big-file and many-files tests assert, and what bench/ingest.py reports."""

from __future__ import annotations

import contextlib
import threading
import time

import psutil


class PeakRss:
    """Samples a process's resident set size in a thread; `peak` is the highest seen."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = self.rss()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return int(self.proc.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.rss())
            except psutil.Error:  # the process ended: its peak is what was seen
                return
            self.samples += 1
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(psutil.Error):
            self.peak = max(self.peak, self.rss())


class Source:
    """Deterministic bytes that neither dedupe nor compress: the BLAKE3 extendable output of
    a seed (~9 GB/s, so the generator is never the bottleneck), hashed as it is produced."""
