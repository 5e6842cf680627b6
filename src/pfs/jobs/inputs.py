"""Where a job reads from: one kind of input per source. Each checks itself when a spec is
stored, builds the tree of files a run maps, and opens one of those files for a worker.

- `RepoDirectory`: a directory of the commit the run is on ("" is the whole commit);
- `JobOutput`: the output of another job of the same run (`job/<name>`);
- `S3Prefix`: the objects under `s3://bucket/prefix`, as a synthetic tree whose entries
  fingerprint the objects (ETag and size), so a changed object is mapped again and the
  rest reused. pfs reads them with its own credentials, so only what the operator allows.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import blake3

from ..errors import BadRequest, JobError
from ..repository.repo import Repository
from ..storage.trees import Entry
from .s3input import S3Config, S3Source, check_allowed, parse_allowed
from .spec import JobSpec

log = logging.getLogger("pfs.jobs")

S3_APPLY_BATCH = 10_000  # synthetic-tree changes applied at once (S3 listings)


@dataclass(frozen=True)
class InputRules:
    """What the operator lets job inputs read: the `bucket` or `bucket/prefix` entries of
    PFS_JOB_S3_INPUTS; never pfs's own object bucket."""

    s3_allowed: tuple[tuple[str, str], ...] = ()
    own_bucket: str | None = None

    @classmethod
    def parse(cls, s3_inputs: Iterable[str], own_bucket: str | None) -> InputRules:
        allowed = tuple(parse_allowed(s3_inputs))
        if own_bucket is not None and any(b == own_bucket for b, _ in allowed):
            log.warning("PFS_JOB_S3_INPUTS lists bucket %r, which holds pfs's own objects: ignored", own_bucket)
        return cls(allowed, own_bucket)

    def check_s3(self, url: str) -> None:
        """A 400 unless jobs may read `url` (checked before any S3 request)."""
        check_allowed(url, self.s3_allowed, self.own_bucket)


class Input(ABC):
    """One job's input."""

    @abstractmethod
    def check(self, repo: Repository, branch: str) -> None:
        """When a spec is stored: a 400 unless the input exists and may be read."""

    @abstractmethod
    def tree(self, repo: Repository, root: str, outputs: Mapping[str, str]) -> str:
        """The tree of the input files on a run: `root` is the commit's tree, `outputs`
        the output trees of the run's jobs done so far."""

    def open(self, repo: Repository, path: str, entry: Entry) -> Iterator[bytes]:
        """The bytes of one input file (an entry of `tree`)."""
        return repo.read_file(entry)


def input_of(spec: JobSpec, rules: InputRules) -> Input:
    if spec.upstream is not None:
        return JobOutput(spec.upstream)
    if spec.input.startswith("s3://"):
        return S3Prefix(spec.input, rules)
    return RepoDirectory(spec.input)


class RepoDirectory(Input):
    def __init__(self, path: str) -> None:
        self.path = path

    def check(self, repo: Repository, branch: str) -> None:
        if self.path == "":
            return
        entry = repo.view(branch=branch).lookup(self.path)
        if entry is None:
            raise BadRequest(f"input {self.path!r} does not exist on branch {branch!r}")
        if not entry.is_dir:
            raise BadRequest(f"input {self.path!r} is a file; a job's input is a directory")

    def tree(self, repo: Repository, root: str, outputs: Mapping[str, str]) -> str:
        if self.path == "":
            return root
        entry = repo.trees.lookup(root, self.path)
        if entry is None:
            return repo.trees.empty_tree  # no input yet: nothing to do, an empty output
        if not entry.is_dir:
            raise JobError(f"input {self.path!r} is a file, not a directory")
        return entry.hash


class JobOutput(Input):
    def __init__(self, job: str) -> None:
        self.job = job

    def check(self, repo: Repository, branch: str) -> None:
        """The job it reads from is checked with the DAG."""

    def tree(self, repo: Repository, root: str, outputs: Mapping[str, str]) -> str:
        return outputs[self.job]


class S3Prefix(Input):
    """The allowance is checked again on every run: the operator may have withdrawn it
    since the spec was stored."""

    def __init__(self, url: str, rules: InputRules) -> None:
        self.url = url
        self.rules = rules
        self._source: S3Source | None = None
        self._lock = threading.Lock()

    def source(self) -> S3Source:
        with self._lock:
            if self._source is None:
                self.rules.check_s3(self.url)
                self._source = S3Source(self.url, S3Config.from_env())
            return self._source

    def check(self, repo: Repository, branch: str) -> None:
        self.rules.check_s3(self.url)
        self.source().check()

    def tree(self, repo: Repository, root: str, outputs: Mapping[str, str]) -> str:
        self.rules.check_s3(self.url)
        src = self.source()
        tree = repo.trees.empty_tree
        changes: dict[str, Entry | None] = {}
        with repo.objects.batch() as b:
            for path, fingerprint, size in src.files():
                digest = blake3.blake3(f"s3:{fingerprint}:{size}".encode()).hexdigest()
                changes[path] = Entry("file", digest, size, chunks=())
                if len(changes) >= S3_APPLY_BATCH:
                    tree = repo.trees.apply(tree, changes, b)
                    changes = {}
            if changes:
                tree = repo.trees.apply(tree, changes, b)
        return tree

    def open(self, repo: Repository, path: str, entry: Entry) -> Iterator[bytes]:
        # size: an object replaced since the listing is refused, not sent short or long
        return self.source().open(path, size=entry.size)
