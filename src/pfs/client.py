"""Python client for a pfs server.

Speaks the JSON side of the HTTP API and raises the same `pfs.errors` classes the server
raised, so `except pfs.errors.BranchMoved` works the same in-process and over the wire.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import queue
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any, cast
from urllib.parse import quote, unquote, urlsplit

import httpx
import orjson

from . import errors
from .paths import check_branch_pattern, check_repo_name, check_user_name
from .records import (
    Ancestor,
    AuditEntry,
    BranchInfo,
    Change,
    CommitInfo,
    FileInfo,
    FsckReport,
    GcReport,
    Grant,
    Images,
    Job,
    JobRun,
    KeyInfo,
    Merged,
    NewKey,
    ReceiveCounts,
    RefUpdate,
    RepoInfo,
    Run,
    StorageUsage,
    Unpacked,
    User,
    WhoAmI,
    Written,
)

DEFAULT_URL = "http://127.0.0.1:8080"
STREAM_PIECE = 1 << 20  # bytes read from a local file or pipe at a time
# Downloads yield pieces as they arrive (`iter_bytes()` without a size): asking httpx for
# fixed-size pieces joins and re-slices every byte, which doubled a download's client CPU.


def _q(path: str) -> str:
    # "." and ".." segments are escaped, or httpx would resolve them away and send another
    # path than the caller gave (a/./b -> a/b, ../x -> /x); the server refuses them instead.
    return "/".join("%2E" * len(s) if s in (".", "..") else quote(s, safe="") for s in path.split("/"))


# ---- what the job routes answer, typed -------------------------------------------------


_REPO_URL = re.compile(r"^(?P<root>.*?)/repo/(?P<repo>[^/]+)$")


def split_repo_url(url: str) -> tuple[str, str | None]:
    """ "http://h:8080/repo/data" -> ("http://h:8080", "data"); a server's url -> (url, None)."""
    m = _REPO_URL.match(url.rstrip("/"))
    return (m["root"], m["repo"]) if m else (url.rstrip("/"), None)


# ---- credentials -------------------------------------------------------------------------

_KEY_ID = re.compile(r"[A-Z0-9]{16,32}")  # the server's access key ids (pfs.access.secrets)
_AUTHORITY = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<authority>[^/?#]*)(?P<rest>.*)$", re.S)
ENV_KEY_ID, ENV_SECRET = "PFS_ACCESS_KEY_ID", "PFS_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class Credentials:
    """An access key pair and where it was found (for messages: the secret never is in one,
    nor in the repr)."""

    key_id: str
    secret: str = field(repr=False)
    source: str = "arguments"


def credentials_file() -> str:
    """Where `pfs login` keeps key pairs: PFS_CREDENTIALS_FILE, else ~/.config/pfs/credentials."""
    return os.environ.get("PFS_CREDENTIALS_FILE") or os.path.join(
        os.path.expanduser("~"), ".config", "pfs", "credentials"
    )


def strip_userinfo(url: str) -> tuple[str, tuple[str, str] | None]:
    """ "http://ID:SECRET@h:8080/x" -> ("http://h:8080/x", (ID, SECRET)); percent-escapes in
    the pair are decoded. The url comes back unchanged when it holds none."""
    m = _AUTHORITY.match(url)
    if m is None or "@" not in m["authority"]:
        return url, None
    userinfo, _, host = m["authority"].rpartition("@")
    key_id, _, secret = userinfo.partition(":")
    return m["scheme"] + host + m["rest"], (unquote(key_id), unquote(secret))


def server_id(url: str) -> tuple[str, str, int | None]:
    """What names a server, so that spellings of one compare equal: scheme, host (lower
    case) and port (the scheme's default filled in)."""
    try:
        parts = urlsplit(strip_userinfo(url)[0].strip())
        port = parts.port
    except ValueError:
        return (url, "", None)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(scheme)


def _checked(key_id: str, secret: str, source: str) -> Credentials:
    """The pair, if it has the form of one: a mistyped pair fails here, naming where it came
    from, rather than as a 401 that does not say which of several places was read."""
    if not _KEY_ID.fullmatch(key_id) or not secret:
        raise errors.BadRequest(
            f"the credentials from {source} are not ACCESS_KEY_ID:SECRET "
            "(a key id is 16-32 uppercase letters and digits; both parts are needed)"
        )
    return Credentials(key_id, secret, source)


def _read_ini(path: str) -> configparser.RawConfigParser | None:
    """The credentials file parsed (None: there is none). A parse error says where, never
    what: its line may hold a secret."""
    parser = configparser.RawConfigParser(default_section="pfs-no-defaults")
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, path)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise errors.BadRequest(f"cannot read the credentials file {path}: {why}") from None
    except configparser.Error as exc:
        line = getattr(exc, "lineno", None) or next(iter(getattr(exc, "errors", [])), (None,))[0]
        where = f" (line {line})" if line else ""
        raise errors.BadRequest(f"the credentials file {path} is not INI{where}: [section], then key = value") from None
    return parser


