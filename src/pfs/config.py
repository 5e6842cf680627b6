"""Where a node keeps its data, read from flags or environment, with embedded defaults."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .meta import SqlMetaStore, sqlite_url
from .objects import LocalObjectStore
from .repo import Repository

if TYPE_CHECKING:
    from .jobs.scheduler import Scheduler

DEFAULT_ADDR = "127.0.0.1:8080"


def default_data_dir() -> str:
    return os.environ.get("PFS_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".pfs")


@dataclass
class Config:
    data_dir: str
    meta_url: str | None = None  # default: SQLite in data_dir
    max_file_size: int | None = None  # bytes; None: unlimited
    job_runtime: str | None = None  # "docker" | "process"; None: docker if an engine answers

    @classmethod
    def from_env(cls, data_dir: str | None = None) -> Config:
        limit = os.environ.get("PFS_MAX_FILE_SIZE")
        return cls(
            data_dir=data_dir or default_data_dir(),
            meta_url=os.environ.get("PFS_META_URL") or None,
            max_file_size=int(limit) if limit else None,
            job_runtime=os.environ.get("PFS_JOB_RUNTIME") or None,
        )

    def open(self) -> Repository:
        os.makedirs(self.data_dir, exist_ok=True)
        meta = SqlMetaStore(self.meta_url or sqlite_url(self.data_dir))
        objects = LocalObjectStore(self.data_dir)
        return Repository(objects, meta, max_file_size=self.max_file_size)

    def instance(self) -> str:
        """A stable id of this data directory: labels its job containers, so a restarted
        node removes exactly the ones its killed predecessor left."""
        path = os.path.join(self.data_dir, "instance")
        try:
            with open(path) as f:
                return f.read().strip()
        except FileNotFoundError:
            ident = uuid.uuid4().hex[:16]
            tmp = f"{path}.{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(ident + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            return self.instance()

    def scheduler(self, repo: Repository) -> Scheduler:
        from .jobs.scheduler import Scheduler

        state = os.path.join(self.data_dir, "jobs")
        os.makedirs(state, exist_ok=True)
        takeover = self.meta_url is None or self.meta_url.startswith("sqlite")
        return Scheduler(repo, self.instance(), state, self.job_runtime, takeover=takeover)


def parse_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {addr!r}")
    return host.strip("[]"), int(port)
