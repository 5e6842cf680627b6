"""AWS Signature Version 4, as S3 checks it: the Authorization header, presigned URLs, aws-chunked bodies.

The flow for a request: `authenticate` finds which mechanism the request uses (None: anonymous) and checks
its structure and time (credential scope, signed headers, clock skew, expiry) before any key is looked up;
the caller finds the secret for `auth.access_key` (InvalidAccessKeyId if none) and calls `verify`, which
rebuilds the canonical request and compares signatures in constant time. A body sent as aws-chunked is
then read through `AwsChunkedDecoder`, which checks the chain of chunk signatures that starts at the
request's signature.

SigV2 (`AWS AKID:sig`, `?Signature=&AWSAccessKeyId=`) is refused: it signs too little of the request (no
body hash, no host) and every current SDK speaks SigV4. The canonical URI is the path as the client sent
it (S3 does not normalise or double-encode paths); a client that sent a path in another legal encoding
than the one it signed (`%7E` for `~`) is also accepted by trying the path re-encoded the AWS way.
"""

from __future__ import annotations

import calendar
import dataclasses
import hashlib
import hmac
import re
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .protocol import (
    CHECKSUMS,
    STREAMING_PAYLOADS,
    UNSIGNED_PAYLOAD,
    Checksum,
    S3Error,
    check_checksum,
    iso_time,
    lower_headers,
    new_checksum,
    parse_http_date,
)

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = 15 * 60  # seconds between the request's time and ours, as S3 allows
MAX_EXPIRES = 7 * 24 * 3600  # a presigned URL's longest life
MAX_AUTHORIZATION = 8192  # bytes of an Authorization header: a real one is ~250
MAX_SIGNED_HEADERS = 64
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")
_AMZ_DATE_RE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_DATE_RE = re.compile(r"[0-9]{8}")
_ACCESS_KEY_RE = re.compile(r"[A-Za-z0-9._~+=-]{1,128}")
_REGION_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEADER_NAME_RE = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]{1,128}")
_SIGV2 = "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
_PRESIGN_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)


@dataclass(frozen=True)
class SigV4Auth:
    """What a request's SigV4 credentials say. `amz_date` is the request time (YYYYMMDDTHHMMSSZ), set once it
    has been checked (`authenticate`, `parse_presigned`); `expires` is set for presigned URLs only."""

    access_key: str
    date: str  # YYYYMMDD, the credential scope's day
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: str = ""
    expires: int | None = None

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"

    @property
    def presigned(self) -> bool:
        return self.expires is not None


# -- parsing -------------------------------------------------------------------------------------------------


