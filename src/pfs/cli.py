"""The `pfs` command: `serve` runs a node; the other verbs talk to one over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import sys
import time
from collections.abc import Iterator
from types import TracebackType
from typing import IO, Any, NoReturn
from urllib.parse import urlsplit

import click
from click.core import ParameterSource
from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    FileSizeColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from . import errors
from .client import DEFAULT_URL, ENV_KEY_ID, ENV_SECRET, Client, write_credentials_file
from .records import NewKey, Run

err_console = Console(stderr=True)

# C0 and C1 controls (ESC, CR, LF, ...), DEL, the Unicode line and paragraph separators and
# the bidi overrides: what could move the cursor, recolour, forge a line or reorder one.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(m: re.Match[str]) -> str:
    c = m[0]
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def printable(text: object) -> str:
    r"""`text` safe for a terminal: control characters escaped (ESC as `\x1b`, a newline as
    `\n`), so what a server sends can neither drive the terminal nor forge output lines."""
    return _UNPRINTABLE.sub(_escape_char, str(text))


def first_line(text: object) -> str:
    """The first non-blank line of a (commit) message, as `git log --oneline` shows it."""
    return next((ln for ln in str(text).splitlines() if ln.strip()), "")


def error_line(message: str) -> None:
    """`error: <message>` as one line on stderr (red on a terminal), whatever it holds."""
    err_console.print(Text.assemble(("error:", "red"), " ", printable(message)), soft_wrap=True, highlight=False)


def _reader_gone() -> NoReturn:
    """The reader of our output left (`pfs ls | head`): stop quietly with status 141, what a
    shell reports for git or coreutils killed by SIGPIPE. Both streams are pointed at
    /dev/null first, so the interpreter's final flush cannot fail again and print noise."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(devnull, stream.fileno())
    sys.exit(141)


def _usage_line(exc: click.ClickException) -> str:
    """A click error (three lines and exit 2 by default) as one line: what is wrong, and
    where the help is."""
    msg = " ".join(ln.strip() for ln in exc.format_message().splitlines() if ln.strip())
    if len(msg) > 1 and msg[0].isupper() and msg[1].islower():
        msg = msg[0].lower() + msg[1:]  # "Missing argument 'X'" -> "missing ...", "REMOTE is ..." stays
    if isinstance(exc, click.UsageError):
        where = exc.ctx.command_path if exc.ctx is not None else "pfs"
        msg = f"{msg if msg.endswith(('.', '?', '!')) else msg + '.'} See '{where} --help'."
    return msg


class PfsGroup(click.Group):
    """Every failure is one line on stderr and exit status 1, usage errors included (click
    would print three lines and exit 2), never a traceback; a closed output pipe ends quietly."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) < 2:
            kwargs.setdefault("prog_name", "pfs")  # "pfs put", not "python -m pfs.cli put", in hints
        kwargs["standalone_mode"] = False  # errors come back here instead of click printing them
        try:
            rv = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as exc:  # `pfs` or `pfs job` alone asks for help
            click.echo(exc.ctx.get_help())
            sys.exit(0)
        except click.ClickException as exc:
            error_line(_usage_line(exc))
            sys.exit(1)
        except click.Abort:  # Ctrl-C: the shell's status for SIGINT, no message
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            return super().make_context(*args, **kwargs)
        except BrokenPipeError:  # `pfs --help | head -1`
            _reader_gone()

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # Only stdout or stderr get here: a socket's broken pipe reaches us as an httpx
            # error, which the client turns into errors.Unavailable.
            _reader_gone()
        except errors.PfsError as exc:
            error_line(str(exc.message))
            for c in exc.details.get("conflicts", []):
                path = c.get("path") if isinstance(c, dict) else c
                err_console.print(Text(f"  conflict: {printable(path)}"), soft_wrap=True, highlight=False)
            sys.exit(1)
        except OSError as exc:  # a local file problem (pfs get to a missing directory...): no traceback
            where = f": {exc.filename}" if exc.filename else ""
            error_line(f"{exc.strerror or exc}{where}")
            sys.exit(1)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # a bug, or a server that is not pfs: still one line
            if os.environ.get("PFS_DEBUG"):
                raise
            error_line(f"unexpected {type(exc).__name__}: {exc} (PFS_DEBUG=1 shows the traceback)")
            sys.exit(1)


@click.group(cls=PfsGroup)
@click.option("--url", envvar="PFS_URL", default=DEFAULT_URL, show_default=True, help="pfs server")
@click.option("--repo", "-r", envvar="PFS_REPO", default=None, help="repository (default: the server's default one)")
@click.pass_context
def main(ctx: click.Context, url: str, repo: str | None) -> None:
    """pfs: a versioned file system with dockerized MapReduce."""
    ctx.obj = (url, repo or None)


def client(ctx: click.Context) -> Client:
    url, repo = ctx.find_root().obj
    return Client(url, repo=repo)


# ---- repositories -------------------------------------------------------------------------


@main.group("repo", invoke_without_command=False)
def repo_group() -> None:
    """Repositories of the server: list, create, delete."""


@repo_group.command("list")
@click.pass_context
def repo_list(ctx: click.Context) -> None:
    """Every repository, one per line (the default one marked)."""
    for r in client(ctx).repos():
        click.echo(f"{printable(r.name)}\t{printable(r.created)}" + ("\tdefault" if r.default else ""))


@repo_group.command("create")
@click.argument("name")
@click.pass_context
def repo_create(ctx: click.Context, name: str) -> None:
    """Create an empty repository NAME (a valid S3 bucket name) with a master branch."""
    r = client(ctx).create_repo(name)
    click.echo(f"Created repository {printable(r.name)}.")


@repo_group.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="delete even with commits, uncommitted writes or jobs")
@click.pass_context
def repo_delete(ctx: click.Context, name: str, force: bool) -> None:
    """Delete repository NAME and everything in it (refused unless empty, or --force)."""
    client(ctx).delete_repo(name, force)
    click.echo(f"Deleted repository {printable(name)}.")


def _interactive() -> bool:
    """Progress is drawn only on a terminal that can redraw a line, as git does."""
    try:
        return sys.stderr.isatty() and err_console.is_interactive
    except (ValueError, AttributeError):  # stderr closed
        return False


class Transfer:
    """One upload or download as seen on a terminal: a bar on stderr while it runs (bytes,
    percent, rate and ETA when the size is known; bytes and rate when not) and a one-line
    summary after it. Off a terminal both stay silent, so scripts and logs see only the
    command's output; stdout is never written (it may be the data)."""

    def __init__(self, verb: str, done_verb: str, name: str, *, quiet: bool = False) -> None:
        self.verb, self.done_verb, self.name = verb, done_verb, printable(name)
        self.on = not quiet and _interactive()
        self.done = 0
        self.detail = ""  # e.g. "3 files, " in the summary
        self.began = time.monotonic()
        self._started = False
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def start(self, total: int | None) -> None:
        """The size is known now (None: it will not be): draw the bar that fits it."""
        if self._started:
            return
        self._started = True
        if not self.on:
            return
        columns: list[str | ProgressColumn] = [TextColumn("{task.description}")]
        if total is None:
            columns += [FileSizeColumn(), TransferSpeedColumn(), TimeElapsedColumn()]
        else:
            columns += [
                BarColumn(),
                DownloadColumn(),
                TaskProgressColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            ]
        self._bar = Progress(
            *columns, console=err_console, transient=True, redirect_stdout=False, redirect_stderr=False
        )
        self._task = self._bar.add_task(escape(f"{self.verb} {self.name}"), total=total)
        self._bar.start()

    def advance(self, n: int) -> None:
        self.start(None)
        self.done += n
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=n)

    def summary(self) -> str:
        secs = time.monotonic() - self.began
        rate = f" ({decimal(int(self.done / secs))}/s)" if secs > 0 else ""
        return f"{self.done_verb} {self.name}: {self.detail}{decimal(self.done)} in {secs:.1f} s{rate}"

    def __enter__(self) -> Transfer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.stop()
        if exc_type is None and self.on:
            err_console.print(Text(self.summary()), soft_wrap=True, highlight=False)


