"""S3 errors and request helpers that need no storage: names, ranges, conditions, digests, listing pages.

Everything a hostile client can send is turned into an `S3Error` with S3's own code and status,
never another exception, and every helper is bounded in time and memory by the size of its input
(listing consumes its iterator lazily and can tell the iterator to skip a whole rolled-up prefix).
The gateway's handlers map these errors to XML answers (`xml.error_xml`) in one place.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import datetime as dt
import email.utils
import hashlib
import hmac
import re
import urllib.parse
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar, runtime_checkable

from ...errors import InvalidName, InvalidPath
from ...paths import check_branch, check_repo_name, clean_path, is_commit_like

# code -> (HTTP status, S3's default message). Only S3's real code names, so SDKs map them to their own
# exception classes (botocore's ClientError codes, NoSuchKey, ...).
CODES: dict[str, tuple[int, str]] = {
    "AccessDenied": (403, "Access Denied"),
    "AuthorizationHeaderMalformed": (400, "The authorization header is malformed."),
    "AuthorizationQueryParametersError": (400, "Error parsing the query-string authentication parameters."),
    "BadDigest": (400, "The Content-MD5 you specified did not match what we received."),
    "BucketAlreadyExists": (409, "The requested bucket name is not available."),
    "BucketAlreadyOwnedByYou": (
        409,
        "Your previous request to create the named bucket succeeded and you already own it.",
    ),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty."),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed object size."),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed object size."),
    "IncompleteBody": (400, "You did not provide the number of bytes specified by the Content-Length HTTP header."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidAccessKeyId": (403, "The AWS access key Id you provided does not exist in our records."),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InsufficientStorage": (507, "There is not enough storage space left to complete the request."),  # not S3's
    "InvalidDigest": (400, "The Content-MD5 you specified is not valid."),
    "InvalidLocationConstraint": (400, "The specified location constraint is not valid."),
    "InvalidObjectState": (403, "The operation is not valid for the current state of the object."),
    "InvalidPart": (
        400,
        "One or more of the specified parts could not be found. The part may not have been uploaded, "
        "or the specified entity tag may not match the part's entity tag.",
    ),
    "InvalidPartOrder": (
        400,
        "The list of parts was not in ascending order. Parts must be ordered by part number.",
    ),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "InvalidStorageClass": (400, "The storage class you specified is not valid."),
    "InvalidURI": (400, "Couldn't parse the specified URI."),
    "KeyTooLongError": (400, "Your key is too long"),
    "MalformedXML": (
        400,
        "The XML you provided was not well-formed or did not validate against our published schema",
    ),
    "MaxMessageLengthExceeded": (400, "Your request was too big."),
    "MetadataTooLarge": (400, "Your metadata headers exceed the maximum allowed metadata size."),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchUpload": (
        404,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been "
        "aborted or completed.",
    ),
    "NoSuchVersion": (404, "The specified version does not exist."),
    "NotImplemented": (501, "A header you provided implies functionality that is not implemented"),
    "NotModified": (304, "Not Modified"),
    "OperationAborted": (409, "A conflicting conditional operation is currently in progress against this resource."),
    "PreconditionFailed": (412, "At least one of the pre-conditions you specified did not hold"),
    "RequestTimeout": (
        400,
        "Your socket connection to the server was not read from or written to within the timeout period.",
    ),
    "RequestTimeTooSkewed": (403, "The difference between the request time and the current time is too large."),
    "ServiceUnavailable": (503, "Service is unable to handle request."),
    "SignatureDoesNotMatch": (
        403,
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
    ),
    "SlowDown": (503, "Please reduce your request rate."),
    "TooManyParts": (400, "You have attempted to upload more parts than allowed."),
    "XAmzContentSHA256Mismatch": (400, "The provided 'x-amz-content-sha256' header does not match what was computed."),
}


class S3Error(Exception):
    """An S3 error answer: `code` and `status` from `CODES`; `extra` adds elements to the XML body (S3 adds
    e.g. RequestTime/ServerTime to RequestTimeTooSkewed) and `headers` to the response (Content-Range)."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        resource: str = "",
        extra: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        status, default = CODES[code]  # a KeyError here is a bug in the gateway, never the client's doing
        self.code = code
        self.status = status
        self.message = message or default
        self.resource = resource
        self.extra: dict[str, str] = dict(extra or {})
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(f"{code}: {self.message}")


