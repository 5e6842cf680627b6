"""What the client returns: typed, frozen records of the server's JSON answers.

Field names are the JSON's, so a record reads like the answer it came from; a newer
server may send more keys than a record knows, and they are left out. Times are the
server's ISO 8601 strings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Self


def _fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of an answer that are fields of `cls`: a newer server may send more."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


# ---- repositories -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RepoInfo:
    """A repository of the server; `default` is the one its unprefixed routes address."""

    name: str
    created: str
    default: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        return cls(**_fields(cls, data))


# ---- files ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Written:
    """A file written to a branch (dirty until commit): `hash` is its content's BLAKE3."""

    branch: str
    path: str
    size: int
    hash: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Written:
        return cls(**_fields(cls, data))


@dataclasses.dataclass(frozen=True)
class Unpacked:
    """A tar stream (or a local directory) staged under `prefix`: how many files, how many bytes."""

    branch: str
    prefix: str
    files: int
    size: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Unpacked:
        return cls(**_fields(cls, data))


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """One entry of a directory listing: `type` is "file" (with size and hash) or "dir"."""

    path: str
    name: str
    type: str
    size: int | None = None
    hash: str | None = None

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileInfo:
        return cls(**_fields(cls, data))


# ---- commits and branches -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CommitInfo:
    """A commit: `jobs` names the jobs a commit with `run` queued, in the order they run."""

    id: str
    tree: str
    parents: tuple[str, ...]
    branch: str
    time: str
    message: str
    jobs: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        fields = _fields(cls, data)
        return cls(**{**fields, "parents": tuple(data["parents"]), "jobs": tuple(data.get("jobs") or ())})


@dataclasses.dataclass(frozen=True)
class Merged(CommitInfo):
    """A merge's result: `kind` is "up-to-date", "fast-forward" or "merge"; the rest is the
    branch's (new) head commit."""

    kind: str = ""


@dataclasses.dataclass(frozen=True)
class BranchInfo:
    """A branch and its head commit (None: no commit yet)."""

    name: str
    head: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BranchInfo:
        return cls(**_fields(cls, data))


@dataclasses.dataclass(frozen=True)
class Change:
    """A file that differs between two commits: `status` A (added), M (modified) or D
    (deleted); `old` and `new` are its content hashes on each side."""

    path: str
    status: str
    old: str | None = None
    new: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Change:
        return cls(**_fields(cls, data))


@dataclasses.dataclass(frozen=True)
class FsckReport:
    """A check of every reachable object: `ok` when `problems` is empty."""

    ok: bool
    problems: tuple[str, ...]
    commits: int = 0
    trees: int = 0
    files: int = 0
    chunks: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FsckReport:
        return cls(**{**_fields(cls, data), "problems": tuple(data.get("problems") or ())})


@dataclasses.dataclass(frozen=True)
class BranchUsage:
    """One branch in a storage report: its head's bytes; the bytes of the objects its
    history and dirty writes reach, and of those no other root reaches (what deleting the
    branch would free); None where the report left them out (many branches)."""

    name: str
    head: str | None
    logical: int
    stored: int | None = None
    exclusive: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BranchUsage:
        return cls(**_fields(cls, data))


@dataclasses.dataclass(frozen=True)
class StorageUsage:
    """A repository's storage (`GET /du`): stored objects, those a root reaches, and those
    a garbage collection would remove (unreachable, older than `grace` seconds)."""

    branches: tuple[BranchUsage, ...]
    objects: int
    stored: int
    reachable: int
    reachable_bytes: int
    reclaimable: int
    reclaimable_bytes: int
    young: int
    young_bytes: int
    grace: float
    logical: int
    dedupe: float
    problems: tuple[str, ...] = ()
    orphans: int = 0  # indexed commits no branch reaches (a deleted branch's): a sweep removes them
    orphans_shown: tuple[CommitInfo, ...] = ()  # the newest of them

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StorageUsage:
        return cls(
            **{
                **_fields(cls, data),
                "branches": tuple(BranchUsage.from_json(b) for b in data.get("branches") or ()),
                "problems": tuple(data.get("problems") or ()),
                "orphans_shown": tuple(CommitInfo.from_json(c) for c in data.get("orphans_shown") or ()),
            }
        )