def _amz_time(value: str) -> float | None:
    """`YYYYMMDDTHHMMSSZ` as a timestamp, or None when it is not one (`20261399T...`)."""
    if not _AMZ_DATE_RE.fullmatch(value):
        return None
    try:
        return float(calendar.timegm(time.strptime(value, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        return None


def _parse_credential(value: str, code: str) -> tuple[str, str, str, str]:
    """`AKID/YYYYMMDD/region/s3/aws4_request` -> (access key, date, region, service)."""
    parts = value.split("/")
    if len(parts) != 5 or not all(parts):
        raise S3Error(
            code, 'the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        )
    access_key, date, region, service, terminal = parts
    if not _ACCESS_KEY_RE.fullmatch(access_key):
        raise S3Error(code, "the access key id in the Credential is malformed.")
    if not _DATE_RE.fullmatch(date) or _amz_time(date + "T000000Z") is None:
        raise S3Error(code, f'Invalid credential date "{date[:16]}".')
    if not _REGION_RE.fullmatch(region):
        raise S3Error(code, f'the region "{region[:64]}" in the Credential is malformed.')
    if service != "s3":
        raise S3Error(code, f'incorrect service "{service[:32]}". This endpoint belongs to "s3".')
    if terminal != "aws4_request":
        raise S3Error(code, f'incorrect terminal "{terminal[:32]}". This endpoint uses "aws4_request".')
    return access_key, date, region, service


def _parse_signed_headers(value: str, code: str) -> tuple[str, ...]:
    names = value.split(";")
    if len(names) > MAX_SIGNED_HEADERS or not all(_HEADER_NAME_RE.fullmatch(n) for n in names):
        raise S3Error(code, "SignedHeaders must be lowercase header names separated by ';'.")
    if names != sorted(set(names)):
        raise S3Error(code, "SignedHeaders must be sorted and without repeats.")
    if "host" not in names:
        raise S3Error(code, "SignedHeaders must include host.")
    return tuple(names)


def _check_signature_format(value: str) -> str:
    if not _SIGNATURE_RE.fullmatch(value):
        raise S3Error("SignatureDoesNotMatch", "the signature must be 64 lowercase hex digits.")
    return value


def parse_authorization(header: str) -> SigV4Auth:
    """The Authorization header's structure: `AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/
    aws4_request, SignedHeaders=host;x-amz-date, Signature=<64 hex>`, components in any order, spaces
    optional. The request time is not known here: `authenticate` checks it and sets `amz_date`."""
    if len(header) > MAX_AUTHORIZATION:
        raise S3Error("AuthorizationHeaderMalformed", "the Authorization header is too long.")
    scheme, _, rest = header.strip().partition(" ")
    if scheme == "AWS":
        raise S3Error("InvalidRequest", _SIGV2)
    if scheme != ALGORITHM:
        raise S3Error("InvalidArgument", "Unsupported Authorization Type")
    code = "AuthorizationHeaderMalformed"
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep or name not in ("Credential", "SignedHeaders", "Signature") or name in fields:
            raise S3Error(code, f"the authorization header is malformed near {part.strip()[:40]!r}.")
        fields[name] = value.strip()
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if n not in fields]
    if missing:
        raise S3Error(code, f"the authorization header is malformed: it has no {', '.join(missing)}.")
    access_key, date, region, service = _parse_credential(fields["Credential"], code)
    return SigV4Auth(
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        signed_headers=_parse_signed_headers(fields["SignedHeaders"], code),
        signature=_check_signature_format(fields["Signature"]),
    )


def presigned_kind(query: Sequence[tuple[str, str]]) -> str | None:
    """`v4` when the query carries SigV4 parameters, `v2` for SigV2 ones, else None."""
    names = {name for name, _ in query}
    if names.intersection(("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature")):
        return "v4"
    if "Signature" in names and "AWSAccessKeyId" in names:
        return "v2"
    return None


def parse_presigned(query: Sequence[tuple[str, str]], now: float | None = None) -> SigV4Auth:
    """A presigned URL's X-Amz-* parameters, with its time checked: not in the future beyond the allowed
    skew, not expired (AccessDenied, as S3), and X-Amz-Expires within 1..604800."""
    code = "AuthorizationQueryParametersError"
    params: dict[str, str] = {}
    for name, value in query:
        if name in _PRESIGN_PARAMS:
            if name in params:
                raise S3Error(code, f"{name} is given more than once.")
            params[name] = value
    if len(params) != len(_PRESIGN_PARAMS):
        raise S3Error(
            code,
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise S3Error(code, 'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    access_key, date, region, service = _parse_credential(params["X-Amz-Credential"], code)
    amz_date = params["X-Amz-Date"]
    at = _amz_time(amz_date)
    if at is None:
        raise S3Error(code, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
    if amz_date[:8] != date:
        raise S3Error(
            code, f'Invalid credential date "{date}". This date is not the same as X-Amz-Date: "{amz_date[:8]}".'
        )
    raw_expires = params["X-Amz-Expires"]
    if not re.fullmatch(r"[0-9]{1,7}", raw_expires):
        raise S3Error(code, "X-Amz-Expires should be a number")
    expires = int(raw_expires)
    if not 1 <= expires <= MAX_EXPIRES:
        raise S3Error(code, f"X-Amz-Expires must be between 1 and {MAX_EXPIRES} seconds (a week)")
    auth = SigV4Auth(
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        signed_headers=_parse_signed_headers(params["X-Amz-SignedHeaders"], code),
        signature=_check_signature_format(params["X-Amz-Signature"]),
        amz_date=amz_date,
        expires=expires,
    )
    now = time.time() if now is None else now
    if at - now > MAX_SKEW:
        raise S3Error("AccessDenied", "Request is not valid yet")
    if now > at + expires:
        raise S3Error(
            "AccessDenied",
            "Request has expired",
            extra={"X-Amz-Expires": str(expires), "Expires": iso_time(at + expires), "ServerTime": iso_time(now)},
        )
    return auth


def authenticate(
    headers: Mapping[str, str], query: Sequence[tuple[str, str]], now: float | None = None
) -> SigV4Auth | None:
    """The request's SigV4 credentials, structurally checked, or None for an anonymous request. Header auth
    takes its time from x-amz-date (else Date), which must be within 15 minutes of ours
    (RequestTimeTooSkewed) and on the credential's day, and needs x-amz-content-sha256 (S3 requires it).
    Both a header and a presigned query is InvalidArgument, as in S3."""
    h = lower_headers(headers)
    header = h.get("authorization")
    kind = presigned_kind(query)
    if header is not None and kind is not None:
        raise S3Error(
            "InvalidArgument",
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string "
            "parameter or the Authorization header should be specified",
        )
    if kind == "v2":
        raise S3Error("InvalidRequest", _SIGV2)
    if kind == "v4":
        return parse_presigned(query, now)
    if header is None:
        return None
    auth = parse_authorization(header)
    amz_date = h.get("x-amz-date")
    if amz_date is None and "date" in h:
        ts = parse_http_date(h["date"])
        try:
            amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(ts)) if ts is not None else ""
        except (OverflowError, OSError, ValueError):
            amz_date = ""
    at = _amz_time(amz_date or "")
    if amz_date is None or at is None:
        raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
    if amz_date[:8] != auth.date:
        raise S3Error(
            "AuthorizationHeaderMalformed",
            f'Invalid credential date "{auth.date}". This date is not the same as X-Amz-Date: "{amz_date[:8]}".',
        )
    now = time.time() if now is None else now
    if abs(at - now) > MAX_SKEW:
        raise S3Error(
            "RequestTimeTooSkewed",
            extra={"RequestTime": amz_date, "ServerTime": iso_time(now), "MaxAllowedSkewMilliseconds": "900000"},
        )
    payload_hash(auth, headers)  # present and well-formed
    return dataclasses.replace(auth, amz_date=amz_date)


def payload_hash(auth: SigV4Auth, headers: Mapping[str, str]) -> str:
    """The payload hash the signature covers: UNSIGNED-PAYLOAD for a presigned URL, else the
    x-amz-content-sha256 header (UNSIGNED-PAYLOAD, a STREAMING-* mode, or the body's hex SHA-256)."""
    if auth.presigned:
        return UNSIGNED_PAYLOAD
    value = lower_headers(headers).get("x-amz-content-sha256")
    if value is None:
        raise S3Error("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
    if "ECDSA" in value and value in STREAMING_PAYLOADS:
        raise S3Error("NotImplemented", "SigV4a (ECDSA) streaming payloads are not supported")
    if value != UNSIGNED_PAYLOAD and value not in STREAMING_PAYLOADS and not _SHA256_RE.fullmatch(value):
        raise S3Error(
            "InvalidArgument",
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, "
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER, or a valid sha256 value.",
        )
    return value


# -- signing -------------------------------------------------------------------------------------------------

# Printable ASCII but space: what may stand for itself in a path as sent; anything else was percent-encoded
# by any client that signed it.
_PATH_SAFE = bytes(range(0x21, 0x7F)).decode("ascii").replace("%", "")


def _path_text(raw_path: str | bytes) -> str:
    data = raw_path.encode("utf-8", "surrogatepass") if isinstance(raw_path, str) else raw_path
    data = data.partition(b"?")[0]
    text = urllib.parse.quote_from_bytes(data, safe=_PATH_SAFE + "%")
    return text or "/"


def _candidate_paths(raw_path: str | bytes) -> list[str]:
    """The path as sent, then (if different) its decoded bytes re-encoded as AWS's UriEncode does."""
    sent = _path_text(raw_path)
    aws = urllib.parse.quote_from_bytes(urllib.parse.unquote_to_bytes(sent), safe="/")
    return [sent] if aws == sent else [sent, aws]


def _uri_encode(text: str) -> str:
    return urllib.parse.quote(text, safe="", encoding="utf-8", errors="surrogatepass")


def canonical_query(query: Sequence[tuple[str, str]]) -> str:
    """Decoded (name, value) pairs, each URI-encoded (only A-Z a-z 0-9 - _ . ~ left as is) and sorted."""
    return "&".join(f"{k}={v}" for k, v in sorted((_uri_encode(k), _uri_encode(v)) for k, v in query))


def _header_values(headers: Mapping[str, str]) -> dict[str, str]:
    """Lowercase name -> value with runs of whitespace collapsed; a repeated header's values joined by ','."""
    values: dict[str, list[str]] = {}
    for name, value in headers.items():
        values.setdefault(name.lower(), []).append(" ".join(value.split()))
    return {name: ",".join(v) for name, v in values.items()}


def canonical_request(
    method: str,
    raw_path: str | bytes,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    signed_headers: Sequence[str],
    payload_hash: str,
) -> str:
    """SigV4's canonical request. `raw_path` as sent (not decoded), `query` decoded pairs without
    X-Amz-Signature, `headers` as received (any case; a header that is signed but absent counts as empty)."""
    values = _header_values(headers)
    lines = [method.upper(), _path_text(raw_path), canonical_query(query)]
    lines += [f"{name}:{values.get(name, '')}" for name in signed_headers]
    lines += ["", ";".join(signed_headers), payload_hash]
    return "\n".join(lines)


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    """The day's key: HMAC chain over date, region, service and "aws4_request" (a caller may cache it)."""
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def signature(key: bytes, to_sign: str) -> str:
    return hmac.new(key, to_sign.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def verify(
    auth: SigV4Auth,
    method: str,
    raw_path: str | bytes,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    payload_hash: str,
    secret: str,
) -> None:
    """Check the request's signature with the access key's secret (SignatureDoesNotMatch, whose XML names
    the string to sign and canonical request, as S3's does, so a client author can see the difference).
    Every x-amz-* header present must be signed (AccessDenied otherwise, as S3): else a captured request
    could be replayed with, say, another x-amz-copy-source."""
    if not auth.amz_date:
        raise ValueError("verify needs the request time: use authenticate() or parse_presigned()")
    names = {name.lower() for name in headers}
    unsigned = sorted(n for n in names if n.startswith("x-amz-") and n not in auth.signed_headers)
    if unsigned:
        raise S3Error(
            "AccessDenied",
            "There were headers present in the request which were not signed",
            extra={"HeadersNotSigned": ", ".join(unsigned)[:500]},
        )
    if auth.presigned:
        query = [(k, v) for k, v in query if k != "X-Amz-Signature"]
    key = signing_key(secret, auth.date, auth.region, auth.service)
    canonical = to_sign = ""
    for path in _candidate_paths(raw_path):
        canonical = canonical_request(method, path, query, headers, auth.signed_headers, payload_hash)
        to_sign = string_to_sign(auth.amz_date, auth.scope, canonical)
        if hmac.compare_digest(signature(key, to_sign), auth.signature):
            return
    raise S3Error(
        "SignatureDoesNotMatch",
        extra={
            "AWSAccessKeyId": auth.access_key,
            "StringToSign": to_sign,
            "SignatureProvided": auth.signature,
            "CanonicalRequest": canonical[:8192],
        },
    )


# -- aws-chunked bodies --------------------------------------------------------------------------------------


_CHUNK_SIZE_RE = re.compile(rb"[0-9a-fA-F]{1,16}")

_HEADER, _DATA, _DATA_END, _TRAILER, _DONE = range(5)


def is_aws_chunked(headers: Mapping[str, str]) -> bool:
    """Whether the body is aws-chunked: Content-Encoding names it or x-amz-content-sha256 is a STREAMING mode."""
    h = lower_headers(headers)
    encodings = [e.strip().lower() for e in h.get("content-encoding", "").split(",")]
    return "aws-chunked" in encodings or h.get("x-amz-content-sha256", "") in STREAMING_PAYLOADS


class AwsChunkedDecoder:
    """Incremental decoder of aws-chunked bodies (`<hex size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n` ...,
    a last chunk of size 0, then optional trailer lines such as `x-amz-checksum-crc32:<b64>` and an empty
    line).

    `feed` returns the payload bytes in what it is given and holds back at most one header or trailer
    line (4 KiB): chunk data is passed through however large the chunk, never buffered. With a signing
    key, each chunk's `chunk-signature` is checked against the chain S3 documents (string to sign
    `AWS4-HMAC-SHA256-PAYLOAD`, date, scope, previous signature, SHA-256 of "" and of the chunk; the first
    previous signature is the request's), and with `signed_trailer` the trailer's `x-amz-trailer-signature`
    too. A chunk is checked when its last byte has arrived, so bytes returned by `feed` are only trusted
    once `finish` returns: the caller stores the upload but makes it visible only then.

    Errors: framing -> InvalidRequest; a wrong or missing signature -> SignatureDoesNotMatch; a stream
    that ends early or disagrees with x-amz-decoded-content-length -> IncompleteBody; a trailing checksum
    that disagrees -> BadDigest."""

    MAX_LINE = 4096
    MAX_TRAILERS = 16

    def __init__(
        self,
        *,
        signing_key: bytes | None = None,
        seed_signature: str = "",
        amz_date: str = "",
        scope: str = "",
        signed_trailer: bool = False,
        decoded_length: int | None = None,
        trailer: str | None = None,
    ) -> None:
        if signing_key is not None and not (seed_signature and amz_date and scope):
            raise ValueError("chunk signatures need the seed signature, the request time and the scope")
        if trailer is not None and trailer not in CHECKSUMS:
            raise S3Error("InvalidRequest", f"unsupported trailer {trailer[:64]!r}")
        self._key = signing_key
        self._previous = seed_signature
        self._amz_date = amz_date
        self._scope = scope
        self._signed_trailer = signed_trailer and signing_key is not None
        self._decoded_length = decoded_length
        self._trailer = trailer
        self._checksum: Checksum | None = new_checksum(trailer) if trailer is not None else None
        self._state = _HEADER
        self._line = bytearray()
        self._remaining = 0
        self._chunk_signature = ""
        self._chunk_hash = hashlib.sha256()
        self._after_bare_lf = False
        self._trailer_signature: str | None = None
        self._trailer_lines: list[str] = []
        self.trailers: dict[str, str] = {}
        self.decoded = 0  # payload bytes returned so far

    @classmethod
    def from_request(cls, headers: Mapping[str, str], auth: SigV4Auth | None, secret: str | None) -> AwsChunkedDecoder:
        """A decoder for a request whose body `is_aws_chunked`, from its headers (x-amz-content-sha256 mode,
        x-amz-decoded-content-length, x-amz-trailer) and, for the signed modes, its verified credentials."""
        h = lower_headers(headers)
        mode = h.get("x-amz-content-sha256", "")
        if mode not in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER):
            if mode in STREAMING_PAYLOADS:
                raise S3Error("NotImplemented", "SigV4a (ECDSA) streaming payloads are not supported")
            raise S3Error("InvalidRequest", "aws-chunked bodies need x-amz-content-sha256 set to a STREAMING-* mode")
        raw_length = h.get("x-amz-decoded-content-length")
        if raw_length is None:
            raise S3Error("MissingContentLength", "aws-chunked bodies need x-amz-decoded-content-length")
        if not re.fullmatch(r"[0-9]{1,19}", raw_length):
            raise S3Error("InvalidArgument", "x-amz-decoded-content-length is not a number")
        trailer = h.get("x-amz-trailer")
        trailer = trailer.strip().lower() if trailer is not None else None
        if mode == STREAMING_UNSIGNED_TRAILER:
            return cls(decoded_length=int(raw_length), trailer=trailer)
        if auth is None or auth.presigned or secret is None:
            raise S3Error("InvalidRequest", f"{mode} needs a request signed with the Authorization header")
        return cls(
            signing_key=signing_key(secret, auth.date, auth.region, auth.service),
            seed_signature=auth.signature,
            amz_date=auth.amz_date,
            scope=auth.scope,
            signed_trailer=mode == STREAMING_SIGNED_TRAILER,
            decoded_length=int(raw_length),
            trailer=trailer,
        )

    @classmethod
    def unverified(cls, headers: Mapping[str, str], auth: SigV4Auth | None) -> AwsChunkedDecoder:
        """A decoder for a signed aws-chunked body whose access key's secret is not known (a
        server that accepts any credentials): the framing, length and trailing checksum are
        checked, the chunk signatures only for their form. Anonymous or presigned requests
        cannot send signed chunks (InvalidRequest), as with `from_request`."""
        h = lower_headers(headers)
        mode = h.get("x-amz-content-sha256", "")
        if mode in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER) and (auth is None or auth.presigned):
            raise S3Error("InvalidRequest", f"{mode} needs a request signed with the Authorization header")
        if mode == STREAMING_UNSIGNED_TRAILER:
            return cls.from_request(headers, auth, None)
        template = cls.from_request(headers, auth, "")  # every header check, with a throwaway key
        return cls(decoded_length=template._decoded_length, trailer=template._trailer)

    def feed(self, data: bytes) -> bytes:
        """The payload carried by `data` (possibly empty); raises S3Error on a malformed or forged stream."""
        out: list[memoryview] = []
        view = memoryview(data)
        i, n = 0, len(data)
        while i < n:
            if self._state == _DATA:
                piece = view[i : i + self._remaining]
                i += len(piece)
                self._remaining -= len(piece)
                self.decoded += len(piece)
                if self._decoded_length is not None and self.decoded > self._decoded_length:
                    raise S3Error("InvalidRequest", "the body is longer than x-amz-decoded-content-length")
                if self._key is not None:
                    self._chunk_hash.update(piece)
                if self._checksum is not None:
                    self._checksum.update(piece)
                out.append(piece)
                if not self._remaining:
                    self._state = _DATA_END
                continue
            if self._state == _DONE:
                raise S3Error("InvalidRequest", "data after the end of the aws-chunked body")
            room = self.MAX_LINE + 2 - len(self._line)  # what this line may still take, CRLF included
            end = data.find(b"\n", i, i + room)
            if end < 0:
                if n - i >= room:
                    raise S3Error("InvalidRequest", f"an aws-chunked header line is longer than {self.MAX_LINE} bytes")
                self._line += view[i:]
                break
            self._line += view[i:end]
            i = end + 1
            line = bytes(self._line)
            self._line.clear()
            crlf = line.endswith(b"\r")
            self._take_line(line[:-1] if crlf else line, crlf)
        return b"".join(out)

    def finish(self) -> dict[str, str]:
        """Check that the stream ended where it should (all chunks, trailers, the declared length) and
        return the trailers. A stream may omit the very last CRLF, as some SDKs do."""
        if self._state == _TRAILER and not self._line:
            self._end_trailers()
        if self._state != _DONE:
            raise S3Error("IncompleteBody", "the aws-chunked body ended before its last chunk")
        if self._decoded_length is not None and self.decoded != self._decoded_length:
            raise S3Error(
                "IncompleteBody",
                f"the body has {self.decoded} bytes, x-amz-decoded-content-length says {self._decoded_length}",
            )
        return self.trailers

    def _take_line(self, line: bytes, crlf: bool) -> None:
        if self._state == _HEADER:
            self._chunk_header(line, crlf)
        elif self._state == _DATA_END:
            if line or not crlf:
                raise S3Error("InvalidRequest", "chunk data is longer than its declared size")
            self._check_chunk()
            self._state = _HEADER
        elif self._state == _TRAILER:
            self._trailer_line(line, crlf)

    def _chunk_header(self, line: bytes, crlf: bool) -> None:
        if not crlf:
            raise S3Error("InvalidRequest", "an aws-chunked chunk header must end with CRLF")
        size_text, _, extensions = line.partition(b";")
        if not _CHUNK_SIZE_RE.fullmatch(size_text):
            raise S3Error("InvalidRequest", "an aws-chunked chunk size is not a hex number")
        chunk_signature = None
        for extension in extensions.split(b";") if extensions else ():
            name, _, value = extension.partition(b"=")
            if name.strip() == b"chunk-signature":
                chunk_signature = value.strip().decode("latin-1")
        if self._key is not None:
            if chunk_signature is None or not _SIGNATURE_RE.fullmatch(chunk_signature):
                raise S3Error("SignatureDoesNotMatch", "a chunk of a signed aws-chunked body has no chunk-signature")
            self._chunk_signature = chunk_signature
            self._chunk_hash = hashlib.sha256()
        size = int(size_text, 16)
        if size == 0:
            self._check_chunk()
            self._state = _TRAILER
        else:
            self._remaining = size
            self._state = _DATA

    def _check_chunk(self) -> None:
        if self._key is None:
            return
        to_sign = "\n".join(
            (
                "AWS4-HMAC-SHA256-PAYLOAD",
                self._amz_date,
                self._scope,
                self._previous,
                EMPTY_SHA256,
                self._chunk_hash.hexdigest(),
            )
        )
        if not hmac.compare_digest(signature(self._key, to_sign), self._chunk_signature):
            raise S3Error("SignatureDoesNotMatch", "a chunk signature of the aws-chunked body does not match")
        self._previous = self._chunk_signature

    def _trailer_line(self, line: bytes, crlf: bool) -> None:
        if not line:
            if crlf and self._after_bare_lf:
                self._after_bare_lf = False  # the CRLF of a "value\n\r\n" line, as AWS's examples write it
                return
            self._end_trailers()
            return
        self._after_bare_lf = not crlf
        name_raw, sep, value_raw = line.partition(b":")
        try:
            name = name_raw.strip().lower().decode("ascii")
            value = value_raw.strip().decode("ascii")
        except UnicodeDecodeError:
            raise S3Error("InvalidRequest", "an aws-chunked trailer is not ASCII") from None
        if not sep or not _HEADER_NAME_RE.fullmatch(name):
            raise S3Error("InvalidRequest", "an aws-chunked trailer line is not 'name:value'")
        if self._trailer_signature is not None:
            raise S3Error("InvalidRequest", "an aws-chunked trailer follows the trailer signature")
        if name == "x-amz-trailer-signature":
            self._trailer_signature = value
            return
        if name in self.trailers or len(self.trailers) >= self.MAX_TRAILERS:
            raise S3Error("InvalidRequest", "repeated or too many aws-chunked trailers")
        if name != self._trailer:
            raise S3Error("InvalidRequest", f"trailer {name!r} was not declared in x-amz-trailer")
        self.trailers[name] = value
        self._trailer_lines.append(f"{name}:{value}\n")

    def _end_trailers(self) -> None:
        self._state = _DONE
        if self._signed_trailer:
            assert self._key is not None
            if self._trailer_signature is None:
                raise S3Error("SignatureDoesNotMatch", "the aws-chunked trailer has no x-amz-trailer-signature")
            digest = hashlib.sha256("".join(self._trailer_lines).encode("ascii")).hexdigest()
            to_sign = "\n".join(("AWS4-HMAC-SHA256-TRAILER", self._amz_date, self._scope, self._previous, digest))
            if not hmac.compare_digest(signature(self._key, to_sign), self._trailer_signature):
                raise S3Error("SignatureDoesNotMatch", "the aws-chunked trailer signature does not match")
        if self._trailer is None:
            return
        value = self.trailers.get(self._trailer)
        if value is None:
            raise S3Error("IncompleteBody", f"the body ended without the trailer {self._trailer} it declared")
        check_checksum(self._trailer, value, self._checksum)