# Limits S3 documents; the gateway keeps them so that SDKs' own checks and ours agree.
MAX_KEY_BYTES = 1024
MAX_KEYS = 1000  # per listing page and per DeleteObjects request
MAX_PARTS = 10_000
MIN_PART_SIZE = 5 << 20  # every part but the last
MAX_PART_SIZE = 5 << 30
MAX_PUT_SIZE = 5 << 30  # a single PutObject
MAX_TOKEN_CHARS = 4096  # a continuation token: base64 of at most MAX_KEY_BYTES bytes is far shorter

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"

# -- URLs, query strings, addressing --------------------------------------------------------------------------

_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def percent_decode(raw: str | bytes, *, plus_is_space: bool = False) -> str:
    """Decode %XX escapes exactly once into UTF-8 text, strictly: a stray `%` or bytes that are not UTF-8
    are an InvalidURI, never replaced by U+FFFD (a key must read back exactly as it was written)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if plus_is_space:
        data = data.replace(b"+", b" ")
    if _BAD_PERCENT.search(data):
        raise S3Error("InvalidURI", "the URI has a '%' that does not start a %XX escape")
    try:
        return urllib.parse.unquote_to_bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", "the URI does not decode to UTF-8 text") from None


def parse_query(raw: str | bytes, *, max_params: int = 200) -> list[tuple[str, str]]:
    """A raw query string as (name, value) pairs in order, decoded strictly (`+` is a space, as S3 reads it).
    Subresources without a value (`?uploads`) give an empty value. Bounded: more than `max_params` pairs is
    an InvalidArgument (S3 requests carry a dozen at most)."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if not data:
        return []
    pieces = data.split(b"&", max_params)
    if len(pieces) > max_params:
        raise S3Error("InvalidArgument", f"more than {max_params} query parameters")
    pairs = []
    for piece in pieces:
        if not piece:
            continue
        name, _, value = piece.partition(b"=")
        pairs.append((percent_decode(name, plus_is_space=True), percent_decode(value, plus_is_space=True)))
    return pairs


def _host_name(host: str) -> str:
    """The Host header without port or trailing dot, lowercased (`[::1]:9000` -> `[::1]`)."""
    name = host.strip().lower()
    if name.startswith("["):
        end = name.find("]")
        return name[: end + 1] if end > 0 else name
    if name.count(":") == 1:
        name = name.partition(":")[0]
    return name.rstrip(".")


def bucket_and_key(host: str, raw_path: str | bytes, base_domains: Sequence[str]) -> tuple[str | None, str | None]:
    """(bucket, key) of a request, either None when absent. Virtual-host style when the Host is
    `<bucket>.<base domain>` for one of `base_domains` (`repo.s3.localhost:9000`), else path style
    (`/bucket/key`). `raw_path` is the path as sent (ASGI `raw_path`, bytes preferred: a str is taken as
    UTF-8); the key is percent-decoded exactly once, so `a%2Fb` is the key `a/b` and `a%2541` is `a%41`.
    The bucket is returned unchecked: the caller answers `valid_bucket_name` failures."""
    path = raw_path.encode("utf-8", "surrogatepass") if isinstance(raw_path, str) else raw_path
    path = path.partition(b"?")[0]
    if not path.startswith(b"/"):
        raise S3Error("InvalidURI", "the request path must start with '/'")
    name = _host_name(host)
    for base in base_domains:
        base = _host_name(base).lstrip(".")
        if base and name.endswith("." + base) and len(name) > len(base) + 1:
            key = percent_decode(path[1:])
            return name[: -len(base) - 1], key or None
    bucket_raw, _, key_raw = path[1:].partition(b"/")
    bucket = percent_decode(bucket_raw)
    key = percent_decode(key_raw)
    return bucket or None, key or None


# -- names ---------------------------------------------------------------------------------------------------


def valid_bucket_name(name: str) -> bool:
    """A bucket is a repository: the repository layer's name rule (`paths.check_repo_name`)."""
    try:
        check_repo_name(name)
    except InvalidName:
        return False
    return True