def read_credentials_file(root: str, path: str | None = None) -> Credentials | None:
    """The pair for the server at `root` in an INI credentials file: the section named by
    the server's URL (`[http://127.0.0.1:8080]`), else `[default]`; None without either or
    without the file. Keys `access_key_id` and `secret_access_key`."""
    path = path or credentials_file()
    parser = _read_ini(path)
    if parser is None:
        return None
    want = server_id(root)
    name = next((s for s in parser.sections() if want[1] and server_id(s) == want), None)
    if name is None:
        name = "default" if parser.has_section("default") else None
    if name is None:
        return None
    section = parser[name]
    key_id, secret = section.get("access_key_id", "").strip(), section.get("secret_access_key", "").strip()
    return _checked(key_id, secret, f"{path} [{name}]")


def resolve_credentials(
    root: str,
    in_url: tuple[str, str] | None = None,
    key_id: str | None = None,
    secret: str | None = None,
) -> Credentials | None:
    """The key pair for the server at `root`, from the first place that has one: the
    arguments; the URL's userinfo; PFS_ACCESS_KEY_ID and PFS_SECRET_ACCESS_KEY, which are
    the credentials of the server PFS_URL names (default http://127.0.0.1:8080) and are
    sent to that server only; the credentials file. None: anonymous."""
    if key_id is not None or secret is not None:
        if key_id is None or secret is None:
            raise errors.BadRequest("key_id and secret go together: one of them is not given")
        return _checked(key_id, secret, "the key_id and secret arguments")
    if in_url is not None:
        return _checked(*in_url, "the URL")
    env_id, env_secret = os.environ.get(ENV_KEY_ID), os.environ.get(ENV_SECRET)
    if (env_id or env_secret) and server_id(root) == server_id(os.environ.get("PFS_URL") or DEFAULT_URL):
        if not (env_id and env_secret):
            raise errors.BadRequest(f"{ENV_KEY_ID} and {ENV_SECRET} go together: one of them is not set")
        return _checked(env_id.strip(), env_secret.strip(), ENV_KEY_ID)
    return read_credentials_file(root)


def write_credentials_file(root: str, creds: Credentials, path: str | None = None) -> str:
    """Save `creds` as the section of the server at `root` (replacing it; the other
    sections kept) in a file only its owner may read; the file's path."""
    path = path or credentials_file()
    parser = _read_ini(path) or configparser.RawConfigParser(default_section="pfs-no-defaults")
    want = server_id(root)
    for old in [s for s in parser.sections() if want[1] and server_id(s) == want]:
        parser.remove_section(old)
    parser[root] = {"access_key_id": creds.key_id, "secret_access_key": creds.secret}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a leftover tmp file of other permissions is not trusted either
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            parser.write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


