"""pfs as an fsspec file system: `pfs://<repo>/<ref>/<path>`, so pandas, Dask, DuckDB and
anything else that opens fsspec URLs reads and writes pfs with no pfs code of its own.

`ref` is a branch (read and write; writes are dirty until `commit`) or a commit id (read
only). The server is `url=` in the storage options, else `PFS_URL`, as for the CLI; the
access key is `key=` and `secret=` (s3fs's names, so code written for s3fs carries over),
else what `pfs.Client` finds (the URL, PFS_ACCESS_KEY_ID, the credentials file).
Registered under the `pfs` protocol through fsspec's entry point, so
`pandas.read_parquet("pfs://data/master/x.parquet")` works once pfs is installed.

Reads are ranged (`Range:` requests, a block at a time); writes stream: a file opened for
writing is sent as one request while it is written, through a small bounded queue, so
memory does not grow with the file.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from . import errors
from .client import Client
from .paths import is_commit_like
from .records import CommitInfo, FileInfo


class PfsFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """`pfs://<repo>/<ref>/<path>` on the server at `url` (env PFS_URL), signed in with the
    access key `key` and its `secret` if given."""

    protocol = "pfs"
    root_marker = ""

    def __init__(
        self,
        url: str | None = None,
        timeout: float = 300.0,
        key: str | None = None,
        secret: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.server = Client(url, timeout=timeout, key_id=key, secret=secret)
        self._clients: dict[str, Client] = {}
        self._lock = threading.Lock()

    # ---- addressing --------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: str | list[str]) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("pfs://"):
            path = path[len("pfs://") :]
        return path.strip("/")

    def _client(self, repo: str) -> Client:
        with self._lock:
            if repo not in self._clients:
                self._clients[repo] = self.server.repo(repo)
            return self._clients[repo]

    @staticmethod
    def _split(path: str) -> tuple[str, str, str]:
        """ "repo/ref/a/b" -> ("repo", "ref", "a/b"); missing parts are ""."""
        parts = path.split("/", 2)
        parts += [""] * (3 - len(parts))
        return parts[0], parts[1], parts[2]

    @staticmethod
    def _at(ref: str) -> dict[str, str]:
        """How to name `ref` to the client's read methods."""
        return {"commit": ref} if is_commit_like(ref) else {"branch": ref}

    @staticmethod
    def _writable(ref: str) -> str:
        if is_commit_like(ref):
            raise PermissionError(f"{ref[:12]} is a commit: only a branch can be written")
        return ref

    # ---- reading -----------------------------------------------------------------------
    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        repo, ref, sub = self._split(path)
        if not repo:
            out = [{"name": r.name, "type": "directory", "size": 0} for r in self.server.repos()]
        elif not ref:
            c = self._client(repo)
            out = [{"name": f"{repo}/{b.name}", "type": "directory", "size": 0} for b in c.branches()]
        else:
            try:
                infos = self._client(repo).ls(sub, **self._at(ref))
            except errors.NotFound:
                raise FileNotFoundError(path) from None
            except errors.BadRequest:  # a file, not a directory
                return [self.info(path)] if detail else [path]
            out = [self._entry(repo, ref, f) for f in infos]
        return out if detail else [e["name"] for e in out]

    @staticmethod
    def _entry(repo: str, ref: str, f: FileInfo) -> dict[str, Any]:
        kind = "directory" if f.is_dir else "file"
        return {"name": f"{repo}/{ref}/{f.path}", "type": kind, "size": f.size or 0, "hash": f.hash}

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        repo, ref, sub = self._split(path)
        if not sub:
            if repo and repo not in {r.name for r in self.server.repos()}:
                raise FileNotFoundError(path)
            if ref and not is_commit_like(ref) and ref not in {b.name for b in self._client(repo).branches()}:
                raise FileNotFoundError(path)
            return {"name": path, "type": "directory", "size": 0}
        try:
            st = self._client(repo).stat(sub, **self._at(ref))
        except errors.NotFound:
            raise FileNotFoundError(path) from None
        return self._entry(repo, ref, st) | {"name": path}

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, **kwargs: Any) -> PfsFile:
        path = self._strip_protocol(path)
        return PfsFile(self, path, mode, block_size=block_size or 4 << 20, **kwargs)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        path = self._strip_protocol(path)
        repo, ref, sub = self._split(path)
        c = self._client(repo)
        try:
            if start is None and end is None:
                return c.get_file(sub, **self._at(ref))
            size = self.info(path)["size"]
            first = 0 if start is None else (start if start >= 0 else max(size + start, 0))
            stop = size if end is None else (end if end >= 0 else size + end)
            if stop <= first:
                return b""
            return c.read_range(sub, first, min(stop, size) - 1, **self._at(ref))
        except errors.NotFound:
            raise FileNotFoundError(path) from None

    # ---- writing -----------------------------------------------------------------------
    def rm_file(self, path: str) -> None:
        repo, ref, sub = self._split(self._strip_protocol(path))
        try:
            self._client(repo).delete_file(sub, branch=self._writable(ref))
        except errors.NotFound:
            raise FileNotFoundError(path) from None

    def rm(self, path: str | list[str], recursive: bool = False, maxdepth: int | None = None) -> None:
        paths = path if isinstance(path, list) else [path]
        for p in paths:
            repo, ref, sub = self._split(self._strip_protocol(p))
            if not sub:
                raise PermissionError(f"{p}: remove files in a branch, not a repository or branch")
            try:
                self._client(repo).delete_file(sub, branch=self._writable(ref), recursive=recursive)
            except errors.NotFound:
                raise FileNotFoundError(p) from None
        self.invalidate_cache()

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Directories exist through their files, as in S3: nothing to make."""

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """As `mkdir`."""

    def commit(self, path: str, message: str = "") -> CommitInfo:
        """Commit a branch's dirty writes: `fs.commit("repo/branch", "message")`."""
        repo, ref, _ = self._split(self._strip_protocol(path))
        return self._client(repo).commit(self._writable(ref), message)


