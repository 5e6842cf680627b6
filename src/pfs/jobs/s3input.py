"""Job input from an S3 bucket: `s3://bucket/prefix`.

A listing becomes (relative path, fingerprint, size) triples for the scheduler's synthetic
tree; objects are streamed to workers piece by piece. Keys are untrusted names from
someone else's storage (S3Scanner CVE-2021-32061): a key that is not a clean pfs path is
skipped, never turned into a file name. The secret key never appears in a repr, a log
line or an error message.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import BadRequest, Conflict, FileNotFound, InvalidPath, PfsError, Unavailable
from ..paths import clean_path
from ..storage.s3 import S3Config, make_client, parse_s3_url, s3_failure

__all__ = ["CHUNK", "S3Config", "S3Source", "check_allowed", "parse_allowed", "parse_s3_url"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per piece streamed from an object
PAGE = 1000  # keys per listing request (the S3 maximum)
# error codes that mean "these credentials may not do this", whatever the store calls it
_DENIED = {
    "AccessDenied",
    "AllAccessDisabled",
    "AccountProblem",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
    "403",
}
_WRONG_REGION = {"AuthorizationHeaderMalformed", "IllegalLocationConstraintException", "PermanentRedirect"}
_TRANSIENT = {"InternalError", "RequestTimeout", "ServiceUnavailable", "SlowDown", "Throttling"}


def parse_allowed(entries: Iterable[str]) -> list[tuple[str, str]]:
    """The operator's list of what jobs may read, `bucket` or `bucket/prefix` entries, as
    (bucket, prefix) pairs in `parse_s3_url`'s form; a malformed entry is an error at start."""
    allowed = []
    for raw in entries:
        entry = raw.strip().removeprefix("s3://")
        if entry:
            allowed.append(parse_s3_url("s3://" + entry))
    return allowed


def check_allowed(url: str, allowed: Sequence[tuple[str, str]], own_bucket: str | None) -> None:
    """A 400 unless the operator allowed jobs to read `url`: an input reads with pfs's own
    credentials, so a spec must not pick what they reach. pfs's own bucket never qualifies:
    its raw objects are every branch's data, whatever the caller may read through the API."""
    bucket, prefix = parse_s3_url(url)
    if own_bucket is not None and bucket == own_bucket:
        raise BadRequest(f"s3 input {url[:300]!r}: bucket {bucket!r} holds pfs's own objects and is never a job input")
    for b, p in allowed:
        if b == bucket and prefix.startswith(p):
            return
    now = "" if allowed else " (it allows none)"
    raise BadRequest(
        f"s3 input {url[:300]!r} is not allowed on this server{now}: the operator lists the buckets "
        "and prefixes jobs may read when starting pfs (PFS_JOB_S3_INPUTS=bucket,bucket/prefix,...)"
    )


def _relative(key: str, prefix: str) -> str | None:
    """The pfs path of `key` under `prefix`, or None when the key is not a safe file name."""
    if not isinstance(key, str) or not key.startswith(prefix):
        return None
    rel = key[len(prefix) :]
    if rel == "" or rel.endswith("/"):  # the prefix itself, or a "directory marker"
        return None
    try:
        return rel if clean_path(rel) == rel else None
    except InvalidPath:
        return None


