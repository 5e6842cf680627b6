"""Every `pfs` verb as a real subprocess against a real server: output, exit codes, and
errors as one line on stderr with exit status 1 and no traceback.

Setup goes through the Python client (fast); only the verb under test runs the CLI.
"""

from __future__ import annotations

import http.server
import itertools
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ServerProc, free_port

from pfs import Client

_names = itertools.count()
ID = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path_factory.mktemp("cli") / "data").start()
    with Client(s.url) as c:
        c.put_file("seed.txt", b"seed\n")
        c.commit(message="seed")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def c(srv: ServerProc) -> Iterator[Client]:
    with Client(srv.url) as client:
        yield client


@pytest.fixture
def b(c: Client) -> str:
    """A fresh branch at master's head, for this test alone."""
    name = f"cli{next(_names)}"
    c.create_branch(name)
    return name


def pfs(
    url: str | None,
    *args: str,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "pfs.cli", *(["--url", url] if url else []), *args]
    base = {k: v for k, v in os.environ.items() if k not in ("PFS_DATA_DIR", "PFS_URL")}
    full_env = {**base, "COLUMNS": "80", **(env or {})}
    return subprocess.run(cmd, input=stdin, capture_output=True, timeout=60, env=full_env, cwd=cwd)


def ok(res: subprocess.CompletedProcess[bytes]) -> str:
    assert res.returncode == 0, (res.returncode, res.stdout, res.stderr)
    assert b"Traceback" not in res.stderr
    return res.stdout.decode()


def fails(res: subprocess.CompletedProcess[bytes], *, lines: int = 1) -> str:
    """Exit 1, nothing on stdout, `lines` line(s) on stderr starting with 'error:'."""
    err = res.stderr.decode()
    assert res.returncode == 1, (res.returncode, res.stdout, err)
    assert "Traceback" not in err and res.stdout == b""
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == lines, repr(err)
    return err


# ---- put, get, ls, rm ----------------------------------------------------------------------
def test_put_file_and_get_to_stdout(srv: ServerProc, c: Client, b: str, tmp_path: Path) -> None:
    local = tmp_path / "a.txt"
    local.write_bytes(b"hello\n")
    assert ok(pfs(srv.url, "put", str(local), "docs/a.txt", "-b", b)) == f"{b}/docs/a.txt  6 bytes\n"
    assert c.get_file("docs/a.txt", branch=b) == b"hello\n"
    # the remote name defaults to the local file name
    assert ok(pfs(srv.url, "put", str(local), "--branch", b)) == f"{b}/a.txt  6 bytes\n"
    assert ok(pfs(srv.url, "get", "docs/a.txt", "-b", b)) == "hello\n"
    assert c.get_file("a.txt", branch=b) == b"hello\n"


def test_put_from_stdin_and_large_file(srv: ServerProc, c: Client, b: str, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    assert ok(pfs(srv.url, "put", "-", "in/stdin.bin", "-b", b, stdin=data)) == f"{b}/in/stdin.bin  100000 bytes\n"
    assert c.get_file("in/stdin.bin", branch=b) == data
    big = os.urandom(9 << 20)  # above the progress-bar threshold: the streamed path
    (tmp_path / "big").write_bytes(big)
    ok(pfs(srv.url, "put", str(tmp_path / "big"), "in/big", "-b", b))
    assert c.get_file("in/big", branch=b) == big
    # stdin needs a remote name
    err = fails(pfs(srv.url, "put", "-", stdin=b"x"))
    assert err == "error: REMOTE is required when reading from stdin. See 'pfs put --help'.\n"


def test_put_directory(srv: ServerProc, c: Client, b: str, tmp_path: Path) -> None:
    root = tmp_path / "project"
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "README").write_bytes(b"readme")
    (root / "src" / "main.py").write_bytes(b"print(1)\n")
    (root / "src" / "pkg" / "data.bin").write_bytes(os.urandom(50_000))
    out = ok(pfs(srv.url, "put", str(root), "-b", b))
    assert out == f"{b}/project  3 files, {6 + 9 + 50_000} bytes\n"
    assert c.get_file("project/src/main.py", branch=b) == b"print(1)\n"
    assert c.get_file("project/src/pkg/data.bin", branch=b) == (root / "src" / "pkg" / "data.bin").read_bytes()
    # to an explicit remote directory
    ok(pfs(srv.url, "put", str(root / "src"), "code/v1", "-b", b))
    assert [e.path for e in c.ls("code/v1", branch=b)] == ["code/v1/main.py", "code/v1/pkg"]