def check_ref(ref: str) -> str:
    """A key's first segment: a branch name or a commit id (or unique prefix of 8+ hex digits)."""
    if is_commit_like(ref):
        return ref
    try:
        return check_branch(ref)
    except InvalidName:
        raise S3Error(
            "InvalidArgument", f"{ref[:100]!r} is neither a branch name nor a commit id (keys are <ref>/<path>)"
        ) from None


def split_ref_key(key: str) -> tuple[str, str]:
    """`<ref>/<path>` -> (ref, path). `ref/` gives an empty path, which only a listing prefix may have; a
    key without `/` names no ref and is an InvalidArgument (a prefix of refs, like `ma`, is the listing's
    business, not a key). The ref is checked; the path is not (see `check_key`)."""
    ref, sep, path = key.partition("/")
    if not sep:
        raise S3Error("InvalidArgument", f"key {key[:100]!r} has no ref: keys are <ref>/<path>, e.g. master/a.txt")
    return check_ref(ref), path


def check_key(key: str) -> tuple[str, str]:
    """An object key for reading or writing -> (ref, path): at most 1024 UTF-8 bytes (KeyTooLongError), no
    NUL, and a path pfs can store (pfs.paths: no empty, `.` or `..` segments, no backslash, `*` or control
    characters). Keys ending in `/` ("folder markers") are refused: pfs has no empty directories, and
    storing the marker as a file named like the directory would shadow it."""
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise S3Error("KeyTooLongError", f"Your key is too long (more than {MAX_KEY_BYTES} bytes)")
    if "\x00" in key:
        raise S3Error("InvalidArgument", "object key contains a NUL byte")
    ref, path = split_ref_key(key)
    if not path:
        raise S3Error("InvalidArgument", f"key {key[:100]!r} names a ref, not an object: keys are <ref>/<path>")
    if path.endswith("/"):
        raise S3Error("InvalidArgument", f"key {key[:100]!r} ends with '/': pfs stores no empty directories")
    try:
        return ref, clean_path(path)
    except InvalidPath as e:
        raise S3Error("InvalidArgument", f"invalid key {key[:100]!r}: {e.message}") from None


# -- times ---------------------------------------------------------------------------------------------------


def http_date(ts: float) -> str:
    """RFC 7231 date for Last-Modified and friends: `Thu, 01 Jan 2026 00:00:00 GMT`."""
    return email.utils.formatdate(ts, usegmt=True)


def iso_time(ts: float) -> str:
    """S3's XML timestamps, UTC with milliseconds: `2026-01-01T00:00:00.000Z`."""
    t = dt.datetime.fromtimestamp(ts, dt.UTC)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"


def parse_http_date(value: str) -> float | None:
    """An HTTP date as a timestamp, or None when it is not one (RFC 7232: an invalid date is ignored)."""
    if len(value) > 100:
        return None
    try:
        t = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


# -- ranges and conditions -----------------------------------------------------------------------------------

_RANGE_RE = re.compile(r"bytes=([0-9]*)-([0-9]*)")


def _bounded_int(digits: str) -> int:
    """int() of a digit string without the cost of a 10,000-digit one: anything past 2**64 is just huge."""
    return int(digits) if len(digits) <= 20 else 1 << 70


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A Range header -> inclusive (first, last) within `size`, or None for the whole object. Like S3: one
    range only (`bytes=a-b`, `bytes=a-`, `bytes=-n`); a multi-range, malformed or backwards (`5-1`) header
    is ignored; a start at or past the end, or `bytes=-0`, is InvalidRange (416, with Content-Range)."""
    if header is None:
        return None
    m = _RANGE_RE.fullmatch(header.strip())
    if not m or not (m[1] or m[2]):
        return None
    if m[1]:
        first = _bounded_int(m[1])
        last = _bounded_int(m[2]) if m[2] else size - 1
        if m[2] and last < first:
            return None
        if first >= size:
            raise _invalid_range(header, size)
        return first, min(last, size - 1)
    suffix = _bounded_int(m[2])
    if suffix == 0:
        raise _invalid_range(header, size)
    if size == 0:
        return None  # the last n bytes of nothing: the (empty) whole object, as RFC 7233 says
    return max(0, size - suffix), size - 1


def _invalid_range(header: str, size: int) -> S3Error:
    return S3Error(
        "InvalidRange",
        extra={"RangeRequested": header[:200], "ActualObjectSize": str(size)},
        headers={"Content-Range": f"bytes */{size}"},
    )


def quote_etag(etag: str) -> str:
    """ETags travel quoted in headers and XML (`"abc"`), as S3 sends them."""
    return etag if etag.startswith('"') and etag.endswith('"') and len(etag) >= 2 else f'"{etag}"'


def unquote_etag(etag: str) -> str:
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    if len(etag) >= 2 and etag.startswith('"') and etag.endswith('"'):
        etag = etag[1:-1]
    return etag


def _etag_matches(header: str, etag: str) -> bool:
    """An If-Match / If-None-Match list (`"a", "b"`, `*`, quotes optional as S3 takes them) against an ETag;
    strong comparison, `W/` ignored."""
    return any(tag.strip() == "*" or unquote_etag(tag) == etag for tag in header.split(","))


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names lowercased (a plain dict in any case, or Starlette's Headers); a repeated header keeps
    its last value."""
    return {name.lower(): value for name, value in headers.items()}


