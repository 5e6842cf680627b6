"""Content-addressed object store: every object is named by the BLAKE3 hash of its bytes.

Objects are written once and verified on every read. Writes go through a `Batch`, so a
backend can make many objects durable with one barrier instead of one fsync each; an
object only ever appears under its final name once its bytes are durable, so a crash can
leave garbage behind but never a corrupt object that later writes would dedupe against.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import re
import shutil
import threading
import uuid
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

import blake3
import zstandard

from .. import metrics
from ..errors import CorruptObject, InsufficientStorage, MissingObject, PayloadTooLarge
from ..failpoints import failpoint

_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
_RAW, _ZSTD = b"R", b"Z"
SAMPLE = 64 << 10
_local = threading.local()  # zstd (de)compressors are not thread-safe: one per thread


def _zstd() -> tuple[zstandard.ZstdCompressor, zstandard.ZstdDecompressor]:
    pair = getattr(_local, "zstd", None)
    if pair is None:
        pair = _local.zstd = (zstandard.ZstdCompressor(level=1), zstandard.ZstdDecompressor())
    return pair


def hash_bytes(data: bytes | memoryview) -> str:
    return blake3.blake3(data).hexdigest()


def encode_parts(data: bytes | memoryview, compress: bool = True) -> tuple[bytes, bytes | memoryview]:
    """(header, body) of an object's stored form; raw bodies are not copied.

    Compress when it pays; incompressible chunks are stored raw so reads stay cheap.
    A 64 KiB sample decides for big objects, so random or already-compressed data costs
    one small trial instead of compressing every megabyte for nothing."""
    if compress and len(data) >= 64:
        zc = _zstd()[0]
        if len(data) > SAMPLE * 2 and len(zc.compress(data[:SAMPLE])) > SAMPLE * 0.9:
            return _RAW, data
        packed = zc.compress(data)
        if len(packed) < len(data) * 0.95:
            return _ZSTD, packed
    return _RAW, data


def encode(data: bytes | memoryview, compress: bool = True) -> bytes:
    head, body = encode_parts(data, compress)
    return head + bytes(body)


def decode(key: str, blob: bytes) -> bytes:
    return decode_parts(key, blob[:1], blob[1:])


def decode_parts(key: str, kind: bytes, body: bytes) -> bytes:
    """`decode` of a stored form read as its encoding byte and its body."""
    try:
        if kind == _ZSTD:
            data = _zstd()[1].decompress(body)
        elif kind == _RAW:
            data = body
        else:
            raise _corrupt(f"object {key} has an unknown encoding")
    except zstandard.ZstdError:
        raise _corrupt(f"object {key} does not decompress") from None
    if hash_bytes(data) != key:
        raise _corrupt(f"object {key} does not match its hash")
    return data


def _corrupt(message: str) -> CorruptObject:
    """A stored object that is not what its name says: counted, for an operator's alert."""
    metrics.STORE_ERRORS.labels("objects", "corrupt").inc()
    return CorruptObject(message)


def missing(key: str) -> MissingObject:
    """A named object the store does not hold: counted (a reachable one never should be)."""
    metrics.STORE_ERRORS.labels("objects", "missing").inc()
    return MissingObject(f"object {key} is missing")


def decode_bounded(key: str, blob: bytes, limit: int) -> bytes:
    """`decode` for bytes from elsewhere (a sync peer): at most `limit` plain bytes.

    A zstd header announcing more is refused unread; a body without a size is decompressed
    a piece at a time and hashed as it goes, stopping one byte past `limit`; a body with
    one gets exactly that much memory (zstd fails if the frame holds more). So no object,
    whatever it claims, costs more than `limit` bytes of memory and work.
    PayloadTooLarge past the limit; CorruptObject if it does not decode to its name."""
    kind, body = blob[:1], blob[1:]
    if kind == _RAW:
        if len(body) > limit:
            raise PayloadTooLarge(f"object {key} is {len(body)} bytes, more than the limit of {limit}")
        data = body
    elif kind == _ZSTD:
        try:
            announced = zstandard.frame_content_size(body)
            if announced > limit:
                raise PayloadTooLarge(f"object {key} announces {announced} bytes, more than the limit of {limit}")
            # A known size gets exactly that much memory (zstd fails if the frame holds more).
            data = _zstd()[1].decompress(body) if announced >= 0 else _decompress_bounded(key, body, limit)
        except zstandard.ZstdError:
            raise CorruptObject(f"object {key} does not decompress") from None
    else:
        raise CorruptObject(f"object {key} has an unknown encoding")
    if hash_bytes(data) != key:
        raise CorruptObject(f"object {key} does not match its hash")
    return data