def test_get_to_a_file(srv: ServerProc, c: Client, b: str, tmp_path: Path) -> None:
    data = os.urandom(2_500_000)
    c.put_file("g/blob", data, branch=b)
    commit = c.commit(b).id
    c.put_file("g/blob", b"dirty", branch=b)
    out = tmp_path / "out.bin"
    assert ok(pfs(srv.url, "get", "g/blob", str(out), "-c", commit)) == ""
    assert out.read_bytes() == data
    ok(pfs(srv.url, "get", "g/blob", str(out), "-b", b))
    assert out.read_bytes() == b"dirty"
    res = pfs(srv.url, "get", "g/*", "-c", commit)  # binary to stdout
    assert res.returncode == 0 and res.stdout == data
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]  # no partial file left behind

    # a failed read leaves neither the target nor a partial file, and an existing target intact
    missing = tmp_path / "missing.bin"
    fails(pfs(srv.url, "get", "g/nope", str(missing), "-b", b))
    fails(pfs(srv.url, "get", "g/nope", str(out), "-b", b))
    assert sorted(os.listdir(tmp_path)) == ["out.bin"] and out.read_bytes() == b"dirty"


def test_get_to_a_missing_local_directory(srv: ServerProc, tmp_path: Path) -> None:
    err = fails(pfs(srv.url, "get", "seed.txt", str(tmp_path / "no" / "such" / "dir" / "f")))
    assert "No such file or directory" in err


def test_ls(srv: ServerProc, c: Client, b: str) -> None:
    c.put_file("l/b.txt", b"12345", branch=b)
    c.put_file("l/a.txt", b"1", branch=b)
    c.put_file("l/sub/x", b"x", branch=b)
    assert ok(pfs(srv.url, "ls", "l", "-b", b)).splitlines() == [
        f"{1:>12}  l/a.txt",
        f"{5:>12}  l/b.txt",
        f"{'dir':>12}  l/sub/",
    ]
    root = ok(pfs(srv.url, "ls", "-b", b)).splitlines()
    assert f"{'dir':>12}  l/" in root and f"{5:>12}  seed.txt" in root
    commit = c.commit(b).id
    c.put_file("l/c.txt", b"new", branch=b)
    assert len(ok(pfs(srv.url, "ls", "l", "-c", commit)).splitlines()) == 3
    assert len(ok(pfs(srv.url, "ls", "l", "-b", b)).splitlines()) == 4


def test_rm(srv: ServerProc, c: Client, b: str) -> None:
    for p in ["r/x", "r/d/y", "r/d/z"]:
        c.put_file(p, b"1", branch=b)
    assert ok(pfs(srv.url, "rm", "r/x", "-b", b)) == "deleted 1 file(s)\n"
    assert "x" not in [e.name for e in c.ls("r", branch=b)]
    err = fails(pfs(srv.url, "rm", "r/d", "-b", b))
    assert "recursively" in err
    assert ok(pfs(srv.url, "rm", "-r", "r/d", "-b", b)) == "deleted 2 file(s)\n"
    fails(pfs(srv.url, "rm", "r/x", "-b", b))


# ---- commit, branch, log, diff ---------------------------------------------------------------
def test_commit(srv: ServerProc, c: Client, b: str) -> None:
    c.put_file("cm", b"1", branch=b)
    cid = ok(pfs(srv.url, "commit", "-b", b, "-m", "from the cli")).strip()
    assert ID.match(cid)
    info = c.inspect_commit(cid)
    assert info.message == "from the cli" and info.branch == b
    assert c.get_file("cm", commit=cid) == b"1"
    fails(pfs(srv.url, "commit", "-b", "no-such-branch"))