def check_conditions(
    headers: Mapping[str, str],
    etag: str | None,
    last_modified: float | None,
    *,
    for_write: bool = False,
    copy_source: bool = False,
) -> None:
    """Conditional requests with S3's precedence (RFC 7232 section 6): If-Match, else If-Unmodified-Since,
    fail with 412; then If-None-Match, else If-Modified-Since, give 304 NotModified on GET/HEAD. When
    If-Match holds, If-Unmodified-Since is not looked at; when If-None-Match is present, If-Modified-Since is
    not. `etag`/`last_modified` None mean the object does not exist (a conditional write): If-Match then is
    NoSuchKey, If-None-Match (`*`) holds. `for_write` (PutObject, CompleteMultipartUpload) turns a matching
    If-None-Match into 412 and ignores the dates; `copy_source` reads the `x-amz-copy-source-if-*` headers
    of CopyObject, whose failures are all 412. Dates compare at whole seconds, as HTTP dates are."""
    h = lower_headers(headers)
    pre = "x-amz-copy-source-" if copy_source else ""
    if_match, if_none_match = h.get(pre + "if-match"), h.get(pre + "if-none-match")
    if_modified, if_unmodified = h.get(pre + "if-modified-since"), h.get(pre + "if-unmodified-since")
    tag = unquote_etag(etag) if etag is not None else None
    mtime = int(last_modified) if last_modified is not None else None
    failed = S3Error("PreconditionFailed")
    if if_match is not None:
        if tag is None:
            raise S3Error("NoSuchKey") if for_write else failed
        if not _etag_matches(if_match, tag):
            failed.extra["Condition"] = "If-Match"
            raise failed
    elif if_unmodified is not None and not for_write:
        since = parse_http_date(if_unmodified)
        if since is not None and mtime is not None and mtime > since:
            failed.extra["Condition"] = "If-Unmodified-Since"
            raise failed
    not_modified = S3Error("NotModified")
    if etag is not None:
        not_modified.headers["ETag"] = quote_etag(etag)
    if last_modified is not None:
        not_modified.headers["Last-Modified"] = http_date(last_modified)
    if if_none_match is not None:
        if tag is not None and _etag_matches(if_none_match, tag):
            if for_write or copy_source:
                failed.extra["Condition"] = "If-None-Match"
                raise failed
            raise not_modified
    elif if_modified is not None and not for_write:
        since = parse_http_date(if_modified)
        if since is not None and mtime is not None and mtime <= since:
            if copy_source:
                failed.extra["Condition"] = "If-Modified-Since"
                raise failed
            raise not_modified


# -- digests -------------------------------------------------------------------------------------------------

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOADS = frozenset(
    {
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD",
        "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER",
    }
)
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")


def check_content_md5(header: str | None, digest: bytes | None) -> None:
    """Content-MD5 (base64 of 16 bytes) against the MD5 of what was received: malformed -> InvalidDigest,
    different -> BadDigest. No header: nothing to check; no digest: only the header's form."""
    if header is None:
        return
    try:
        want = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise S3Error("InvalidDigest") from None
    if len(want) != 16:
        raise S3Error("InvalidDigest")
    if digest is not None and not hmac.compare_digest(want, digest):
        raise S3Error("BadDigest")


