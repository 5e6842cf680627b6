"""The `pfs` command: `serve` runs a node; the other verbs talk to one over HTTP."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TransferSpeedColumn

from . import errors
from .client import Client

err_console = Console(stderr=True)
PROGRESS_MIN = 8 << 20  # show a bar only for transfers bigger than this


def _progress() -> Progress:
    """A transfer bar on stderr, silent when stderr is not a terminal."""
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )


class PfsGroup(click.Group):
    """Turns pfs errors into one red line and a non-zero exit, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except errors.PfsError as exc:
            # soft_wrap: one line however long, never wrapped at the terminal's width
            err_console.print(f"[red]error:[/red] {escape(exc.message)}", highlight=False, soft_wrap=True)
            for c in exc.details.get("conflicts", []):
                err_console.print(f"  conflict: {c['path']}", highlight=False, markup=False, soft_wrap=True)
            sys.exit(1)
        except OSError as exc:  # a local file problem (pfs get to a missing directory...): no traceback
            where = f": {exc.filename}" if exc.filename else ""
            msg = escape(f"{exc.strerror or exc}{where}")
            err_console.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
            sys.exit(1)


@click.group(cls=PfsGroup)
@click.option("--url", envvar="PFS_URL", default="http://127.0.0.1:8080", show_default=True, help="pfs server")
@click.pass_context
def main(ctx: click.Context, url: str) -> None:
    """pfs: a versioned file system with dockerized MapReduce."""
    ctx.obj = url


def client(ctx: click.Context) -> Client:
    return Client(ctx.obj)


@main.command()
@click.option("--addr", envvar="PFS_ADDR", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to listen on")
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
def serve(
    addr: str, data_dir: str | None, max_file_size: int | None, meta_url: str | None, objects_url: str | None
) -> None:
    """Run a pfs node: embedded storage (SQLite + local objects) by default; with PostgreSQL
    and S3, as many nodes as you like serve one repository."""
    import uvicorn

    from .config import Config, parse_addr  # storage imports load only for the verbs using them
    from .server import create_app

    cfg = Config.from_env(data_dir)
    if max_file_size is not None:
        cfg.max_file_size = max_file_size
    cfg.meta_url = meta_url or cfg.meta_url
    cfg.objects_url = objects_url or cfg.objects_url
    host, port = parse_addr(addr)
    repo = cfg.open()
    err_console.print(f"pfs serving {cfg.describe()} on http://{addr}", highlight=False)
    uvicorn.run(
        create_app(repo, cfg.scheduler(repo)),
        host=host,
        port=port,
        log_level=os.environ.get("PFS_LOG_LEVEL", "warning"),
        timeout_keep_alive=30,
        timeout_graceful_shutdown=5,  # long-polls (`/run/<id>?wait=`) must not hold up a shutdown
        limit_concurrency=int(os.environ.get("PFS_MAX_CONNECTIONS", "1000")),
    )


def _read_pieces(f: IO[bytes], progress: Progress | None, task: Any) -> Iterator[bytes]:
    while True:
        piece = f.read(1 << 20)
        if not piece:
            return
        if progress is not None:
            progress.update(task, advance=len(piece))
        yield piece


def _put_one(c: Client, local: str, remote: str, branch: str) -> None:
    size = os.path.getsize(local)
    with open(local, "rb") as f:
        if size >= PROGRESS_MIN:
            with _progress() as p:
                task = p.add_task(f"put {remote}", total=size)
                res = c.put_file(remote, _read_pieces(f, p, task), branch)
        else:
            res = c.put_file(remote, f, branch)
    click.echo(f"{branch}/{res['path']}  {res['size']} bytes")


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
        res = c.put_file(remote, sys.stdin.buffer, branch)
        click.echo(f"{branch}/{res['path']}  {res['size']} bytes")
        return
    if os.path.isdir(local):
        base = (remote or os.path.basename(os.path.abspath(local))).strip("/")
        total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(local) for f in fs)
        with _progress() as p:
            task = p.add_task(f"put {base or '/'}", total=total)
            res = c.put_dir(local, base, branch, on_bytes=lambda n: p.update(task, advance=n))
        click.echo(f"{branch}/{base}  {res['files']} files, {res['size']} bytes")
        return
    _put_one(c, local, remote or os.path.basename(local), branch)


@main.command()
@click.argument("remote")
@click.argument("local", required=False)
@click.option("-c", "--commit", default=None, help="commit id or branch (committed state)")
@click.option("-b", "--branch", default=None, help="branch including dirty writes [default: master]")
@click.pass_context
def get(ctx: click.Context, remote: str, local: str | None, commit: str | None, branch: str | None) -> None:
    """Read REMOTE to LOCAL (default: stdout)."""
    c = client(ctx)
    out: IO[bytes]
    if local is None or local == "-":
        for piece in c.open_file(remote, commit, branch):
            sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()
        return
    tmp = local + ".pfs-partial"
    try:
        with open(tmp, "wb") as out, _progress() as p:
            task = p.add_task(f"get {remote}", total=None)
            for piece in c.open_file(remote, commit, branch):
                out.write(piece)
                p.update(task, advance=len(piece))
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
        if e["type"] == "dir":
            click.echo(f"{'dir':>12}  {e['path']}/")
        else:
            click.echo(f"{e['size']:>12}  {e['path']}")


