"""Metadata backend: branch refs (moved only by compare-and-swap), staged dirty writes,
and an index of commits.

Objects are the truth; this store holds the few mutable things. One SQLAlchemy Core
implementation serves SQLite (embedded default) and PostgreSQL (cluster), so both run the
same code and the same tests.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from .. import metrics
from ..errors import AlreadyExists, BranchMoved, BranchNotFound, InsufficientStorage, Unavailable
from .identity import grants_t, identity_md, protected_t
from .trees import Commit, Entry

log = logging.getLogger("pfs.meta")


@dataclass(frozen=True)
class Tables:
    """One repository's tables. The default repository's have the names pfs has always used
    (so existing data needs no change); another's are prefixed `r<id>_`."""

    md: sa.MetaData
    refs: sa.Table
    staging: sa.Table
    grafts: sa.Table
    commits: sa.Table
    jobs: sa.Table
    runs: sa.Table
    job_runs: sa.Table
    job_failures: sa.Table
    uploads: sa.Table
    upload_parts: sa.Table


_tables: dict[str, Tables] = {}


def tables(p: str = "") -> Tables:
    """The tables of the repository whose names start with `p` (made once per process)."""
    if p in _tables:
        return _tables[p]
    md = sa.MetaData()
    refs = sa.Table(
        p + "refs",
        md,
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("head", sa.String(64), nullable=True),
        sa.Column("updated", sa.Float, nullable=False),
        # Last sequence number handed to a staged write on this branch. Taken with a row
        # update inside the staging transaction, so sequence order is commit order.
        sa.Column("seq", sa.BigInteger, nullable=False, server_default="0"),
    )
    staging = sa.Table(
        p + "staging",
        md,
        sa.Column("branch", sa.String(100), primary_key=True),
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("parent", sa.Text, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("entry", sa.Text, nullable=True),  # NULL: staged deletion
        sa.Index(p + "staging_parent", "branch", "parent"),
    )
    # An uploaded archive staged whole: its files as one tree, to be merged into the
    # directory `prefix` at commit, numbered with the branch's staged rows (the newer wins).
    grafts = sa.Table(
        p + "grafts",
        md,
        sa.Column("branch", sa.String(100), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("prefix", sa.Text, nullable=False),
        sa.Column("entry", sa.Text, nullable=False),  # the directory's entry
        sa.Column("files", sa.BigInteger, nullable=False),
    )
    commits = sa.Table(
        p + "commits",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tree", sa.String(64), nullable=False),
        sa.Column("branch", sa.String(100), nullable=False),
        sa.Column("parents", sa.Text, nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Index(p + "commits_time", "time"),
    )
    jobs = sa.Table(
        p + "jobs",
        md,
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    # One run per commit posted with ?run; its jobs' specs are copied in when it is created,
    # so a spec edited later does not change what a queued run does.
    runs = sa.Table(
        p + "runs",
        md,
        sa.Column("commit", sa.String(64), primary_key=True),
        sa.Column("branch", sa.String(100), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),  # a RunState
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("started", sa.Float, nullable=True),
        sa.Column("finished", sa.Float, nullable=True),
        sa.Column("owner", sa.String(64), nullable=True),  # the node driving it
        sa.Column("heartbeat", sa.Float, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Index(p + "runs_state", "state", "created"),
        sa.Index(p + "runs_created", "created"),  # the newest runs first (`list_runs`): a page, not a sort
    )
    job_runs = sa.Table(
        p + "job_runs",
        md,
        sa.Column("commit", sa.String(64), primary_key=True),
        sa.Column("job", sa.String(100), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),  # DAG order within the run
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),  # a JobState
        sa.Column("spec_key", sa.String(64), nullable=True),
        sa.Column("input_tree", sa.String(64), nullable=True),
        sa.Column("output_tree", sa.String(64), nullable=True),  # set only on success
        sa.Column("total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reused", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started", sa.Float, nullable=True),
        sa.Column("finished", sa.Float, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("log", sa.Text, nullable=True),
        # Files of a map that failed (listed in job_failures). A failed map that tried every file
        # records what did map as `partial_tree`: never readable, but the next run builds on it.
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("partial_tree", sa.String(64), nullable=True),
        # The exact image the run's workers ran, when its tag was pinned to a digest of the
        # cluster registry when the run started ("registry/name@sha256:…").
        sa.Column("image", sa.String(400), nullable=True),
        sa.Index(p + "job_runs_key", "job", "spec_key", "finished"),
    )
    # One row per file a map job's run could not map, with why; the next run maps them again.
    job_failures = sa.Table(
        p + "job_failures",
        md,
        sa.Column("commit", sa.String(64), primary_key=True),
        sa.Column("job", sa.String(100), primary_key=True),
        sa.Column("path", sa.Text, primary_key=True),
        sa.Column("error", sa.Text, nullable=False),
    )
    # Multipart uploads in progress (the S3 gateway's), and the parts each has received.
    uploads = sa.Table(
        p + "uploads",
        md,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("branch", sa.String(100), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("meta", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Index(p + "uploads_path", "path"),
    )
    upload_parts = sa.Table(
        p + "upload_parts",
        md,
        sa.Column("upload", sa.String(32), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("md5", sa.String(32), nullable=False),
        sa.Column("entry", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
    )
    t = Tables(md, refs, staging, grafts, commits, jobs, runs, job_runs, job_failures, uploads, upload_parts)
    _tables[p] = t
    return t


# Columns added to job_runs since it first shipped, added to older databases at start.
_JOB_RUNS_ADDED = ("failed", "partial_tree", "image")
# The catalog of repositories, shared by all: a name, the id that prefixes its tables and
# names its objects' place, and a counter so that an id is never used twice.
catalog_md = sa.MetaData()
repos_t = sa.Table(
    "repos",
    catalog_md,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("id", sa.Integer, nullable=False, unique=True),
    sa.Column("created", sa.Float, nullable=False),
)
counters_t = sa.Table(
    "counters",
    catalog_md,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)
# Garbage collection's shared state (docs/design.md, section 9; storage/collect.py): a row
# per repository that has had a GC (its generation, whether one is active, its lease), the
# log of objects operations rely on without having written them, and each live node's
# heartbeat and acknowledgement of a GC.
gc_t = sa.Table(
    "gc",
    catalog_md,
    sa.Column("repo", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("gen", sa.Integer, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("lease", sa.Float, nullable=False),
    sa.Column("started", sa.Float, nullable=False),
    sa.Column("result", sa.Text),
)
gc_log_t = sa.Table(
    "gc_log",
    catalog_md,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("repo", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(1), nullable=False),
    sa.Column("key", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("gc_log_repo_id", "repo", "id"),
)
nodes_t = sa.Table(
    "nodes",
    catalog_md,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("beat", sa.Float, nullable=False),
)
gc_acks_t = sa.Table(
    "gc_acks",
    catalog_md,
    sa.Column("repo", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("node", sa.String(64), primary_key=True),
    sa.Column("gen", sa.Integer, nullable=False),
    sa.Column("oldest", sa.Float, nullable=False),
)
# Retention rules: a branch keeps the data of its commits younger than `keep` seconds
# (and of its head, whatever its age); older commits keep their history and file lists.
# `applied` is the horizon the last garbage collection applied (commits older than it
# may have lost their data): what a read of one is answered by (410 Gone).
retention_t = sa.Table(
    "retention",
    catalog_md,
    sa.Column("repo", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("branch", sa.String(100), primary_key=True),
    sa.Column("keep", sa.Float, nullable=False),
    sa.Column("applied", sa.Float),
)
_default = tables()
RUN_FIELDS = {c.name for c in _default.runs.c}
JOB_RUN_FIELDS = {c.name for c in _default.job_runs.c}


class RunState(StrEnum):
    """Where a run of the job DAG on a commit is."""

    QUEUED = "queued"
    RUNNING = "running"  # claimed by a node, which heartbeats while it drives the run
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # some job failed or was skipped

    @property
    def over(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED)


class JobState(StrEnum):
    """Where one job of a run is."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    REUSED = "reused"  # an earlier run's output, for the same input, spec and image
    FAILED = "failed"
    SKIPPED = "skipped"  # the job it reads from failed

    @property
    def has_output(self) -> bool:
        """Its output tree is recorded and readable."""
        return self in (JobState.SUCCEEDED, JobState.REUSED)

    @property
    def over(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)


@dataclass(frozen=True)
class Run:
    """A run of the job DAG on a commit (a row of `runs`)."""

    commit: str
    branch: str
    state: RunState
    created: float
    started: float | None = None
    finished: float | None = None
    owner: str | None = None  # the node driving it
    heartbeat: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class JobRun:
    """One job of a run (a row of `job_runs`)."""

    commit: str
    job: str
    seq: int  # DAG order within the run
    spec: str  # the spec's JSON as it was when the run was created
    state: JobState
    spec_key: str | None = None
    input_tree: str | None = None
    output_tree: str | None = None  # set only on success
    total: int = 0
    done: int = 0
    reused: int = 0
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    log: str | None = None
    failed: int = 0  # files of a map that failed (listed as Failures)
    partial_tree: str | None = None  # what a failed map that tried every file did map
    image: str | None = None  # the registry image its workers ran, pinned by digest


@dataclass(frozen=True)
class Failure:
    """A file a map job's run could not map, and why."""

    path: str
    error: str


@dataclass(frozen=True)
class Staged:
    path: str
    seq: int  # a rewrite of the same path gets a higher one
    entry: Entry | None  # None: deleted


@dataclass(frozen=True)
class Graft:
    prefix: str
    seq: int
    entry: Entry  # a directory: the archive's files, relative to `prefix`


@dataclass(frozen=True)
class Placement:
    """What deciding whether one file may be written needs, read in one statement so the
    parts agree: the head, whether archives are staged, the staged rows at the file's
    path and its parents, and whether a staged put lies below the path."""

    head: str | None
    grafted: bool
    rows: dict[str, Staged]
    put_below: bool


class RefStore(ABC):
    """Branch heads, moved only by compare-and-swap."""

    @abstractmethod
    def get_ref(self, name: str) -> str | None:
        """Head commit of a branch (None: no commit yet); BranchNotFound if absent."""

    @abstractmethod
    def list_refs(self) -> list[tuple[str, str | None]]: ...

    @abstractmethod
    def create_ref(self, name: str, head: str | None) -> None: ...

    @abstractmethod
    def delete_ref(self, name: str) -> None: ...

    @abstractmethod
    def swap_ref(self, name: str, old: str | None, new: Commit, consumed_upto: int | None = None) -> None:
        """Atomically: move `name` from `old` to `new`, index `new`, and drop the staged
        rows with seq <= `consumed_upto` (exactly those the commit was built from).

        Raises BranchMoved if the head is no longer `old`; then nothing changes.
        """

    @abstractmethod
    def head_and_dirty(self, name: str) -> tuple[str | None, bool, bool]:
        """A branch's head, whether it has staged rows, and whether staged archives, read in
        one statement, so they agree (a commit moves the head and drops what it consumed
        together)."""


class StagingStore(ABC):
    """A branch's dirty writes: rows per path (an entry, or a deletion), numbered in the order they were staged."""

    def stage(self, branch: str, path: str, entry: Entry | None) -> None:
        self.stage_many(branch, [(path, entry)])

    @abstractmethod
    def stage_many(self, branch: str, items: list[tuple[str, Entry | None]]) -> None:
        """Stage all of `items` in one transaction: an archive lands whole or not at all."""

    @abstractmethod
    def staged(self, branch: str) -> list[Staged]: ...

    @abstractmethod
    def staged_get(self, branch: str, path: str) -> Staged | None: ...

    @abstractmethod
    def staged_children(self, branch: str, parent: str) -> list[Staged]: ...

    @abstractmethod
    def staged_under(self, branch: str, prefix: str, limit: int | None = None, puts: bool = False) -> list[Staged]:
        """Staged rows strictly below directory `prefix` ("" = everything); `puts`: no deletions."""

    @abstractmethod
    def stage_graft(self, branch: str, prefix: str, entry: Entry, files: int) -> None:
        """Stage directory `entry` to be merged into `prefix`: a whole archive, one row."""

    @abstractmethod
    def grafts(self, branch: str) -> list[Graft]:
        """The branch's staged archives, oldest first."""

    @abstractmethod
    def placement(self, branch: str, path: str, parents: list[str]) -> Placement:
        """One write's placement facts (see Placement); BranchNotFound if no such branch."""

    @abstractmethod
    def has_staged(self, branch: str) -> bool: ...

    @abstractmethod
    def discard_staged(self, branch: str) -> int: ...


class CommitIndex(ABC):
    """Every complete commit, by id: what names a commit and what history walks read."""

    @abstractmethod
    def get_commit(self, cid: str) -> Commit | None: ...

    @abstractmethod
    def find_commits(self, prefix: str, limit: int = 2) -> list[str]: ...

    @abstractmethod
    def list_commits(self) -> Iterator[Commit]: ...

    @abstractmethod
    def index_commit(self, commit: Commit) -> None: ...


class JobStore(ABC):
    """Job specs, by name (stored as validated JSON)."""

    @abstractmethod
    def put_job(self, name: str, spec: str) -> None: ...

    @abstractmethod
    def get_job(self, name: str) -> str | None: ...

    @abstractmethod
    def list_jobs(self) -> list[tuple[str, str, float]]: ...

    @abstractmethod
    def delete_job(self, name: str) -> bool: ...


class RunStore(ABC):
    """Runs of the job DAG on a commit, one row per job, and the files each job run failed on."""

    @abstractmethod
    def create_run(self, commit: str, branch: str, jobs: list[tuple[str, str]]) -> bool:
        """False if the commit already has a run."""

    @abstractmethod
    def get_run(self, commit: str) -> Run | None: ...

    @abstractmethod
    def list_runs(self, limit: int = 100, job: str | None = None) -> list[Run]:
        """The newest runs first; `job`: only those that include it."""

    @abstractmethod
    def job_runs(self, commit: str, log: bool = True) -> list[JobRun]:
        """A run's jobs in the order they run (`log=False`: without their logs, `log` None)."""

    @abstractmethod
    def get_job_run(self, commit: str, job: str, log: bool = True) -> JobRun | None: ...

    @abstractmethod
    def job_run_page(self, job: str, limit: int, before: tuple[float, str] | None = None) -> list[tuple[Run, JobRun]]:
        """Job `job` in the runs that include it, newest first (by the run's creation, then
        commit), from just before the run `before` (its created time and commit) on; without
        their logs (`log` None: `job_log` reads a piece of one). A page, never every run."""

    @abstractmethod
    def job_log(self, commit: str, job: str, start: int, size: int) -> tuple[str, int] | None:
        """At most `size` characters of a job run's log from character `start`, and the log's
        length in characters (None: no such job run): a reader never holds a whole log."""

    @abstractmethod
    def update_run(self, commit: str, **fields: Any) -> None: ...

    @abstractmethod
    def update_job_run(self, commit: str, job: str, **fields: Any) -> None: ...

    @abstractmethod
    def claim_run(self, owner: str, stale_before: float) -> str | None:
        """Take the oldest queued run, or one whose driver stopped heartbeating."""

    @abstractmethod
    def job_run_base(self, job: str, spec_key: str) -> JobRun | None:
        """The newest run of this job with this spec and image that recorded a tree (a
        success, or a failed map that tried every file): what an incremental run builds on."""

    @abstractmethod
    def drop_runs(self, before: float, keep: set[str]) -> int:
        """Delete the runs that ended before `before` (with their jobs and failed files),
        except those on a commit in `keep` and those an incremental run would build on
        (`job_run_base` of some job and spec key); how many went."""

    @abstractmethod
    def add_job_failures(self, commit: str, job: str, items: list[Failure]) -> None:
        """Record the files a map job could not map."""

    @abstractmethod
    def job_failures(self, commit: str, job: str, limit: int = 1000, after: str | None = None) -> list[Failure]:
        """A job run's failed files in path order, from after path `after`."""

    @abstractmethod
    def clear_job_failures(self, commit: str, job: str) -> None: ...

    def iter_job_failures(self, commit: str, job: str, page: int = 1000) -> Iterator[Failure]:
        """Every failed file of a job run, a page at a time: memory does not grow with them."""
        after: str | None = None
        while True:
            rows = self.job_failures(commit, job, page, after)
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1].path


@dataclass(frozen=True)
class UploadRow:
    id: str
    branch: str
    path: str
    meta: str  # JSON object
    created: float


@dataclass(frozen=True)
class PartRow:
    number: int
    size: int
    md5: str
    entry: Entry
    created: float


class UploadStore(ABC):
    """Multipart uploads in progress and their parts."""

    @abstractmethod
    def create_upload(self, row: UploadRow) -> None: ...

    @abstractmethod
    def get_upload(self, upload_id: str) -> UploadRow | None: ...

    @abstractmethod
    def list_uploads(self, prefix: str, limit: int) -> list[UploadRow]:
        """Uploads whose path starts with `prefix`, by path then creation."""

    @abstractmethod
    def put_part(self, upload_id: str, part: PartRow) -> bool:
        """Record (or replace) a part; False if the upload is gone."""

    @abstractmethod
    def list_parts(self, upload_id: str) -> list[PartRow]: ...

    @abstractmethod
    def end_upload(self, upload_id: str) -> bool:
        """Forget an upload and its parts; False if it was not there."""


class MetaStore(RefStore, StagingStore, CommitIndex, JobStore, RunStore, UploadStore):
    """Everything mutable pfs keeps beside its objects. One SQL class implements every part;
    each caller depends only on the part it uses."""

    @abstractmethod
    def ping(self) -> None:
        """Raise Unavailable unless the store answers now (readiness)."""

    def retention(self) -> dict[str, tuple[float, float | None]]:
        """Retention rules: branch -> (seconds of data kept, horizon last applied)."""
        return {}

    def reclaim(self) -> None:  # noqa: B027 - optional
        """Give back the space of rows just deleted, where the backend keeps it."""


def _escape_like(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _row_commit(row: Any) -> Commit:
    return Commit(row.id, row.tree, tuple(orjson.loads(row.parents)), row.branch, row.time, row.message)


def _row_staged(row: Any) -> Staged:
    return Staged(row.path, row.seq, Entry.loads(row.entry) if row.entry is not None else None)


def _row_upload(row: Any) -> UploadRow:
    return UploadRow(row.id, row.branch, row.path, row.meta, row.created)


def _row_run(row: Any) -> Run:
    return _as_run(dict(row._mapping))


def _as_run(fields: dict[str, Any]) -> Run:
    return Run(**{**fields, "state": RunState(fields["state"])})


def _row_job_run(row: Any) -> JobRun:
    return _as_job_run(dict(row._mapping))


def _as_job_run(fields: dict[str, Any]) -> JobRun:
    return JobRun(**{**fields, "state": JobState(fields["state"])})


@dataclass(frozen=True)
class RepoRow:
    """A repository in the catalog."""

    name: str
    id: int  # 0: the default repository's unprefixed tables and objects
    created: float

    @property
    def prefix(self) -> str:
        return "" if self.id == 0 else f"r{self.id}_"


class Database:
    """The metadata database: its connection pools, the catalog of repositories, and the
    tables of each. One per process, shared by every repository's `SqlMetaStore`."""

    def __init__(self, url: str, default_repo: str = "default") -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._reclaiming = threading.Lock()
        self._reclaimer: threading.Thread | None = None
        if self.is_sqlite:
            # Writers take the lock up front (BEGIN IMMEDIATE): no deadlocked upgrades.
            self.engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            self.reader = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
            _sqlite_setup(self.engine, immediate=True)
            _sqlite_setup(self.reader, immediate=False)
        else:
            # No pre-ping (a round trip per checkout): a dropped connection fails its request
            # with a 503, and the pool replaces it. Reads run in autocommit: each statement
            # sees the latest committed data, as READ COMMITTED would, without the BEGIN
            # and ROLLBACK round trips around every read.
            opts: dict[str, Any] = {"pool_size": 10, "max_overflow": 20, "connect_args": {"connect_timeout": 10}}
            self.engine = sa.create_engine(url, **opts)
            self.reader = sa.create_engine(url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None, **opts)
        try:
            self._init_schema(default_repo)
        except OperationalError as exc:
            self.close()
            where = sa.engine.make_url(url).render_as_string(hide_password=True)
            metrics.STORE_ERRORS.labels("meta", "unavailable").inc()
            raise Unavailable(f"cannot reach the metadata database {where}: {_first_line(exc.orig)}") from None

    def _init_schema(self, default_repo: str) -> None:
        """Tables and the master branch, made once: nodes starting together take turns
        (a PostgreSQL advisory lock), so they never race on CREATE TABLE. The repository
        made first (id 0, the one pfs has always had) takes the configured default name."""
        with self.write() as c:
            self._schema_lock(c)
            _default.md.create_all(c)
            catalog_md.create_all(c)
            identity_md.create_all(c)
            self._upgrade_job_runs(c)
            _master(c, _default)
            if c.execute(sa.select(repos_t.c.id).where(repos_t.c.id == 0)).first() is None:
                c.execute(repos_t.insert().values(name=default_repo, id=0, created=time.time()))
                c.execute(counters_t.insert().values(name="repo_id", value=0))
            _upgrade_indexes(c, _default)
            for r in c.execute(sa.select(repos_t.c.id).where(repos_t.c.id != 0)).all():
                t = tables(f"r{r.id}_")
                t.md.create_all(c)  # tables added since it was made
                _upgrade_indexes(c, t)

    def _schema_lock(self, c: Connection) -> None:
        if not self.is_sqlite:
            c.execute(sa.text("SELECT pg_advisory_xact_lock(7370707)"))  # "pfs" schema lock

    def write(self) -> Any:
        return _Guard(self.engine.begin)

    def read(self) -> Any:
        return _Guard(self.reader.connect)

    def ping(self) -> None:
        """One round trip: raises Unavailable if the database does not answer."""
        with self.read() as c:
            c.execute(sa.text("SELECT 1"))

    def reclaim(self) -> None:
        """Give the space of deleted rows back to the file system (SQLite: free pages, then
        the WAL), in a background thread, one at a time: the commit that freed them does not
        wait. Best effort: a reader holding the WAL makes the checkpoint wait for the next
        time; PostgreSQL's autovacuum does this by itself."""
        if not self.is_sqlite or not self._reclaiming.acquire(blocking=False):
            return
        self._reclaimer = threading.Thread(target=self._reclaim, name="pfs-sqlite-reclaim", daemon=True)
        self._reclaimer.start()

    def _reclaim(self) -> None:
        try:
            self._reclaim_now()
        finally:
            self._reclaiming.release()

    def _reclaim_now(self) -> None:
        raw = self.engine.raw_connection()
        try:
            # executescript steps the pragma to its end (a single step frees a single page)
            raw.driver_connection.executescript("PRAGMA incremental_vacuum;")  # type: ignore[union-attr]
            raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()  # type: ignore[union-attr]
        except Exception as exc:  # busy, or the disk: the next big commit tries again
            log.info("reclaiming SQLite space failed: %s", exc)
        finally:
            raw.close()

    def settle(self) -> None:
        """Wait (bounded) for a reclaim under way: a clean shutdown leaves the files at their
        size, not at the size of the last big commit's staging."""
        if self._reclaimer is not None:
            self._reclaimer.join(timeout=120)

    def close(self) -> None:
        from .collect import close_board  # its node stops beating and leaves

        close_board(self)
        self.settle()
        self.engine.dispose()
        self.reader.dispose()

    # ---- the catalog ---------------------------------------------------------------
    def list_repos(self) -> list[RepoRow]:
        with self.read() as c:
            rows = c.execute(sa.select(repos_t).order_by(repos_t.c.name)).all()
        return [RepoRow(r.name, r.id, r.created) for r in rows]

    def get_repo(self, name: str) -> RepoRow | None:
        with self.read() as c:
            r = c.execute(sa.select(repos_t).where(repos_t.c.name == name)).first()
        return None if r is None else RepoRow(r.name, r.id, r.created)

    def create_repo(self, name: str) -> RepoRow:
        """A new repository: its catalog row, its tables and its master branch, in one
        transaction. Its id was never used before, so nothing of a deleted one shows."""
        try:
            with self.write() as c:
                self._schema_lock(c)
                if c.execute(sa.select(repos_t.c.id).where(repos_t.c.name == name)).first() is not None:
                    raise AlreadyExists(f"repository {name!r} already exists")
                last = c.execute(
                    counters_t.update()
                    .where(counters_t.c.name == "repo_id")
                    .values(value=counters_t.c.value + 1)
                    .returning(counters_t.c.value)
                ).first()
                assert last is not None
                row = RepoRow(name, int(last.value), time.time())
                c.execute(repos_t.insert().values(name=row.name, id=row.id, created=row.created))
                t = tables(row.prefix)
                t.md.create_all(c)
                _master(c, t)
        except IntegrityError:
            raise AlreadyExists(f"repository {name!r} already exists") from None
        return row

    def drop_repo(self, row: RepoRow) -> None:
        """Remove a repository's catalog row and tables, in one transaction."""
        with self.write() as c:
            self._schema_lock(c)
            c.execute(repos_t.delete().where(repos_t.c.id == row.id))
            c.execute(grants_t.delete().where(grants_t.c.repo == row.id))
            c.execute(protected_t.delete().where(protected_t.c.repo == row.id))
            for table in (gc_t, gc_log_t, gc_acks_t, retention_t):
                c.execute(table.delete().where(table.c.repo == row.id))
            tables(row.prefix).md.drop_all(c)

    def _upgrade_job_runs(self, c: Connection) -> None:
        """Add the job_runs columns a database made by an older pfs lacks (create_all makes
        missing tables, never missing columns)."""
        have = {col["name"] for col in sa.inspect(c).get_columns("job_runs")}
        for name in _JOB_RUNS_ADDED:
            if name not in have:
                col = _default.job_runs.c[name]
                default = f" DEFAULT {col.server_default.arg}" if col.server_default is not None else ""  # type: ignore[attr-defined]
                null = "" if col.nullable else " NOT NULL"
                kind = col.type.compile(dialect=c.dialect)
                c.execute(sa.text(f"ALTER TABLE job_runs ADD COLUMN {name} {kind}{default}{null}"))


def _upgrade_indexes(c: Connection, t: Tables) -> None:
    """Indexes added to tables an older pfs made (create_all makes missing tables, never
    their missing indexes)."""
    for index in t.runs.indexes:
        if index.name is not None and index.name.endswith("runs_created"):
            index.create(c, checkfirst=True)


def _master(c: Connection, t: Tables) -> None:
    if c.execute(sa.select(t.refs.c.name).where(t.refs.c.name == "master")).first() is None:
        c.execute(t.refs.insert().values(name="master", head=None, updated=time.time()))


class SqlMetaStore(MetaStore):
    """One repository's metadata. `SqlMetaStore(url)` opens the database for the default
    repository alone (tools and tests); a server passes its shared `Database`."""

    def __init__(self, db: Database | str, repo: RepoRow | None = None) -> None:
        self._own = isinstance(db, str)
        self.db = Database(db) if isinstance(db, str) else db
        self.url = self.db.url
        self.is_sqlite = self.db.is_sqlite
        self.t = tables(repo.prefix if repo is not None else "")
        self.repo_id = repo.id if repo is not None else 0
        self._placement_q: Any = None  # statements of the single-file write path, built once
        self._stage_one_q: Any = None

    def _write(self) -> Any:
        return self.db.write()

    def _read(self) -> Any:
        return self.db.read()

    def ping(self) -> None:
        self.db.ping()

    def reclaim(self) -> None:
        self.db.reclaim()

    def close(self) -> None:
        if self._own:
            self.db.close()

    # ---- refs --------------------------------------------------------------------
    def get_ref(self, name: str) -> str | None:
        with self._read() as c:
            row = c.execute(sa.select(self.t.refs.c.head).where(self.t.refs.c.name == name)).first()
        if row is None:
            raise BranchNotFound(f"branch {name!r} not found")
        return row.head  # type: ignore[no-any-return]

    def list_refs(self) -> list[tuple[str, str | None]]:
        with self._read() as c:
            rows = c.execute(sa.select(self.t.refs.c.name, self.t.refs.c.head).order_by(self.t.refs.c.name)).all()
        return [(r.name, r.head) for r in rows]

    def create_ref(self, name: str, head: str | None) -> None:
        try:
            with self._write() as c:
                c.execute(self.t.refs.insert().values(name=name, head=head, updated=time.time()))
        except IntegrityError:
            raise AlreadyExists(f"branch {name!r} already exists") from None

    def delete_ref(self, name: str) -> None:
        with self._write() as c:
            if c.execute(self.t.refs.delete().where(self.t.refs.c.name == name)).rowcount != 1:
                raise BranchNotFound(f"branch {name!r} not found")
            c.execute(self.t.staging.delete().where(self.t.staging.c.branch == name))
            c.execute(self.t.grafts.delete().where(self.t.grafts.c.branch == name))

    def swap_ref(self, name: str, old: str | None, new: Commit, consumed_upto: int | None = None) -> None:
        with self._write() as c:
            cond = self.t.refs.c.head.is_(None) if old is None else self.t.refs.c.head == old
            res = c.execute(
                self.t.refs.update().where(self.t.refs.c.name == name, cond).values(head=new.id, updated=time.time())
            )
            if res.rowcount != 1:
                exists = c.execute(sa.select(self.t.refs.c.name).where(self.t.refs.c.name == name)).first()
                if exists is None:
                    raise BranchNotFound(f"branch {name!r} not found")
                metrics.REF_UPDATES.labels("lost").inc()
                raise BranchMoved(f"branch {name!r} moved while committing; retry")
            self._index(c, new)
            if consumed_upto is not None:
                # A write that landed after the commit's snapshot has a higher seq: it stays.
                for table in (self.t.staging, self.t.grafts):
                    c.execute(table.delete().where(table.c.branch == name, table.c.seq <= consumed_upto))
        metrics.REF_UPDATES.labels("done").inc()  # once the transaction is in

    # ---- staging -----------------------------------------------------------------
    def stage_many(self, branch: str, items: list[tuple[str, Entry | None]]) -> None:
        if not items:
            self.get_ref(branch)
            return
        if len(items) == 1 and not self.is_sqlite:
            self._stage_one(branch, *items[0])
            return
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
        stmt = insert(self.t.staging)
        stmt = stmt.on_conflict_do_update(
            index_elements=[self.t.staging.c.branch, self.t.staging.c.path],
            set_={"seq": stmt.excluded.seq, "entry": stmt.excluded.entry},
        )
        with self._write() as c:
            last = c.execute(
                self.t.refs.update()
                .where(self.t.refs.c.name == branch)
                .values(seq=self.t.refs.c.seq + len(items))
                .returning(self.t.refs.c.seq)
            ).first()
            if last is None:
                raise BranchNotFound(f"branch {branch!r} not found")
            first = int(last.seq) - len(items) + 1
            rows = [
                {
                    "branch": branch,
                    "path": path,
                    "parent": path.rpartition("/")[0],
                    "seq": first + i,
                    "entry": entry.dumps() if entry is not None else None,
                }
                for i, (path, entry) in enumerate(items)
            ]
            for i in range(0, len(rows), 1000):
                c.execute(stmt, rows[i : i + 1000])

    def _stage_one(self, branch: str, path: str, entry: Entry | None) -> None:
        """One PostgreSQL statement, run on its own (no BEGIN and COMMIT round trips): the
        branch's counter is taken and the row written together, as `stage_many` does in a
        transaction. The write path of every single-file upload, so its round trips count."""
        if self._stage_one_q is None:
            self._stage_one_q = self._stage_one_statement()
        params = {
            "b": branch,
            "path": path,
            "parent": path.rpartition("/")[0],
            "entry": entry.dumps() if entry is not None else None,
        }
        with self._read() as c:  # autocommit: the statement is its own transaction
            row = c.execute(self._stage_one_q, params).first()
        if row is None:
            raise BranchNotFound(f"branch {branch!r} not found")

    def _stage_one_statement(self) -> Any:
        from sqlalchemy.dialects.postgresql import insert

        st, refs = self.t.staging, self.t.refs
        taken = (
            sa.update(refs)
            .where(refs.c.name == sa.bindparam("b", type_=refs.c.name.type))
            .values(seq=refs.c.seq + 1)
            .returning(refs.c.seq)
            .cte("taken")
        )
        values = sa.select(
            sa.bindparam("b", type_=st.c.branch.type),
            sa.bindparam("path", type_=st.c.path.type),
            sa.bindparam("parent", type_=st.c.parent.type),
            taken.c.seq,
            sa.bindparam("entry", type_=st.c.entry.type),
        ).select_from(taken)
        stmt = insert(st).from_select(["branch", "path", "parent", "seq", "entry"], values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[st.c.branch, st.c.path], set_={"seq": stmt.excluded.seq, "entry": stmt.excluded.entry}
        )
        return stmt.add_cte(taken, nest_here=True).returning(st.c.seq)

    def stage_graft(self, branch: str, prefix: str, entry: Entry, files: int) -> None:
        with self._write() as c:
            last = c.execute(
                self.t.refs.update()
                .where(self.t.refs.c.name == branch)
                .values(seq=self.t.refs.c.seq + 1)
                .returning(self.t.refs.c.seq)
            ).first()
            if last is None:
                raise BranchNotFound(f"branch {branch!r} not found")
            c.execute(
                self.t.grafts.insert().values(
                    branch=branch, seq=int(last.seq), prefix=prefix, entry=entry.dumps(), files=files
                )
            )

    def grafts(self, branch: str) -> list[Graft]:
        with self._read() as c:
            rows = c.execute(
                sa.select(self.t.grafts).where(self.t.grafts.c.branch == branch).order_by(self.t.grafts.c.seq)
            ).all()
        return [Graft(r.prefix, int(r.seq), Entry.loads(r.entry)) for r in rows]

    def staged(self, branch: str) -> list[Staged]:
        with self._read() as c:
            rows = c.execute(
                sa.select(self.t.staging).where(self.t.staging.c.branch == branch).order_by(self.t.staging.c.path)
            ).all()
        return [_row_staged(r) for r in rows]

    def staged_get(self, branch: str, path: str) -> Staged | None:
        with self._read() as c:
            row = c.execute(
                sa.select(self.t.staging).where(self.t.staging.c.branch == branch, self.t.staging.c.path == path)
            ).first()
        return _row_staged(row) if row is not None else None

    def staged_children(self, branch: str, parent: str) -> list[Staged]:
        with self._read() as c:
            rows = c.execute(
                sa.select(self.t.staging)
                .where(self.t.staging.c.branch == branch, self.t.staging.c.parent == parent)
                .order_by(self.t.staging.c.path)
            ).all()
        return [_row_staged(r) for r in rows]

    def staged_under(self, branch: str, prefix: str, limit: int | None = None, puts: bool = False) -> list[Staged]:
        q = sa.select(self.t.staging).where(self.t.staging.c.branch == branch)
        if puts:
            q = q.where(self.t.staging.c.entry.is_not(None))
        if prefix:
            q = q.where(self.t.staging.c.path.like(_escape_like(prefix) + "/%", escape="\\"))
        q = q.order_by(self.t.staging.c.path)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as c:
            rows = c.execute(q).all()
        return [_row_staged(r) for r in rows]

    def placement(self, branch: str, path: str, parents: list[str]) -> Placement:
        if self._placement_q is None:
            self._placement_q = self._placement_statement()
        below = _escape_like(path) + "/%"
        with self._read() as c:
            found = c.execute(self._placement_q, {"b": branch, "paths": [path, *parents], "below": below}).all()
        if not found:
            raise BranchNotFound(f"branch {branch!r} not found")
        rows = {r.path: _row_staged(r) for r in found if r.path is not None}
        first = found[0]
        return Placement(first.head, bool(first.grafted), rows, bool(first.below))

    def _placement_statement(self) -> Any:
        """Built once (every single-file write runs it): one row for the ref, joined to
        each staged row at the path and its parents."""
        st, refs = self.t.staging, self.t.refs
        name = sa.bindparam("b", type_=refs.c.name.type)
        grafted = sa.exists().where(self.t.grafts.c.branch == name)
        below = sa.exists().where(
            st.c.branch == name,
            st.c.entry.is_not(None),
            st.c.path.like(sa.bindparam("below", type_=st.c.path.type), escape="\\"),
        )
        at = sa.and_(st.c.branch == refs.c.name, st.c.path.in_(sa.bindparam("paths", expanding=True)))
        return (
            sa.select(refs.c.head, grafted.label("grafted"), below.label("below"), st.c.path, st.c.seq, st.c.entry)
            .select_from(refs.outerjoin(st, at))
            .where(refs.c.name == name)
        )

    def head_and_dirty(self, name: str) -> tuple[str | None, bool, bool]:
        dirty = sa.exists().where(self.t.staging.c.branch == name)
        grafted = sa.exists().where(self.t.grafts.c.branch == name)
        with self._read() as c:
            row = c.execute(
                sa.select(self.t.refs.c.head, dirty.label("dirty"), grafted.label("grafted")).where(
                    self.t.refs.c.name == name
                )
            ).first()
        if row is None:
            raise BranchNotFound(f"branch {name!r} not found")
        return row.head, bool(row.dirty), bool(row.grafted)

    def has_staged(self, branch: str) -> bool:
        with self._read() as c:
            row = c.execute(sa.select(self.t.staging.c.path).where(self.t.staging.c.branch == branch).limit(1)).first()
            if row is None:
                row = c.execute(sa.select(self.t.grafts.c.seq).where(self.t.grafts.c.branch == branch).limit(1)).first()
        return row is not None

    def discard_staged(self, branch: str) -> int:
        """Drop the branch's staged writes: how many files (an archive counts its files)."""
        with self._write() as c:
            files = c.execute(
                sa.select(sa.func.coalesce(sa.func.sum(self.t.grafts.c.files), 0)).where(
                    self.t.grafts.c.branch == branch
                )
            ).scalar_one()
            c.execute(self.t.grafts.delete().where(self.t.grafts.c.branch == branch))
            n = int(c.execute(self.t.staging.delete().where(self.t.staging.c.branch == branch)).rowcount)
            return n + int(files)

    # ---- commit index ------------------------------------------------------------
    def _index(self, c: Connection, commit: Commit) -> None:
        exists = c.execute(sa.select(self.t.commits.c.id).where(self.t.commits.c.id == commit.id)).first()
        if exists is None:
            c.execute(
                self.t.commits.insert().values(
                    id=commit.id,
                    tree=commit.tree,
                    branch=commit.branch,
                    parents=orjson.dumps(list(commit.parents)).decode(),
                    time=commit.time,
                    message=commit.message,
                )
            )

    def index_commit(self, commit: Commit) -> None:
        with self._write() as c:
            self._index(c, commit)

    def get_commit(self, cid: str) -> Commit | None:
        with self._read() as c:
            row = c.execute(sa.select(self.t.commits).where(self.t.commits.c.id == cid)).first()
        return _row_commit(row) if row is not None else None

    def find_commits(self, prefix: str, limit: int = 2) -> list[str]:
        with self._read() as c:
            rows = c.execute(
                sa.select(self.t.commits.c.id)
                .where(self.t.commits.c.id.like(_escape_like(prefix) + "%", escape="\\"))
                .limit(limit)
            ).all()
        return [r.id for r in rows]

    def list_commits(self) -> Iterator[Commit]:
        # Paged, so a huge history is never held in memory at once.
        last: tuple[float, str] | None = None
        while True:
            q = sa.select(self.t.commits).order_by(self.t.commits.c.time, self.t.commits.c.id).limit(1000)
            if last is not None:
                q = q.where(
                    sa.or_(
                        self.t.commits.c.time > last[0],
                        sa.and_(self.t.commits.c.time == last[0], self.t.commits.c.id > last[1]),
                    )
                )
            with self._read() as c:
                rows = c.execute(q).all()
            if not rows:
                return
            for r in rows:
                yield _row_commit(r)
            last = (rows[-1].time, rows[-1].id)

    # ---- retention rules ---------------------------------------------------------
    def set_retention(self, branch: str, keep: float) -> None:
        r = retention_t
        with self._write() as c:
            if (
                c.execute(r.update().where(r.c.repo == self.repo_id, r.c.branch == branch).values(keep=keep)).rowcount
                == 0
            ):
                c.execute(r.insert().values(repo=self.repo_id, branch=branch, keep=keep, applied=None))

    def drop_retention(self, branch: str) -> bool:
        with self._write() as c:
            r = retention_t
            return bool(c.execute(r.delete().where(r.c.repo == self.repo_id, r.c.branch == branch)).rowcount)

    def retention(self) -> dict[str, tuple[float, float | None]]:
        """Branch -> (seconds of data kept, horizon the last GC applied)."""
        r = retention_t
        with self._read() as c:
            rows = c.execute(sa.select(r.c.branch, r.c.keep, r.c.applied).where(r.c.repo == self.repo_id)).all()
        return {row.branch: (float(row.keep), row.applied) for row in rows}

    def retention_applied(self, horizons: dict[str, float]) -> None:
        r = retention_t
        with self._write() as c:
            for branch, horizon in horizons.items():
                where = (r.c.repo == self.repo_id, r.c.branch == branch)
                old = c.execute(sa.select(r.c.applied).where(*where)).scalar()
                c.execute(r.update().where(*where).values(applied=max(old or 0.0, horizon)))

    def drop_commits(self, ids: list[str]) -> None:
        """Forget commits (a garbage collection's, before it deletes their objects): their
        index rows and the records of their job runs, in one transaction."""
        with self._write() as c:
            for i in range(0, len(ids), 500):
                part = ids[i : i + 500]
                for table in (self.t.job_failures, self.t.job_runs, self.t.runs):
                    c.execute(table.delete().where(table.c.commit.in_(part)))
                c.execute(self.t.commits.delete().where(self.t.commits.c.id.in_(part)))

    # ---- jobs and runs -------------------------------------------------------------
    def put_job(self, name: str, spec: str) -> None:
        with self._write() as c:
            now = time.time()
            if (
                c.execute(
                    self.t.jobs.update().where(self.t.jobs.c.name == name).values(spec=spec, updated=now)
                ).rowcount
                == 0
            ):
                c.execute(self.t.jobs.insert().values(name=name, spec=spec, updated=now))

    def get_job(self, name: str) -> str | None:
        with self._read() as c:
            row = c.execute(sa.select(self.t.jobs.c.spec).where(self.t.jobs.c.name == name)).first()
        return None if row is None else str(row.spec)

    def list_jobs(self) -> list[tuple[str, str, float]]:
        with self._read() as c:
            rows = c.execute(sa.select(self.t.jobs).order_by(self.t.jobs.c.name)).all()
        return [(r.name, r.spec, r.updated) for r in rows]

    def delete_job(self, name: str) -> bool:
        with self._write() as c:
            return bool(c.execute(self.t.jobs.delete().where(self.t.jobs.c.name == name)).rowcount)

    def create_run(self, commit: str, branch: str, jobs: list[tuple[str, str]]) -> bool:
        with self._write() as c:
            if c.execute(sa.select(self.t.runs.c.commit).where(self.t.runs.c.commit == commit)).first() is not None:
                return False
            c.execute(
                self.t.runs.insert().values(commit=commit, branch=branch, state=RunState.QUEUED, created=time.time())
            )
            if jobs:
                c.execute(
                    self.t.job_runs.insert(),
                    [
                        {"commit": commit, "job": n, "seq": i, "spec": s, "state": JobState.PENDING}
                        for i, (n, s) in enumerate(jobs)
                    ],
                )
        return True

    def get_run(self, commit: str) -> Run | None:
        with self._read() as c:
            row = c.execute(sa.select(self.t.runs).where(self.t.runs.c.commit == commit)).first()
        return None if row is None else _row_run(row)

    def list_runs(self, limit: int = 100, job: str | None = None) -> list[Run]:
        q = sa.select(self.t.runs).order_by(self.t.runs.c.created.desc()).limit(limit)
        if job is not None:
            q = q.where(
                self.t.runs.c.commit.in_(sa.select(self.t.job_runs.c.commit).where(self.t.job_runs.c.job == job))
            )
        with self._read() as c:
            return [_row_run(r) for r in c.execute(q).all()]

    def _job_run_columns(self, log: bool) -> list[sa.ColumnElement[Any]]:
        jr = self.t.job_runs
        return [c if log or c.name != "log" else sa.null().label("log") for c in jr.c]

    def job_runs(self, commit: str, log: bool = True) -> list[JobRun]:
        jr = self.t.job_runs
        with self._read() as c:
            rows = c.execute(
                sa.select(*self._job_run_columns(log)).where(jr.c.commit == commit).order_by(jr.c.seq)
            ).all()
        return [_row_job_run(r) for r in rows]

    def get_job_run(self, commit: str, job: str, log: bool = True) -> JobRun | None:
        jr = self.t.job_runs
        with self._read() as c:
            row = c.execute(
                sa.select(*self._job_run_columns(log)).where(jr.c.commit == commit, jr.c.job == job)
            ).first()
        return None if row is None else _row_job_run(row)

    def job_run_page(self, job: str, limit: int, before: tuple[float, str] | None = None) -> list[tuple[Run, JobRun]]:
        r, jr = self.t.runs, self.t.job_runs
        q = (
            sa.select(*(c.label("run_" + c.name) for c in r.c), *self._job_run_columns(False))
            .select_from(jr.join(r, r.c.commit == jr.c.commit))
            .where(jr.c.job == job)
        )
        if before is not None:
            created, commit = before
            q = q.where(sa.or_(r.c.created < created, sa.and_(r.c.created == created, r.c.commit < commit)))
        q = q.order_by(r.c.created.desc(), r.c.commit.desc()).limit(limit)
        with self._read() as c:
            rows = c.execute(q).all()
        out = []
        for row in rows:
            fields = dict(row._mapping)
            run = {k[4:]: fields.pop(k) for k in list(fields) if k.startswith("run_")}
            out.append((_as_run(run), _as_job_run(fields)))
        return out

    def job_log(self, commit: str, job: str, start: int, size: int) -> tuple[str, int] | None:
        jr = self.t.job_runs
        q = sa.select(sa.func.length(jr.c.log).label("n"), sa.func.substr(jr.c.log, start + 1, size).label("piece"))
        with self._read() as c:
            row = c.execute(q.where(jr.c.commit == commit, jr.c.job == job)).first()
        return None if row is None else (row.piece or "", int(row.n or 0))

    def update_run(self, commit: str, **fields: Any) -> None:
        assert set(fields) <= RUN_FIELDS
        with self._write() as c:
            c.execute(self.t.runs.update().where(self.t.runs.c.commit == commit).values(**fields))

    def update_job_run(self, commit: str, job: str, **fields: Any) -> None:
        assert set(fields) <= JOB_RUN_FIELDS
        with self._write() as c:
            c.execute(
                self.t.job_runs.update()
                .where(self.t.job_runs.c.commit == commit, self.t.job_runs.c.job == job)
                .values(**fields)
            )

    def claim_run(self, owner: str, stale_before: float) -> str | None:
        with self._write() as c:
            row = c.execute(
                sa.select(self.t.runs.c.commit, self.t.runs.c.state)
                .where(
                    sa.or_(
                        self.t.runs.c.state == RunState.QUEUED,
                        sa.and_(self.t.runs.c.state == RunState.RUNNING, self.t.runs.c.heartbeat < stale_before),
                    )
                )
                .order_by(self.t.runs.c.created)
                .limit(1)
            ).first()
            if row is None:
                return None
            now = time.time()
            res = c.execute(
                self.t.runs.update()
                .where(self.t.runs.c.commit == row.commit, self.t.runs.c.state == row.state)
                .values(
                    state=RunState.RUNNING,
                    owner=owner,
                    heartbeat=now,
                    started=sa.func.coalesce(self.t.runs.c.started, now),
                )
            )
            return str(row.commit) if res.rowcount == 1 else None

    def job_run_base(self, job: str, spec_key: str) -> JobRun | None:
        with self._read() as c:
            row = c.execute(
                sa.select(self.t.job_runs)
                .where(
                    self.t.job_runs.c.job == job,
                    self.t.job_runs.c.spec_key == spec_key,
                    sa.or_(
                        self.t.job_runs.c.state.in_([JobState.SUCCEEDED, JobState.REUSED]),
                        sa.and_(
                            self.t.job_runs.c.state == JobState.FAILED, self.t.job_runs.c.partial_tree.is_not(None)
                        ),
                    ),
                )
                .order_by(self.t.job_runs.c.finished.desc())
                .limit(1)
            ).first()
        return None if row is None else _row_job_run(row)

    def drop_runs(self, before: float, keep: set[str]) -> int:
        r, jr = self.t.runs, self.t.job_runs
        over = [RunState.SUCCEEDED, RunState.FAILED]
        has_tree = sa.or_(
            jr.c.state.in_([JobState.SUCCEEDED, JobState.REUSED]),
            sa.and_(jr.c.state == JobState.FAILED, jr.c.partial_tree.is_not(None)),
        )
        with self._write() as c:
            old = {
                row.commit for row in c.execute(sa.select(r.c.commit).where(r.c.state.in_(over), r.c.finished < before))
            }
            if not old:
                return 0
            newest: dict[tuple[str, str], tuple[float, str]] = {}  # (job, spec key) -> its base run
            for row in c.execute(sa.select(jr.c.job, jr.c.spec_key, jr.c.commit, jr.c.finished).where(has_tree)):
                k, seen = (row.job, row.spec_key or ""), (row.finished or 0.0, row.commit)
                if k not in newest or seen > newest[k]:
                    newest[k] = seen
            gone = sorted(old - keep - {commit for _, commit in newest.values()})
            for i in range(0, len(gone), 500):
                part = gone[i : i + 500]
                for table in (self.t.job_failures, jr, r):
                    c.execute(table.delete().where(table.c.commit.in_(part)))
        return len(gone)

    def add_job_failures(self, commit: str, job: str, items: list[Failure]) -> None:
        if not items:
            return
        with self._write() as c:
            c.execute(
                self.t.job_failures.insert(),
                [{"commit": commit, "job": job, "path": f.path, "error": f.error} for f in items],
            )

    def job_failures(self, commit: str, job: str, limit: int = 1000, after: str | None = None) -> list[Failure]:
        q = sa.select(self.t.job_failures.c.path, self.t.job_failures.c.error).where(
            self.t.job_failures.c.commit == commit, self.t.job_failures.c.job == job
        )
        if after is not None:
            q = q.where(self.t.job_failures.c.path > after)
        with self._read() as c:
            rows = c.execute(q.order_by(self.t.job_failures.c.path).limit(limit)).all()
        return [Failure(r.path, r.error) for r in rows]

    def clear_job_failures(self, commit: str, job: str) -> None:
        with self._write() as c:
            c.execute(
                self.t.job_failures.delete().where(
                    self.t.job_failures.c.commit == commit, self.t.job_failures.c.job == job
                )
            )

    # ---- multipart uploads ---------------------------------------------------------
    def create_upload(self, row: UploadRow) -> None:
        with self._write() as c:
            c.execute(
                self.t.uploads.insert().values(
                    id=row.id, branch=row.branch, path=row.path, meta=row.meta, created=row.created
                )
            )

    def get_upload(self, upload_id: str) -> UploadRow | None:
        with self._read() as c:
            r = c.execute(sa.select(self.t.uploads).where(self.t.uploads.c.id == upload_id)).first()
        return None if r is None else _row_upload(r)

    def list_uploads(self, prefix: str, limit: int) -> list[UploadRow]:
        u = self.t.uploads
        q = sa.select(u).order_by(u.c.path, u.c.created).limit(limit)
        if prefix:
            q = q.where(u.c.path.like(_escape_like(prefix) + "%", escape="\\"))
        with self._read() as c:
            rows = c.execute(q).all()
        return [_row_upload(r) for r in rows]

    def put_part(self, upload_id: str, part: PartRow) -> bool:
        p = self.t.upload_parts
        with self._write() as c:
            if c.execute(sa.select(self.t.uploads.c.id).where(self.t.uploads.c.id == upload_id)).first() is None:
                return False
            c.execute(p.delete().where(p.c.upload == upload_id, p.c.number == part.number))
            c.execute(
                p.insert().values(
                    upload=upload_id,
                    number=part.number,
                    size=part.size,
                    md5=part.md5,
                    entry=part.entry.dumps(),
                    created=part.created,
                )
            )
        return True

    def list_parts(self, upload_id: str) -> list[PartRow]:
        p = self.t.upload_parts
        with self._read() as c:
            rows = c.execute(sa.select(p).where(p.c.upload == upload_id).order_by(p.c.number)).all()
        return [PartRow(r.number, r.size, r.md5, Entry.loads(r.entry), r.created) for r in rows]

    def end_upload(self, upload_id: str) -> bool:
        with self._write() as c:
            c.execute(self.t.upload_parts.delete().where(self.t.upload_parts.c.upload == upload_id))
            return bool(c.execute(self.t.uploads.delete().where(self.t.uploads.c.id == upload_id)).rowcount)


class _Guard:
    """Opens a connection (or transaction) and maps what a lost or full database raises:
    disk full is a 507, an unreachable server a 503 the client may retry. Connecting
    happens inside the guard: that is where a database that is down fails first."""

    def __init__(self, open_cm: Callable[[], Any]) -> None:
        self.open_cm = open_cm
        self.cm: Any = None

    def __enter__(self) -> Connection:
        try:
            self.cm = self.open_cm()
            return self.cm.__enter__()  # type: ignore[no-any-return]
        except sa.exc.SQLAlchemyError as exc:
            _translate(exc)
            raise

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        try:
            handled = bool(self.cm.__exit__(et, ev, tb))
        except sa.exc.SQLAlchemyError as exc:
            _translate(exc)
            raise
        if isinstance(ev, sa.exc.SQLAlchemyError):
            _translate(ev)
        return handled


def _translate(exc: sa.exc.SQLAlchemyError) -> None:
    """Raise the pfs error for a database failure that is not a bug: full, or unreachable.
    Every one is counted (a bug's too: it is still a failed store operation), but not a
    constraint the caller turns into an answer (a branch that exists: 409)."""
    if isinstance(exc, IntegrityError):
        return
    try:
        _translate_one(exc)
    except InsufficientStorage:
        metrics.STORE_ERRORS.labels("meta", "full").inc()
        raise
    except Unavailable:
        metrics.STORE_ERRORS.labels("meta", "unavailable").inc()
        raise
    metrics.STORE_ERRORS.labels("meta", "error").inc()


def _translate_one(exc: sa.exc.SQLAlchemyError) -> None:
    if isinstance(exc, OperationalError):
        _raise_full(exc)
    if isinstance(exc, sa.exc.TimeoutError):  # every pooled connection busy for 30 s
        raise Unavailable("the metadata database is overloaded: no connection free") from None
    if isinstance(exc, sa.exc.DBAPIError):
        _raise_unreachable(exc)


def _first_line(exc: object) -> str:
    return (str(exc).strip().splitlines() or ["unknown error"])[0][:300]


def _raise_unreachable(exc: sa.exc.DBAPIError) -> None:
    """A lost database server (PostgreSQL: refused, reset, shutting down, starting up) is a
    503 the client may retry, not a 500. Errors in our own SQL stay errors."""
    import psycopg

    orig = exc.orig
    lost = exc.connection_invalidated or isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)
    if isinstance(orig, psycopg.errors.AdminShutdown | psycopg.errors.CannotConnectNow):
        lost = True
    if lost and type(orig).__module__.startswith("psycopg"):
        raise Unavailable(f"the metadata database is unavailable: {_first_line(orig)}") from None


def _raise_full(exc: OperationalError) -> None:
    text = str(exc.orig).lower()
    if "full" in text or "no space" in text:
        raise InsufficientStorage("no space left for metadata") from None


WAL_LIMIT = 16 << 20  # bytes the SQLite WAL is cut back to after a checkpoint


def _sqlite_setup(engine: Engine, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _rec: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # Space comes back after big deletes (a commit consuming 100,000 staged rows): free
        # pages can be given back (`Database.reclaim`; takes effect on a new database file),
        # and the WAL is cut back to this size after each checkpoint instead of staying as
        # large as the largest transaction ever made it.
        cur.execute("PRAGMA auto_vacuum=INCREMENTAL")
        cur.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        # LIKE is case-insensitive in SQLite by default: "A/x" would be staged "under" "a"
        # and make it look like a directory. PostgreSQL's LIKE is case-sensitive already.
        cur.execute("PRAGMA case_sensitive_like=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def sqlite_url(data_dir: str) -> str:
    return "sqlite:///" + os.path.join(os.path.abspath(data_dir), "meta.sqlite")
