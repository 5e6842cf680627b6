"""The repositories of a server: named, created and deleted at run time, each with its own
tables and its own objects, all in one metadata database and one object store.

A name is looked up in the catalog on every use (one indexed read), so a repository
deleted or re-created through another node is never served from a stale cache; the
`Repository` object of an id is kept, since ids are never reused (its branch locks must
be shared by every request of this process).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import Conflict, RepositoryNotEmpty, RepositoryNotFound
from ..paths import check_repo_name
from ..storage import collect
from ..storage.identity import IdentityStore
from ..storage.meta import Database, RepoRow, SqlMetaStore
from ..storage.objects import ObjectStore
from .protection import BranchRules
from .repo import Repository

log = logging.getLogger("pfs.repos")


@dataclass(frozen=True)
class RepoInfo:
    """A repository as users see it."""

    name: str
    created: float
    default: bool
    id: int = 0  # the catalog's (grants name it)


class Repositories:
    """Every repository of a server. `default` names the one the seed's unprefixed routes
    address (made if missing). `objects` is the store of repository id 0; the others live
    in its children (`repos/<id>/`)."""

    def __init__(
        self,
        db: Database,
        objects: ObjectStore,
        default: str = "default",
        max_file_size: int | None = None,
    ) -> None:
        self.db = db
        self.objects = objects
        self.default_name = check_repo_name(default)
        self.max_file_size = max_file_size
        self._open: dict[int, Repository] = {}
        self._lock = threading.Lock()
        self._default: Repository | None = None
        collect.board(db)  # this process is a node: a garbage collection waits for it
        if db.get_repo(self.default_name) is None:
            with contextlib.suppress(Conflict):  # another node made it
                db.create_repo(self.default_name)

    # ---- lookup ----------------------------------------------------------------------
    def get(self, name: str | None = None) -> Repository:
        """Repository `name` (None: the default); 404 if there is none by that name."""
        name = self.default_name if name is None else check_repo_name(name)
        row = self.db.get_repo(name)
        if row is None:
            raise RepositoryNotFound(f"repository {name!r} not found")
        return self._opened(row)

    @property
    def default(self) -> Repository:
        """The default repository, kept once found: it cannot be deleted, so every
        unprefixed request after the first costs no lookup."""
        if self._default is None:
            self._default = self.get(None)
        return self._default

    def _opened(self, row: RepoRow) -> Repository:
        with self._lock:
            repo = self._open.get(row.id)
            if repo is None or repo.name != row.name:
                objects = self.objects if row.id == 0 else self.objects.child(str(row.id))
                rules = BranchRules(IdentityStore(self.db), row.id)
                repo = Repository(
                    objects, SqlMetaStore(self.db, row), self.max_file_size, name=row.name, rules=rules, repo_id=row.id
                )
                self._open[row.id] = repo
            return repo

    def list(self) -> list[RepoInfo]:
        return [self._info(r) for r in self.db.list_repos()]

    def info(self, name: str) -> RepoInfo:
        row = self.db.get_repo(check_repo_name(name))
        if row is None:
            raise RepositoryNotFound(f"repository {name!r} not found")
        return self._info(row)

    def _info(self, row: RepoRow) -> RepoInfo:
        return RepoInfo(row.name, row.created, row.name == self.default_name, row.id)

    def each(self) -> Iterator[Repository]:
        """Every repository, opened (what the job scheduler and fsck walk)."""
        for row in self.db.list_repos():
            yield self._opened(row)

    # ---- changes ---------------------------------------------------------------------
    def create(self, name: str) -> RepoInfo:
        """A new, empty repository with a master branch; 409 if the name is taken."""
        row = self.db.create_repo(check_repo_name(name))
        log.info("created repository %s (id %d)", row.name, row.id)
        return self._info(row)

    def delete(self, name: str, force: bool = False) -> None:
        """Delete a repository: its branches, commits, staged writes, jobs, runs and objects.
        One with any commit, staged write or job is kept unless `force`; the default one
        always is (the seed's routes address it)."""
        name = check_repo_name(name)
        row = self.db.get_repo(name)
        if row is None:
            raise RepositoryNotFound(f"repository {name!r} not found")
        if name == self.default_name:
            raise Conflict(f"repository {name!r} is this server's default repository; it cannot be deleted")
        repo = self._opened(row)
        if not force:
            what = _contents(repo)
            if what:
                raise RepositoryNotEmpty(f"repository {name!r} is not empty ({what}); delete with force to remove it")
        self.db.drop_repo(row)
        with self._lock:
            self._open.pop(row.id, None)
        # The catalog row and tables are gone in one transaction: from here no request can
        # reach these objects. A crash before they are all removed leaves only garbage.
        try:
            repo.objects.destroy()
        except Exception:
            log.exception("removing the objects of deleted repository %s (id %d) failed", name, row.id)
        log.info("deleted repository %s (id %d)", name, row.id)

    def close(self) -> None:
        self.db.close()


def _contents(repo: Repository) -> str:
    """What makes a repository non-empty, for the refusal's message ("" if empty)."""
    found = []
    branches = repo.branches()
    if any(head for _, head in branches):
        found.append("commits")
    if any(repo.meta.has_staged(b) for b, _ in branches):
        found.append("uncommitted writes")
    if repo.meta.list_jobs():
        found.append("jobs")
    return ", ".join(found)


def open_repositories(db_url: str, objects: ObjectStore, default: str, max_file_size: int | None) -> Repositories:
    """A server's repositories from its database url and object store."""
    return Repositories(Database(db_url, default), objects, default, max_file_size)