def _decompress_bounded(key: str, body: bytes, limit: int) -> bytes:
    """A zstd frame of unknown size, read a piece at a time; PayloadTooLarge one byte past `limit`."""
    pieces: list[bytes] = []
    size = 0
    with _zstd()[1].stream_reader(body, read_across_frames=False) as reader:
        while piece := reader.read(min(1 << 20, limit + 1 - size)):
            size += len(piece)
            if size > limit:
                raise PayloadTooLarge(f"object {key} decompresses to more than the limit of {limit} bytes")
            pieces.append(piece)
    return b"".join(pieces)


class MemoryBudget:
    """A process-wide bound on bytes held at once by work that many requests may do
    together (decoding and checking objects from sync peers): each holder waits until its
    share fits. A single share larger than the whole budget is cut to it, so it still runs,
    alone."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        n = max(0, min(nbytes, self.capacity))
        with self._cond:
            self._cond.wait_for(lambda: self.used + n <= self.capacity)
            self.used += n
        try:
            yield
        finally:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


VERIFY_BUDGET = MemoryBudget(256 << 20)  # plain bytes of received objects being decoded and checked, per process


def check_key(key: str) -> str:
    if not _KEY_RE.match(key):
        raise CorruptObject(f"malformed object key {key[:80]!r}")
    return key


class Batch(ABC):
    """Objects put through a batch are durable once `flush()` (or the `with` block) returns."""

    @abstractmethod
    def put(self, key: str, data: bytes | memoryview, compress: bool = True) -> None: ...

    def put_last(self, key: str, data: bytes | memoryview, compress: bool = True) -> None:
        """`put` of the last object before the barrier: the caller is about to wait for it,
        so a batch may write it in the calling thread rather than hand it on."""
        self.put(key, data, compress)

    def put_view(self, key: str, data: memoryview, compress: bool = True) -> Future[Any] | None:
        """`put` of bytes the caller means to reuse: it keeps them unchanged until the
        returned future is done (None: at once). This default copies them."""
        self.put(key, bytes(data), compress)
        return None

    @abstractmethod
    def flush(self) -> None: ...

    def abort(self) -> None:  # noqa: B027 - optional hook
        """Drop what is not yet durable (best effort; leftovers are only garbage)."""

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.flush()
        else:
            self.abort()


@dataclass(frozen=True)
class StoredObject:
    """One object as its store lists it (garbage collection and storage accounting)."""

    key: str
    size: int  # bytes as stored
    modified: float  # its last write, in seconds since the epoch


class ObjectStore(ABC):
    # Called with a key the store found already stored instead of writing it (dedupe):
    # True means a garbage collection is active and the find was logged, so the store
    # looks again and writes the object if it went meanwhile (storage/collect.py).
    on_found: Callable[[str], bool] | None = None
    # Called before a write made without looking first (S3's small objects): while a GC
    # sweeps, the object may be on its list from before this write, so the write is logged.
    on_blind_write: Callable[[str], None] | None = None

    @abstractmethod
    def has(self, key: str) -> bool: ...

    def stored_already(self, key: str) -> bool:
        """Whether a write of `key` may be skipped: it is stored, and (a GC being active)
        still there once the find was logged."""
        if not self.has(key):
            return False
        return self.on_found is None or not self.on_found(key) or self.has(key)

    @abstractmethod
    def _read(self, key: str) -> bytes:
        """An object's stored form (encoding byte + raw or zstd body), unchecked;
        MissingObject if absent."""

    @abstractmethod
    def batch(self) -> Batch: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def delete_many(self, keys: list[str]) -> None:
        """Delete objects (garbage collection); one absent already is no error."""
        for key in keys:
            self.delete(key)

    def sweep_tmp(self, before: float) -> int:
        """Remove temporary files last written before `before` (left by a process that
        died mid-write); how many. Stores without such files have none."""
        return 0

    def keys(self) -> Iterator[str]:
        return (obj.key for obj in self.listing())

    @abstractmethod
    def listing(self) -> Iterator[StoredObject]:
        """Every object with its stored size and last write, in key order, streamed."""

    @abstractmethod
    def child(self, name: str) -> ObjectStore:
        """The store of another repository in the same place (`repos/<name>/`): objects are
        kept per repository, so nothing is readable through one that another wrote."""

    @abstractmethod
    def destroy(self) -> None:
        """Remove every object of this (child) store: its repository was deleted."""

    def get(self, key: str) -> bytes:
        """The verified bytes of an object; MissingObject / CorruptObject otherwise."""
        return decode(key, self._read(key))

    def get_stored(self, key: str) -> bytes:
        """An object's stored form, verified first: what sync sends, as it is stored, so
        compressed objects travel compressed."""
        blob = self._read(key)
        decode(key, blob)
        return blob

    def get_bounded(self, key: str, limit: int) -> bytes:
        """`get` for an object that must be at most `limit` plain bytes (one that came from
        a sync peer, read in the role it is named for): PayloadTooLarge if it is bigger,
        found without decompressing more than that."""
        return decode_bounded(key, self._read(key), limit)

    def has_many(self, keys: list[str]) -> list[bool]:
        """`has` for each key, in order. A backend whose lookups are round trips overrides
        it to ask many at once."""
        return [self.has(k) for k in keys]

    def put(self, key: str, data: bytes | memoryview, compress: bool = True) -> None:
        with self.batch() as b:
            b.put(key, data, compress)

    def put_bytes(self, data: bytes, compress: bool = True) -> str:
        key = hash_bytes(data)
        self.put(key, data, compress)
        return key


def _raise_storage(exc: OSError) -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        metrics.STORE_ERRORS.labels("objects", "full").inc()
        raise InsufficientStorage("no space left on the object store") from None
    metrics.STORE_ERRORS.labels("objects", "io").inc()
    raise exc


_io_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pfs-io")
_syncfs: Any = None
_sync_file_range: Any = None
with contextlib.suppress(OSError, AttributeError):  # absent off Linux: fall back to fsync
    _libc = ctypes.CDLL(None, use_errno=True)
    _syncfs = _libc.syncfs
    _sync_file_range = _libc.sync_file_range
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
_SYNC_FILE_RANGE_WRITE = 2
WRITEBACK_FROM = 64 << 10  # objects this big start their writeback as soon as they are written


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages now, without waiting (Linux's
    sync_file_range). Otherwise a big upload's pages sit dirty until its barrier, which
    then waits for the disk to take all of them: started early, the disk works while the
    upload goes on and the barrier waits only for the tail. Best effort: the barrier still
    makes everything durable."""
    if _sync_file_range is not None:
        _sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def _write_all(fd: int, head: bytes, body: bytes | memoryview) -> None:
    """`head` then `body` in one call (a short write, rare on a file, goes on from where
    it stopped)."""
    views = [v for v in (memoryview(head), memoryview(body).cast("B")) if len(v)]
    while views:
        done = os.writev(fd, views)
        if not done:
            raise OSError(errno.EIO, "a file write took no bytes")
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if views and done:
            views[0] = views[0][done:]