@main.command()
@click.argument("path")
@click.option("-b", "--branch", default="master", show_default=True)
@click.option("-r", "--recursive", is_flag=True, help="delete a directory and everything in it")
@click.pass_context
def rm(ctx: click.Context, path: str, branch: str, recursive: bool) -> None:
    """Delete a file (dirty until commit)."""
    res = client(ctx).delete_file(path, branch, recursive)
    click.echo(f"deleted {res['deleted']} file(s)")


@main.command()
@click.option("-b", "--branch", default="master", show_default=True)
@click.option("-m", "--message", default="", help="commit message")
@click.option("--run", is_flag=True, help="also run the job DAG on the new commit (see `pfs job wait`)")
@click.pass_context
def commit(ctx: click.Context, branch: str, message: str, run: bool) -> None:
    """Commit a branch's dirty writes; prints the commit id."""
    click.echo(client(ctx).commit(branch, message, run=run)["id"])


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
            click.echo(f"{b['name']:<24} {b['head'] or '-'}")
    elif delete:
        c.delete_branch(name)
        click.echo(f"deleted branch {name}")
    else:
        res = c.create_branch(name, from_)
        click.echo(f"{name} -> {res['head'] or '(no commits)'}")


@main.command()
@click.argument("ref", default="master")
@click.option("-n", "--limit", type=int, default=None)
@click.pass_context
def log(ctx: click.Context, ref: str, limit: int | None) -> None:
    """History of a branch or commit, newest first."""
    for c in client(ctx).log(ref, limit):
        click.echo(f"{c['id'][:12]}  {c['time'][:19]}  {c['branch']:<12} {c['message']}")


@main.command()
@click.argument("a")
@click.argument("b")
@click.pass_context
def diff(ctx: click.Context, a: str, b: str) -> None:
    """Files added (A), modified (M) and deleted (D) from A to B."""
    for d in client(ctx).diff(a, b):
        click.echo(f"{d['status']}\t{d['path']}")


@main.command()
@click.argument("source")
@click.argument("into")
@click.option("-s", "--strategy", type=click.Choice(["ours", "theirs"]), default=None, help="resolve conflicts")
@click.option("-m", "--message", default=None)
@click.pass_context
def merge(ctx: click.Context, source: str, into: str, strategy: str | None, message: str | None) -> None:
    """Three-way merge of SOURCE into branch INTO."""
    res = client(ctx).merge(source, into, strategy, message)
    click.echo(f"{res['kind']}: {res['id']}")


@main.command()
@click.argument("branch")
@click.argument("commit")
@click.option("-m", "--message", default=None)
@click.pass_context
def revert(ctx: click.Context, branch: str, commit: str, message: str | None) -> None:
    """New commit on BRANCH with the content of COMMIT (history kept)."""
    click.echo(client(ctx).revert(branch, commit, message)["id"])


@main.command()
@click.option("-b", "--branch", default="master", show_default=True)
@click.pass_context
def discard(ctx: click.Context, branch: str) -> None:
    """Drop a branch's uncommitted changes."""
    click.echo(f"discarded {client(ctx).discard(branch)['discarded']} change(s)")


@main.command()
@click.option("--data-dir", envvar="PFS_DATA_DIR", default=None, help="check this data dir directly")
@click.option("--meta-url", envvar="PFS_META_URL", default=None, help="a cluster's metadata (as for serve)")
@click.option("--objects-url", envvar="PFS_OBJECTS_URL", default=None, help="a cluster's objects (as for serve)")
@click.option("--server", is_flag=True, help="ask the running server (at --url) instead")
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
    """Check every reachable object: present and matching its hash."""
    if server:
        rep = client(ctx).fsck(quick)
        problems, ok = rep.get("problems", []), rep.get("ok", False)
        summary = f"{rep.get('commits')} commits, {rep.get('trees')} trees, {rep.get('files')} files"
    else:
        from .config import Config
        from .fsck import fsck as run_fsck

        cfg = Config.from_env(data_dir)
        cfg.meta_url = meta_url or cfg.meta_url
        cfg.objects_url = objects_url or cfg.objects_url
        if not cfg.shared and not os.path.isdir(cfg.data_dir):
            raise click.UsageError(f"no pfs data directory at {cfg.data_dir}")
        r = run_fsck(cfg.open(), verify_data=not quick)
        problems, ok = r.problems, r.ok
        summary = f"{r.commits} commits, {r.trees} trees, {r.files} files, {r.chunks} chunks"
    for p in problems:
        click.echo(p)
    click.echo(("ok: " if ok else "FAILED: ") + summary)
    sys.exit(0 if ok else 1)


