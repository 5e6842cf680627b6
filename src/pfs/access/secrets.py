"""Access-key secrets at rest. SigV4 needs a secret in clear to check a signature (it is an
HMAC key, unlike a password), so secrets cannot be stored hashed: each is encrypted with
AES-256-GCM under the server key, its key id bound in as associated data (a ciphertext
copied to another key's row does not decrypt). The server key comes from `PFS_SERVER_KEY`
(base64), `PFS_SERVER_KEY_FILE`, or, for embedded storage, `<data dir>/server.key`, made
on first use and readable by its owner only. Every node of a cluster must be given the
same key; a node with another key says so instead of refusing every signature."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import BadRequest, Unavailable

KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ID_RE = re.compile(r"[A-Z0-9]{16,32}")
SECRET_RE = re.compile(r"[A-Za-z0-9/+=_.~-]{30,128}")
_CHECK_LABEL = b"pfs server key check v1"
_KEY_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def new_key_id() -> str:
    """`PFS` and 17 random base32 letters: 20 characters, like an AWS access key id."""
    return "PFS" + "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(17))


def new_secret() -> str:
    """40 URL-safe characters (240 random bits)."""
    return secrets.token_urlsafe(30)


def check_key_pair(key_id: str, secret: str) -> tuple[str, str]:
    if not KEY_ID_RE.fullmatch(key_id):
        raise BadRequest("an access key id is 16-32 uppercase letters and digits")
    if not SECRET_RE.fullmatch(secret):
        raise BadRequest("a secret is 30-128 letters, digits and '/+=_.~-'")
    return key_id, secret


class ServerKey:
    """The key that encrypts access-key secrets. `key` None: none configured (a cluster
    node not given one): secrets can then be neither made nor checked."""

    def __init__(self, key: bytes | None, source: str) -> None:
        if key is not None and len(key) != KEY_BYTES:
            raise BadRequest(f"the server key from {source} must be {KEY_BYTES} bytes (base64 of them)")
        self._aead = AESGCM(key) if key is not None else None
        self._check = hmac.new(key, _CHECK_LABEL, hashlib.sha256).hexdigest()[:32] if key is not None else None
        self._key = key
        self.source = source

    @classmethod
    def parse(cls, text: str, source: str) -> ServerKey:
        try:
            return cls(base64.b64decode(text.strip(), validate=True), source)
        except (binascii.Error, ValueError):
            raise BadRequest(f"the server key from {source} is not base64") from None

    @classmethod
    def load_or_create(cls, path: str) -> ServerKey:
        """The key in `path`, made (owner-only, fsynced) if there is none."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n")
                f.flush()
                os.fsync(f.fileno())
        with open(path) as f:
            return cls.parse(f.read(), path)

    @property
    def check(self) -> str | None:
        """A fingerprint of the key (an HMAC, not the key): tells nodes with different keys apart."""
        return self._check

    def derive(self, label: bytes) -> bytes | None:
        """A key for another purpose (`label`), the same on every node given this server key
        and useless for decrypting secrets; None without a server key."""
        return hmac.new(self._key, b"pfs derive v1\0" + label, hashlib.sha256).digest() if self._key else None

    def _need(self) -> AESGCM:
        if self._aead is None:
            raise Unavailable(
                "no server key is configured: set PFS_SERVER_KEY_FILE (the same file on every node) "
                "to create or check access keys"
            )
        return self._aead

    def encrypt(self, key_id: str, secret: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return base64.b64encode(nonce + self._need().encrypt(nonce, secret.encode(), key_id.encode())).decode()

    def decrypt(self, key_id: str, stored: str) -> str:
        raw = base64.b64decode(stored)
        try:
            return self._need().decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], key_id.encode()).decode()
        except InvalidTag:
            raise Unavailable(
                f"access key {key_id} cannot be decrypted with this node's server key ({self.source}): "
                "every node must use the same PFS_SERVER_KEY_FILE"
            ) from None
