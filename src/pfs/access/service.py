"""What a node's front ends need of access control, opened together."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..storage.identity import IdentityStore
from ..storage.meta import Database
from .audit import AuditLog
from .identity import Identity
from .secrets import KEY_BYTES, ServerKey

log = logging.getLogger("pfs.access")


@dataclass
class Access:
    identity: Identity
    audit: AuditLog

    @classmethod
    def open(cls, db: Database, key: ServerKey, admin_key: tuple[str, str] | None = None) -> Access:
        """Identity and audit over `db`. `admin_key`: the first admin's key pair (from
        `PFS_ADMIN_KEY_FILE`), made if the server has no user yet."""
        store = IdentityStore(db)
        identity = Identity(store, key)
        if admin_key is not None and identity.bootstrap(admin_key):
            log.warning("created the first server admin, 'admin', with the access key %s", admin_key[0])
        return cls(identity, AuditLog(store))

    @classmethod
    def ephemeral(cls, db: Database) -> Access:
        """With a server key that lives only in this process (in-process servers of tests)."""
        import secrets

        return cls.open(db, ServerKey(secrets.token_bytes(KEY_BYTES), "memory"))

    def close(self) -> None:
        self.audit.close()