R = TypeVar("R")  # what one pooled write returns


class PooledBatch(Batch, Generic[R]):
    """A batch whose writes run on a thread pool, with a bound on the bytes handed over but
    not yet written: memory stays bounded when the store is slower than the network, and
    hashing the next object overlaps with writing the previous ones. Subclasses say how
    one object is written (`_write`, run on `pool`) and what the barrier does (`flush`)."""

    MAX_INFLIGHT_BYTES = 16 << 20
    MAX_PENDING = 10_000  # objects awaiting the barrier (~1 KiB each held: a future, a key)
    pool: ThreadPoolExecutor

    def __init__(self) -> None:
        self.pending: list[tuple[str, Future[R]]] = []  # (key, future of the write)
        self.inflight: deque[tuple[Future[R], int]] = deque()
        self.inflight_bytes = 0
        self.seen: set[str] = set()

    @abstractmethod
    def _write(self, key: str, data: bytes | memoryview, compress: bool) -> R: ...

    @abstractmethod
    def _raise_failed(self) -> None:
        """Called when a write failed: wait for the rest and raise the error."""

    def put(self, key: str, data: bytes | memoryview, compress: bool = True) -> None:
        """`data` must not change afterwards: views of immutable bytes are not copied."""
        if not isinstance(data, bytes) and not isinstance(data.obj, bytes):
            data = bytes(data)
        self._submit(key, data, compress)

    def put_view(self, key: str, data: memoryview, compress: bool = True) -> Future[R] | None:
        """Not copied: the chunker hands views of buffers it reuses once the writes are done."""
        return self._submit(key, data, compress)

    def _submit(self, key: str, data: bytes | memoryview, compress: bool) -> Future[R] | None:
        check_key(key)
        if key in self.seen:
            return None
        self.seen.add(key)
        fut = self.pool.submit(self._write, key, data, compress)
        self.pending.append((key, fut))
        self.inflight.append((fut, len(data)))
        self.inflight_bytes += len(data)
        while self.inflight_bytes > self.MAX_INFLIGHT_BYTES:
            oldest, n = self.inflight.popleft()
            self.inflight_bytes -= n
            if oldest.exception() is not None:  # waits for it
                self._raise_failed()  # the storage error now, not gigabytes later
        if len(self.pending) >= self.MAX_PENDING:
            self.flush()
        return fut

    def put_last(self, key: str, data: bytes | memoryview, compress: bool = True) -> None:
        """Written in this thread: a one-chunk file's upload, say, would otherwise cost two
        thread switches (to the pool and back) for nothing, as its caller waits anyway."""
        check_key(key)
        if key in self.seen:
            return
        self.seen.add(key)
        done: Future[R] = Future()
        try:
            done.set_result(self._write(key, data, compress))
        except BaseException as exc:  # raised by the barrier, as a pooled write's would be
            done.set_exception(exc)
        self.pending.append((key, done))

    def _reset(self) -> None:
        self.seen.clear()  # only a dedupe within one barrier: bounded like `pending`
        self.pending.clear()
        self.inflight.clear()
        self.inflight_bytes = 0


