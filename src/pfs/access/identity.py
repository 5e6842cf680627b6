"""Users, access keys and roles: who a request is, and whether it may do a thing.

Access control is on once a server has a user. With none, every request is let through
(the embedded quickstart on 127.0.0.1 works with no credentials); `pfs serve` refuses a
non-loopback address in that state unless told to run insecure.

Permissions, lowest first: `read` < `write` < `admin` of one repository (granted per user
and repository), and server `admin` (a flag on the user), who may do anything: manage
users, keys and repositories. Lookups that every request makes (a key and its user, a
user's grants) are kept in memory for `CACHE_TTL` seconds; a change made on this node is
seen at once, one made through another node of a cluster within that time.
"""

from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ..errors import AlreadyExists, BadRequest, Conflict, Forbidden, NotFound, PfsError, Unauthorized
from ..paths import check_user_name
from ..storage.identity import IdentityStore, KeyRow, UserRow
from .secrets import KEY_ID_RE, ServerKey, check_key_pair, new_key_id, new_secret

CACHE_TTL = 2.0
CACHE_MAX = 10_000  # entries per cache: beyond it the cache starts again
ROLES = ("read", "write", "admin")
KEY_CHECK = "server_key_check"


class Permission(IntEnum):
    """What a route or S3 operation needs. Higher includes lower for one repository."""

    PUBLIC = 0  # anyone, even with access control on (liveness, who am I)
    USER = 1  # any signed-in user (their own keys; lists show only what they may read)
    READ = 2  # read role on the repository
    WRITE = 3
    ADMIN = 4  # admin role on the repository (job specs, grants, protected branches)
    SERVER = 5  # server admin (users, repositories, the audit log)

    @property
    def label(self) -> str:
        return {0: "none", 1: "signed in", 2: "read", 3: "write", 4: "repo admin", 5: "server admin"}[self.value]


_ROLE_PERMISSION = {"read": Permission.READ, "write": Permission.WRITE, "admin": Permission.ADMIN}


@dataclass(frozen=True)
class Principal:
    """Who a request is: a user and the key it signed with, or anonymous (user None).
    `open`: access control is off (no users), and anonymous may do everything."""

    user: str | None
    admin: bool = False
    key: str | None = None
    open: bool = False

    @property
    def shown(self) -> str:
        return self.user or "anonymous"


ANONYMOUS = Principal(None)
OPEN = Principal(None, open=True)


@dataclass(frozen=True)
class NewKey:
    """A key pair as made: the only time its secret is ever returned."""

    user: str
    id: str
    secret: str


@dataclass(frozen=True)
class KeyInfo:
    id: str
    user: str
    created: float
    disabled: bool


def check_role(role: str) -> str:
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}, not {role[:20]!r}")
    return role


class _TtlCache:
    def __init__(self) -> None:
        self._items: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Any:
        with self._lock:
            hit = self._items.get(name)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, name: str, value: Any) -> None:
        with self._lock:
            if len(self._items) >= CACHE_MAX:
                self._items.clear()
            self._items[name] = (time.monotonic() + CACHE_TTL, value)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


