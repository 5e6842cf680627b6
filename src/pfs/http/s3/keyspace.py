"""A bucket's key space: `<ref>/<path>` over every branch of a repository (or one ref).

A key names a ref and a path. Listing a bucket walks the refs a prefix can reach (every
branch when the prefix names no ref yet; commits are listed only when the prefix names
one, since there is no end to them) and, in each, the files in S3 key order
(`repository.keys.walk_keys`), so a page costs what it shows: a `/`-delimited listing of
a bucket reads no file at all (each branch rolls up into `<branch>/` with one skip).

Blocking: everything here runs in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from ...errors import BranchNotFound, CommitNotFound
from ...paths import is_commit_like
from ...repository.keys import KeyWalk, walk_keys
from ...repository.reader import Reader
from ...repository.repo import Repository
from ...storage.trees import Commit, Entry
from .protocol import S3Error, check_ref
from .xml import ObjectInfo

S3_ETAG = "s3-etag"  # meta of a completed multipart upload: the ETag S3 gives it


def etag_of(entry: Entry) -> str:
    """A file's ETag: S3's multipart form when it was completed as one, else its content hash."""
    for name, value in entry.meta:
        if name == S3_ETAG:
            return value
    return entry.hash


@dataclass
class RefView:
    """A ref opened for reading: a commit (read-only) or a branch with its dirty writes.

    Last-Modified of a key is the time of the commit it is read at: the commit's for a
    commit, the branch head's for a file the head has as it is. A dirty file (written
    through S3 or `POST /file`, not committed yet) has no commit time: it reads as modified
    at `now`, the time of the request, and keeps its committed time again once committed
    (or discarded). A branch with no commit yet has only dirty files."""

    repo: Repository
    ref: str
    reader: Reader
    commit: Commit | None  # the commit read (a commit ref), or the branch head (None: no commits)
    branch: str | None  # None: a commit, read-only
    now: float
    _committed: Reader | None = None

    def lookup(self, path: str) -> Entry | None:
        entry = self.reader.lookup(path)
        return None if entry is None or entry.is_dir else entry

    def mtime(self, path: str, entry: Entry) -> float:
        if self.branch is None and self.commit is not None:
            return self.commit.time
        head = self.reader.head
        if head is None:
            return self.now
        commit = self.commit if self.commit is not None and self.commit.id == head else self.repo.get_commit(head)
        if self.reader.branch is None:  # nothing dirty on the branch: every file is the head's
            return commit.time
        if self._committed is None or self._committed.root != commit.tree:
            self._committed = self.repo.tree_reader(commit.tree)
        return commit.time if self._committed.lookup(path) == entry else self.now

    def info(self, path: str, entry: Entry) -> ObjectInfo:
        return ObjectInfo(size=entry.size, etag=etag_of(entry), last_modified=self.mtime(path, entry))


def open_ref(repo: Repository, ref: str, now: float | None = None) -> RefView:
    """A ref for reading. A branch that does not exist, or a commit not in this repository,
    is NoSuchKey (its keys do not exist); an ambiguous commit prefix is InvalidArgument."""
    now = time.time() if now is None else now
    check_ref(ref)
    try:
        if is_commit_like(ref):
            commit = repo.resolve(ref)
            return RefView(repo, ref, repo.view(commit=commit.id), commit, None, now)
        reader = repo.view(branch=ref)
    except (BranchNotFound, CommitNotFound) as e:
        raise S3Error("NoSuchKey", e.message) from None
    head = repo.get_commit(reader.head) if reader.head else None
    return RefView(repo, ref, reader, head, ref, now)


def open_commit(repo: Repository, ref: str, version_id: str, now: float | None = None) -> RefView:
    """A key's version: `version_id` is a commit id (or unique prefix). The ref is checked
    but not required to contain the commit: a repository's commits are all readable."""
    check_ref(ref)
    if not is_commit_like(version_id.lower()):
        raise S3Error("InvalidArgument", "Invalid version id specified")
    try:
        commit = repo.resolve(version_id)
    except CommitNotFound:
        raise S3Error("NoSuchVersion") from None
    now = time.time() if now is None else now
    return RefView(repo, ref, repo.view(commit=commit.id), commit, None, now)


class RefKeys:
    """One ref's files as (`<ref>/<path>`, ObjectInfo), in key order; a `SkipPrefix`."""

    def __init__(self, view: RefView, prefix: str, start_after: str | None) -> None:
        self.view = view
        self.base = view.ref + "/"
        self.walk: KeyWalk = walk_keys(view.reader, prefix, start_after)

    def __iter__(self) -> RefKeys:
        return self

    def __next__(self) -> tuple[str, ObjectInfo]:
        path, entry = next(self.walk)
        return self.base + path, self.view.info(path, entry)

    def skip_prefix(self, prefix: str) -> None:
        self.walk.skip_prefix(prefix[len(self.base) :])


class BucketKeys:
    """Every key of a bucket under `prefix`, after `start_after`, in key order; a
    `SkipPrefix` iterator for `protocol.list_page`.

    A prefix with a `/` names its ref (a branch or a commit): only that ref is walked, and
    an unknown ref lists nothing. A shorter prefix ("", "ma") reaches every branch whose
    `<branch>/` starts with it, in key order (`a-b/` sorts before `a/`), each opened only
    when the listing gets to it."""

    def __init__(self, repo: Repository, prefix: str, start_after: str | None, now: float | None = None) -> None:
        self.repo = repo
        self.prefix = prefix
        self.start_after = start_after
        self.now = time.time() if now is None else now
        ref, sep, _ = prefix.partition("/")
        if sep:
            refs = [ref]
        else:
            refs = sorted((b + "/" for b, _ in repo.branches() if (b + "/").startswith(prefix)))
            refs = [r[:-1] for r in refs]
        if start_after is not None:  # refs whose keys all sort before the marker: not opened
            refs = [r for r in refs if not (r + "/" < start_after and not start_after.startswith(r + "/"))]
        self.refs: Iterator[str] = iter(refs)
        self.current: RefKeys | None = None

    def __iter__(self) -> BucketKeys:
        return self

    def _open(self, ref: str) -> RefKeys | None:
        base = ref + "/"
        path_prefix = self.prefix[len(base) :] if self.prefix.startswith(base) else ""
        after = None
        if self.start_after is not None and self.start_after.startswith(base):
            after = self.start_after[len(base) :] or None
        try:
            view = open_ref(self.repo, ref, self.now)
        except S3Error:
            return None  # an unknown ref has no keys; a branch deleted since it was listed neither
        return RefKeys(view, path_prefix, after)

    def __next__(self) -> tuple[str, ObjectInfo]:
        while True:
            if self.current is None:
                ref = next(self.refs)  # StopIteration: the end
                self.current = self._open(ref)
                if self.current is None:
                    continue
            try:
                return next(self.current)
            except StopIteration:
                self.current = None

    def skip_prefix(self, prefix: str) -> None:
        if self.current is None:
            return
        if prefix.startswith(self.current.base) and prefix != self.current.base:
            self.current.skip_prefix(prefix)
            return
        # the prefix covers the whole ref ("master/", or "m" with no delimiter cut before it):
        # drop it, and every following ref it also covers
        self.current = None
        rest = [r for r in self.refs if not (r + "/").startswith(prefix)]
        self.refs = iter(rest)