class LocalBatch(PooledBatch[str | None]):
    """Objects are written to temporary files on a small I/O pool (file syscalls release
    the GIL), and the barrier syncs them and renames them into place."""

    # The durability barrier itself waits for flush(), so the disk writes back in the
    # background while the upload goes on. 16 MiB keeps both I/O threads busy; 32 MiB
    # put a loaded server's RSS near the 64 MiB per-upload budget (test_bigfile) without
    # any gain in throughput.
    MAX_INFLIGHT_BYTES = 16 << 20
    pool = _io_pool

    def __init__(self, store: LocalObjectStore) -> None:
        super().__init__()
        self.store = store

    def _write(self, key: str, data: bytes | memoryview, compress: bool) -> str | None:
        return self.store.write_tmp(key, data, compress)

    def _raise_failed(self) -> None:
        self._written()

    def _written(self) -> list[tuple[str, str]]:
        """Wait for the pool; (tmp path, key) of each object that was not there already."""
        out: list[tuple[str, str]] = []
        error: BaseException | None = None
        for key, fut in self.pending:
            try:
                tmp = fut.result()
            except BaseException as exc:  # keep waiting for the rest, then raise the first
                error = error or exc
                continue
            if tmp is not None:
                out.append((tmp, key))
        if error is not None:
            for tmp, _ in out:
                _unlink(tmp)
            self._reset()
            if isinstance(error, OSError):
                _raise_storage(error)
            raise error
        return out

    def flush(self) -> None:
        if not self.pending:
            return
        written = self._written()
        try:
            self.store.sync_data([p for p, _ in written])
            failpoint("objects.synced")  # data durable, nothing under its final name yet
            dirs = set()
            for i, (tmp, key) in enumerate(written):
                final = self.store.path(key)
                dirs.add(os.path.dirname(final))
                os.replace(tmp, final)
                if i == 0 and len(written) > 1:
                    failpoint("objects.partly_renamed")  # some objects in place, some still temporary
            self.store.sync_dirs(dirs)
        except OSError as exc:
            for tmp, _ in written:
                _unlink(tmp)
            _raise_storage(exc)
        finally:
            self._reset()

    def abort(self) -> None:
        with contextlib.suppress(BaseException):
            for tmp, _ in self._written():
                _unlink(tmp)
        self._reset()


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


