"""S3 plumbing shared by the S3 object store and the S3 job input: where and as whom to
reach a bucket, one way to build a boto3 client (and an obstore store for the object
store's hot path), and `s3://bucket/prefix` parsing. The secret key never appears in a
repr, a log line or an error message."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import BadRequest, InvalidPath
from ..paths import clean_path

log = logging.getLogger("pfs.s3")
MAX_KEY = 1024  # S3's limit on a key, in UTF-8 bytes
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4_RE = re.compile(r"\d+\.\d+\.\d+\.\d+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class S3Config:
    """Where and as whom to reach S3; None fields fall back to boto3's defaults (AWS)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 3  # per request, including the first (boto3 "standard" retries with backoff)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Config:
        e = os.environ if env is None else env

        def get(*names: str) -> str | None:
            for n in names:
                if e.get(n):
                    return e[n]
            return None

        return cls(
            endpoint_url=get("PFS_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
            region=get("AWS_REGION", "AWS_DEFAULT_REGION"),
            access_key=get("AWS_ACCESS_KEY_ID"),
            secret_key=get("AWS_SECRET_ACCESS_KEY"),
        )

    def __repr__(self) -> str:
        secret = None if self.secret_key is None else "***"
        return (
            f"S3Config(endpoint_url={self.display_endpoint!r}, region={self.region!r}, "
            f"access_key={self.access_key!r}, secret_key={secret!r})"
        )

    __str__ = __repr__

    @property
    def display_endpoint(self) -> str | None:
        """The endpoint without any user:password@ part, for messages."""
        if self.endpoint_url is None:
            return None
        try:
            parts = urlsplit(self.endpoint_url)
            host = parts.netloc.rpartition("@")[2]
            return urlunsplit((parts.scheme, host, parts.path, "", ""))
        except ValueError:
            return "<invalid endpoint>"

    def scrub(self, text: str) -> str:
        """`text` with the secret (and endpoint credentials) blanked, for messages built from boto3 errors."""
        if self.secret_key:
            text = text.replace(self.secret_key, "***")
        if self.endpoint_url and self.display_endpoint and self.endpoint_url != self.display_endpoint:
            text = text.replace(self.endpoint_url, self.display_endpoint)
        return text


def parse_s3_url(url: str) -> tuple[str, str]:
    """ "s3://bucket/some/prefix" -> ("bucket", "some/prefix/"); the prefix is "" or ends in "/".

    The prefix is a directory: `s3://b/data` never matches `b/database/...`.
    """
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise BadRequest(f"not an s3:// url: {str(url)[:200]!r}")
    if _CONTROL.search(url):
        raise BadRequest(f"s3 url contains a control character: {url[:200]!r}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if bucket == "":
        raise BadRequest(f"s3 url has no bucket: {url[:200]!r}")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket or _IPV4_RE.fullmatch(bucket):
        raise BadRequest(
            f"invalid S3 bucket name {bucket[:100]!r}: 3-63 lowercase letters, digits, '.' and '-', "
            "starting and ending with a letter or digit"
        )
    if prefix == "":
        return bucket, ""
    if len(prefix.encode("utf-8", "surrogatepass")) > MAX_KEY:
        raise BadRequest(f"s3 prefix longer than {MAX_KEY} bytes")
    try:
        prefix = clean_path(prefix)
    except InvalidPath as exc:
        raise BadRequest(f"invalid prefix in s3 url {url[:200]!r}: {exc.message}") from None
    return bucket, prefix + "/"


def make_client(cfg: S3Config, pool: int = 32) -> Any:
    """A boto3 S3 client (thread-safe) with explicit timeouts and bounded retries, so a dead
    endpoint fails in seconds, not minutes. Raises what boto3 raises."""
    import boto3
    from botocore.config import Config

    region = cfg.region or ("us-east-1" if cfg.endpoint_url else None)  # S3-compatible stores sign as us-east-1
    session = boto3.session.Session(
        aws_access_key_id=cfg.access_key, aws_secret_access_key=cfg.secret_key, region_name=region
    )
    return session.client(
        "s3",
        endpoint_url=cfg.endpoint_url,
        config=Config(
            # path style: self-hosted stores (SeaweedFS, MinIO) rarely have wildcard DNS for buckets
            s3={"addressing_style": "path" if cfg.endpoint_url else "auto"},
            connect_timeout=cfg.connect_timeout,
            read_timeout=cfg.read_timeout,
            retries={"total_max_attempts": cfg.max_attempts, "mode": "standard"},
            max_pool_connections=pool,
            user_agent_extra="pfs",
            # No CRC32 on each PUT for the store to verify: the signed payload hash (plain
            # HTTP) or TLS already guards the transfer, and pfs checks every object against
            # its name when it reads it; the extra checksum cost both sides CPU for nothing
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def make_fast_store(cfg: S3Config, bucket: str) -> Any | None:
    """An obstore store for the object store's hot path (PUT, GET and HEAD of objects): its
    requests run in Rust outside the GIL, ~0.6 ms of CPU per 256 KiB PUT against boto3's
    ~3 ms. None without explicit credentials or a known region: then boto3, whose chain
    knows profiles, SSO and region redirects, does everything."""
    if cfg.access_key is None or cfg.secret_key is None or (cfg.region is None and not cfg.endpoint_url):
        return None
    from obstore.exceptions import BaseError
    from obstore.store import S3Store

    options: dict[str, Any] = {
        "connect_timeout": timedelta(seconds=cfg.connect_timeout),
        "timeout": timedelta(seconds=cfg.read_timeout),
    }
    where: dict[str, Any] = {}
    if cfg.endpoint_url:
        options["allow_http"] = cfg.endpoint_url.startswith("http://")
        where = {"endpoint": cfg.endpoint_url, "virtual_hosted_style_request": False}
    retry = {
        "max_retries": max(0, cfg.max_attempts - 1),
        "retry_timeout": timedelta(seconds=cfg.read_timeout),
        "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=5), "base": 2},
    }
    try:
        return S3Store(
            bucket,
            region=cfg.region or "us-east-1",
            access_key_id=cfg.access_key,
            secret_access_key=cfg.secret_key,
            client_options=options,  # type: ignore[arg-type]
            retry_config=retry,  # type: ignore[arg-type]
            **where,
        )
    except BaseError as exc:  # its HTTP client cannot start (no CA certificates in a bare image, say)
        why = cfg.scrub(" ".join(str(exc).split()))[:300]
        log.warning("S3 objects go through boto3: obstore cannot start: %s", why)
        return None


@dataclass(frozen=True)
class S3Failure:
    """What an S3 store said when it refused a request: its error code (or the HTTP status
    as a string when it sent none, as HEAD answers do), the status, its message (scrubbed)."""

    code: str
    status: int
    message: str

    @property
    def not_found(self) -> bool:
        """No such object (a missing bucket is not this: it is a store that lost its data)."""
        return self.code in ("404", "NoSuchKey", "NotFound")

    @property
    def label(self) -> str:
        return self.code or str(self.status)


_STATUS = re.compile(r"status code: (\d{3})")
_XML_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]{0,300})</Message>")


def s3_failure(exc: Exception, cfg: S3Config) -> S3Failure | None:
    """The store's answer inside a botocore ClientError or an obstore error, the one place
    that digs it out; None for any other exception (a connection that failed, a client
    misconfigured)."""
    from botocore.exceptions import ClientError
    from obstore.exceptions import BaseError, NotFoundError

    if isinstance(exc, (NotFoundError, FileNotFoundError)):  # obstore raises the builtin for a 404
        return S3Failure("NoSuchKey", 404, "not found")
    if isinstance(exc, BaseError):
        return _obstore_failure(str(exc), cfg)
    if not isinstance(exc, ClientError):
        return None
    err: Mapping[str, Any] = exc.response.get("Error") or {}
    status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
    code = str(err.get("Code") or "") or (str(status) if status else "")
    return S3Failure(code, status, cfg.scrub(str(err.get("Message") or ""))[:300])


def _obstore_failure(text: str, cfg: S3Config) -> S3Failure | None:
    """An obstore error's text carries the HTTP status and the store's XML answer; without
    a status the store was not reached (None)."""
    status = _STATUS.search(text)
    if status is None:
        return None
    code = _XML_CODE.search(text)
    message = _XML_MESSAGE.search(text)
    return S3Failure(
        code.group(1) if code else status.group(1),
        int(status.group(1)),
        cfg.scrub(message.group(1) if message else "")[:300],
    )
