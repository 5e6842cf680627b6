"""The sync wire format: object-stream frames, limits, and the checks every request body passes.

Both ends and the client use it, so it imports nothing beyond the shared modules: loading
it (as `pfs.client` does) pulls in no storage, server or HTTP client code.

Object stream (`fetch` answers it, `objects` takes it): MAGIC, then frames of
  kind (1 byte) | key (32 bytes, raw BLAKE3) | length (4 bytes, big-endian) | payload
where the payload is the object's stored form (1-byte encoding + raw or zstd body), so
compressed objects travel compressed. An ERROR frame carries the sender's error as JSON
(key all zero); the END frame (key zero, no payload) marks a complete stream, so a cut
one is never mistaken for a finished one.

Object list (`walk` answers it): "<kind> <key>" lines, then "."; an error on the way is a
final "! <json>" line, since the status is sent already.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import orjson

from ..errors import BadRequest, PayloadTooLarge

MAGIC = b"PFSYNC1\n"
# The letters of pfs.storage.trees' object kinds (which this module does not import, to stay light).
COMMIT, TREE, MANIFEST, BLOB = "c", "t", "m", "b"
KINDS = frozenset((COMMIT, TREE, MANIFEST, BLOB))
ERROR, END = "!", "."
HEADER = struct.Struct(">c32sI")
HEADER_SIZE = HEADER.size
ZERO_KEY = bytes(32)

# Stored bytes of one frame, whatever its kind (the largest objects are manifests of multi-TB
# files). The receiver holds each kind to a tighter bound of its own, stored and plain
# (`Repository.received_limit`: a chunk to the chunker's maximum, a tree node to what a leaf
# can hold, a commit to 64 KiB, a manifest to what --max-file-size allows).
MAX_FRAME = 256 << 20
MAX_KEYS = 10_000  # object or commit ids in one request
MAX_JSON = 2 << 20  # bytes of a JSON request body
MAX_PAGE = 10_000  # commits in one `ancestors` answer

FLUSH_BYTES = 32 << 20  # the receiver makes what it got durable (and indexes commits) this often:
FLUSH_OBJECTS = 5_000  # an interrupted transfer keeps all but the last few MB of what it sent
PIECE = 1 << 20  # the sender's streams are handed to the event loop in pieces of about this size

WALK_COMMITS = 500  # commits per `walk` request
MISSING_BATCH = 2_000  # object ids per `missing` question (and per `fetch`/`objects` pair)
FIRST_PAGE, LAST_PAGE = 16, 4_096  # `ancestors` page sizes: small for a pull, growing x4 for a clone


def frame(kind: str, key: bytes, payload: bytes) -> bytes:
    return HEADER.pack(kind.encode(), key, len(payload)) + payload


def error_text(payload: bytes) -> str:
    """The message of an ERROR frame's JSON payload, bounded."""
    try:
        return str(orjson.loads(payload).get("message", "unknown error"))[:500]
    except (orjson.JSONDecodeError, AttributeError):
        return "unknown error"


def pieces(parts: Iterator[bytes]) -> Iterator[bytes]:
    """Small parts joined into pieces of about PIECE bytes (one thread hop each on the
    server); a big part goes alone, uncopied."""
    buf: list[bytes] = []
    size = 0
    for part in parts:
        if len(part) >= PIECE:
            if buf:
                yield b"".join(buf)
                buf, size = [], 0
            yield part
            continue
        buf.append(part)
        size += len(part)
        if size >= PIECE:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


# ---- request bodies ----------------------------------------------------------------------
def check_key(key: object, what: str = "object") -> str:
    """A full object or commit id: 64 lowercase hex digits."""
    if not isinstance(key, str) or len(key) != 64 or any(ch not in "0123456789abcdef" for ch in key):
        raise BadRequest(f"{what} id must be 64 lowercase hex digits, not {str(key)[:80]!r}")
    return key


def parse_commits(body: Any) -> list[str]:
    """`{"commits": [id, ...]}` from a request body, validated."""
    items = body.get("commits") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise BadRequest('body must be JSON {"commits": [commit id, ...]} with at least one id')
    if len(items) > MAX_KEYS:
        raise PayloadTooLarge(f"at most {MAX_KEYS} commits per request")
    return [check_key(c, "commit") for c in items]


def parse_objects(body: Any) -> list[tuple[str, str]]:
    """`{"objects": [[kind, id], ...]}` from a request body, validated."""
    items = body.get("objects") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise BadRequest('body must be JSON {"objects": [[kind, object id], ...]}')
    if len(items) > MAX_KEYS:
        raise PayloadTooLarge(f"at most {MAX_KEYS} objects per request")
    out: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, list) or len(item) != 2 or item[0] not in KINDS:
            raise BadRequest(f"each object must be [kind, id] with kind one of c, t, m, b; got {str(item)[:80]}")
        out.append((item[0], check_key(item[1])))
    return out


def parse_limit(body: Any) -> int:
    limit = body.get("limit", FIRST_PAGE) if isinstance(body, dict) else FIRST_PAGE
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_PAGE}")
    return limit