class LocalObjectStore(ObjectStore):
    """Objects as files `objects/ab/cdef…` in a directory (the embedded default)."""

    def __init__(self, root: str | Path) -> None:
        self.root = str(root)
        self.obj_dir = os.path.join(self.root, "objects")
        self.tmp_dir = os.path.join(self.root, "tmp")
        os.makedirs(self.obj_dir, exist_ok=True)
        os.makedirs(self.tmp_dir, exist_ok=True)
        # All 256 fan-out directories exist up front, so a put never creates a directory
        # whose own entry would need a separate fsync.
        for i in range(256):
            os.makedirs(os.path.join(self.obj_dir, f"{i:02x}"), exist_ok=True)
        # Temporary files are never referenced; whatever a crash left is garbage. But while
        # another live process has this store open (a server, when `pfs fsck --data-dir`
        # runs beside it) they are its uploads in flight: sweep only when we are alone. The
        # lock is held (shared) for the store's lifetime and dies with the process.
        lock = os.open(os.path.join(self.root, "objects.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        weakref.finalize(self, os.close, lock)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            for name in os.listdir(self.tmp_dir):
                _unlink(os.path.join(self.tmp_dir, name))
        fcntl.flock(lock, fcntl.LOCK_SH)

    def path(self, key: str) -> str:
        return os.path.join(self.obj_dir, key[:2], key[2:])

    def has(self, key: str) -> bool:
        return os.path.exists(self.path(check_key(key)))

    def write_tmp(self, key: str, data: bytes | memoryview, compress: bool) -> str | None:
        """Write an object to a temporary file (None: it is stored already)."""
        if self.stored_already(key):
            return None
        tmp = os.path.join(self.tmp_dir, uuid.uuid4().hex)
        try:
            head, body = encode_parts(data, compress)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
            try:
                _write_all(fd, head, body)
                if len(body) >= WRITEBACK_FROM:
                    _start_writeback(fd)
            finally:
                os.close(fd)
        except OSError:
            _unlink(tmp)
            raise
        return tmp

    def _read(self, key: str) -> bytes:
        """An object's file, unchecked."""
        try:
            with open(self.path(check_key(key)), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise missing(key) from None

    def get(self, key: str) -> bytes:
        """The body is read on its own, so a raw chunk is one allocation and one copy, not a
        read and a slice of it (downloads read every chunk through here)."""
        try:
            with open(self.path(check_key(key)), "rb", buffering=0) as f:
                kind = f.read(1)
                body = f.readall()
        except FileNotFoundError:
            raise missing(key) from None
        return decode_parts(key, kind, body)

    def batch(self) -> Batch:
        return LocalBatch(self)

    def delete(self, key: str) -> None:
        _unlink(self.path(check_key(key)))

    def sweep_tmp(self, before: float) -> int:
        n = 0
        with os.scandir(self.tmp_dir) as it:
            for e in it:
                with contextlib.suppress(FileNotFoundError):
                    if e.is_file(follow_symlinks=False) and e.stat().st_mtime < before:
                        os.unlink(e.path)
                        n += 1
        return n

    def keys(self) -> Iterator[str]:
        for sub in sorted(os.listdir(self.obj_dir)):
            d = os.path.join(self.obj_dir, sub)
            if len(sub) != 2 or not os.path.isdir(d):
                continue
            for name in sorted(os.listdir(d)):
                key = sub + name
                if _KEY_RE.match(key):
                    yield key

    def listing(self) -> Iterator[StoredObject]:
        for sub in sorted(os.listdir(self.obj_dir)):
            d = os.path.join(self.obj_dir, sub)
            if len(sub) != 2 or not os.path.isdir(d):
                continue
            with os.scandir(d) as it:
                entries = sorted((e for e in it if _KEY_RE.match(sub + e.name)), key=lambda e: e.name)
            for e in entries:
                try:
                    st = e.stat()
                except FileNotFoundError:  # deleted since the directory was read
                    continue
                yield StoredObject(sub + e.name, st.st_size, st.st_mtime)

    def child(self, name: str) -> LocalObjectStore:
        return LocalObjectStore(os.path.join(self.root, "repos", name))

    def destroy(self) -> None:
        if os.path.basename(os.path.dirname(self.root)) != "repos":
            raise ValueError("only a repository's own store is destroyed")
        shutil.rmtree(self.root, ignore_errors=True)

    def sync_data(self, paths: list[str]) -> None:
        """One filesystem-wide barrier instead of an fsync per object, where Linux allows."""
        _barrier(self.tmp_dir, paths)

    def sync_dirs(self, dirs: set[str]) -> None:
        _barrier(self.obj_dir, dirs)


def _barrier(anchor: str, paths: Iterable[str]) -> None:
    """Make `paths` durable: one syncfs of the filesystem holding `anchor` when there are
    several (Linux), else an fsync of each."""
    paths = list(paths)
    if _syncfs is not None and len(paths) > 1:
        fd = os.open(anchor, os.O_RDONLY)
        try:
            if _syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