def _run_sync(verb: str, go: Any) -> None:
    """Run a transfer with a bytes/objects bar on stderr; one line per branch on stdout.
    Exit 1 if a branch was refused (not a fast-forward, moved, dirty): the others went."""
    from .sync import TransferReport

    bar = Progress(
        "[progress.description]{task.description}",
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )
    with bar as p:
        task = p.add_task(verb, total=None)
        rep: TransferReport = go(lambda n, size: p.update(task, completed=size, description=f"{verb}: {n} objects"))
    for b in rep.branches:
        name = b.source if b.source == b.dest else f"{b.source} -> {b.dest}"
        if b.result == "rejected":
            click.echo(f"{name}: rejected: {b.message}")
        elif b.result in ("up-to-date", "ahead"):
            click.echo(f"{name}: {b.result} ({(b.old or b.new)[:12]})")
        else:
            click.echo(f"{name}: {b.result} {(b.old or '-')[:12]} -> {b.new[:12]}")
    click.echo(
        f"sent {rep.objects} objects ({rep.bytes} bytes, {rep.overhead} bytes of negotiation), "
        f"{rep.commits} new commits, in {rep.seconds:.2f} s"
    )
    if not rep.ok:
        refused = [b.dest for b in rep.branches if b.result == "rejected"]
        err_console.print(
            f"[red]error:[/red] {len(refused)} branch(es) not updated: {escape(', '.join(refused))}",
            highlight=False,
            soft_wrap=True,
        )
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

    _run_sync("clone", lambda show: sync.clone(source, dest or ctx.obj, on_progress=show))


@main.command()
@click.argument("remote")
@click.option("-b", "--branch", "branches", multiple=True, help="BRANCH or REMOTE:LOCAL; repeat [default: all]")
@click.option("-f", "--force", is_flag=True, help="move branches even when it is not a fast-forward")
@click.pass_context
def pull(ctx: click.Context, remote: str, branches: tuple[str, ...], force: bool) -> None:
    """Fetch what the pfs at REMOTE has and this one lacks; fast-forward branches."""
    from . import sync

    specs = _refspecs(branches)
    _run_sync("pull", lambda show: sync.pull(remote, ctx.obj, specs, force=force, on_progress=show))


@main.command()
@click.argument("remote")
@click.option("-b", "--branch", "branches", multiple=True, help="BRANCH or LOCAL:REMOTE; repeat [default: all]")
@click.option("-f", "--force", is_flag=True, help="move branches even when it is not a fast-forward")
@click.pass_context
def push(ctx: click.Context, remote: str, branches: tuple[str, ...], force: bool) -> None:
    """Send what this pfs has and the one at REMOTE lacks; fast-forward its branches."""
    from . import sync

    specs = _refspecs(branches)
    _run_sync("push", lambda show: sync.push(ctx.obj, remote, specs, force=force, on_progress=show))


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
    spec = client(ctx).get_job(name)
    spec.pop("name", None)
    click.echo(json.dumps(spec, indent=2))


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
        click.echo(f"{j['name']:<20} {j['type']:<7} {j['input']:<30} {j.get('image') or '(process)'}")


def _print_run(status: dict[str, Any]) -> None:
    click.echo(f"run {status['commit'][:12]} on {status['branch']}: {status['state']}")
    for j in status.get("jobs", []):
        click.echo(
            f"  {j['job']:<20} {j['type']:<7} {j['state']:<10} {j['progress']}"
            + (f"  {j['error']}" if j["error"] else "")
        )


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
        disable=not err_console.is_terminal,
    )
    with bars as p:
        tasks: dict[str, Any] = {}

        def show(status: dict[str, Any]) -> None:
            for j in status.get("jobs", []):
                if j["job"] not in tasks:
                    tasks[j["job"]] = p.add_task(f"{j['job']} ({j['type']})", total=None)
                todo = j["total"] - j["reused"] if j["type"] == "map" else 1
                p.update(tasks[j["job"]], completed=j["done"], total=todo or None)

        status = c.wait_run(commit, timeout, show)
    _print_run(status)
    if status["state"] == "failed":
        sys.exit(1)
    if status["state"] != "succeeded":
        sys.exit(2)


@job.command("log")
@click.argument("name")
@click.option("-c", "--commit", default=None, help="the run's commit [default: master's head]")
@click.pass_context
def job_log(ctx: click.Context, name: str, commit: str | None) -> None:
    """A job's error and its workers' logs for one run."""
    click.echo(client(ctx).job_log(name, commit), nl=False)


@job.command("runs")
@click.argument("name")
@click.pass_context
def job_runs(ctx: click.Context, name: str) -> None:
    """Past runs of a job, newest first."""
    for j in client(ctx).job_runs(name):
        click.echo(f"{j['commit'][:12]}  {j['state']:<10} {j['progress']}  {j['error'] or ''}")


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


if __name__ == "__main__":
    main()
