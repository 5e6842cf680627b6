"""Where a node keeps its data, read from flags or environment, with embedded defaults."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .access.secrets import ServerKey, check_key_pair
from .access.service import Access
from .errors import BadRequest, NotFound
from .jobs.registry import Registry, RegistryConfig
from .repository.registry import Repositories
from .repository.repo import Repository
from .storage.meta import Database, sqlite_url
from .storage.objects import LocalObjectStore, ObjectStore

T = TypeVar("T")

if TYPE_CHECKING:
    from .jobs.service import JobEngine


def default_data_dir() -> str:
    return os.environ.get("PFS_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".pfs")


@dataclass
class Config:
    data_dir: str  # node-local state: embedded storage, job worker scratch, this node's id
    meta_url: str | None = None  # default: SQLite in data_dir; postgresql://... for a cluster
    objects_url: str | None = None  # default: data_dir; s3://bucket/prefix for a cluster
    max_file_size: int | None = None  # bytes; None: unlimited
    default_repo: str = "default"  # the repository the seed's unprefixed routes address
    # The runtime of specs that name none: "docker" (None), "swarm", or "process", which
    # also lets specs run as host processes: only this operator's choice enables it.
    job_runtime: str | None = None
    # What `s3://` job inputs may read with pfs's credentials: "bucket" or "bucket/prefix"
    # entries; none by default. pfs's own object bucket is never allowed.
    job_s3_inputs: tuple[str, ...] = ()
    job_max_memory: int | None = None  # bytes per worker; None: half the host's memory
    job_max_cpus: float | None = None  # per worker; None: the host's cores
    job_max_parallelism: int | None = None  # workers per map job; None: 4 per core
    jobs_at_once: int | None = None  # jobs of one run executing together; None: the scheduler's 4
    job_user: str = "65534:65534"  # who a job's container runs as
    job_firewall: str = "pfs"  # "pfs": pfs adds the host rule that cuts workers off; "operator": it is there
    # Access control (DESIGN.md section 6). The server key encrypts access-key secrets: base64
    # in PFS_SERVER_KEY, or a file; by default <data dir>/server.key for embedded metadata.
    server_key: str | None = None
    server_key_file: str | None = None
    admin_key_file: str | None = None  # "KEY_ID:SECRET": the first admin's key, made at start
    auth_free_failures: int = 10  # failed sign-ins per address and minute before answers slow down
    # The cluster's image registry (PFS_REGISTRY_URL and its credentials): job images named
    # in it are pinned by digest per run and pulled from it; None: images are local only.
    registry: RegistryConfig | None = None

    @classmethod
    def from_env(cls, data_dir: str | None = None) -> Config:
        limit = os.environ.get("PFS_MAX_FILE_SIZE")
        return cls(
            data_dir=data_dir or default_data_dir(),
            meta_url=os.environ.get("PFS_META_URL") or None,
            objects_url=os.environ.get("PFS_OBJECTS_URL") or None,
            max_file_size=int(limit) if limit else None,
            default_repo=os.environ.get("PFS_DEFAULT_REPO") or "default",
            job_runtime=os.environ.get("PFS_JOB_RUNTIME") or None,
            job_s3_inputs=split_list(os.environ.get("PFS_JOB_S3_INPUTS", "")),
            job_max_memory=_env(parse_size, "PFS_JOB_MAX_MEMORY"),
            job_max_cpus=_env(float, "PFS_JOB_MAX_CPUS"),
            job_max_parallelism=_env(int, "PFS_JOB_MAX_PARALLELISM"),
            jobs_at_once=_env(int, "PFS_JOBS_AT_ONCE"),
            job_user=os.environ.get("PFS_JOB_USER") or "65534:65534",
            job_firewall=os.environ.get("PFS_JOB_FIREWALL") or "pfs",
            server_key=os.environ.get("PFS_SERVER_KEY") or None,
            server_key_file=os.environ.get("PFS_SERVER_KEY_FILE") or None,
            admin_key_file=os.environ.get("PFS_ADMIN_KEY_FILE") or None,
            auth_free_failures=_env(int, "PFS_AUTH_FREE_FAILURES") or 10,
            registry=RegistryConfig.from_env(),
        )

    @property
    def shared(self) -> bool:
        """Metadata in a server that other nodes may share (PostgreSQL), not embedded."""
        return self.meta_url is not None and not self.meta_url.startswith("sqlite")

    def describe(self) -> str:
        """Where the data is, for people (no password)."""
        if self.meta_url is None and self.objects_url is None:
            return os.path.abspath(self.data_dir)
        from sqlalchemy.engine import make_url

        meta = (
            make_url(normalize_meta_url(self.meta_url)).render_as_string(hide_password=True)
            if self.meta_url
            else sqlite_url(self.data_dir)
        )
        return f"metadata {meta}, objects {self.objects_url or os.path.abspath(self.data_dir)}"

    def open(self) -> Repository:
        """The default repository (tools and tests that use one)."""
        return self.open_repos().default

    def open_repos(self) -> Repositories:
        """Every repository of this node's stores, made where missing."""
        os.makedirs(self.data_dir, exist_ok=True)
        db = Database(self.db_url(), self.default_repo)
        return Repositories(db, self.open_objects(), self.default_repo, self.max_file_size)

    def open_access(self, repos: Repositories) -> Access:
        """Identity and audit over the repositories' database."""
        return Access.open(repos.db, self.load_server_key(), self.admin_key())

    def load_server_key(self) -> ServerKey:
        if self.server_key:
            return ServerKey.parse(self.server_key, "PFS_SERVER_KEY")
        if self.server_key_file:
            try:
                with open(self.server_key_file) as f:
                    return ServerKey.parse(f.read(), self.server_key_file)
            except OSError as exc:
                raise BadRequest(f"cannot read the server key file {self.server_key_file}: {exc.strerror}") from None
        if self.shared:  # one node's own key would lock the others out of every secret
            return ServerKey(None, "none")
        os.makedirs(self.data_dir, exist_ok=True)
        return ServerKey.load_or_create(os.path.join(self.data_dir, "server.key"))

    def admin_key(self) -> tuple[str, str] | None:
        """The first admin's key pair from PFS_ADMIN_KEY_FILE ("KEY_ID:SECRET", or the two
        on separate lines), if one is given."""
        if not self.admin_key_file:
            return None
        try:
            with open(self.admin_key_file) as f:
                text = f.read(4096).strip()
        except OSError as exc:
            raise BadRequest(f"cannot read the admin key file {self.admin_key_file}: {exc.strerror}") from None
        parts = text.replace(":", "\n", 1).split() if ":" in text else text.split()
        if len(parts) != 2:
            raise BadRequest(f"the admin key file {self.admin_key_file} must hold KEY_ID:SECRET")
        return check_key_pair(parts[0], parts[1])

    def db_url(self) -> str:
        return normalize_meta_url(self.meta_url) if self.meta_url else sqlite_url(self.data_dir)

    def open_existing(self) -> Repositories:
        """The repositories this names, as they are: a data dir, SQLite file or object directory
        that is not there is an error, never created (`open` would make them), so a mistyped
        path never leaves an empty repository behind."""
        from sqlalchemy.engine import make_url

        hint = ": give --data-dir, or --url to check a server"
        if not self.meta_url and not os.path.isdir(self.data_dir):
            raise NotFound(f"no pfs data directory at {os.path.abspath(self.data_dir)}{hint}")
        meta_url = self.db_url()
        if meta_url.startswith("sqlite"):
            db = make_url(meta_url).database or ""
            if not os.path.isfile(db):
                raise NotFound(f"no pfs metadata at {db}{hint}")
        objects: ObjectStore
        url = self.objects_url or ""
        if url.startswith("s3://"):
            from .storage.s3 import S3Config
            from .storage.s3objects import S3ObjectStore

            objects = S3ObjectStore(url, S3Config.from_env(), create_bucket=False)
        elif url and not url.startswith(("file://", "/")):
            objects = self.open_objects()  # raises: not an objects url pfs knows
        else:
            root = url.removeprefix("file://") or self.data_dir
            if not os.path.isdir(os.path.join(root, "objects")):
                raise NotFound(f"no pfs objects in {os.path.abspath(root)}{hint}")
            objects = LocalObjectStore(root)
        return Repositories(Database(meta_url, self.default_repo), objects, self.default_repo)

    def open_objects(self) -> ObjectStore:
        url = self.objects_url
        if url is None or url == "":
            return LocalObjectStore(self.data_dir)
        if url.startswith("s3://"):
            from .storage.s3 import S3Config
            from .storage.s3objects import S3ObjectStore

            return S3ObjectStore(url, S3Config.from_env())
        if url.startswith("file://") or url.startswith("/"):
            return LocalObjectStore(url.removeprefix("file://"))
        raise BadRequest(f"objects url must be s3://bucket/prefix or a local directory, not {url!r}")

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

    def jobs(self, repos: Repositories) -> JobEngine:
        """The jobs engine of this node (its scheduler is started with `JobEngine.start`)."""
        from .jobs.runtime import JobLimits, Sandbox
        from .jobs.scheduler import JOBS_AT_ONCE, STALE
        from .jobs.service import JobEngine

        state = os.path.join(self.data_dir, "jobs")
        os.makedirs(state, exist_ok=True)
        stale = float(os.environ.get("PFS_JOB_STALE_SECONDS") or STALE)
        own_bucket = None
        if self.objects_url and self.objects_url.startswith("s3://"):
            from .storage.s3 import parse_s3_url

            own_bucket = parse_s3_url(self.objects_url)[0]
        return JobEngine(
            repos.each,
            self.instance(),
            state,
            self.job_runtime,
            takeover=not self.shared,
            stale=stale,
            s3_inputs=self.job_s3_inputs,
            limits=JobLimits.of_host(self.job_max_memory, self.job_max_cpus, self.job_max_parallelism),
            sandbox=Sandbox(user=self.job_user, firewall=self.job_firewall),
            own_bucket=own_bucket,
            registry=Registry(self.registry) if self.registry is not None else None,
            jobs_at_once=self.jobs_at_once or JOBS_AT_ONCE,
        )


def _env(parse: Callable[[str], T], name: str) -> T | None:
    """A setting from the environment, parsed; a bad value is an error naming the variable."""
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return parse(value)
    except (ValueError, BadRequest) as exc:
        raise BadRequest(f"{name}={value[:40]!r}: {exc}") from None


def parse_size(text: str) -> int:
    """Bytes from "8g", "512m", "1024": what the job spec's `memory` takes."""
    from .jobs.spec import parse_memory

    return parse_memory(text)


def split_list(text: str) -> tuple[str, ...]:
    """ "a, b,,c" -> ("a", "b", "c"): a comma-separated setting."""
    return tuple(e.strip() for e in text.split(",") if e.strip())


def normalize_meta_url(url: str) -> str:
    """postgresql://... means the psycopg 3 driver (SQLAlchemy would pick psycopg2)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    if url.startswith(("sqlite:", "postgresql+psycopg:")):
        return url
    raise BadRequest(f"metadata url must be postgresql://user:password@host:port/db or sqlite:///path, not {url!r}")


def parse_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {addr!r}")
    return host.strip("[]"), int(port)