def check_sha256(header_value: str | None, digest_hex: str | None) -> None:
    """x-amz-content-sha256 against the SHA-256 of the received body (no digest: only the header's form).
    UNSIGNED-PAYLOAD and the STREAMING-* modes promise no hash of the body (aws-chunked bodies are checked
    chunk by chunk instead)."""
    if header_value is None or header_value == UNSIGNED_PAYLOAD or header_value in STREAMING_PAYLOADS:
        return
    if not _SHA256_RE.fullmatch(header_value):
        raise S3Error(
            "InvalidArgument",
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-..., or a valid sha256 value.",
        )
    if digest_hex is not None and header_value.lower() != digest_hex:
        raise S3Error(
            "XAmzContentSHA256Mismatch",
            extra={"ClientComputedContentSHA256": header_value, "S3ComputedContentSHA256": digest_hex},
        )


class Checksum(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...


class _Crc32:
    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes | memoryview, /) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")


# The x-amz-checksum-* headers (and aws-chunked trailers) SDKs send, with their digest sizes. CRC32, SHA-1
# and SHA-256 are verified with the standard library; CRC32C and CRC64NVME only have their form checked.
CHECKSUMS = {
    "x-amz-checksum-crc32": 4,
    "x-amz-checksum-crc32c": 4,
    "x-amz-checksum-crc64nvme": 8,
    "x-amz-checksum-sha1": 20,
    "x-amz-checksum-sha256": 32,
}


def new_checksum(name: str) -> Checksum | None:
    """A running checksum for an x-amz-checksum-* name, or None when it cannot be computed here."""
    if name == "x-amz-checksum-crc32":
        return _Crc32()
    if name == "x-amz-checksum-sha1":
        return hashlib.sha1(usedforsecurity=False)
    if name == "x-amz-checksum-sha256":
        return hashlib.sha256()
    return None


def check_checksum(name: str, value: str, computed: Checksum | None) -> None:
    """A claimed checksum (base64, as SDKs send it) against the computed one: malformed -> InvalidRequest,
    different -> BadDigest. `computed` None: only the form is checked."""
    try:
        claimed = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        claimed = b""
    if len(claimed) != CHECKSUMS.get(name, -1):
        raise S3Error("InvalidRequest", f"Value for {name[:64]} header is invalid.")
    if computed is not None and not hmac.compare_digest(claimed, computed.digest()):
        algorithm = name.rpartition("-")[2].upper()
        raise S3Error("BadDigest", f"The {algorithm} you specified did not match the calculated checksum.")


class PayloadHasher:
    """MD5, SHA-256 and the SDK's x-amz-checksum-* of a body as it streams by, so a PutObject/UploadPart is
    checked at its end (before it is made visible) without being buffered. The headers that make claims
    about the body are read when the hasher is made, so a malformed one fails before the body is read."""

    def __init__(self, headers: Mapping[str, str] | None = None, need_md5: bool = True) -> None:
        """`need_md5`: the MD5 is wanted (a part's ETag) even if no Content-MD5 claims one.
        A digest nobody needs is not computed: each costs a pass over every byte."""
        h = lower_headers(headers or {})
        self.size = 0
        self._content_md5 = h.get("content-md5")
        self._content_sha256 = h.get("x-amz-content-sha256")
        want_md5 = need_md5 or self._content_md5 is not None
        self._md5 = hashlib.md5(usedforsecurity=False) if want_md5 else None
        claims_sha = self._content_sha256 is not None and re.fullmatch(r"[0-9a-fA-F]{64}", self._content_sha256)
        self._sha256 = hashlib.sha256() if claims_sha else None
        claims = [(name, value) for name, value in h.items() if name.startswith("x-amz-checksum-")]
        if len(claims) > 1:
            raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- header.")
        if claims and claims[0][0] not in CHECKSUMS:
            raise S3Error("InvalidRequest", f"unsupported checksum header {claims[0][0][:64]}")
        self._claim = claims[0] if claims else None
        if self._claim is not None:
            check_checksum(self._claim[0], self._claim[1], None)
        self._checksum = new_checksum(self._claim[0]) if self._claim is not None else None
        if self._content_md5 is not None:
            check_content_md5(self._content_md5, None)
        if self._content_sha256 is not None:
            check_sha256(self._content_sha256, None)

    def update(self, data: bytes | memoryview) -> None:
        if self._md5 is not None:
            self._md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        if self._checksum is not None:
            self._checksum.update(data)
        self.size += len(data)

    @property
    def md5(self) -> bytes:
        if self._md5 is None:
            raise ValueError("the MD5 was not asked for (need_md5=False)")
        return self._md5.digest()

    @property
    def sha256_hex(self) -> str | None:
        """The SHA-256, if the headers claimed one (None: not computed)."""
        return None if self._sha256 is None else self._sha256.hexdigest()

    @property
    def etag(self) -> str:
        """S3's ETag of a single-part object or of a part: the quoted hex MD5."""
        return f'"{self.md5.hex()}"'

    def check(self) -> None:
        """The body against every claim its headers made: Content-MD5 (BadDigest), x-amz-content-sha256
        (XAmzContentSHA256Mismatch), x-amz-checksum-* (BadDigest)."""
        if self._content_md5 is not None:
            check_content_md5(self._content_md5, self.md5)
        check_sha256(self._content_sha256, self.sha256_hex)
        if self._claim is not None:
            check_checksum(self._claim[0], self._claim[1], self._checksum)