def test_branch_list_create_delete(srv: ServerProc, c: Client, b: str) -> None:
    c.put_file("br", b"1", branch=b)
    head = c.commit(b).id
    name = f"cli{next(_names)}"
    assert ok(pfs(srv.url, "branch", name, "-c", head)) == f"{name} -> {head}\n"
    assert c.log(name, limit=1)[0].id == head
    listing = ok(pfs(srv.url, "branch")).splitlines()
    assert f"{name:<24} {head}" in listing
    assert any(line.startswith("master ") for line in listing)
    assert ok(pfs(srv.url, "branch", name, "-d")) == f"deleted branch {name}\n"
    assert name not in [x.name for x in c.branches()]
    fails(pfs(srv.url, "branch", name, "-d"))
    fails(pfs(srv.url, "branch", b))  # exists
    # from master by default
    other = f"cli{next(_names)}"
    master = c.log("master", limit=1)[0].id
    assert ok(pfs(srv.url, "branch", other)) == f"{other} -> {master}\n"


def test_log(srv: ServerProc, c: Client, b: str) -> None:
    ids = []
    for i in range(3):
        c.put_file("lg", str(i).encode(), branch=b)
        ids.append(c.commit(b, f"msg {i}").id)
    lines = ok(pfs(srv.url, "log", b)).splitlines()
    assert [ln.split()[0] for ln in lines[:3]] == [i[:12] for i in ids[::-1]]
    assert lines[0].endswith("msg 2") and lines[0].split()[2] == b
    assert lines[-1].endswith("seed")
    assert len(ok(pfs(srv.url, "log", b, "-n", "2")).splitlines()) == 2
    assert ok(pfs(srv.url, "log", ids[0], "--limit", "1")).split()[0] == ids[0][:12]
    fails(pfs(srv.url, "log", "no-such-branch"))


def test_log_is_one_line_per_commit_whatever_the_message_holds(srv: ServerProc, c: Client, b: str) -> None:
    """A message cannot forge log lines or drive the terminal: its first line is shown, with
    control characters escaped."""
    messages = {
        "\x1b[2J\x1b[31mowned\rdeadbeefdead  2020-01-01T00:00:00  master       forged\nmore": "\\x1b[2J\\x1b[31mowned",
        "\n\n  subject after blank lines\r\nbody": "  subject after blank lines",
        "bell\x07 title\x1b]0;pwned\x07 c1\x9b31m end": "bell\\x07 title\\x1b]0;pwned\\x07 c1\\x9b31m end",
        "tab\tand\u2028separator": "tab\\tand",
    }
    for i, message in enumerate(messages):
        c.put_file("msg", str(i).encode(), branch=b)
        c.commit(b, message)
    res = pfs(srv.url, "log", b, "-n", str(len(messages)))
    out = ok(res)
    assert b"\x1b" not in res.stdout and b"\r" not in res.stdout and b"\x07" not in res.stdout
    lines = out.split("\n")
    assert lines[-1] == "" and len(lines) == len(messages) + 1
    for line, commit, shown in zip(lines, c.log(b, len(messages)), list(messages.values())[::-1], strict=False):
        assert line == f"{commit.id[:12]}  {commit.time[:19]}  {b:<12} {shown}"


def test_listings_escape_control_characters_in_paths(srv: ServerProc, c: Client, b: str) -> None:
    """Paths may hold C1 controls and line separators; ls and diff print them escaped."""
    base = c.log(b, 1)[0].id
    odd = "esc/a\u2028b\x9b31m\u202ec"
    c.put_file(odd, b"12345", branch=b)
    shown = "esc/a\\u2028b\\x9b31m\\u202ec"
    assert ok(pfs(srv.url, "ls", "esc", "-b", b)) == f"{5:>12}  {shown}\n"
    head = c.commit(b).id
    assert ok(pfs(srv.url, "diff", base, head)) == f"A\t{shown}\n"


def test_diff(srv: ServerProc, c: Client, b: str) -> None:
    c.put_file("df/a", b"a", branch=b)
    c.put_file("df/b", b"b", branch=b)
    one = c.commit(b).id
    c.put_file("df/a", b"A", branch=b)
    c.delete_file("df/b", branch=b)
    c.put_file("df/c", b"c", branch=b)
    two = c.commit(b).id
    assert ok(pfs(srv.url, "diff", one, two)) == "M\tdf/a\nD\tdf/b\nA\tdf/c\n"
    assert ok(pfs(srv.url, "diff", two, b)) == ""
    fails(pfs(srv.url, "diff", one, "deadbeefdeadbeef"))