class Client:
    def __init__(
        self,
        url: str | None = None,
        timeout: float = 300.0,
        transport: httpx.BaseTransport | None = None,
        repo: str | None = None,
        *,
        key_id: str | None = None,
        secret: str | None = None,
    ) -> None:
        """`url` is a server (its default repository) or one repository of it
        (`…/repo/<name>`); `repo` names one instead. With no `url`, PFS_URL and PFS_REPO.
        Credentials (an access key, sent as HTTP Basic): `key_id` and `secret`, else
        `http://ID:SECRET@host` in the url, else PFS_ACCESS_KEY_ID and PFS_SECRET_ACCESS_KEY
        (for the server PFS_URL names only), else the credentials file's section for the
        server (see `resolve_credentials`); none: anonymous. `transport` replaces the
        network (httpx's own): tests pass one that hands requests to a server's ASGI app in
        the same process."""
        plain, in_url_creds = strip_userinfo(url or os.environ.get("PFS_URL") or DEFAULT_URL)
        self.root, in_url = split_repo_url(plain)
        # PFS_REPO goes with PFS_URL: a url given here names its repository itself
        self.repo_name = repo or in_url or (os.environ.get("PFS_REPO") if url is None else None) or None
        if self.repo_name is not None:
            check_repo_name(self.repo_name)
        self.url = f"{self.root}/repo/{self.repo_name}" if self.repo_name else self.root
        try:
            self.credentials = resolve_credentials(self.root, in_url_creds, key_id, secret)
        except errors.BadRequest as exc:  # say which server, without the url's secret
            raise errors.BadRequest(f"{exc.message} (server {self.root})") from None
        self._timeout, self._transport = timeout, transport
        self.http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout, connect=10.0),
            headers={"accept": "application/json"},
            transport=transport,
            auth=self._auth(),
        )

    def _auth(self) -> httpx.Auth:
        """HTTP Basic with the key pair; without one, httpx's no-op auth (anonymous)."""
        c = self.credentials
        return httpx.BasicAuth(c.key_id, c.secret) if c is not None else httpx.Auth()

    @property
    def key_id(self) -> str | None:
        """The access key this client signs in with (None: anonymous)."""
        return self.credentials.key_id if self.credentials is not None else None

    def __repr__(self) -> str:
        return f"Client({self.url!r}, key_id={self.key_id!r})"

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing ------------------------------------------------------------------
    def _check(self, resp: httpx.Response) -> httpx.Response:
        if resp.is_success:
            return resp
        if not resp.is_stream_consumed:
            resp.read()
        try:
            body = resp.json()
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            body = {"message": resp.text.strip() or f"HTTP {resp.status_code}"}
            if "x-pfs-error" in resp.headers:  # a plain-text error (file reads) still names its type
                body["error"] = resp.headers["x-pfs-error"]
        err = errors.from_json(resp.status_code, body)
        if isinstance(err, errors.Unauthorized):
            err.message += self._sign_in_hint()
            err.args = (err.message,)
        retry = resp.headers.get("retry-after", "")
        if isinstance(err, (errors.TooManyRequests, errors.Unavailable)) and retry.isdigit():
            err.retry_after = int(retry)
        raise err

    def _sign_in_hint(self) -> str:
        """What a 401 adds: which key was refused, or where a key could have come from."""
        c = self.credentials
        if c is not None:
            return f" [access key {c.key_id} from {c.source}]"
        return (
            f" [no credentials for {self.root}: `pfs login`, {ENV_KEY_ID} and {ENV_SECRET} with PFS_URL,"
            " or ID:SECRET@ in the URL]"
        )

    def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """One request (parameters that are None left out); a network failure is Unavailable."""
        params = {k: v for k, v in (kw.pop("params", None) or {}).items() if v is not None}
        try:
            return self.http.request(method, url, params=params, **kw)
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"cannot reach pfs at {self.url}: {exc}") from exc

    def _call(self, method: str, url: str, **kw: Any) -> Any:
        return self._json(self._check(self._request(method, url, **kw)))

    def _json(self, resp: httpx.Response) -> Any:
        try:
            return resp.json()
        except ValueError:  # something else answers at that address (a proxy's page, another service)
            raise errors.PfsError(f"{self.url} answered HTTP {resp.status_code} without JSON: is it pfs?") from None

    # ---- repositories ----------------------------------------------------------------
    def repo(self, name: str | None) -> Client:
        """A client of repository `name` of the same server (None: its default one)."""
        c = self.credentials
        pair = {"key_id": c.key_id, "secret": c.secret} if c is not None else {}
        if name is None:
            # `repo=None` would fall back to PFS_REPO: the default repository is the bare url
            other = Client(self.root, self._timeout, self._transport, **pair)
            other.repo_name, other.url = None, self.root
        else:
            other = Client(self.root, self._timeout, self._transport, repo=name, **pair)
        other.credentials = c  # the same key, named by where it was found; or none
        other.http.auth = other._auth()
        return other

    def images(self) -> Images:
        """What the server's cluster image registry holds (409 if it has none)."""
        return Images.from_json(self._call("GET", f"{self.root}/image"))

    def repos(self) -> list[RepoInfo]:
        return [RepoInfo.from_json(r) for r in self._call("GET", f"{self.root}/repo")]

    def create_repo(self, name: str) -> RepoInfo:
        return RepoInfo.from_json(self._call("POST", f"{self.root}/repo/{_q(check_repo_name(name))}"))

    def delete_repo(self, name: str, force: bool = False) -> None:
        self._call("DELETE", f"{self.root}/repo/{_q(check_repo_name(name))}", params={"force": "1" if force else None})

    # ---- files ---------------------------------------------------------------------
    def put_file(self, path: str, data: bytes | IO[bytes] | Iterable[bytes], branch: str = "master") -> Written:
        """Write (create or replace) a file; `data` is streamed, never loaded whole."""
        content = data if isinstance(data, bytes) else _stream(data)
        return Written.from_json(self._call("POST", f"/file/{_q(path)}", params={"branch": branch}, content=content))

    def put_tar(self, prefix: str, archive: IO[bytes] | Iterable[bytes], branch: str = "master") -> Unpacked:
        """Upload a tar stream; its files land under `prefix`, all staged at once or none."""
        content = _stream(archive)
        url = f"/tar/{_q(prefix.strip('/'))}" if prefix.strip("/") else "/tar"
        return Unpacked.from_json(self._call("POST", url, params={"branch": branch}, content=content))

    def put_dir(
        self,
        local: str,
        prefix: str = "",
        branch: str = "master",
        on_bytes: Callable[[int], None] | None = None,
    ) -> Unpacked:
        """Upload a local directory tree in one request (streamed as a tar)."""
        return self.put_tar(prefix, _tar_stream(local, on_bytes), branch)

    def open_file(
        self,
        path: str,
        commit: str | None = None,
        branch: str | None = None,
        on_size: Callable[[int | None], None] | None = None,
    ) -> Iterator[bytes]:
        """The file's bytes as an iterator of pieces (streamed). `on_size` hears the file's
        size (None if the answer does not say) once the server answers, before any bytes."""
        params = {k: v for k, v in {"commit": commit, "branch": branch}.items() if v is not None}
        try:
            with self.http.stream("GET", f"/file/{_q(path)}", params=params, headers={"accept": "*/*"}) as resp:
                self._check(resp)
                if on_size is not None:
                    on_size(_body_size(resp))
                yield from resp.iter_bytes()
        except httpx.TransportError as exc:
            # Includes a response cut short: the server aborts rather than send bad bytes.
            raise errors.Unavailable(f"reading {path!r} from {self.url} failed: {exc}") from exc

    def get_file(self, path: str, commit: str | None = None, branch: str | None = None) -> bytes:
        return b"".join(self.open_file(path, commit, branch))

    def read_range(
        self, path: str, first: int, last: int, commit: str | None = None, branch: str | None = None
    ) -> bytes:
        """Bytes `first`..`last` (inclusive) of a file: one ranged request."""
        headers = {"accept": "*/*", "range": f"bytes={first}-{last}"}
        params = {"commit": commit, "branch": branch}
        resp = self._check(self._request("GET", f"/file/{_q(path)}", params=params, headers=headers))
        if resp.status_code != 206:  # a server that ignores ranges: cut it here
            return resp.content[first : last + 1]
        return resp.content

    def stat(self, path: str, commit: str | None = None, branch: str | None = None) -> FileInfo:
        """A file's or directory's entry, from one HEAD request (FileNotFound if absent)."""
        resp = self._check(self._request("HEAD", f"/file/{_q(path)}", params={"commit": commit, "branch": branch}))
        name = path.rstrip("/").rpartition("/")[2]
        if resp.headers.get("content-type", "").startswith("application/json"):  # a directory's listing
            return FileInfo(path=path, name=name, type="dir")
        etag = resp.headers.get("etag", "").strip('"') or None
        return FileInfo(path=path, name=name, type="file", size=int(resp.headers["content-length"]), hash=etag)

    def ls(self, path: str = "", commit: str | None = None, branch: str | None = None) -> list[FileInfo]:
        target = f"/file/{_q(path.rstrip('/'))}/*" if path.strip("/") else "/file/*"
        return [FileInfo.from_json(e) for e in self._call("GET", target, params={"commit": commit, "branch": branch})]

    def delete_file(self, path: str, branch: str = "master", recursive: bool = False) -> int:
        """Delete a file (or, `recursive`, a directory) on a branch; how many files went."""
        params = {"branch": branch, "recursive": "1" if recursive else None}
        return int(self._call("DELETE", f"/file/{_q(path)}", params=params)["deleted"])

    # ---- commits, branches, history ------------------------------------------------
    def commit(
        self, branch: str = "master", message: str = "", expect: str | None = None, run: bool = False
    ) -> CommitInfo:
        """Commit the branch's dirty writes; with `run`, also start the job DAG on it."""
        params = {"branch": branch, "message": message or None, "expect": expect, "run": "1" if run else None}
        return CommitInfo.from_json(self._call("POST", "/commit", params=params))

    def commits(self) -> list[CommitInfo]:
        """Every commit of every branch, oldest first."""
        return [CommitInfo.from_json(c) for c in self._call("GET", "/commit")]

    def inspect_commit(self, ref: str) -> CommitInfo:
        return CommitInfo.from_json(self._call("GET", f"/commit/{_q(ref)}"))

    def branches(self) -> list[BranchInfo]:
        return [BranchInfo.from_json(b) for b in self._call("GET", "/branch")]

    def create_branch(self, name: str, commit: str | None = None) -> BranchInfo:
        return BranchInfo.from_json(self._call("POST", "/branch", params={"branch": name, "commit": commit}))

    def delete_branch(self, name: str) -> None:
        """Delete a branch and its dirty writes; its commits stay readable by id until a
        garbage collection removes those no other branch reaches."""
        self._call("DELETE", f"/branch/{_q(name)}")

    def log(self, branch: str = "master", limit: int | None = None) -> list[CommitInfo]:
        """History of a branch (or from a commit), newest first."""
        params = {"commit": branch, "limit": str(limit) if limit is not None else None}
        return [CommitInfo.from_json(c) for c in self._call("GET", "/log", params=params)]

    def diff(self, a: str, b: str) -> list[Change]:
        return [Change.from_json(d) for d in self._call("GET", "/diff", params={"from": a, "to": b})]

    def merge(self, source: str, into: str, strategy: str | None = None, message: str | None = None) -> Merged:
        params = {"from": source, "into": into, "strategy": strategy, "message": message}
        return Merged.from_json(self._call("POST", "/merge", params=params))

    def revert(self, branch: str, commit: str, message: str | None = None) -> CommitInfo:
        params = {"branch": branch, "commit": commit, "message": message}
        return CommitInfo.from_json(self._call("POST", "/revert", params=params))

    def discard(self, branch: str = "master") -> int:
        """Drop a branch's dirty writes; how many there were."""
        return int(self._call("POST", "/discard", params={"branch": branch})["discarded"])

    # ---- jobs ----------------------------------------------------------------------
    def put_job(self, name: str, spec: Mapping[str, Any] | bytes) -> Job:
        """Store (or replace) a job spec; it runs at the next commit with `run`."""
        body = spec if isinstance(spec, bytes) else orjson.dumps(dict(spec))
        return Job.from_json(
            self._call("POST", f"/job/{_q(name)}", content=body, headers={"content-type": "application/json"})
        )

    def get_job(self, name: str) -> Job:
        return Job.from_json(self._call("GET", f"/job/{_q(name)}"))

    def delete_job(self, name: str) -> None:
        """Delete a spec; its past outputs stay readable. 409 while another job reads from it."""
        self._call("DELETE", f"/job/{_q(name)}")

    def jobs(self) -> list[Job]:
        return [Job.from_json(j) for j in self._call("GET", "/job")]

    def job_runs(self, name: str) -> list[JobRun]:
        """The job in the newest runs that include it, newest first."""
        return [JobRun.from_json(j) for j in self._call("GET", f"/job/{_q(name)}/runs")]

    def runs(self) -> list[Run]:
        """The newest runs, newest first, without their jobs."""
        return [Run.from_json(r) for r in self._call("GET", "/run")]

    def prune_runs(self, older_than: str) -> int:
        """Drop the runs that ended more than `older_than` ago ("30d", "12h", seconds);
        the runs on branch heads and those incremental runs build on stay. How many went."""
        return int(self._call("DELETE", "/run", params={"older_than": older_than})["dropped"])

    def run_status(self, commit: str, wait: float | None = None) -> Run:
        """The run on `commit` with its jobs; `wait`: up to that many seconds for it to end."""
        params = {"wait": str(wait) if wait else None}
        return Run.from_json(self._call("GET", f"/run/{_q(commit)}", params=params))

    def wait_run(
        self, commit: str, timeout: float | None = None, on_status: Callable[[Run], None] | None = None
    ) -> Run:
        """Block until the run on `commit` finishes (or `timeout` seconds pass); returns
        its last status. Long-polls, so a finished run returns at once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 10.0 if deadline is None else max(0.0, min(10.0, deadline - time.monotonic()))
            status = self.run_status(commit, wait=left or None)
            if on_status is not None:
                on_status(status)
            if status.over or (deadline is not None and time.monotonic() >= deadline):
                return status

    def job_log(self, name: str, commit: str | None = None) -> str:
        resp = self._request("GET", f"/job/{_q(name)}/log", params={"commit": commit}, headers={"accept": "text/plain"})
        return self._check(resp).text

    def open_job_file(self, name: str, path: str = "", commit: str | None = None) -> Iterator[bytes]:
        """A job's output for the run on `commit` (default: master's head), streamed."""
        url = f"/job/{_q(name)}/file" + (f"/{_q(path)}" if path else "")
        try:
            with self.http.stream(
                "GET", url, params={"commit": commit} if commit else {}, headers={"accept": "*/*"}
            ) as resp:
                self._check(resp)
                yield from resp.iter_bytes()
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"reading job {name!r} output from {self.url} failed: {exc}") from exc

    def get_job_file(self, name: str, path: str = "", commit: str | None = None) -> bytes:
        return b"".join(self.open_job_file(name, path, commit))

    def ls_job(self, name: str, path: str = "", commit: str | None = None) -> list[FileInfo]:
        target = f"/job/{_q(name)}/file/" + (f"{_q(path.strip('/'))}/*" if path.strip("/") else "*")
        return [FileInfo.from_json(e) for e in self._call("GET", target, params={"commit": commit})]

    # ---- identity and access: users, keys and the audit log are the server's -----------
    def whoami(self) -> WhoAmI:
        """Who the server takes this client for (also a check of its credentials)."""
        return WhoAmI.from_json(self._call("GET", f"{self.root}/whoami"))

    def users(self) -> list[User]:
        """Every user (server admins only)."""
        return [User.from_json(u) for u in self._call("GET", f"{self.root}/user")]

    def user(self, name: str) -> User:
        """A user with its keys and roles (the user itself, or a server admin)."""
        return User.from_json(self._call("GET", self._user_url(name)))

    def create_user(self, name: str, admin: bool = False) -> NewKey:
        """A new user (`admin`: a server admin) and its first access key, secret included:
        the only time it is shown."""
        return NewKey.from_json(self._call("POST", self._user_url(name), params={"admin": "1" if admin else None}))

    def set_admin(self, name: str, admin: bool) -> User:
        """Make a user a server admin, or not (the last admin cannot stop being one)."""
        return User.from_json(self._call("PUT", self._user_url(name), params={"admin": "1" if admin else "0"}))

    def delete_user(self, name: str) -> None:
        """Delete a user, its keys and its roles."""
        self._call("DELETE", self._user_url(name))

    def keys(self, user: str) -> list[KeyInfo]:
        """A user's access keys, without their secrets."""
        return [KeyInfo.from_json(k) for k in self._call("GET", self._user_url(user) + "/key")]

    def create_key(self, user: str) -> NewKey:
        """Another access key for `user`; its secret is returned this once."""
        return NewKey.from_json(self._call("POST", self._user_url(user) + "/key"))

    def key(self, key_id: str) -> KeyInfo:
        return KeyInfo.from_json(self._call("GET", self._key_url(key_id)))

    def disable_key(self, key_id: str) -> None:
        """Refuse the key from now on (kept, so it can be enabled again)."""
        self._call("POST", self._key_url(key_id) + "/disable")

    def enable_key(self, key_id: str) -> None:
        self._call("POST", self._key_url(key_id) + "/enable")

    def rotate_key(self, key_id: str) -> NewKey:
        """A new key for the same user, the old one disabled (delete it once nothing uses it)."""
        return NewKey.from_json(self._call("POST", self._key_url(key_id) + "/rotate"))

    def delete_key(self, key_id: str) -> None:
        self._call("DELETE", self._key_url(key_id))

    def audit(
        self, limit: int = 100, before: int | None = None, user: str | None = None, repo: str | None = None
    ) -> list[AuditEntry]:
        """The newest audit entries first (server admins only); `before` an entry id pages
        back, `user` and `repo` filter."""
        params = {"limit": str(limit), "before": None if before is None else str(before), "user": user, "repo": repo}
        return [AuditEntry.from_json(a) for a in self._call("GET", f"{self.root}/audit", params=params)]

    def _user_url(self, name: str) -> str:
        return f"{self.root}/user/{_q(check_user_name(name))}"

    def _key_url(self, key_id: str) -> str:
        return f"{self.root}/key/{_q(key_id)}"

    # ---- roles and protected branches of this client's repository --------------------------
    def grants(self) -> list[Grant]:
        """Who has which role on the repository (its admins only)."""
        return [Grant.from_json(g) for g in self._call("GET", "/access")]

    def grant(self, user: str, role: str) -> Grant:
        """Give `user` the role read, write or admin on the repository (replacing its role)."""
        return Grant.from_json(self._call("PUT", f"/access/{_q(check_user_name(user))}", params={"role": role}))

    def revoke(self, user: str) -> None:
        """Take `user`'s role on the repository away (NotFound if it had none)."""
        self._call("DELETE", f"/access/{_q(check_user_name(user))}")

    def protected(self) -> list[str]:
        """The repository's protected-branch patterns: branches that change only by merge."""
        return [str(p) for p in self._call("GET", "/protected")]

    def protect(self, pattern: str) -> bool:
        """Protect the branches matching `pattern` (a name, or a glob: `release-*`);
        False if they already were."""
        return bool(self._call("PUT", f"/protected/{_q(check_branch_pattern(pattern))}")["added"])

    def unprotect(self, pattern: str) -> None:
        """Drop a protection rule (NotFound if there is none by that pattern)."""
        self._call("DELETE", f"/protected/{_q(check_branch_pattern(pattern))}")

    # ---- sync: the two ends of a clone, pull or push (driven by pfs.sync.transfer) --------
    def sync_ancestors(self, commits: list[str], limit: int) -> list[Ancestor]:
        """A page of the commit graph, breadth first from `commits`."""
        body = orjson.dumps({"commits": commits, "limit": limit})
        return [Ancestor.from_json(c) for c in self._call("POST", "/sync/ancestors", content=body)["commits"]]

    def sync_missing(self, objects: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The (kind, id) pairs this server lacks, in the order given."""
        res = self._call("POST", "/sync/missing", content=orjson.dumps({"objects": objects}))
        return [(kind, key) for kind, key in res["missing"]]

    def sync_walk(self, commits: list[str]) -> Iterator[tuple[str, str]]:
        """(kind, id) of the objects each commit adds to its first parent, children first;
        streamed. A list cut short raises Unavailable; the server's error, its class."""
        try:
            with self.http.stream("POST", "/sync/walk", content=orjson.dumps({"commits": commits})) as resp:
                self._check(resp)
                for line in resp.iter_lines():
                    if line == ".":
                        return
                    if line.startswith("! "):
                        body = orjson.loads(line[2:])
                        raise errors.from_json(500, body if isinstance(body, dict) else {})
                    kind, _, key = line.partition(" ")
                    yield kind, key
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"object list from {self.url} failed: {exc}") from exc
        raise errors.Unavailable(f"object list from {self.url} was cut short")

    def sync_fetch(self, objects: list[tuple[str, str]]) -> Iterator[bytes]:
        """The raw object stream (pfs.sync framing) for these (kind, id) pairs."""
        try:
            with self.http.stream("POST", "/sync/fetch", content=orjson.dumps({"objects": objects})) as resp:
                self._check(resp)
                yield from resp.iter_bytes()
        except httpx.TransportError as exc:
            raise errors.Unavailable(f"object stream from {self.url} failed: {exc}") from exc

    def sync_receive(self, stream: Iterable[bytes]) -> ReceiveCounts:
        """Send an object stream; the server verifies, stores and indexes it: counts back."""
        return ReceiveCounts.from_json(self._call("POST", "/sync/objects", content=stream))

    def sync_update_ref(self, branch: str, new: str, old: str | None = None, force: bool = False) -> RefUpdate:
        """Move `branch` to `new` if it is still at `old` ("" = no commit); fast-forward
        only unless `force`. Raises NotFastForward, BranchMoved, DirtyBranch (409)."""
        params = {"branch": branch, "new": new, "old": old, "force": "1" if force else None}
        return RefUpdate.from_json(self._call("POST", "/sync/ref", params=params))

    def fsck(self, quick: bool = False) -> FsckReport:
        """The server's check of its storage. A check that found
        problems answers an error status with that report, returned like a clean one; any
        other error (an unreachable store, not pfs) raises, never passing for a report."""
        resp = self._request("GET", "/fsck", params={"quick": "1" if quick else None})
        with contextlib.suppress(ValueError):
            body = resp.json()
            if isinstance(body, dict) and isinstance(body.get("problems"), list) and "ok" in body:
                return FsckReport.from_json(body)
        return FsckReport.from_json(self._json(self._check(resp)))

    def du(self, grace: str | None = None) -> StorageUsage:
        """The repository's storage report (repository admins). `grace`: how old an
        unreachable object must be to count as reclaimable ("24h" by default; "0": all)."""
        resp = self._request("GET", "/du", params={"grace": grace})
        with contextlib.suppress(ValueError):
            body = resp.json()
            if isinstance(body, dict) and isinstance(body.get("problems"), list) and "objects" in body:
                return StorageUsage.from_json(body)  # a walk that met damage answers 500 with its report
        return StorageUsage.from_json(self._json(self._check(resp)))

    def gc(self, grace: str | None = None, dry_run: bool = False) -> GcReport:
        """Garbage collection (repository admins): delete what no root reaches, last written
        more than `grace` ago ("24h" by default). 409 if one runs already. It waits for the
        whole collection: no read timeout."""
        params = {"grace": grace, "dry_run": "1" if dry_run else None}
        resp = self._request("POST", "/gc", params=params, timeout=httpx.Timeout(None, connect=10.0))
        with contextlib.suppress(ValueError):
            body = resp.json()
            if isinstance(body, dict) and isinstance(body.get("problems"), list) and "deleted" in body:
                return GcReport.from_json(body)  # a mark that met damage deletes nothing: 500 with its report
        return GcReport.from_json(self._json(self._check(resp)))

    def retention(self) -> dict[str, float]:
        """Retention rules: branch -> seconds of its commits' data kept."""
        return {r["branch"]: float(r["keep"]) for r in self._call("GET", "/retention")}

    def set_retention(self, branch: str, keep: str) -> None:
        """Keep the data of `branch`'s commits younger than `keep` ("30d"), and of its head;
        a garbage collection removes the rest (history and file lists stay). Admins."""
        self._call("PUT", f"/retention/{_q(branch)}", params={"keep": keep})

    def drop_retention(self, branch: str) -> None:
        self._call("DELETE", f"/retention/{_q(branch)}")

    def gc_status(self) -> tuple[bool, GcReport | None]:
        """Whether a garbage collection runs now, and the last finished one's report."""
        body = self._call("GET", "/gc")
        last = body.get("last")
        return bool(body.get("running")), GcReport.from_json(last) if last and "deleted" in last else None