def multipart_etag(part_md5s: Sequence[bytes]) -> str:
    """The ETag S3 gives a completed multipart upload: `"<hex MD5 of the parts' MD5 digests>-<parts>"`,
    quoted. Clients (aws s3 sync, rclone) compare it with what they compute, so the form matters."""
    if not 1 <= len(part_md5s) <= MAX_PARTS or any(len(d) != 16 for d in part_md5s):
        raise ValueError("multipart_etag takes 1..10000 MD5 digests of 16 bytes")
    return f'"{hashlib.md5(b"".join(part_md5s), usedforsecurity=False).hexdigest()}-{len(part_md5s)}"'


def parse_part_number(value: str | None) -> int:
    """UploadPart's partNumber: an integer 1..10000, else InvalidArgument (as S3 says it)."""
    if value is None or not re.fullmatch(r"[0-9]{1,5}", value) or not 1 <= int(value) <= MAX_PARTS:
        raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PARTS}, inclusive")
    return int(value)


def check_part_sizes(sizes: Sequence[int]) -> None:
    """CompleteMultipartUpload: at most 10,000 parts, each but the last at least 5 MiB (EntityTooSmall)."""
    if len(sizes) > MAX_PARTS:
        raise S3Error("TooManyParts", f"at most {MAX_PARTS} parts")
    for i, size in enumerate(sizes[:-1]):
        if size < MIN_PART_SIZE:
            raise S3Error(
                "EntityTooSmall",
                extra={"ProposedSize": str(size), "MinSizeAllowed": str(MIN_PART_SIZE), "PartNumber": str(i + 1)},
            )


# -- listing -------------------------------------------------------------------------------------------------

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


def parse_max_keys(value: str | None, default: int = MAX_KEYS) -> int:
    """max-keys (and max-uploads, max-parts): a non-negative integer, capped at 1000 like S3."""
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]+", value):
        raise S3Error("InvalidArgument", "Provided max-keys not an integer or within integer range")
    return MAX_KEYS if len(value) > 4 else min(int(value), MAX_KEYS)


def encode_token(last_key: str) -> str:
    """A ListObjectsV2 continuation token: opaque to clients, base64url of the last key or prefix returned."""
    return base64.urlsafe_b64encode(last_key.encode("utf-8")).decode("ascii").rstrip("=")


def decode_token(token: str) -> str:
    """The key a continuation token stands for; anything not made by `encode_token` is InvalidArgument."""
    bad = S3Error("InvalidArgument", "The continuation token provided is incorrect")
    if not token or len(token) > MAX_TOKEN_CHARS or not re.fullmatch(r"[A-Za-z0-9_-]+", token):
        raise bad
    try:
        key = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        raise bad from None
    if not key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise bad
    return key