# ---- merge, revert, discard ---------------------------------------------------------------------
def test_merge(srv: ServerProc, c: Client, b: str) -> None:
    c.put_file("mg/shared", b"base", branch=b)
    base = c.commit(b).id
    other = f"cli{next(_names)}"
    c.create_branch(other, base)
    c.put_file("mg/theirs", b"t", branch=other)
    ff = c.commit(other).id
    assert ok(pfs(srv.url, "merge", other, b)) == f"fast-forward: {ff}\n"
    assert ok(pfs(srv.url, "merge", other, b)) == f"up-to-date: {ff}\n"
    c.put_file("mg/shared", b"ours", branch=b)
    ours = c.commit(b).id
    c.put_file("mg/shared", b"theirs", branch=other)
    c.commit(other)
    err = fails(pfs(srv.url, "merge", other, b), lines=2)
    assert err.splitlines()[1] == "  conflict: mg/shared"
    assert c.log(b, limit=1)[0].id == ours
    out = ok(pfs(srv.url, "merge", other, b, "-s", "theirs", "-m", "take theirs"))
    kind, _, mid = out.strip().partition(": ")
    assert kind == "merge" and c.inspect_commit(mid).message == "take theirs"
    assert c.get_file("mg/shared", commit=mid) == b"theirs"
    err = fails(pfs(srv.url, "merge", other, b, "-s", "bogus"))  # click refuses the choice: one line too
    assert "'bogus' is not one of 'ours', 'theirs'" in err and err.endswith("See 'pfs merge --help'.\n")


def test_revert(srv: ServerProc, c: Client, b: str) -> None:
    c.put_file("rv", b"1", branch=b)
    one = c.commit(b).id
    c.put_file("rv", b"2", branch=b)
    two = c.commit(b).id
    new = ok(pfs(srv.url, "revert", b, one, "-m", "undo")).strip()
    assert ID.match(new) and new not in (one, two)
    info = c.inspect_commit(new)
    assert info.parents == (two,) and info.message == "undo"
    assert c.get_file("rv", commit=new) == b"1"
    fails(pfs(srv.url, "revert", b, "deadbeefdeadbeef"))


def test_discard(srv: ServerProc, c: Client, b: str) -> None:
    c.put_file("ds/a", b"1", branch=b)
    c.put_file("ds/b", b"2", branch=b)
    assert ok(pfs(srv.url, "discard", "-b", b)) == "discarded 2 change(s)\n"
    assert ok(pfs(srv.url, "discard", "--branch", b)) == "discarded 0 change(s)\n"
    fails(pfs(srv.url, "discard", "-b", "no-such-branch"))


# ---- fsck ----------------------------------------------------------------------------------------
def test_fsck_on_the_servers_data_dir_and_via_server(srv: ServerProc) -> None:
    out = ok(pfs(None, "fsck", "--data-dir", str(srv.data_dir)))
    assert re.match(r"^ok: \d+ commits, \d+ trees, \d+ files, \d+ chunks\n$", out), out
    assert ok(pfs(srv.url, "fsck", "--server")).startswith("ok: ")
    assert ok(pfs(None, "fsck", "--quick", env={"PFS_DATA_DIR": str(srv.data_dir)})).startswith("ok: ")


def test_fsck_reports_damage_and_exits_1(server: ServerProc, tmp_path: Path) -> None:
    with Client(server.url) as c:
        c.put_file("big", os.urandom(600_000))
        c.commit()
    sizes = server.storage.object_sizes()
    victim = max(sizes, key=lambda name: sizes[name])
    server.storage.delete(victim)
    res = pfs(None, "fsck", "--data-dir", str(server.data_dir), env=server.storage.env())
    assert res.returncode == 1 and b"Traceback" not in res.stderr
    lines = res.stdout.decode().splitlines()
    assert lines[-1].startswith("FAILED: ") and any(server.storage.key_of(victim) in ln for ln in lines[:-1])
    assert pfs(server.url, "fsck", "--server").returncode == 1
    res = pfs(server.url, "fsck")  # --url alone asks that server too
    assert res.returncode == 1 and res.stdout.decode().splitlines()[-1].startswith("FAILED: ")
    if server.storage.kind == "cluster":  # all in PostgreSQL and S3: no local data dir is needed, or made
        nowhere = tmp_path / "nowhere"
        res = pfs(None, "fsck", "--data-dir", str(nowhere), env=server.storage.env())
        assert res.returncode == 1 and res.stdout.decode().splitlines()[-1].startswith("FAILED: ")
        assert not nowhere.exists()