class Identity:
    """Authentication and authorization over an `IdentityStore`."""

    def __init__(self, store: IdentityStore, key: ServerKey) -> None:
        self.store = store
        self.server_key = key
        self._keys = _TtlCache()  # key id -> (KeyRow, secret in clear, UserRow)
        self._grants = _TtlCache()  # user -> {repo id: role}
        self._enabled: tuple[float, bool] = (-1.0, False)
        held = store.setting(KEY_CHECK)
        if held is not None and key.check is not None and not hmac.compare_digest(held, key.check):
            raise PfsError(
                f"the server key ({key.source}) is not the one this server's access keys were made with: "
                "give every node the same PFS_SERVER_KEY_FILE"
            )

    # ---- is access control on? ---------------------------------------------------------
    def enabled(self) -> bool:
        at, on = self._enabled
        if time.monotonic() - at >= CACHE_TTL:
            on = self.store.count_users() > 0
            self._enabled = (time.monotonic(), on)
        return on

    def needs_lookup(self, key_id: str | None = None, principal: Principal | None = None) -> bool:
        """Whether an answer about `key_id`, or about `principal`'s roles, needs the database
        (a cache miss): callers on an event loop then ask from a worker thread, and
        otherwise answer at once (most requests). A server admin's roles need no lookup."""
        if time.monotonic() - self._enabled[0] >= CACHE_TTL:
            return True
        if key_id is not None and self._keys.get(key_id) is None:
            return True
        if principal is None or principal.open or principal.admin or principal.user is None:
            return False
        return self._grants.get(principal.user) is None

    def _changed(self) -> None:
        self._keys.clear()
        self._grants.clear()
        self._enabled = (-1.0, False)

    # ---- authentication ------------------------------------------------------------------
    def key_secret(self, key_id: str) -> tuple[Principal, str]:
        """The principal of an access key and its secret (to check a signature with).
        Unauthorized for an unknown or disabled key, in the same words (a caller learns
        nothing about which ids exist)."""
        hit = self._keys.get(key_id)
        if hit is None:
            row = self.store.get_key(key_id) if KEY_ID_RE.fullmatch(key_id) else None
            user = self.store.get_user(row.user) if row is not None else None
            if row is None or user is None:
                raise Unauthorized("unknown or disabled access key")
            hit = (row, self.server_key.decrypt(row.id, row.secret), user)
            self._keys.put(key_id, hit)
        row, secret, user = hit
        if row.disabled:
            raise Unauthorized("unknown or disabled access key")
        return Principal(user.name, user.admin, row.id), secret

    def check_password(self, key_id: str, secret: str) -> Principal:
        """HTTP Basic: the key id and its secret, compared in constant time."""
        principal, real = self.key_secret(key_id)
        if not hmac.compare_digest(real.encode(), secret.encode("utf-8", "surrogatepass")):
            raise Unauthorized("unknown or disabled access key, or wrong secret")
        return principal

    def known_key(self, key_id: str) -> bool:
        """Whether `key_id` names a key (audit entries name a claimed key only if it does:
        a secret pasted into the key id field must not be recorded)."""
        return bool(KEY_ID_RE.fullmatch(key_id)) and self.store.get_key(key_id) is not None

    # ---- authorization -------------------------------------------------------------------
    def role(self, principal: Principal, repo_id: int) -> str | None:
        if principal.open or principal.admin:
            return "admin"
        if principal.user is None:
            return None
        grants = self._grants.get(principal.user)
        if grants is None:
            grants = self.store.grants_of_user(principal.user)
            self._grants.put(principal.user, grants)
        role = grants.get(repo_id)
        return str(role) if role is not None else None

    def allowed(self, principal: Principal, need: Permission, repo_id: int | None = None) -> bool:
        if principal.open or need == Permission.PUBLIC:
            return True
        if principal.user is None:
            return False
        if principal.admin or need == Permission.USER:
            return True
        if need == Permission.SERVER or repo_id is None:
            return False
        role = self.role(principal, repo_id)
        return role is not None and _ROLE_PERMISSION[role] >= need

    def require(self, principal: Principal, need: Permission, repo_id: int | None = None, repo: str = "") -> None:
        """Unauthorized (401) for anonymous, Forbidden (403) for a user, unless allowed.
        `repo`: the repository's name, for the message."""
        if self.allowed(principal, need, repo_id):
            return
        on = f" on repository {repo!r}" if repo and Permission.READ <= need <= Permission.ADMIN else ""
        if principal.user is None:
            raise Unauthorized(f"sign in: this needs {need.label} permission{on} (curl -u KEY_ID:SECRET)")
        raise Forbidden(f"{principal.user} may not do this: it needs {need.label} permission{on}")

    def require_self(self, principal: Principal, user: str) -> None:
        """A user's own keys and record, or a server admin's."""
        if principal.open or principal.admin or (principal.user is not None and principal.user == user):
            return
        if principal.user is None:
            raise Unauthorized("sign in to manage access keys")
        raise Forbidden(f"{principal.user} may manage only its own access keys (or be a server admin)")

    # ---- users -----------------------------------------------------------------------------
    def users(self) -> list[UserRow]:
        return self.store.list_users()

    def user(self, name: str) -> UserRow:
        row = self.store.get_user(check_user_name(name))
        if row is None:
            raise NotFound(f"user {name!r} not found")
        return row

    def create_user(self, name: str, admin: bool = False) -> UserRow:
        row = self.store.create_user(check_user_name(name), admin)
        self._changed()
        return row

    def create_user_with_key(self, name: str, admin: bool = False) -> NewKey:
        """A user and its first key in one transaction (no keyless user is left behind when
        the key cannot be made)."""
        key_id, secret = new_key_id(), new_secret()
        row = self._key_row(key_id, check_user_name(name), secret)
        self.store.set_setting_once(KEY_CHECK, self._key_check())
        self.store.create_user(name, admin, row)
        self._changed()
        return NewKey(name, key_id, secret)

    def init_admin(self, name: str = "admin", key: tuple[str, str] | None = None) -> NewKey:
        """The first user, a server admin, with a key (given, or made): only while there
        are no users (AlreadyExists afterwards)."""
        key_id, secret = check_key_pair(*key) if key is not None else (new_key_id(), new_secret())
        if self.store.count_users():  # before the secret is encrypted: a node without the key can say so
            raise AlreadyExists("users exist already: this server has been initialised")
        row = self._key_row(key_id, check_user_name(name), secret)
        self.store.create_user(name, True, row, only_first=True)
        self.store.set_setting_once(KEY_CHECK, self._key_check())
        self._changed()
        return NewKey(name, key_id, secret)

    def bootstrap(self, key: tuple[str, str], name: str = "admin") -> bool:
        """`PFS_ADMIN_KEY_FILE` at start: the first admin with this key, if there is no
        user yet. True if it was made."""
        try:
            self.init_admin(name, key)
        except AlreadyExists:
            return False
        return True

    def set_admin(self, name: str, admin: bool) -> None:
        if not admin and self.store.count_admins(excluding=name) == 0:
            raise Conflict(f"{name!r} is the last server admin: make another admin first")
        self.store.set_admin(check_user_name(name), admin)
        self._changed()

    def delete_user(self, name: str) -> None:
        user = self.user(name)
        if user.admin and self.store.count_admins(excluding=name) == 0:
            raise Conflict(f"{name!r} is the last server admin: make another admin first")
        self.store.delete_user(name)
        self._changed()

    # ---- keys ------------------------------------------------------------------------------
    def _key_check(self) -> str:
        check = self.server_key.check
        if check is None:
            self.server_key.encrypt("", "")  # raises: no server key
        assert check is not None
        return check

    def _key_row(self, key_id: str, user: str, secret: str) -> KeyRow:
        return KeyRow(key_id, user, self.server_key.encrypt(key_id, secret), time.time(), False)

    def create_key(self, user: str) -> NewKey:
        key_id, secret = new_key_id(), new_secret()
        self.store.set_setting_once(KEY_CHECK, self._key_check())
        self.store.add_key(self._key_row(key_id, check_user_name(user), secret))
        self._changed()
        return NewKey(user, key_id, secret)

    def keys(self, user: str | None = None) -> list[KeyInfo]:
        return [KeyInfo(k.id, k.user, k.created, k.disabled) for k in self.store.list_keys(user)]

    def key(self, key_id: str) -> KeyInfo:
        row = self.store.get_key(key_id) if KEY_ID_RE.fullmatch(key_id) else None
        if row is None:
            raise NotFound(f"access key {key_id[:40]!r} not found")
        return KeyInfo(row.id, row.user, row.created, row.disabled)

    def set_key_disabled(self, key_id: str, disabled: bool) -> None:
        self.key(key_id)
        self.store.set_key_disabled(key_id, disabled)
        self._changed()

    def rotate_key(self, key_id: str) -> NewKey:
        """A new key for the same user; the old one is disabled (delete it once nothing
        uses it, or enable it again)."""
        old = self.key(key_id)
        new_id, secret = new_key_id(), new_secret()
        self.store.replace_key(key_id, self._key_row(new_id, old.user, secret))
        self._changed()
        return NewKey(old.user, new_id, secret)

    def delete_key(self, key_id: str) -> None:
        self.key(key_id)
        self.store.delete_key(key_id)
        self._changed()

    # ---- grants ----------------------------------------------------------------------------
    def grants(self, repo_id: int) -> list[tuple[str, str]]:
        return self.store.grants_of_repo(repo_id)

    def grant(self, user: str, repo_id: int, role: str) -> None:
        self.store.grant(check_user_name(user), repo_id, check_role(role))
        self._changed()

    def revoke(self, user: str, repo_id: int) -> bool:
        done = self.store.revoke(check_user_name(user), repo_id)
        self._changed()
        return done