class _QueueWriter:
    """File-like sink that hands tar output to the uploading generator, bounded."""

    def __init__(self, q: queue.Queue[bytes | BaseException | None]) -> None:
        self.q = q

    def write(self, data: bytes) -> int:
        self.q.put(bytes(data))
        return len(data)


def _tar_stream(local: str, on_bytes: Callable[[int], None] | None) -> Iterator[bytes]:
    """A tar of the regular files below `local`, produced while it is being sent."""
    if shutil.which("tar"):
        yield from _system_tar(local, on_bytes)
    else:
        yield from _python_tar(local, on_bytes)


def _system_tar(local: str, on_bytes: Callable[[int], None] | None) -> Iterator[bytes]:
    """GNU/BSD tar packs small files several times faster than `tarfile`; we still choose
    the files (regular ones only, in path order) and feed it their names."""
    with tempfile.TemporaryFile() as errlog:  # a file, not a pipe: tar never blocks on it
        proc = subprocess.Popen(
            ["tar", "-C", local, "--null", "--no-recursion", "-cf", "-", "-T", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
        )
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None

        def feed() -> None:
            try:
                for _, rel, st in _walk_files(local):
                    stdin.write(rel.encode("utf-8", "surrogateescape") + b"\0")
                    if on_bytes is not None:
                        on_bytes(st.st_size)
            except BrokenPipeError:
                pass
            finally:
                with contextlib.suppress(BrokenPipeError):
                    stdin.close()

        t = threading.Thread(target=feed, daemon=True)
        t.start()
        done = False
        try:
            while piece := stdout.read(STREAM_PIECE):
                yield piece
            done = True
        finally:
            if not done:
                proc.kill()  # the upload stopped early
            t.join()
            code = proc.wait()
        if code != 0:
            errlog.seek(0)
            raise errors.BadRequest(f"tar of {local} failed: {errlog.read().decode(errors='replace')[:500]}")


def _python_tar(local: str, on_bytes: Callable[[int], None] | None) -> Iterator[bytes]:
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=16)

    def produce() -> None:
        try:
            with tarfile.open(fileobj=_QueueWriter(q), mode="w|", bufsize=1 << 20) as tar:  # type: ignore[call-overload]
                for full, rel, st in _walk_files(local):
                    # A bare TarInfo: no owner/group lookups per file, which dominate for small files.
                    info = tarfile.TarInfo(rel)
                    info.size, info.mtime, info.mode = st.st_size, int(st.st_mtime), st.st_mode & 0o777
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                    if on_bytes is not None:
                        on_bytes(st.st_size)
            q.put(None)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(exc)

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    while True:
        item = q.get()
        if item is None:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    t.join()


