"""Objects in an S3-compatible store (AWS S3, SeaweedFS, MinIO, Ceph): the cluster backend.

Layout: `s3://bucket/prefix/objects/ab/cdef…`, each object encoded exactly as on local disk
(header + optional zstd body) and verified against its name on every read. A successful
PUT is durable, so a batch is durable once every PUT it started has answered: that is the
barrier the write order (blobs → trees → commit → ref swap) needs. Uploads run on a
shared thread pool with a bound on bytes in flight, so a fast client cannot fill memory
when the store is slow.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import obstore

from .. import metrics
from ..errors import BadRequest, InsufficientStorage, PfsError, Unavailable
from .objects import _KEY_RE, Batch, ObjectStore, PooledBatch, StoredObject, check_key, encode_parts, missing
from .s3 import S3Config, make_client, make_fast_store, parse_s3_url, s3_failure

log = logging.getLogger("pfs.objects.s3")

UPLOAD_THREADS = 16  # PUTs in flight per process (latency-bound, not CPU-bound)
HEAD_FIRST = 1 << 20  # objects at least this big are looked up before upload (dedupe)
_FULL = {"QuotaExceeded", "XMinioStorageFull", "InsufficientStorage", "StorageFull"}
_pool = ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="pfs-s3")
HEAD_THREADS = 16  # lookups in flight per process for `has_many` (its own pool: never queued behind uploads)
_head_pool = ThreadPoolExecutor(max_workers=HEAD_THREADS, thread_name_prefix="pfs-s3-head")


class S3Batch(PooledBatch[None]):
    MAX_INFLIGHT_BYTES = 32 << 20
    pool = _pool

    def __init__(self, store: S3ObjectStore) -> None:
        super().__init__()
        self.store = store

    def _write(self, key: str, data: bytes | memoryview, compress: bool) -> None:
        self.store.upload(key, data, compress)

    def _raise_failed(self) -> None:
        self.flush()

    def flush(self) -> None:
        error: BaseException | None = None
        try:
            for _, fut in self.pending:
                try:
                    fut.result()
                except BaseException as exc:  # wait for every PUT, then raise the first error
                    error = error or exc
        finally:
            self._reset()
        if error is not None:
            raise error

    def abort(self) -> None:
        for _, fut in self.pending:
            fut.cancel()
        with contextlib.suppress(BaseException):
            self.flush()  # objects already stored are unreferenced garbage, never half-written


class S3ObjectStore(ObjectStore):
    def __init__(self, url: str, config: S3Config, create_bucket: bool = True) -> None:
        self.url = url
        self.bucket, prefix = parse_s3_url(url)
        self.base = prefix
        self.prefix = prefix + "objects/"
        self.config = config
        self._child = False
        if (config.access_key is None) != (config.secret_key is None):
            raise BadRequest("S3 credentials are incomplete: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        try:
            self.client = make_client(config, pool=UPLOAD_THREADS + 16)
            self.fast = make_fast_store(config, self.bucket)  # objects' PUT, GET, HEAD (None: boto3)
        except Exception as exc:
            raise self._error(exc, "configure the S3 client") from None
        self._check_bucket(create_bucket)

    def _check_bucket(self, create: bool) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except Exception as exc:
            failure = s3_failure(exc, self.config)
            if failure is None or failure.code not in ("404", "NoSuchBucket") or not create:
                raise self._error(exc, f"reach bucket {self.bucket!r}") from None
        try:
            self.client.create_bucket(Bucket=self.bucket)
            log.warning("created S3 bucket %s", self.bucket)
        except Exception as exc:
            failure = s3_failure(exc, self.config)
            if failure is None or failure.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._error(exc, f"create bucket {self.bucket!r}") from None  # else: another node made it

    def name(self, key: str) -> str:
        return self.prefix + key[:2] + "/" + key[2:]

    # ---- the interface -------------------------------------------------------------
    def has(self, key: str) -> bool:
        name = self.name(check_key(key))
        try:
            if self.fast is not None:
                obstore.head(self.fast, name)
            else:
                self.client.head_object(Bucket=self.bucket, Key=name)
            return True
        except Exception as exc:
            failure = s3_failure(exc, self.config)
            if failure is not None and failure.not_found:
                return False
            raise self._error(exc, f"look up object {key}") from None

    def upload(self, key: str, data: bytes | memoryview, compress: bool) -> None:
        if len(data) >= HEAD_FIRST and self.stored_already(key):
            return  # a big chunk stored before (dedupe): not sent again
        if len(data) < HEAD_FIRST and self.on_blind_write is not None:
            self.on_blind_write(key)
        head, body = encode_parts(data, compress)
        try:
            if self.fast is not None:
                obstore.put(self.fast, self.name(key), head + bytes(body), use_multipart=False)
            else:
                self.client.put_object(Bucket=self.bucket, Key=self.name(key), Body=head + bytes(body))
        except Exception as exc:
            raise self._error(exc, f"store object {key}") from None

    def _read(self, key: str) -> bytes:
        """An object's stored bytes, unchecked."""
        name = self.name(check_key(key))
        try:
            if self.fast is not None:
                return obstore.get(self.fast, name).bytes().to_bytes()
            resp = self.client.get_object(Bucket=self.bucket, Key=name)
            return resp["Body"].read()  # type: ignore[no-any-return]
        except Exception as exc:
            failure = s3_failure(exc, self.config)
            if failure is not None and failure.not_found:
                raise missing(key) from None
            raise self._error(exc, f"read object {key}") from None

    def has_many(self, keys: list[str]) -> list[bool]:
        """Each lookup is a round trip: many at once on a bounded pool of HEADs."""
        if len(keys) < 8:
            return [self.has(k) for k in keys]
        return list(_head_pool.map(self.has, keys))

    def batch(self) -> Batch:
        return S3Batch(self)

    def delete(self, key: str) -> None:
        name = self.name(check_key(key))
        try:
            self.client.delete_object(Bucket=self.bucket, Key=name)
        except Exception as exc:
            raise self._error(exc, f"delete object {key}") from None

    def delete_many(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):  # DeleteObjects takes 1000 keys at most
            names = [{"Key": self.name(check_key(k))} for k in keys[i : i + 1000]]
            try:
                out = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": names, "Quiet": True})
            except Exception as exc:
                raise self._error(exc, f"delete {len(names)} objects") from None
            errors = out.get("Errors") or []
            if errors:
                first = errors[0]
                raise self._error(
                    RuntimeError(f"{first.get('Code')}: {first.get('Message')}"), f"delete object {first.get('Key')}"
                )

    def listing(self) -> Iterator[StoredObject]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for obj in page.get("Contents") or ():
                    rest = str(obj.get("Key", ""))[len(self.prefix) :]
                    key = rest.replace("/", "", 1)
                    if len(rest) > 3 and rest[2] == "/" and _KEY_RE.match(key):
                        yield StoredObject(key, int(obj.get("Size", 0)), obj["LastModified"].timestamp())
        except PfsError:
            raise
        except Exception as exc:
            raise self._error(exc, f"list {self.url}") from None

    def child(self, name: str) -> S3ObjectStore:
        """Same bucket and client, objects under `<prefix>repos/<name>/objects/`."""
        other = copy.copy(self)
        other.base = f"{self.base}repos/{name}/"
        other.prefix = other.base + "objects/"
        other.url = f"s3://{self.bucket}/{other.base}"
        other._child = True
        return other

    def destroy(self) -> None:
        if not self._child:
            raise ValueError("only a repository's own store is destroyed")
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.base)
            for page in pages:
                keys = [{"Key": str(o["Key"])} for o in page.get("Contents") or ()]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
        except Exception as exc:
            raise self._error(exc, f"delete {self.url}") from None

    def close(self) -> None:
        if not self._child:  # a child shares its parent's client
            self.client.close()

    def _error(self, exc: Exception, what: str) -> PfsError:
        """The store's failure as a server-side error: a user's request is not at fault."""
        where = f"S3 {self.config.display_endpoint or 'AWS'} bucket {self.bucket!r}"
        failure = s3_failure(exc, self.config)
        full = failure is not None and (failure.code in _FULL or failure.status == 507)
        metrics.STORE_ERRORS.labels("objects", "full" if full else "unavailable").inc()
        if failure is not None:
            if full:
                return InsufficientStorage(f"cannot {what}: {where} is full ({failure.label}: {failure.message})")
            return Unavailable(f"cannot {what}: {where} answered {failure.label}: {failure.message}")
        detail = self.config.scrub(" ".join(str(exc).split()))[:300]
        return Unavailable(f"cannot {what}: {where} unreachable ({type(exc).__name__}: {detail})")