@runtime_checkable
class SkipPrefix(Protocol[T_co]):
    """A key-sorted iterator that can jump over every key under a prefix (a tree walk skips a subtree).

    Contract of `skip_prefix(p)`: `list_page` calls it only with `p` a prefix of the key it was just given;
    afterwards the next item yielded must be the first one whose key does not start with `p` (all those are
    greater than `p`, the keys under a prefix being contiguous in sorted order). Skipping less is allowed
    (the items under `p` are then dropped one by one); skipping more loses keys."""

    def __next__(self) -> tuple[str, T_co]: ...

    def skip_prefix(self, prefix: str) -> None: ...


class SortedItems(Generic[T]):
    """A key-sorted sequence as a `SkipPrefix` iterator: for listings built in memory (multipart uploads,
    parts) and as the reference implementation of the contract."""

    def __init__(self, items: Sequence[tuple[str, T]], start_after: str | None = None) -> None:
        self._items = items
        self._keys = [key for key, _ in items]
        self._pos = 0 if start_after is None else bisect.bisect_right(self._keys, start_after)

    def __iter__(self) -> SortedItems[T]:
        return self

    def __next__(self) -> tuple[str, T]:
        if self._pos >= len(self._items):
            raise StopIteration
        self._pos += 1
        return self._items[self._pos - 1]

    def skip_prefix(self, prefix: str) -> None:
        # keys < prefix or under it map to 0, the keys after them to 1: monotone, so bisect finds the edge
        self._pos = bisect.bisect_left(
            self._keys, 1, lo=self._pos, key=lambda k: 0 if k < prefix or k.startswith(prefix) else 1
        )


@dataclass
class Page(Generic[T]):
    """One page of a listing: objects and common prefixes, each in key order; `next_marker` is the last key
    or common prefix returned when the listing is truncated (the V1 NextMarker; V2 encodes it as the
    continuation token)."""

    contents: list[tuple[str, T]] = field(default_factory=list)
    common_prefixes: list[str] = field(default_factory=list)
    is_truncated: bool = False
    next_marker: str | None = None

    @property
    def key_count(self) -> int:
        return len(self.contents) + len(self.common_prefixes)


def list_page(
    items: Iterator[tuple[str, T]],
    prefix: str,
    delimiter: str | None,
    max_keys: int,
    start_after: str | None,
) -> Page[T]:
    """One page of a listing from a key-sorted iterator of (key, value), consumed lazily.

    Keys not under `prefix` are skipped (the first one after the prefix's range ends the listing); with a
    delimiter, a key with the delimiter after the prefix rolls up into the common prefix ending at it,
    which counts once towards `max_keys` as in S3. Results (keys and common prefixes, in key order) named
    `<= start_after` are skipped, so a marker that is a common prefix skips everything under it. The page
    takes at most `max_keys` results and reads one result further to know whether it is truncated; it
    never reads further. `max_keys` 0 gives an empty, untruncated page without reading anything.

    Callers should seek their iterator past `start_after` and past keys before `prefix` when they can;
    `list_page` is correct either way. When the iterator is a `SkipPrefix`, each rolled-up common prefix is
    skipped with one `skip_prefix` call instead of reading every key under it (100,000 keys under `a/` are
    one result, and should cost one seek); a plain iterator is drained key by key instead."""
    page: Page[T] = Page()
    if max_keys <= 0:
        return page
    skip = items.skip_prefix if isinstance(items, SkipPrefix) else None
    delimiter = delimiter or None
    count = 0
    for key, value in items:
        if not key.startswith(prefix):
            if key < prefix:
                continue
            break  # sorted: nothing further can be under the prefix
        name, rolled = key, False
        if delimiter is not None:
            cut = key.find(delimiter, len(prefix))
            if cut >= 0:
                name, rolled = key[: cut + len(delimiter)], True
        if rolled and page.common_prefixes and page.common_prefixes[-1] == name:
            continue  # more of a prefix already returned (a plain iterator cannot skip it)
        if start_after is not None and name <= start_after:
            if rolled and skip is not None:
                skip(name)
            continue
        if count == max_keys:
            page.is_truncated = True
            break
        count += 1
        page.next_marker = name
        if rolled:
            page.common_prefixes.append(name)
            if skip is not None:
                skip(name)
        else:
            page.contents.append((key, value))
    if not page.is_truncated:
        page.next_marker = None
    return page