class S3Source:
    """One `s3://bucket/prefix` input. Thread-safe: boto3 clients may be shared by threads."""

    def __init__(self, url: str, config: S3Config) -> None:
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self.config = config
        self.skipped = 0  # keys the last files() left out (unsafe names, file/directory clashes)
        if (config.access_key is None) != (config.secret_key is None):
            raise BadRequest("S3 credentials are incomplete: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        self._client = self._make_client()

    def _make_client(self) -> Any:
        try:
            return make_client(self.config)
        except Exception as exc:
            raise self._translate(exc, "configure the S3 client") from None

    # ---- the interface -----------------------------------------------------------
    def files(self) -> Iterator[tuple[str, str, int]]:
        """(relative path, fingerprint, size) for every object under the prefix, one page in memory.

        Order is the store's listing order, which is sorted: UTF-8 byte order on AWS S3 and
        MinIO, path order (segment by segment) on SeaweedFS. In both, a key K comes before
        every K/..., so a clash between a file K and files below K is seen in a bounded
        stack: the file wins and the keys below it are skipped, as the tree would do.
        """
        self.skipped = 0
        files_above: list[str] = []  # yielded paths that are string prefixes of the current one
        last: str | None = None
        for page in self._pages():
            for obj in page.get("Contents") or ():
                key, size = obj.get("Key"), obj.get("Size")
                rel = _relative(key, self.prefix)
                if rel is None or not isinstance(size, int) or size < 0:
                    self._skip(key, "not a safe relative path" if rel is None else "no valid size")
                    continue
                if rel == last:
                    continue  # a store repeating a key across pages
                while files_above and not rel.startswith(files_above[-1]):
                    files_above.pop()
                clash = next((f for f in files_above if rel.startswith(f + "/")), None)
                if clash is not None:
                    self._skip(key, f"below the file {clash!r}")
                    continue
                files_above.append(rel)
                last = rel
                yield rel, self._fingerprint(obj), size

    def open(self, relpath: str, *, size: int | None = None) -> Iterator[bytes]:
        """The object's bytes in pieces of at most CHUNK.

        `size`, if given, is the size seen in the listing: an object replaced since then is
        an error rather than a silent mismatch with the Content-Length pfs already promised.
        """
        key = self.prefix + clean_path(relpath)
        what = f"read s3://{self.bucket}/{key[:300]}"
        try:
            resp = self._client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._translate(exc, what) from None
        body = resp["Body"]
        try:
            length = resp.get("ContentLength")
            if size is not None and length is not None and length != size:
                raise Conflict(f"{what}: the object changed since it was listed ({length} bytes, not {size})")
            sent = 0
            for piece in body.iter_chunks(CHUNK):
                sent += len(piece)
                if size is not None and sent > size:
                    raise Conflict(f"{what}: the object grew since it was listed (more than {size} bytes)")
                yield piece
            if size is not None and sent != size:
                raise Conflict(f"{what}: the object changed since it was listed ({sent} bytes, not {size})")
        except PfsError:
            raise
        except Exception as exc:
            raise self._translate(exc, what) from None
        finally:
            body.close()

    def check(self) -> None:
        """Fail when a spec is stored, not at its first run: 400 if the bucket is missing or not listable
        with these credentials, 503 if the endpoint does not answer."""
        try:
            self._client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except Exception as exc:
            raise self._translate(exc, f"list {self.url[:300]}") from None

    # ---- helpers -----------------------------------------------------------------
    def _pages(self) -> Iterator[dict[str, Any]]:
        what = f"list {self.url[:300]}"
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            pages = iter(
                paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": PAGE})
            )
        except Exception as exc:
            raise self._translate(exc, what) from None
        while True:
            try:
                page = next(pages)
            except StopIteration:
                return
            except Exception as exc:
                raise self._translate(exc, what) from None
            yield page

    @staticmethod
    def _fingerprint(obj: Mapping[str, Any]) -> str:
        """ETag (content hash or upload id on every S3) plus size; mtime if a store gives no ETag."""
        etag = str(obj.get("ETag") or "").strip('"')
        if not etag:
            etag = f"mtime:{obj.get('LastModified')}"
        return f"{etag}:{obj.get('Size')}"

    def _skip(self, key: object, why: str) -> None:
        self.skipped += 1
        log.warning("s3 input %s: skipping key %.300r: %s", self.url[:300], key, why)

    def _translate(self, exc: Exception, what: str) -> PfsError:
        """A boto3/botocore exception as the pfs error a user can act on, secret-free."""
        from botocore.exceptions import (
            NoCredentialsError,
            NoRegionError,
            ParamValidationError,
            PartialCredentialsError,
        )

        where = f" at {self.config.display_endpoint}" if self.config.endpoint_url else ""
        scrub = self.config.scrub
        failure = s3_failure(exc, self.config)
        if failure is not None:
            code, status, message = failure.code, failure.status, failure.message
            if code == "NoSuchBucket" or (code == "404" and getattr(exc, "operation_name", "") == "HeadBucket"):
                return BadRequest(f"cannot {what}: S3 bucket {self.bucket!r} does not exist{where}")
            if code in ("NoSuchKey", "404"):
                return FileNotFound(f"cannot {what}: no such object{where}")
            if code in _DENIED or status == 403:
                return BadRequest(
                    f"cannot {what}: access denied{where} ({failure.label}: {message or 'forbidden'}); "
                    f"check the access key {self.config.access_key or '(default credentials)'!r} and its secret"
                )
            if code in _WRONG_REGION or status == 301:
                return BadRequest(
                    f"cannot {what}: S3{where} says the bucket is in another region ({failure.label}: {message}); "
                    f"set AWS_REGION (now {self.config.region or 'unset'})"
                )
            if code in _TRANSIENT or status >= 500:
                return Unavailable(f"cannot {what}: S3{where} failed ({failure.label}: {message})")
            return BadRequest(f"cannot {what}: S3{where} refused ({failure.label}: {message})")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return BadRequest(f"cannot {what}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        if isinstance(exc, NoRegionError):
            return BadRequest(f"cannot {what}: no S3 region; set AWS_REGION")
        if isinstance(exc, ParamValidationError | ValueError):
            return BadRequest(f"cannot {what}: {scrub(str(exc))[:300]}")
        # connection refused, timeouts, a body cut short: the store, not the request
        return Unavailable(
            f"cannot {what}: S3 endpoint{where} unreachable ({type(exc).__name__}: {scrub(str(exc))[:300]})"
        )