# ---- sync ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ancestor:
    """A commit of a sender's graph page and its parents."""

    id: str
    parents: tuple[str, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Ancestor:
        return cls(id=data["id"], parents=tuple(data["parents"]))


@dataclasses.dataclass(frozen=True)
class ReceiveCounts:
    """What a receiver took from one object stream."""

    objects: int
    bytes: int
    commits: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReceiveCounts:
        return cls(**_fields(cls, data))


@dataclasses.dataclass(frozen=True)
class RefUpdate:
    """A branch moved by a transfer: `result` is created, fast-forward, forced, up-to-date or ahead."""

    branch: str
    old: str | None
    new: str
    result: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RefUpdate:
        return cls(**_fields(cls, data))


# ---- jobs -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Job:
    """A stored job spec (`GET /job/<name>`)."""

    name: str
    type: str  # "map" | "reduce"
    input: str  # a directory, "job/<name>" or "s3://bucket/prefix"
    command: tuple[str, ...]
    parallelism: int
    inflight: int
    timeout: float
    start_timeout: float
    retries: int
    memory: int
    cpus: float
    pids: int
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    image: str | None = None
    runtime: str | None = None
    skip_failed: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Job:
        return cls(**{**_fields(cls, data), "command": tuple(data["command"]), "env": dict(data.get("env") or {})})

    def spec(self) -> dict[str, Any]:
        """The spec as the server stores it (keys sorted, unset ones left out): what `put_job` takes."""
        out = {k: v for k, v in sorted(dataclasses.asdict(self).items()) if k != "name" and v is not None}
        out["command"] = list(self.command)
        return out


@dataclasses.dataclass(frozen=True)
class Failure:
    """A file a map job could not map, and why."""

    path: str
    error: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Failure:
        return cls(**_fields(cls, data))


@dataclasses.dataclass(frozen=True)
class JobRun:
    """One job of a run: `state` is pending, running, succeeded, reused, failed or skipped;
    `failed` counts the files that failed, `failures` lists the first of them."""

    commit: str
    job: str
    state: str
    type: str
    input: str
    total: int
    done: int
    reused: int
    failed: int
    progress: str  # e.g. "7/10 files mapped, 2 failed, 990 reused"
    error: str | None = None
    output_tree: str | None = None
    image: str | None = None
    pinned_image: str | None = None  # the registry image by digest that the run's workers ran
    skip_failed: bool = False
    failures: tuple[Failure, ...] = ()
    started: str | None = None  # ISO 8601
    finished: str | None = None
    seconds: float | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobRun:
        failures = tuple(Failure.from_json(f) for f in data.get("failures") or ())
        return cls(**{**_fields(cls, data), "failures": failures})


@dataclasses.dataclass(frozen=True)
class Run:
    """A run of the job DAG on a commit: `state` is queued, running, succeeded or failed.
    `jobs` is filled in by `run_status` and `wait_run` (not by `runs`)."""

    commit: str
    branch: str
    state: str
    created: str  # ISO 8601
    started: str | None = None
    finished: str | None = None
    error: str | None = None
    jobs: tuple[JobRun, ...] = ()

    @property
    def over(self) -> bool:
        return self.state in ("succeeded", "failed")

    def job(self, name: str) -> JobRun:
        """The run's job `name`; KeyError if the run has none by that name."""
        for j in self.jobs:
            if j.job == name:
                return j
        raise KeyError(name)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Run:
        jobs = tuple(JobRun.from_json(j) for j in data.get("jobs") or ())
        return cls(**{**_fields(cls, data), "jobs": jobs})


# ---- identity and access ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class WhoAmI:
    """Who the server takes the caller for: `user` None is anonymous; `access_control`
    False means the server has no users yet and lets everyone do everything."""

    user: str | None
    admin: bool
    key: str | None = None
    access_control: bool = True

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WhoAmI:
        return cls(**_fields(cls, data))


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """An access key as listed: never its secret, which only the answer that made it held."""

    id: str
    user: str
    created: str
    disabled: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyInfo:
        return cls(**_fields(cls, data))


@dataclasses.dataclass(frozen=True)
class NewKey:
    """A key pair just made (a new user's first key, `create_key`, `rotate_key`): the one
    time its secret is returned. The secret is left out of the repr, so it cannot reach a
    log line by way of a record printed for debugging."""

    user: str
    id: str
    secret: str = dataclasses.field(repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NewKey:
        return cls(**_fields(cls, data))


@dataclasses.dataclass(frozen=True)
class User:
    """A user: `admin` is a server admin. `keys` and `roles` (repository -> role) are
    filled in by `Client.user`, not by `Client.users`."""

    name: str
    admin: bool
    created: str
    keys: tuple[KeyInfo, ...] = ()
    roles: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> User:
        keys = tuple(KeyInfo.from_json(k) for k in data.get("keys") or ())
        return cls(**{**_fields(cls, data), "keys": keys, "roles": dict(data.get("roles") or {})})


@dataclasses.dataclass(frozen=True)
class Grant:
    """A user's role on a repository: read, write or admin (`repo` is named by `grant`'s
    answer; a listing is of one repository)."""

    user: str
    role: str
    repo: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Grant:
        return cls(**_fields(cls, data))


@dataclasses.dataclass(frozen=True)
class AuditEntry:
    """One entry of the audit log: a request that could change something, refused or not
    (`status` is its HTTP status), who made it (`user` None: anonymous) and from where."""

    id: int
    time: str
    user: str | None
    key: str | None
    addr: str
    listener: str
    method: str
    action: str
    repo: str | None
    target: str
    status: int
    request_id: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AuditEntry:
        return cls(**_fields(cls, data))


@dataclasses.dataclass(frozen=True)
class ImageTag:
    tag: str
    digest: str | None  # None: the registry holds the tag but did not say its digest

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageTag:
        return cls(**_fields(cls, data))


@dataclasses.dataclass(frozen=True)
class RegistryImage:
    repository: str  # with the registry's address: what a job spec's `image` starts with
    tags: tuple[ImageTag, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RegistryImage:
        return cls(str(data["repository"]), tuple(ImageTag.from_json(t) for t in data.get("tags") or ()))


@dataclasses.dataclass(frozen=True)
class Images:
    """What the cluster registry holds (`pfs image ls`); `truncated`: there is more."""

    registry: str  # host:port
    images: tuple[RegistryImage, ...]
    truncated: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Images:
        images = tuple(RegistryImage.from_json(i) for i in data.get("images") or ())
        return cls(str(data["registry"]), images, bool(data.get("truncated")))


@dataclasses.dataclass(frozen=True)
class GcReport:
    """What a garbage collection (`POST /gc`) did, or (dry run) would do."""

    generation: int
    dry_run: bool
    grace: float
    cutoff: float  # objects last written before this (seconds since the epoch) could go
    objects: int  # objects listed
    stored: int  # their bytes
    kept: int = 0
    deleted: int = 0  # dry run: would be
    deleted_bytes: int = 0
    commits: int = 0  # commits no branch reached, forgotten
    runs: int = 0  # their job runs
    saved: int = 0  # objects a find logged during the sweep kept
    tmp_files: int = 0
    seconds: float = 0.0
    problems: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GcReport:
        return cls(**{**_fields(cls, data), "problems": tuple(data.get("problems") or ())})