def test_fsck_of_missing_storage_fails_and_creates_nothing(tmp_path: Path) -> None:
    err = fails(pfs(None, "fsck", "--data-dir", str(tmp_path / "nope")))
    assert f"no pfs data directory at {tmp_path / 'nope'}" in err
    # the default data dir, in an empty home
    home = tmp_path / "home"
    home.mkdir()
    err = fails(pfs(None, "fsck", env={"HOME": str(home)}))
    assert f"no pfs data directory at {home / '.pfs'}" in err
    # a directory that holds no repository, or metadata without objects: nothing made in it
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no pfs metadata at" in fails(pfs(None, "fsck", "--data-dir", str(empty)))
    (empty / "meta.sqlite").write_bytes(b"")
    assert "no pfs objects in" in fails(pfs(None, "fsck", "--data-dir", str(empty)))
    # a cluster's metadata with the default (missing) data dir for objects
    meta = f"sqlite:///{empty / 'meta.sqlite'}"
    fails(pfs(None, "fsck", "--meta-url", meta, env={"HOME": str(home)}))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["empty", "home", "meta.sqlite"]


def test_fsck_with_url_asks_that_server(srv: ServerProc, tmp_path: Path) -> None:
    """An explicit server (--url, PFS_URL) is what fsck checks, never a local data dir
    that happens to be configured or the default one; both named alike is a usage error."""
    home, nowhere = tmp_path / "home", tmp_path / "nowhere"
    home.mkdir()
    dead = f"http://127.0.0.1:{free_port()}"
    counts = re.compile(r"^ok: \d+ commits, \d+ trees, \d+ files, \d+ chunks\n$")
    env = {"HOME": str(home)}
    # the server answers, though the local data dir (default, or from the environment) is missing
    assert counts.match(ok(pfs(srv.url, "fsck", env=env)))
    assert counts.match(ok(pfs(srv.url, "fsck", env={**env, "PFS_DATA_DIR": str(nowhere)})))
    assert counts.match(ok(pfs(None, "fsck", env={**env, "PFS_URL": srv.url})))
    assert counts.match(ok(pfs(srv.url, "fsck", "--server", env={**env, "PFS_DATA_DIR": str(nowhere)})))
    # storage named on the command line wins over PFS_URL: checked offline, the dead server unasked
    assert counts.match(ok(pfs(None, "fsck", "--data-dir", str(srv.data_dir), env={**env, "PFS_URL": dead})))
    # the same strength on both sides is ambiguous
    err = fails(pfs(srv.url, "fsck", "--data-dir", str(srv.data_dir)))
    assert "--url names a server" in err and err.endswith("See 'pfs fsck --help'.\n")
    err = fails(pfs(None, "fsck", env={**env, "PFS_URL": srv.url, "PFS_DATA_DIR": str(srv.data_dir)}))
    assert "both PFS_URL and PFS_DATA_DIR are set" in err
    assert "--server checks the server" in fails(pfs(srv.url, "fsck", "--server", "--data-dir", str(nowhere)))
    assert os.listdir(home) == [] and not nowhere.exists()


# ---- errors and global options -------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["get", "nope.txt"],
        ["get", "../etc/passwd"],
        ["get", "seed.txt", "-c", "deadbeefdeadbeef"],
        ["ls", "nope"],
        ["branch", "a b"],
        ["branch", "x" * 300],
        ["branch", "master", "-d"],
    ],
)
def test_errors_are_one_line_exit_1(srv: ServerProc, args: list[str]) -> None:
    err = fails(pfs(srv.url, *args))
    assert len(err) > len("error: \n")