@main.command()
@click.option("--addr", envvar="PFS_ADDR", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to listen on")
@click.option("--s3-addr", envvar="PFS_S3_ADDR", default=None, help="HOST:PORT of the S3 gateway [default: no gateway]")
@click.option("--tls-cert", envvar="PFS_TLS_CERT", default=None, help="certificate file (PEM): serve HTTPS")
@click.option("--tls-key", envvar="PFS_TLS_KEY", default=None, help="its private key file (PEM)")
@click.option("--data-dir", envvar="PFS_DATA_DIR", default=None, help="where data lives [default: ~/.pfs]")
@click.option("--max-file-size", type=int, default=None, help="reject files larger than this many bytes")
@click.option(
    "--meta-url",
    envvar="PFS_META_URL",
    default=None,
    help="metadata: postgresql://user:password@host:port/db for a cluster [default: SQLite in the data dir]",
)
@click.option(
    "--objects-url",
    envvar="PFS_OBJECTS_URL",
    default=None,
    help="objects: s3://bucket/prefix (endpoint: PFS_S3_ENDPOINT, keys: AWS_*) [default: the data dir]",
)
@click.option(
    "--max-connections",
    envvar="PFS_MAX_CONNECTIONS",
    type=click.IntRange(1),
    default=1000,
    show_default=True,
    help="open connections in all; beyond this requests get 503",
)
@click.option(
    "--max-connections-per-client",
    envvar="PFS_MAX_CONNECTIONS_PER_CLIENT",
    type=click.IntRange(1),
    default=None,
    help="open connections from one address [default: a quarter of --max-connections]",
)
@click.option(
    "--header-timeout",
    envvar="PFS_HEADER_TIMEOUT",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="seconds for a request's line and headers to arrive",
)
@click.option(
    "--body-timeout",
    envvar="PFS_BODY_TIMEOUT",
    type=click.FloatRange(0.1),
    default=30.0,
    show_default=True,
    help="seconds a request body may stall (a slow upload that keeps sending is fine)",
)
@click.option(
    "--send-timeout",
    envvar="PFS_SEND_TIMEOUT",
    type=click.FloatRange(0.1),
    default=60.0,
    show_default=True,
    help="seconds a client may read nothing of a response",
)
@click.option(
    "--job-runtime",
    envvar="PFS_JOB_RUNTIME",
    type=click.Choice(["docker", "process", "swarm"]),
    default=None,
    help="how jobs run [default: docker]; 'process' runs job commands on this host, unsandboxed",
)
@click.option(
    "--job-s3-inputs",
    envvar="PFS_JOB_S3_INPUTS",
    default=None,
    help="buckets (or bucket/prefix) that s3:// job inputs may read, comma-separated [default: none]",
)
@click.option(
    "--job-max-memory",
    envvar="PFS_JOB_MAX_MEMORY",
    default=None,
    help="most memory a job worker may ask for, e.g. 8g [default: half the host's memory]",
)
@click.option(
    "--job-max-cpus",
    envvar="PFS_JOB_MAX_CPUS",
    type=click.FloatRange(0.01),
    default=None,
    help="most CPUs a job worker may ask for [default: the host's cores]",
)
@click.option(
    "--job-max-parallelism",
    envvar="PFS_JOB_MAX_PARALLELISM",
    type=click.IntRange(1),
    default=None,
    help="most workers one map job may ask for [default: 4 per core]",
)
@click.option(
    "--jobs-at-once",
    envvar="PFS_JOBS_AT_ONCE",
    type=click.IntRange(1, 64),
    default=None,
    help="jobs of one run that may execute together (those that do not read one another) [default: 4]",
)
@click.option(
    "--job-user",
    envvar="PFS_JOB_USER",
    default="65534:65534",
    show_default=True,
    help="user (uid[:gid]) job containers run as",
)
@click.option(
    "--job-firewall",
    envvar="PFS_JOB_FIREWALL",
    type=click.Choice(["pfs", "operator"]),
    default="pfs",
    show_default=True,
    help="who adds the host rule cutting job containers off from this host: pfs (needs root) or the operator",
)
@click.option(
    "--default-repo",
    envvar="PFS_DEFAULT_REPO",
    default="default",
    show_default=True,
    help="the repository that routes without /repo/<name>/ address (made if missing)",
)
@click.option(
    "--insecure",
    envvar="PFS_INSECURE",
    is_flag=True,
    help="serve on a non-loopback address even with no users (anyone who reaches it may do anything)",
)
@click.option("--log-level", envvar="PFS_LOG_LEVEL", default="warning", show_default=True, help="info logs requests")
def serve(
    addr: str,
    s3_addr: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    data_dir: str | None,
    max_file_size: int | None,
    meta_url: str | None,
    objects_url: str | None,
    max_connections: int,
    max_connections_per_client: int | None,
    header_timeout: float,
    body_timeout: float,
    send_timeout: float,
    job_runtime: str | None,
    job_s3_inputs: str | None,
    job_max_memory: str | None,
    job_max_cpus: float | None,
    job_max_parallelism: int | None,
    jobs_at_once: int | None,
    job_user: str,
    job_firewall: str,
    default_repo: str,
    insecure: bool,
    log_level: str,
) -> None:
    """Run a pfs node: embedded storage (SQLite + local objects) by default; with PostgreSQL
    and S3, as many nodes as you like serve the same repositories."""
    from .config import Config, parse_addr, parse_size, split_list  # storage loads only for the verbs using it
    from .http.guard import Limits
    from .http.node import serve as run_node

    cfg = Config.from_env(data_dir)
    if max_file_size is not None:
        cfg.max_file_size = max_file_size
    cfg.meta_url = meta_url or cfg.meta_url
    cfg.objects_url = objects_url or cfg.objects_url
    cfg.job_runtime = job_runtime or cfg.job_runtime
    if job_s3_inputs is not None:
        cfg.job_s3_inputs = split_list(job_s3_inputs)
    if job_max_memory is not None:
        cfg.job_max_memory = parse_size(job_max_memory)
    cfg.job_max_cpus = job_max_cpus or cfg.job_max_cpus
    cfg.job_max_parallelism = job_max_parallelism or cfg.job_max_parallelism
    cfg.jobs_at_once = jobs_at_once or cfg.jobs_at_once
    cfg.job_user, cfg.job_firewall = job_user, job_firewall
    from .paths import check_repo_name

    try:
        cfg.default_repo = check_repo_name(default_repo)
    except errors.InvalidName as exc:
        raise click.BadParameter(exc.message, param_hint="--default-repo") from None
    try:
        host, port = parse_addr(addr)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--addr") from None
    limits = Limits(
        header_timeout=header_timeout,
        body_timeout=body_timeout,
        send_timeout=send_timeout,
        max_per_client=max_connections_per_client or max(1, max_connections // 4),
    )
    s3 = None
    if s3_addr:
        try:
            s3 = parse_addr(s3_addr)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--s3-addr") from None
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    for flag, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if path is not None and not os.path.isfile(path):
            raise click.BadParameter(f"no such file: {path}", param_hint=flag)
    tls = (tls_cert, tls_key) if tls_cert and tls_key else None
    level = log_level.lower()
    sys.exit(run_node(cfg, host, port, limits, max_connections, level, _announce, s3=s3, tls=tls, insecure=insecure))


def _announce(line: str) -> None:
    if line.startswith("error: "):
        error_line(line[len("error: ") :])
    else:
        err_console.print(Text(line), soft_wrap=True, highlight=False)


def _read_pieces(f: IO[bytes], t: Transfer) -> Iterator[bytes]:
    # read1: a pipe's bytes go as they come (and show on the bar), not once 1 MiB has gathered
    read = getattr(f, "read1", f.read)
    while piece := read(1 << 20):
        t.advance(len(piece))
        yield piece


def _stdin_size() -> int | None:
    """Bytes left on stdin when it is a regular file (`pfs put - x < file`); None for a pipe."""
    try:
        fd = sys.stdin.buffer.fileno()
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            return max(0, st.st_size - os.lseek(fd, 0, os.SEEK_CUR))
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _put_stream(c: Client, f: IO[bytes], size: int | None, remote: str, branch: str, quiet: bool = False) -> None:
    with Transfer("put", "put", remote, quiet=quiet) as t:
        t.start(size)
        res = c.put_file(remote, _read_pieces(f, t), branch)
    click.echo(f"{printable(branch)}/{printable(res.path)}  {printable(res.size)} bytes")


@main.command()
@click.argument("local", type=click.Path(exists=True, allow_dash=True))
@click.argument("remote", required=False)
@click.option("-b", "--branch", default="master", show_default=True)
@click.pass_context
def put(ctx: click.Context, local: str, remote: str | None, branch: str) -> None:
    """Write LOCAL (a file, a directory, or - for stdin) to REMOTE on a branch (dirty until commit)."""
    c = client(ctx)
    if local == "-":
        if not remote:
            raise click.UsageError("REMOTE is required when reading from stdin")
        # no bar while someone types the data on the same terminal
        _put_stream(c, sys.stdin.buffer, _stdin_size(), remote, branch, quiet=sys.stdin.isatty())
        return
    if os.path.isdir(local):
        from .client import _walk_files

        base = (remote or os.path.basename(os.path.abspath(local))).strip("/")
        total = sum(st.st_size for _, _, st in _walk_files(local))  # the files the tar will hold
        with Transfer("put", "put", base or "/") as t:
            t.start(total)
            res = c.put_dir(local, base, branch, on_bytes=t.advance)
            t.detail = f"{printable(res.files)} files, "
        click.echo(f"{printable(branch)}/{printable(base)}  {printable(res.files)} files, {printable(res.size)} bytes")
        return
    with open(local, "rb") as f:
        _put_stream(c, f, os.fstat(f.fileno()).st_size, remote or os.path.basename(local), branch)


@main.command()
@click.argument("remote")
@click.argument("local", required=False)
@click.option("-c", "--commit", default=None, help="commit id or branch (committed state)")
@click.option("-b", "--branch", default=None, help="branch including dirty writes [default: master]")
@click.pass_context
def get(ctx: click.Context, remote: str, local: str | None, commit: str | None, branch: str | None) -> None:
    """Read REMOTE to LOCAL (default: stdout)."""
    c = client(ctx)
    if local is None or local == "-":
        out = sys.stdout.buffer
        # stdout on the terminal shows the data itself: a bar or summary would garble it
        with Transfer("get", "got", remote, quiet=sys.stdout.isatty()) as t:
            for piece in c.open_file(remote, commit, branch, on_size=t.start):
                out.write(piece)
                t.advance(len(piece))
            out.flush()
        return
    tmp = local + ".pfs-partial"
    try:
        with Transfer("get", "got", remote) as t:
            with open(tmp, "wb") as f:
                for piece in c.open_file(remote, commit, branch, on_size=t.start):
                    f.write(piece)
                    t.advance(len(piece))
            os.replace(tmp, local)  # never leave a half-written file under the real name
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@main.command("ls")
@click.argument("path", default="")
@click.option("-c", "--commit", default=None)
@click.option("-b", "--branch", default=None)
@click.pass_context
def ls(ctx: click.Context, path: str, commit: str | None, branch: str | None) -> None:
    """List a directory."""
    for e in client(ctx).ls(path, commit, branch):
        if e.is_dir:
            click.echo(f"{'dir':>12}  {printable(e.path)}/")
        else:
            click.echo(f"{printable(e.size):>12}  {printable(e.path)}")


@main.command()
@click.argument("path")
@click.option("-b", "--branch", default="master", show_default=True)
@click.option("-r", "--recursive", is_flag=True, help="delete a directory and everything in it")
@click.pass_context
def rm(ctx: click.Context, path: str, branch: str, recursive: bool) -> None:
    """Delete a file (dirty until commit)."""
    res = client(ctx).delete_file(path, branch, recursive)
    click.echo(f"deleted {printable(res)} file(s)")


@main.command()
@click.option("-b", "--branch", default="master", show_default=True)
@click.option("-m", "--message", default="", help="commit message")
@click.option("--run", is_flag=True, help="also run the job DAG on the new commit (see `pfs job wait`)")
@click.pass_context
def commit(ctx: click.Context, branch: str, message: str, run: bool) -> None:
    """Commit a branch's dirty writes; prints the commit id."""
    click.echo(printable(client(ctx).commit(branch, message, run=run).id))


@main.command()
@click.argument("name", required=False)
@click.option("-c", "--commit", "from_", default=None, help="commit or branch to start from [default: master]")
@click.option("-d", "--delete", is_flag=True, help="delete the branch (its commits stay)")
@click.pass_context
def branch(ctx: click.Context, name: str | None, from_: str | None, delete: bool) -> None:
    """List branches, or create NAME at a commit (O(1): no data copied)."""
    c = client(ctx)
    if name is None:
        for b in c.branches():
            click.echo(f"{printable(b.name):<24} {printable(b.head or '-')}")
    elif delete:
        c.delete_branch(name)
        click.echo(f"deleted branch {printable(name)}")
    else:
        res = c.create_branch(name, from_)
        click.echo(f"{printable(name)} -> {printable(res.head or '(no commits)')}")


@main.command()
@click.argument("ref", default="master")
@click.option("-n", "--limit", type=int, default=None)
@click.pass_context
def log(ctx: click.Context, ref: str, limit: int | None) -> None:
    """History of a branch or commit, newest first: one line each, with the message's first line."""
    for c in client(ctx).log(ref, limit):
        when, branch, message = printable(c.time[:19]), printable(c.branch), printable(first_line(c.message))
        click.echo(f"{printable(c.id[:12])}  {when}  {branch:<12} {message}")


@main.command()
@click.argument("a")
@click.argument("b")
@click.pass_context
def diff(ctx: click.Context, a: str, b: str) -> None:
    """Files added (A), modified (M) and deleted (D) from A to B."""
    for d in client(ctx).diff(a, b):
        click.echo(f"{printable(d.status)}\t{printable(d.path)}")


@main.command()
@click.argument("source")
@click.argument("into")
@click.option("-s", "--strategy", type=click.Choice(["ours", "theirs"]), default=None, help="resolve conflicts")
@click.option("-m", "--message", default=None)
@click.pass_context
def merge(ctx: click.Context, source: str, into: str, strategy: str | None, message: str | None) -> None:
    """Three-way merge of SOURCE into branch INTO."""
    res = client(ctx).merge(source, into, strategy, message)
    click.echo(f"{printable(res.kind)}: {printable(res.id)}")


@main.command()
@click.argument("branch")
@click.argument("commit")
@click.option("-m", "--message", default=None)
@click.pass_context
def revert(ctx: click.Context, branch: str, commit: str, message: str | None) -> None:
    """New commit on BRANCH with the content of COMMIT (history kept)."""
    click.echo(printable(client(ctx).revert(branch, commit, message).id))


@main.command()
@click.option("-b", "--branch", default="master", show_default=True)
@click.pass_context
def discard(ctx: click.Context, branch: str) -> None:
    """Drop a branch's uncommitted changes."""
    click.echo(f"discarded {printable(client(ctx).discard(branch))} change(s)")


_STORAGE_OPTIONS = {"data_dir": "PFS_DATA_DIR", "meta_url": "PFS_META_URL", "objects_url": "PFS_OBJECTS_URL"}


def _given(ctx: click.Context, name: str) -> int:
    """How explicitly an option was given: 2 on the command line, 1 from the environment, 0 not."""
    source = ctx.get_parameter_source(name)
    return 2 if source is ParameterSource.COMMANDLINE else 1 if source is ParameterSource.ENVIRONMENT else 0


def _fsck_asks_server(ctx: click.Context, server: bool) -> bool:
    """What `pfs fsck` checks. --server, or a server named more explicitly than any storage
    (--url over PFS_DATA_DIR, PFS_URL over nothing): that server. Storage named more
    explicitly (or nothing named at all: ~/.pfs): that storage, offline. Both named alike:
    a usage error, rather than silently checking one of them."""
    url = _given(ctx.find_root(), "url")
    opts = {name: _given(ctx, name) for name in _STORAGE_OPTIONS}
    storage = max(opts.values())
    if server:
        if storage == 2:
            raise click.UsageError(
                "--server checks the server; --data-dir, --meta-url and --objects-url check storage directly: give one"
            )
        return True
    if url == 2 and storage == 2:
        raise click.UsageError(
            "--url names a server and --data-dir/--meta-url/--objects-url name storage: check one at a time"
        )
    if url == 1 and storage == 1:
        named = ", ".join(env for name, env in _STORAGE_OPTIONS.items() if opts[name] == 1)
        raise click.UsageError(
            f"both PFS_URL and {named} are set: give --server to check the server, or --data-dir to check storage"
        )
    return url > storage


@main.command()
@click.option("--data-dir", envvar="PFS_DATA_DIR", default=None, help="check this data dir directly [default: ~/.pfs]")
@click.option("--meta-url", envvar="PFS_META_URL", default=None, help="a cluster's metadata (as for serve)")
@click.option("--objects-url", envvar="PFS_OBJECTS_URL", default=None, help="a cluster's objects (as for serve)")
@click.option("--server", is_flag=True, help="ask the server at --url / PFS_URL (the default when one is given)")
@click.option("--quick", is_flag=True, help="check existence only, do not re-hash data")
@click.pass_context
def fsck(
    ctx: click.Context,
    data_dir: str | None,
    meta_url: str | None,
    objects_url: str | None,
    server: bool,
    quick: bool,
) -> None:
    """Check every reachable object: present and matching its hash. Checks the server given
    by --url or PFS_URL, else storage directly (offline): --data-dir or ~/.pfs, or a
    cluster's --meta-url and --objects-url."""
    if _fsck_asks_server(ctx, server):
        rep = client(ctx).fsck(quick)
        problems, ok = list(rep.problems), rep.ok
        counts = [printable(n) for n in (rep.commits, rep.trees, rep.files, rep.chunks)]
    else:
        from .config import Config
        from .repository.fsck import fsck as run_fsck

        cfg = Config.from_env(data_dir)
        cfg.meta_url = meta_url or cfg.meta_url
        cfg.objects_url = objects_url or cfg.objects_url
        repos = cfg.open_existing()
        _, only = ctx.find_root().obj
        targets = [repos.get(only)] if only else list(repos.each())
        problems, totals = [], [0, 0, 0, 0]
        for repo in targets:
            r = run_fsck(repo, verify_data=not quick)
            where = f"{repo.name}: " if len(targets) > 1 else ""
            problems += [where + p for p in r.problems]
            totals = [a + b for a, b in zip(totals, (r.commits, r.trees, r.files, r.chunks), strict=True)]
        ok = not problems
        counts = [str(n) for n in totals]
    for p in problems:
        click.echo(printable(p))
    click.echo(("ok: " if ok else "FAILED: ") + "{} commits, {} trees, {} files, {} chunks".format(*counts))
    sys.exit(0 if ok else 1)


@main.command()
@click.option(
    "--grace", default="24h", show_default=True, help="unreachable objects older than this count as reclaimable"
)
@click.pass_context
def du(ctx: click.Context, grace: str) -> None:
    """What the repository stores: each branch's bytes, what its history alone holds, and
    what a garbage collection would give back (repository admins)."""
    from .paths import human_bytes

    u = client(ctx).du(grace)
    click.echo(f"{'branch':<24} {'logical':>10} {'stored':>10} {'exclusive':>10}")
    for b in u.branches:
        click.echo(
            f"{printable(b.name):<24} {human_bytes(b.logical):>10} {human_bytes(b.stored):>10} "
            f"{human_bytes(b.exclusive):>10}"
        )
    click.echo(f"stored: {u.objects} objects, {human_bytes(u.stored)}")
    click.echo(
        f"reachable: {u.reachable} objects, {human_bytes(u.reachable_bytes)} "
        f"(logical {human_bytes(u.logical)}, dedupe {u.dedupe:.2f}x)"
    )
    click.echo(
        f"reclaimable: {u.reclaimable} objects, {human_bytes(u.reclaimable_bytes)} (unreachable, older than {grace})"
    )
    click.echo(f"unreachable, within the grace period: {u.young} objects, {human_bytes(u.young_bytes)}")
    click.echo(f"commits no branch reaches: {u.orphans}")
    for c in u.orphans_shown:
        first = c.message.splitlines()[0] if c.message else ""
        click.echo(printable(f"  {c.id[:12]}  {c.time}  {c.branch}  {first}"))
    for p in u.problems:
        error_line(p)
    sys.exit(1 if u.problems else 0)


@main.command()
@click.option("--grace", default="24h", show_default=True, help="keep unreachable objects written more recently")
@click.option("--dry-run", is_flag=True, help="report what would be deleted; delete nothing")
@click.option("--status", is_flag=True, help="say whether a collection runs now and what the last one did")
@click.pass_context
def gc(ctx: click.Context, grace: str, dry_run: bool, status: bool) -> None:
    """Garbage collection: delete the objects no branch, staged write, upload or job run
    reaches, last written more than --grace ago, while the server keeps serving
    (repository admins)."""
    from .paths import human_bytes

    c = client(ctx)
    if status:
        running, last = c.gc_status()
        click.echo("running" if running else "not running")
        if last is not None:
            click.echo(f"last: deleted {last.deleted} objects, {human_bytes(last.deleted_bytes)} ({last.seconds:g} s)")
        return
    with err_console.status("collecting garbage…") if _interactive() else contextlib.nullcontext():
        r = c.gc(grace, dry_run)
    verb = "would delete" if r.dry_run else "deleted"
    click.echo(f"{verb} {r.deleted} of {r.objects} objects, {human_bytes(r.deleted_bytes)} of {human_bytes(r.stored)}")
    click.echo(f"commits no branch reaches: {r.commits} (with {r.runs} job run(s))")
    if r.tmp_files:
        click.echo(f"temporary files of dead writes: {r.tmp_files}")
    for p in r.problems:
        error_line(p)
    sys.exit(1 if r.problems else 0)


@main.group()
def retention() -> None:
    """Retention rules: how long a branch keeps the data of its commits. Older commits keep
    their history and file lists; a garbage collection removes their data, and a read of
    it answers 410 Gone with the reason. A branch's head always keeps its data."""


@retention.command("ls")
@click.pass_context
def retention_ls(ctx: click.Context) -> None:
    """Each rule: branch and the seconds its commits' data is kept."""
    from .paths import human_duration

    for branch, keep in sorted(client(ctx).retention().items()):
        click.echo(f"{printable(branch)}\t{human_duration(keep)}")


@retention.command("set")
@click.argument("branch")
@click.argument("keep")
@click.pass_context
def retention_set(ctx: click.Context, branch: str, keep: str) -> None:
    """Keep the data of BRANCH's commits younger than KEEP (e.g. 30d) (repository admins)."""
    client(ctx).set_retention(branch, keep)


@retention.command("rm")
@click.argument("branch")
@click.pass_context
def retention_rm(ctx: click.Context, branch: str) -> None:
    """Drop BRANCH's rule: it keeps all its data again (what went stays gone)."""
    client(ctx).drop_retention(branch)


def _stderr_bar(*columns: ProgressColumn) -> Progress:
    """A progress display on stderr, drawn only on a terminal, gone when done."""
    return Progress(
        "[progress.description]{task.description}",
        *columns,
        console=err_console,
        transient=True,
        disable=not _interactive(),
    )


def _run_sync(verb: str, go: Any) -> None:
    """Run a transfer with a bytes/objects bar on stderr; one line per branch on stdout.
    Exit 1 if a branch was refused (not a fast-forward, moved, dirty): the others went."""
    from .sync import TransferReport

    with _stderr_bar(DownloadColumn(), TransferSpeedColumn()) as p:
        task = p.add_task(verb, total=None)
        rep: TransferReport = go(lambda n, size: p.update(task, completed=size, description=f"{verb}: {n} objects"))
    for b in rep.branches:
        name = printable(b.source if b.source == b.dest else f"{b.source} -> {b.dest}")
        if b.result == "rejected":
            click.echo(f"{name}: rejected: {printable(b.message)}")
        elif b.result in ("up-to-date", "ahead"):
            click.echo(f"{name}: {b.result} ({printable((b.old or b.new)[:12])})")
        else:
            click.echo(f"{name}: {b.result} {printable((b.old or '-')[:12])} -> {printable(b.new[:12])}")
    click.echo(
        f"sent {rep.objects} objects ({rep.bytes} bytes, {rep.overhead} bytes of negotiation), "
        f"{rep.commits} new commits, in {rep.seconds:.2f} s"
    )
    if not rep.ok:
        refused = [b.dest for b in rep.branches if b.result == "rejected"]
        error_line(f"{len(refused)} branch(es) not updated: {', '.join(refused)}")
        sys.exit(1)


def _refspecs(values: tuple[str, ...]) -> list[tuple[str, str]] | None:
    from .sync import parse_refspec

    return [parse_refspec(v) for v in values] or None


@main.command()
@click.argument("source")
@click.option("--to", "dest", default=None, help="the (empty) pfs to copy into [default: --url]")
@click.pass_context
def clone(ctx: click.Context, source: str, dest: str | None) -> None:
    """Copy every branch of the pfs at SOURCE, with its full history, into an empty pfs."""
    from . import sync

    # --url's client, with its credentials; a URL given here resolves its own
    _run_sync("clone", lambda show: sync.clone(source, dest or client(ctx), on_progress=show))


@main.command()
@click.argument("remote")
@click.option("-b", "--branch", "branches", multiple=True, help="BRANCH or REMOTE:LOCAL; repeat [default: all]")
@click.option("-f", "--force", is_flag=True, help="move branches even when it is not a fast-forward")
@click.pass_context
def pull(ctx: click.Context, remote: str, branches: tuple[str, ...], force: bool) -> None:
    """Fetch what the pfs at REMOTE has and this one lacks; fast-forward branches."""
    from . import sync

    specs = _refspecs(branches)
    _run_sync("pull", lambda show: sync.pull(remote, client(ctx), specs, force=force, on_progress=show))


@main.command()
@click.argument("remote")
@click.option("-b", "--branch", "branches", multiple=True, help="BRANCH or LOCAL:REMOTE; repeat [default: all]")
@click.option("-f", "--force", is_flag=True, help="move branches even when it is not a fast-forward")
@click.pass_context
def push(ctx: click.Context, remote: str, branches: tuple[str, ...], force: bool) -> None:
    """Send what this pfs has and the one at REMOTE lacks; fast-forward its branches."""
    from . import sync

    specs = _refspecs(branches)
    _run_sync("push", lambda show: sync.push(client(ctx), remote, specs, force=force, on_progress=show))


@main.group()
def job() -> None:
    """Map/reduce jobs: specs, runs, outputs and logs."""


@job.command("put")
@click.argument("name")
@click.argument("spec", type=click.File("rb"))
@click.pass_context
def job_put(ctx: click.Context, name: str, spec: IO[bytes]) -> None:
    """Store job NAME from a JSON SPEC file ('-' for stdin)."""
    client(ctx).put_job(name, spec.read())
    click.echo(f"stored job {name}")


@job.command("get")
@click.argument("name")
@click.pass_context
def job_get(ctx: click.Context, name: str) -> None:
    """Print a job's spec."""
    click.echo(json.dumps(client(ctx).get_job(name).spec(), indent=2))


@job.command("rm")
@click.argument("name")
@click.pass_context
def job_rm(ctx: click.Context, name: str) -> None:
    """Delete a job spec (its past outputs stay readable)."""
    client(ctx).delete_job(name)
    click.echo(f"deleted job {name}")


@job.command("ls")
@click.pass_context
def job_ls(ctx: click.Context) -> None:
    """List jobs."""
    for j in client(ctx).jobs():
        image = j.image or "(process)"
        click.echo(printable(f"{j.name:<20} {j.type:<7} {j.input:<30} {image}"))


def _print_run(status: Run) -> None:
    click.echo(printable(f"run {status.commit[:12]} on {status.branch}: {status.state}"))
    for j in status.jobs:
        error = f"  {j.error}" if j.error else ""
        click.echo(printable(f"  {j.job:<20} {j.type:<7} {j.state:<10} {j.progress}{error}"))
        if j.pinned_image:
            click.echo(printable(f"      image: {j.pinned_image}"))
        for f in j.failures:  # the first ones; `pfs job log` lists them all
            click.echo(printable(f"      failed: {f.path}: {f.error}"))
        more = j.failed - len(j.failures)
        if j.failures and more > 0:
            click.echo(f"      ... and {more} more: pfs job log {j.job} -c {status.commit[:12]}")


@job.command("status")
@click.argument("commit", default="master")
@click.pass_context
def job_status(ctx: click.Context, commit: str) -> None:
    """State of the run on COMMIT (default: master's head), job by job."""
    _print_run(client(ctx).run_status(commit))


@job.command("wait")
@click.argument("commit", default="master")
@click.option("--timeout", type=float, default=None, help="give up after this many seconds (exit 2)")
@click.pass_context
def job_wait(ctx: click.Context, commit: str, timeout: float | None) -> None:
    """Wait for the run on COMMIT to finish, with progress; exit 1 if it failed."""
    c = client(ctx)
    bars = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
        disable=not _interactive(),
    )
    with bars as p:
        tasks: dict[str, Any] = {}

        def show(status: Run) -> None:
            for j in status.jobs:
                if j.job not in tasks:
                    tasks[j.job] = p.add_task(f"{j.job} ({j.type})", total=None)
                todo = j.total - j.reused if j.type == "map" else 1
                tried = j.done + j.failed  # a failed file is one done with, too
                p.update(tasks[j.job], completed=tried, total=todo or None)

        status = c.wait_run(commit, timeout, show)
    _print_run(status)
    if status.state == "failed":
        sys.exit(1)
    if status.state != "succeeded":
        sys.exit(2)


@job.command("log")
@click.argument("name")
@click.option("-c", "--commit", default=None, help="the run's commit [default: master's head]")
@click.pass_context
def job_log(ctx: click.Context, name: str, commit: str | None) -> None:
    """A job's error and its workers' logs for one run."""
    # Worker logs are a job's own output: shown line by line, each with control characters
    # escaped, so a job cannot clear the screen or retitle the terminal of whoever reads it.
    for line in client(ctx).job_log(name, commit).splitlines():
        click.echo(printable(line))


@job.command("runs")
@click.argument("name")
@click.pass_context
def job_runs(ctx: click.Context, name: str) -> None:
    """Past runs of a job, newest first."""
    for j in client(ctx).job_runs(name):
        click.echo(printable(f"{j.commit[:12]}  {j.state:<10} {j.progress}  {j.error or ''}"))


@job.command("prune")
@click.option("--older-than", required=True, help="drop runs that ended longer ago than this: 30d, 12h, 90m, seconds")
@click.pass_context
def job_prune(ctx: click.Context, older_than: str) -> None:
    """Drop old runs: their outputs are no longer readable, and their data becomes garbage.
    The runs on branch heads and the ones the next incremental run builds on stay."""
    n = client(ctx).prune_runs(older_than)
    click.echo(f"Dropped {n} run(s).")


@job.command("cat")
@click.argument("name")
@click.argument("path", default="")
@click.option("-c", "--commit", default=None, help="the run's commit [default: master's head]")
@click.pass_context
def job_cat(ctx: click.Context, name: str, path: str, commit: str | None) -> None:
    """Print a job's output file (a reduce's only file when PATH is omitted)."""
    for piece in client(ctx).open_job_file(name, path, commit):
        sys.stdout.buffer.write(piece)
    sys.stdout.buffer.flush()


# ---- identity and access ------------------------------------------------------------------


def _print_new_key(what: str, key: NewKey) -> None:
    """A key pair just made: the only output that ever holds a secret, and it says so."""
    click.echo(printable(what))
    click.echo(f"access key id:     {printable(key.id)}")
    click.echo(f"secret access key: {printable(key.secret)}")
    click.echo("The secret is shown only now: keep it safe.")


def _not_signed_in(c: Client) -> errors.Unauthorized:
    return errors.Unauthorized(
        f"not signed in to {c.root}: `pfs login`, {ENV_KEY_ID} and {ENV_SECRET} with PFS_URL, or ID:SECRET@ in --url"
    )


@main.command()
@click.pass_context
def whoami(ctx: click.Context) -> None:
    """Who the server takes you for, and with which access key (exit 1: anonymous)."""
    c = client(ctx)
    me = c.whoami()
    if not me.access_control:
        click.echo("anonymous (access control is off: this server has no users)")
    elif me.user is None:
        raise _not_signed_in(c)
    else:
        click.echo(f"{printable(me.user)}{' (server admin)' if me.admin else ''}, key {printable(me.key or '-')}")


def _read_key_pair() -> tuple[str, str]:
    """The key id and secret: asked for on a terminal (the secret not echoed), else the
    first two lines of stdin (`pfs login < file`, or a password manager's pipe)."""
    if sys.stdin.isatty():
        key_id = click.prompt("Access key id", err=True)
        secret = click.prompt("Secret access key", hide_input=True, err=True)
        return key_id.strip(), secret.strip()
    lines = [ln.strip() for ln in sys.stdin.read(16384).splitlines() if ln.strip()]
    if len(lines) < 2:
        raise click.UsageError("give the access key id and the secret on two lines of stdin")
    return lines[0], lines[1]


@main.command()
@click.pass_context
def login(ctx: click.Context) -> None:
    """Check an access key with the --url server, then save it as that server's section of
    the credentials file (PFS_CREDENTIALS_FILE, default ~/.config/pfs/credentials), which
    only you may read. Asks for the key id and the secret (not echoed); off a terminal,
    reads them from two lines of stdin."""
    url, _ = ctx.find_root().obj
    key_id, secret = _read_key_pair()
    with Client(url, key_id=key_id, secret=secret) as c:
        me = c.whoami()
        creds = c.credentials
    if not me.access_control:
        raise errors.Conflict(
            f"{c.root} has no users (access control is off): nothing to sign in to; `pfs admin init` makes the first"
        )
    assert creds is not None and me.user is not None
    path = write_credentials_file(c.root, creds)
    admin = " (server admin)" if me.admin else ""
    click.echo(f"Signed in to {printable(c.root)} as {printable(me.user)}{admin}; key {key_id} saved in {path}")


# ---- job images: the cluster registry --------------------------------------------------


@main.group("image")
def image_group() -> None:
    """Job images in the cluster's registry: push one in, list what it holds."""


@image_group.command("push")
@click.argument("image")
@click.option(
    "--registry",
    envvar="PFS_REGISTRY_URL",
    default=None,
    help="the registry, host:port or its URL [default: the one the pfs server uses]",
)
@click.pass_context
def image_push(ctx: click.Context, image: str, registry: str | None) -> None:
    """Push local IMAGE (name:tag) to the cluster registry and print its digest. A job
    spec then names it as printed; each run pins the tag to the digest it names then.
    Credentials: PFS_REGISTRY_USER and PFS_REGISTRY_PASSWORD_FILE (or _PASSWORD)."""
    from .jobs.registry import auth_from_env, push_image  # the Docker SDK loads only for this verb

    if registry:
        address = urlsplit(registry).netloc if "://" in registry else registry
    else:
        address = client(ctx).images().registry
    with _stderr_bar(BarColumn(), DownloadColumn()) as p:
        task = p.add_task(escape(f"push {printable(image)}"), total=None)
        pushed = push_image(
            image, address, auth_from_env(address), lambda done, total: p.update(task, completed=done, total=total)
        )
    click.echo(printable(f"{pushed.image}@{pushed.digest}"))


@image_group.command("ls")
@click.pass_context
def image_ls(ctx: click.Context) -> None:
    """Every image of the cluster registry: name:tag and digest, one per line."""
    listing = client(ctx).images()
    for img in listing.images:
        for t in img.tags:
            click.echo(f"{printable(f'{img.repository}:{t.tag}')}\t{printable(t.digest or '(no digest)')}")
    if listing.truncated:
        error_line("... the registry holds more than listed")


@main.group()
def admin() -> None:
    """Set up a server's access control."""


@admin.command("init")
@click.option("--name", default="admin", show_default=True, help="the first server admin's user name")
@click.option("--data-dir", envvar="PFS_DATA_DIR", default=None, help="the server's data dir [default: ~/.pfs]")
@click.option(
    "--meta-url",
    envvar="PFS_META_URL",
    default=None,
    help="a cluster's metadata (as for serve; give PFS_SERVER_KEY_FILE too) [default: SQLite in the data dir]",
)
def admin_init(name: str, data_dir: str | None, meta_url: str | None) -> None:
    """Create the first user, a server admin, with an access key, directly in the server's
    storage (offline, as `pfs fsck --data-dir`): access control is on from then on, also
    for a server already running on it (within seconds). Refused once there are users."""
    from .config import Config  # storage loads only for the verbs using it

    cfg = Config.from_env(data_dir)
    cfg.meta_url = meta_url or cfg.meta_url
    repos = cfg.open_repos()
    try:
        access = cfg.open_access(repos)
        try:
            taken = errors.AlreadyExists(
                f"{cfg.describe()} has users already: a server admin makes more with `pfs user create`"
            )
            if access.identity.enabled():  # said first: before a missing server key, say
                raise taken
            try:
                key = access.identity.init_admin(name)
            except errors.AlreadyExists:  # made meanwhile
                raise taken from None
            access.audit.record(  # the first admin was made here, not through the API: still on record
                user=None,
                key=None,
                addr="local",
                listener="cli",
                method="CLI",
                action="admin init",
                repo=None,
                target=f"pfs admin init --name {name}",
                status=201,
                request_id="-",
            )
        finally:
            access.close()  # writes the audit entry
    finally:
        close = getattr(repos.objects, "close", None)
        if close is not None:
            close()
        repos.close()
    _print_new_key(f"Created user {name} (server admin) in {cfg.describe()}.", NewKey(key.user, key.id, key.secret))


@main.group("user")
def user_group() -> None:
    """Users of the server: list, show, create, delete, admin (server admins)."""


@user_group.command("list")
@click.pass_context
def user_list(ctx: click.Context) -> None:
    """Every user, one per line (server admins marked)."""
    for u in client(ctx).users():
        click.echo(f"{printable(u.name)}\t{printable(u.created[:19])}" + ("\tadmin" if u.admin else ""))


@user_group.command("show")
@click.argument("name")
@click.pass_context
def user_show(ctx: click.Context, name: str) -> None:
    """A user's keys (never their secrets) and roles."""
    u = client(ctx).user(name)
    click.echo(f"{printable(u.name)}{' (server admin)' if u.admin else ''}, created {printable(u.created[:19])}")
    for k in u.keys:
        click.echo(f"  key   {printable(k.id)}\t{'disabled' if k.disabled else 'active'}")
    for repo, role in sorted(u.roles.items()):
        click.echo(f"  role  {printable(repo)}\t{printable(role)}")


@user_group.command("create")
@click.argument("name")
@click.option("--admin", "is_admin", is_flag=True, help="a server admin, who may do anything")
@click.pass_context
def user_create(ctx: click.Context, name: str, is_admin: bool) -> None:
    """Create user NAME and its first access key; the secret is printed this once."""
    key = client(ctx).create_user(name, is_admin)
    _print_new_key(f"Created user {name}{' (server admin)' if is_admin else ''}.", key)


@user_group.command("delete")
@click.argument("name")
@click.pass_context
def user_delete(ctx: click.Context, name: str) -> None:
    """Delete user NAME, its keys and its roles."""
    client(ctx).delete_user(name)
    click.echo(f"Deleted user {printable(name)} and its keys.")


@user_group.command("admin")
@click.argument("name")
@click.option("--on/--off", "on", default=None, help="make NAME a server admin, or not")
@click.pass_context
def user_admin(ctx: click.Context, name: str, on: bool | None) -> None:
    """Make user NAME a server admin (--on) or not (--off)."""
    if on is None:
        raise click.UsageError("give --on or --off")
    u = client(ctx).set_admin(name, on)
    click.echo(f"{printable(u.name)}: {'server admin' if u.admin else 'not a server admin'}")


@main.group("key")
def key_group() -> None:
    """Access keys: list, create, disable, enable, rotate, delete (yours, or any as a server admin)."""


def _me(c: Client) -> str:
    """The signed-in user: what `pfs key` verbs act on when no USER is named."""
    me = c.whoami()
    if not me.access_control:
        raise errors.Conflict(f"{c.root} has no users (access control is off): `pfs admin init` makes the first")
    if me.user is None:
        raise _not_signed_in(c)
    return me.user


@key_group.command("list")
@click.argument("user", required=False)
@click.pass_context
def key_list(ctx: click.Context, user: str | None) -> None:
    """USER's access keys (default: yours), one per line; never their secrets."""
    c = client(ctx)
    for k in c.keys(user or _me(c)):
        click.echo(f"{printable(k.id)}\t{printable(k.created[:19])}\t{'disabled' if k.disabled else 'active'}")


@key_group.command("create")
@click.argument("user", required=False)
@click.pass_context
def key_create(ctx: click.Context, user: str | None) -> None:
    """Another access key for USER (default: you); the secret is printed this once."""
    c = client(ctx)
    key = c.create_key(user or _me(c))
    _print_new_key(f"Created an access key for {key.user}.", key)


@key_group.command("disable")
@click.argument("key_id")
@click.pass_context
def key_disable(ctx: click.Context, key_id: str) -> None:
    """Refuse KEY_ID from now on (it is kept: `pfs key enable` undoes this)."""
    client(ctx).disable_key(key_id)
    click.echo(f"Access key {printable(key_id)} disabled.")


@key_group.command("enable")
@click.argument("key_id")
@click.pass_context
def key_enable(ctx: click.Context, key_id: str) -> None:
    """Accept a disabled KEY_ID again."""
    client(ctx).enable_key(key_id)
    click.echo(f"Access key {printable(key_id)} enabled.")


@key_group.command("rotate")
@click.argument("key_id")
@click.pass_context
def key_rotate(ctx: click.Context, key_id: str) -> None:
    """A new key for KEY_ID's user, printed this once; KEY_ID is disabled (delete it once
    nothing uses it)."""
    new = client(ctx).rotate_key(key_id)
    _print_new_key(f"Created access key {new.id} for {new.user}; {key_id} is disabled.", new)


@key_group.command("delete")
@click.argument("key_id")
@click.pass_context
def key_delete(ctx: click.Context, key_id: str) -> None:
    """Delete KEY_ID for good."""
    client(ctx).delete_key(key_id)
    click.echo(f"Deleted access key {printable(key_id)}.")


def _repo_shown(c: Client) -> str:
    return printable(c.repo_name) if c.repo_name else "the default repository"


@main.group("access")
def access_group() -> None:
    """Roles on the --repo repository: list, grant, revoke (its admins)."""


@access_group.command("list")
@click.pass_context
def access_list(ctx: click.Context) -> None:
    """Who has which role on the repository, one per line."""
    for g in client(ctx).grants():
        click.echo(f"{printable(g.user)}\t{printable(g.role)}")


@access_group.command("grant")
@click.argument("user")
@click.argument("role", type=click.Choice(["read", "write", "admin"]))
@click.pass_context
def access_grant(ctx: click.Context, user: str, role: str) -> None:
    """Give USER the ROLE on the repository: read, write (and read), or admin (and write:
    also its roles, protected branches and job specs). Replaces USER's role."""
    c = client(ctx)
    g = c.grant(user, role)
    click.echo(f"{printable(g.user)} has {printable(g.role)} on {printable(g.repo) if g.repo else _repo_shown(c)}.")


@access_group.command("revoke")
@click.argument("user")
@click.pass_context
def access_revoke(ctx: click.Context, user: str) -> None:
    """Take USER's role on the repository away."""
    c = client(ctx)
    c.revoke(user)
    click.echo(f"{printable(user)} has no role on {_repo_shown(c)} now.")


@main.group("protect")
def protect_group() -> None:
    """Protected branches of the --repo repository: they change only by merge."""


@protect_group.command("list")
@click.pass_context
def protect_list(ctx: click.Context) -> None:
    """The protection rules, one per line."""
    for p in client(ctx).protected():
        click.echo(printable(p))


@protect_group.command("add")
@click.argument("pattern")
@click.pass_context
def protect_add(ctx: click.Context, pattern: str) -> None:
    """Protect branches matching PATTERN (a name, or a glob: 'release-*'): writes, commits,
    reverts, pushes and deletes are refused on them; merges into them are not."""
    added = client(ctx).protect(pattern)
    click.echo(f"Branches matching {printable(pattern)} are protected{'' if added else ' (they were already)'}.")


@protect_group.command("remove")
@click.argument("pattern")
@click.pass_context
def protect_remove(ctx: click.Context, pattern: str) -> None:
    """Drop the rule PATTERN."""
    client(ctx).unprotect(pattern)
    click.echo(f"Branches matching {printable(pattern)} are no longer protected.")


@main.command()
@click.option("-n", "--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--user", default=None, help="only this user's requests")
@click.option("--in-repo", default=None, help="only requests on this repository")
@click.option("--before", type=click.IntRange(1), default=None, help="entries older than this id (the next page)")
@click.pass_context
def audit(ctx: click.Context, limit: int, user: str | None, in_repo: str | None, before: int | None) -> None:
    """The audit log, newest first (server admins): every request that could change
    something, refused ones too: id, time, user, address, request, status."""
    for a in client(ctx).audit(limit, before, user, in_repo):
        who = printable(a.user or "anonymous")
        request = printable(f"{a.method} {a.target}")
        click.echo(f"{a.id}  {printable(a.time[:19])}  {who}  {printable(a.addr)}  {request}  {a.status}")


if __name__ == "__main__":
    main()