class PfsFile(AbstractBufferedFile):  # type: ignore[misc]
    """A file of pfs: reads fetch byte ranges; writes stream into one upload."""

    fs: PfsFileSystem

    def __init__(self, fs: PfsFileSystem, path: str, mode: str = "rb", **kwargs: Any) -> None:
        repo, ref, sub = fs._split(path)
        if not sub:
            raise IsADirectoryError(path)
        self.client = fs._client(repo)
        self.ref, self.sub = ref, sub
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        if "r" in mode:
            try:
                st = self.client.stat(sub, **fs._at(ref))
            except errors.NotFound:
                raise FileNotFoundError(path) from None
            kwargs["size"] = st.size
        else:
            fs._writable(ref)
        super().__init__(fs, path, mode, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        return self.client.read_range(self.sub, start, min(end, self.size) - 1, **self.fs._at(self.ref))

    def _initiate_upload(self) -> None:
        self._queue = queue.Queue(maxsize=2)  # at most a few blocks in flight: memory stays bounded
        q = self._queue
        ended = threading.Event()  # the writer's final None was taken

        def pieces() -> Iterator[bytes]:
            while (piece := q.get()) is not None:
                yield piece
            ended.set()

        def send() -> None:
            try:
                self.client.put_file(self.sub, pieces(), branch=self.ref)
            except BaseException as exc:
                self._error = exc
                while not ended.is_set() and q.get() is not None:  # let the writer finish
                    pass

        self._thread = threading.Thread(target=send, name="pfs-fs-upload", daemon=True)
        self._thread.start()

    def _upload_chunk(self, final: bool = False) -> bool:
        if self._queue is None:
            self._initiate_upload()
        assert self._queue is not None and self._thread is not None
        data = self.buffer.getvalue()
        if data:
            self._queue.put(data)
        if final:
            self._queue.put(None)
            self._thread.join()
            if self._error is not None:
                raise OSError(f"writing {self.path} failed: {self._error}") from self._error
        return True