def _walk_files(root: str, rel: str = "") -> Iterator[tuple[str, str, os.stat_result]]:
    """Regular files below `root` in path order, with their stat; symlinks are skipped."""
    with os.scandir(os.path.join(root, rel) if rel else root) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        name = f"{rel}/{e.name}" if rel else e.name
        if e.is_dir(follow_symlinks=False):
            yield from _walk_files(root, name)
        elif e.is_file(follow_symlinks=False):
            yield e.path, name, e.stat(follow_symlinks=False)


def _body_size(resp: httpx.Response) -> int | None:
    """The size of the bytes `iter_bytes` will yield, when the headers say it: Content-Length
    counts the encoded body, so only an unencoded one."""
    length = resp.headers.get("content-length", "")
    if length.isdigit() and resp.headers.get("content-encoding", "identity").lower() == "identity":
        return int(length)
    return None


def _stream(data: IO[bytes] | Iterable[bytes]) -> Iterable[bytes]:
    """A body to stream: a file object read a piece at a time, or the caller's pieces."""
    read = getattr(data, "read", None)
    if callable(read):
        return _pieces(cast(IO[bytes], data))
    return data


def _pieces(f: IO[bytes]) -> Iterator[bytes]:
    while True:
        piece = f.read(STREAM_PIECE)
        if not piece:
            return
        yield piece
