"""Who may do what, kept in the metadata database beside the catalog of repositories:
users, their access keys (secrets encrypted by the caller: this layer never sees one in
clear), roles per repository, protected branch rules, and the audit log.

Grants and rules name a repository by its id, never its name: ids are never reused, so a
repository deleted and made again under the same name starts with no grants and no rules.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..errors import AlreadyExists, NotFound

if TYPE_CHECKING:
    from .meta import Database

identity_md = sa.MetaData()
users_t = sa.Table(
    "users",
    identity_md,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("admin", sa.Boolean, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)
keys_t = sa.Table(
    "access_keys",
    identity_md,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("user", sa.String(64), nullable=False, index=True),
    sa.Column("secret", sa.Text, nullable=False),  # encrypted: see pfs.access.secrets
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False),
)
grants_t = sa.Table(
    "grants",
    identity_md,
    sa.Column("user", sa.String(64), primary_key=True),
    sa.Column("repo", sa.Integer, primary_key=True),
    sa.Column("role", sa.String(8), nullable=False),
)
protected_t = sa.Table(
    "protected_branches",
    identity_md,
    sa.Column("repo", sa.Integer, primary_key=True),
    sa.Column("pattern", sa.String(100), primary_key=True),
    sa.Column("created", sa.Float, nullable=False),
)
settings_t = sa.Table(
    "settings",
    identity_md,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
audit_t = sa.Table(
    "audit",
    identity_md,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("user", sa.String(64), nullable=True),  # None: anonymous
    sa.Column("key", sa.String(32), nullable=True),
    sa.Column("addr", sa.String(64), nullable=False),
    sa.Column("listener", sa.String(8), nullable=False),  # api | s3
    sa.Column("method", sa.String(10), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),  # the route or S3 operation
    sa.Column("repo", sa.String(63), nullable=True),
    sa.Column("target", sa.Text, nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Index("audit_user", "user", "id"),
    sa.Index("audit_repo", "repo", "id"),
)


@dataclass(frozen=True)
class UserRow:
    name: str
    admin: bool
    created: float


@dataclass(frozen=True)
class KeyRow:
    id: str
    user: str
    secret: str  # as stored: encrypted
    created: float
    disabled: bool


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: float
    user: str | None
    key: str | None
    addr: str
    listener: str
    method: str
    action: str
    repo: str | None
    target: str
    status: int
    request_id: str


AUDIT_FIELDS = tuple(c.name for c in audit_t.c if c.name != "id")


class IdentityStore:
    """The SQL of users, keys, grants, branch rules and audit entries (one class for SQLite
    and PostgreSQL, as `SqlMetaStore`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- settings ------------------------------------------------------------------
    def setting(self, name: str) -> str | None:
        with self.db.read() as c:
            r = c.execute(sa.select(settings_t.c.value).where(settings_t.c.name == name)).first()
        return None if r is None else str(r.value)

    def set_setting_once(self, name: str, value: str) -> str:
        """Store `value` unless the setting has one; returns the one that holds."""
        try:
            with self.db.write() as c:
                if c.execute(sa.select(settings_t.c.value).where(settings_t.c.name == name)).first() is None:
                    c.execute(settings_t.insert().values(name=name, value=value))
        except IntegrityError:
            pass
        held = self.setting(name)
        assert held is not None
        return held

    # ---- users ---------------------------------------------------------------------
    def count_users(self) -> int:
        with self.db.read() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(users_t)).scalar_one())

    def list_users(self) -> list[UserRow]:
        with self.db.read() as c:
            rows = c.execute(sa.select(users_t).order_by(users_t.c.name)).all()
        return [UserRow(r.name, bool(r.admin), r.created) for r in rows]

    def get_user(self, name: str) -> UserRow | None:
        with self.db.read() as c:
            r = c.execute(sa.select(users_t).where(users_t.c.name == name)).first()
        return None if r is None else UserRow(r.name, bool(r.admin), r.created)

    def create_user(self, name: str, admin: bool, key: KeyRow | None = None, only_first: bool = False) -> UserRow:
        """A user (and its first key), in one transaction. `only_first`: only if there is no
        user yet (bootstrap), else AlreadyExists."""
        row = UserRow(name, admin, time.time())
        try:
            with self.db.write() as c:
                if only_first and c.execute(sa.select(users_t.c.name).limit(1)).first() is not None:
                    raise AlreadyExists("users exist already: this server has been initialised")
                if c.execute(sa.select(users_t.c.name).where(users_t.c.name == name)).first() is not None:
                    raise AlreadyExists(f"user {name!r} already exists")
                c.execute(users_t.insert().values(name=row.name, admin=row.admin, created=row.created))
                if key is not None:
                    c.execute(keys_t.insert().values(**_key_values(key)))
        except IntegrityError:
            raise AlreadyExists(f"user {name!r} already exists") from None
        return row

    def set_admin(self, name: str, admin: bool) -> None:
        with self.db.write() as c:
            if c.execute(users_t.update().where(users_t.c.name == name).values(admin=admin)).rowcount == 0:
                raise NotFound(f"user {name!r} not found")

    def delete_user(self, name: str) -> None:
        """The user, its keys and its grants, in one transaction."""
        with self.db.write() as c:
            if c.execute(users_t.delete().where(users_t.c.name == name)).rowcount == 0:
                raise NotFound(f"user {name!r} not found")
            c.execute(keys_t.delete().where(keys_t.c.user == name))
            c.execute(grants_t.delete().where(grants_t.c.user == name))

    def count_admins(self, excluding: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(users_t).where(users_t.c.admin.is_(True))
        if excluding is not None:
            q = q.where(users_t.c.name != excluding)
        with self.db.read() as c:
            return int(c.execute(q).scalar_one())

    # ---- keys ----------------------------------------------------------------------
    def add_key(self, key: KeyRow) -> None:
        with self.db.write() as c:
            if c.execute(sa.select(users_t.c.name).where(users_t.c.name == key.user)).first() is None:
                raise NotFound(f"user {key.user!r} not found")
            c.execute(keys_t.insert().values(**_key_values(key)))

    def get_key(self, key_id: str) -> KeyRow | None:
        with self.db.read() as c:
            r = c.execute(sa.select(keys_t).where(keys_t.c.id == key_id)).first()
        return None if r is None else _key_row(r)

    def list_keys(self, user: str | None = None) -> list[KeyRow]:
        q = sa.select(keys_t).order_by(keys_t.c.user, keys_t.c.created)
        if user is not None:
            q = q.where(keys_t.c.user == user)
        with self.db.read() as c:
            return [_key_row(r) for r in c.execute(q).all()]

    def set_key_disabled(self, key_id: str, disabled: bool) -> None:
        with self.db.write() as c:
            if c.execute(keys_t.update().where(keys_t.c.id == key_id).values(disabled=disabled)).rowcount == 0:
                raise NotFound(f"access key {key_id!r} not found")

    def replace_key(self, old: str, new: KeyRow) -> None:
        """Rotation: the new key made and the old one disabled, in one transaction."""
        with self.db.write() as c:
            if c.execute(keys_t.update().where(keys_t.c.id == old).values(disabled=True)).rowcount == 0:
                raise NotFound(f"access key {old!r} not found")
            c.execute(keys_t.insert().values(**_key_values(new)))

    def delete_key(self, key_id: str) -> None:
        with self.db.write() as c:
            if c.execute(keys_t.delete().where(keys_t.c.id == key_id)).rowcount == 0:
                raise NotFound(f"access key {key_id!r} not found")

    # ---- grants --------------------------------------------------------------------
    def grants_of_user(self, user: str) -> dict[int, str]:
        with self.db.read() as c:
            rows = c.execute(sa.select(grants_t.c.repo, grants_t.c.role).where(grants_t.c.user == user)).all()
        return {int(r.repo): str(r.role) for r in rows}

    def grants_of_repo(self, repo: int) -> list[tuple[str, str]]:
        with self.db.read() as c:
            rows = c.execute(
                sa.select(grants_t.c.user, grants_t.c.role).where(grants_t.c.repo == repo).order_by(grants_t.c.user)
            ).all()
        return [(str(r.user), str(r.role)) for r in rows]

    def grant(self, user: str, repo: int, role: str) -> None:
        with self.db.write() as c:
            if c.execute(sa.select(users_t.c.name).where(users_t.c.name == user)).first() is None:
                raise NotFound(f"user {user!r} not found")
            done = c.execute(
                grants_t.update().where(grants_t.c.user == user, grants_t.c.repo == repo).values(role=role)
            ).rowcount
            if not done:
                c.execute(grants_t.insert().values(user=user, repo=repo, role=role))

    def revoke(self, user: str, repo: int) -> bool:
        with self.db.write() as c:
            return bool(c.execute(grants_t.delete().where(grants_t.c.user == user, grants_t.c.repo == repo)).rowcount)

    # ---- protected branches ----------------------------------------------------------
    def protected(self, repo: int) -> list[str]:
        with self.db.read() as c:
            rows = c.execute(
                sa.select(protected_t.c.pattern).where(protected_t.c.repo == repo).order_by(protected_t.c.pattern)
            ).all()
        return [str(r.pattern) for r in rows]

    def protect(self, repo: int, pattern: str) -> bool:
        """Add a rule; False if it was there."""
        try:
            with self.db.write() as c:
                q = sa.select(protected_t.c.pattern).where(protected_t.c.repo == repo, protected_t.c.pattern == pattern)
                if c.execute(q).first() is not None:
                    return False
                c.execute(protected_t.insert().values(repo=repo, pattern=pattern, created=time.time()))
        except IntegrityError:
            return False
        return True

    def unprotect(self, repo: int, pattern: str) -> bool:
        with self.db.write() as c:
            q = protected_t.delete().where(protected_t.c.repo == repo, protected_t.c.pattern == pattern)
            return bool(c.execute(q).rowcount)

    # ---- audit ---------------------------------------------------------------------
    def append_audit(self, entries: Iterable[dict[str, Any]]) -> None:
        rows = list(entries)
        if rows:
            with self.db.write() as c:
                c.execute(audit_t.insert(), rows)

    def audit(
        self, limit: int, before: int | None = None, user: str | None = None, repo: str | None = None
    ) -> list[AuditRow]:
        """Entries newest first; `before`: an entry id, for the next page."""
        q = sa.select(audit_t).order_by(audit_t.c.id.desc()).limit(limit)
        if before is not None:
            q = q.where(audit_t.c.id < before)
        if user is not None:
            q = q.where(audit_t.c.user == user)
        if repo is not None:
            q = q.where(audit_t.c.repo == repo)
        with self.db.read() as c:
            return [AuditRow(**r._mapping) for r in c.execute(q).all()]


def _key_values(key: KeyRow) -> dict[str, Any]:
    return {"id": key.id, "user": key.user, "secret": key.secret, "created": key.created, "disabled": key.disabled}


def _key_row(r: Any) -> KeyRow:
    return KeyRow(r.id, r.user, r.secret, r.created, bool(r.disabled))