def test_long_error_is_not_wrapped_and_markup_is_not_interpreted(srv: ServerProc) -> None:
    name = "[red]" + "y" * 150
    err = fails(pfs(srv.url, "get", f"{name}/z"))
    assert f"'{name}/z' not found" in err


def test_unreachable_server(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["ls"], ["get", "x"]):
        err = fails(pfs(url, *args))
        assert "cannot reach" in err or "failed" in err
    (tmp_path / "f").write_bytes(b"x")
    fails(pfs(url, "put", str(tmp_path / "f")))


def test_url_from_environment(srv: ServerProc) -> None:
    out = ok(pfs(None, "get", "seed.txt", "-c", "master", env={"PFS_URL": srv.url}))
    assert out == "seed\n"


def test_usage_errors_are_one_line_exit_1(srv: ServerProc, tmp_path: Path) -> None:
    """click's three lines and exit 2 become the one line and exit 1 the README promises."""
    missing = tmp_path / "does-not-exist"
    cases = {
        ("revert", "master"): "error: missing argument 'COMMIT'. See 'pfs revert --help'.\n",
        ("put",): "error: missing argument 'LOCAL'. See 'pfs put --help'.\n",
        ("put", str(missing)): f"error: invalid value for 'LOCAL': Path '{missing}' does not exist. "
        "See 'pfs put --help'.\n",
        ("frobnicate",): "error: no such command 'frobnicate'. See 'pfs --help'.\n",
        ("log", "-n", "abc"): "error: invalid value for '-n' / '--limit': 'abc' is not a valid integer. "
        "See 'pfs log --help'.\n",
        ("ls", "--frob"): "error: no such option '--frob'. See 'pfs ls --help'.\n",
    }
    for args, line in cases.items():
        assert fails(pfs(srv.url, *args)) == line
    assert fails(pfs(None, "--url")) == "error: option '--url' requires an argument. See 'pfs --help'.\n"


def test_help(srv: ServerProc) -> None:
    assert ok(pfs(None)).startswith("Usage: pfs [OPTIONS] COMMAND [ARGS]...")  # no verb: the help, not an error
    assert ok(pfs(None, "--help")) == ok(pfs(None))
    assert ok(pfs(None, "put", "--help")).startswith("Usage: pfs put [OPTIONS] LOCAL [REMOTE]")


def test_closed_output_pipe_exits_quietly(srv: ServerProc, c: Client, b: str) -> None:
    """`pfs ls | head`: the reader left, so pfs stops without a word, with the status a
    shell reports for git or coreutils killed by SIGPIPE (141)."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before pfs writes a byte
    try:
        for args in (["ls"], ["log"], ["get", "seed.txt"], ["--help"], ["put", "--help"]):
            res = subprocess.run(
                [sys.executable, "-m", "pfs.cli", "--url", srv.url, *args], stdout=w, stderr=subprocess.PIPE, timeout=60
            )
            assert (res.returncode, res.stderr) == (141, b""), args
    finally:
        os.close(w)
    # a real pipeline: head leaves after 10 bytes of a 4 MB file
    c.put_file("pipe/big", os.urandom(4 << 20), branch=b)
    script = f'"{sys.executable}" -m pfs.cli --url {srv.url} get pipe/big -b {b} | head -c 10 >/dev/null; '
    script += 'echo "${PIPESTATUS[@]}" >&2'
    res = subprocess.run(["bash", "-c", script], capture_output=True, timeout=60)
    assert res.stderr == b"141 0\n"


def test_non_pfs_server_is_one_line(tmp_path: Path) -> None:
    """Something else at --url (a web page) gives an error line, not a JSON traceback."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>\n<p>not pfs</p>\n</html>\n"
            self.send_response(200 if self.path == "/branch" else 404)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{web.server_address[1]}"
        assert fails(pfs(url, "branch")) == f"error: {url} answered HTTP 200 without JSON: is it pfs?\n"
        assert fails(pfs(url, "ls")) == "error: <html>\\n<p>not pfs</p>\\n</html>\n"  # a 404's page, on one line
    finally:
        web.shutdown()
        web.server_close()
