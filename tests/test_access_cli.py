"""Access control from the client side: `pfs.Client`'s credentials (arguments, URL, the
environment, the credentials file), its identity methods and the error classes they raise;
the `pfs` verbs (`admin init`, `login`, `whoami`, `user`, `key`, `access`, `protect`,
`audit`) as real subprocesses against a real `pfs serve` with users; fsspec's `key` and
`secret`; clone and pull between servers that each check their own keys. And the rule
that runs through all of it: a secret is printed by the command that makes it, on the one
line that says so, and nowhere else: not in another command's output, an error, a repr,
or the server's log.
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import select
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import pytest
from conftest import AppServer, ServerProc
from pg import PostgresServer

from pfs import Client, errors, sync
from pfs.client import read_credentials_file, resolve_credentials
from pfs.fs import PfsFileSystem
from pfs.records import Grant, NewKey

SECRET_LINE = "secret access key: "
# Every CLI run of this module and every secret made, for the check that none leaks.
RUNS: list[tuple[tuple[str, ...], str, str]] = []
SECRETS: set[str] = set()


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Clients in this process see only the credentials a test gives them: not the
    developer's environment or ~/.config/pfs/credentials."""
    for name in ("PFS_URL", "PFS_REPO", "PFS_ACCESS_KEY_ID", "PFS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PFS_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


def pfs(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None, home: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The `pfs` command with no credentials but those given in `env` or in `home`'s
    credentials file; its output is recorded for the leak check."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PFS_") and k not in ("HOME", "XDG_CONFIG_HOME")}
    full = {**base, "HOME": str(home or "/nonexistent"), "COLUMNS": "200", **(env or {})}
    res = subprocess.run(
        [sys.executable, "-m", "pfs.cli", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=60,
        env=full,
        stdin=subprocess.DEVNULL if stdin is None else None,
    )
    RUNS.append((tuple(args), res.stdout, res.stderr))
    return res


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, (res.args, res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    return res.stdout


def fails(res: subprocess.CompletedProcess[str]) -> str:
    """Exit 1, nothing on stdout, one `error:` line on stderr: its text."""
    assert res.returncode == 1, (res.args, res.returncode, res.stdout, res.stderr)
    assert res.stdout == "" and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, repr(res.stderr)
    return res.stderr


def new_key(out: str) -> NewKey:
    """The key pair a create/rotate/init printed (and note its secret)."""
    key_id = re.search(r"^access key id: +(\S+)$", out, re.M)
    secret = re.search(rf"^{SECRET_LINE}(\S+)$", out, re.M)
    assert key_id and secret, out
    assert "shown only now" in out
    SECRETS.add(secret[1])
    return NewKey("", key_id[1], secret[1])


def admin_init(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return pfs("admin", "init", "--data-dir", str(data_dir), *extra)


@dataclass
class Secured:
    """A `pfs serve` with access control on: its first admin made by `pfs admin init`."""

    server: ServerProc
    admin: NewKey
    home: Path
    init_output: str
    users: dict[str, NewKey] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def env(self, key: NewKey | None = None) -> dict[str, str]:
        """PFS_URL with a key pair beside it (the admin's by default)."""
        k = key or self.admin
        return {"PFS_URL": self.url, "PFS_ACCESS_KEY_ID": k.id, "PFS_SECRET_ACCESS_KEY": k.secret}

    def url_of(self, key: NewKey, repo: str | None = None) -> str:
        base = self.url.replace("http://", f"http://{key.id}:{key.secret}@")
        return f"{base}/repo/{repo}" if repo else base

    def client(self, key: NewKey | None = None, repo: str | None = None) -> Client:
        k = key or self.admin
        return Client(self.url, repo=repo, key_id=k.id, secret=k.secret)


def start_secured(root: Path) -> Secured:
    data = root / "data"
    res = admin_init(data)
    out = ok(res)
    key = new_key(out)
    server = ServerProc(data, args=["--log-level", "info"]).start()  # request lines in its log, too
    home = root / "home"
    home.mkdir()
    return Secured(server, NewKey("admin", key.id, key.secret), home, out)


@pytest.fixture(scope="module")
def sec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    s = start_secured(tmp_path_factory.mktemp("secured"))
    with s.client() as c:
        c.create_repo("images")
        for name in ("reader", "writer"):
            made = c.create_user(name)
            SECRETS.add(made.secret)
            s.users[name] = made
        c.repo("images").grant("reader", "read")
        c.repo("images").grant("writer", "write")
        c.repo("images").put_file("seed.txt", b"seed\n")
        c.repo("images").commit(message="seed")
    yield s
    s.server.stop()


# ---- pfs admin init, and signing in ---------------------------------------------------------


def test_admin_init_makes_the_first_admin_once(sec: Secured, tmp_path: Path) -> None:
    lines = sec.init_output.splitlines()
    assert lines[0].startswith("Created user admin (server admin) in ")
    assert lines[1] == f"access key id:     {sec.admin.id}" and lines[2] == f"{SECRET_LINE}{sec.admin.secret}"
    assert lines[3] == "The secret is shown only now: keep it safe." and len(lines) == 4
    # a second time: one line, exit 1, nothing made
    err = fails(admin_init(sec.server.data_dir, "--name", "other"))
    assert "has users already" in err
    with sec.client() as c:
        assert [u.name for u in c.users()] == ["admin", "reader", "writer"]
        made = [a for a in c.audit(limit=1000) if a.action == "admin init"]
    assert len(made) == 1 and made[0].listener == "cli" and "--name admin" in made[0].target
    # another name on a fresh data dir; a bad name is refused before anything is made
    fresh = tmp_path / "fresh"
    key = new_key(ok(admin_init(fresh, "--name", "root")))
    assert key.id.startswith("PFS")
    assert "invalid user name" in fails(admin_init(tmp_path / "other", "--name", "Not Valid"))


def test_admin_init_on_a_cluster_needs_the_server_key(postgres: PostgresServer, tmp_path: Path) -> None:
    """PostgreSQL metadata is shared by every node, so no node's own key file will do: the
    key every node is given must be named."""
    env = {"PFS_META_URL": postgres.new_database()}
    err = fails(pfs("admin", "init", "--data-dir", str(tmp_path / "d"), env=env))
    assert "PFS_SERVER_KEY_FILE" in err
    key_file = tmp_path / "server.key"
    key_file.write_text(base64.b64encode(os.urandom(32)).decode())
    with_key = {**env, "PFS_SERVER_KEY_FILE": str(key_file)}
    key = new_key(ok(pfs("admin", "init", "--data-dir", str(tmp_path / "d"), env=with_key)))
    # once made, from any node's data dir (with or without the key): refused, and said so
    assert "has users already" in fails(pfs("admin", "init", "--data-dir", str(tmp_path / "e"), env=env))
    node = ServerProc(tmp_path / "node", env=with_key).start()
    try:
        with Client(node.url, key_id=key.id, secret=key.secret) as c:
            assert c.whoami().user == "admin"
    finally:
        node.stop()


def test_anonymous_is_refused_with_one_line_and_credentials_sign_in(sec: Secured, tmp_path: Path) -> None:
    err = fails(pfs("--url", sec.url, "ls"))
    assert "sign in" in err and "no credentials for" in err and "pfs login" in err
    assert "not signed in" in fails(pfs("--url", sec.url, "whoami"))
    # the environment: PFS_URL with PFS_ACCESS_KEY_ID and PFS_SECRET_ACCESS_KEY
    assert ok(pfs("whoami", env=sec.env())) == f"admin (server admin), key {sec.admin.id}\n"
    assert ok(pfs("--repo", "images", "ls", env=sec.env(sec.users["reader"]))) == "           5  seed.txt\n"
    # ... which go to that server only: --url naming another leaves them unsent
    other = sec.url.replace("127.0.0.1", "localhost")
    assert "no credentials for" in fails(pfs("--url", other, "ls", env=sec.env()))
    # the URL's userinfo
    assert ok(pfs("--url", sec.url_of(sec.users["reader"]), "whoami")).startswith("reader, key PFS")
    assert ok(pfs("--url", sec.url_of(sec.users["reader"], "images"), "get", "seed.txt")) == "seed\n"
    # a wrong secret, an unknown key, a malformed pair: one line each, the secret in none
    wrong = NewKey("admin", sec.admin.id, "x" * 40)
    err = fails(pfs("whoami", env=sec.env(wrong)))
    assert "wrong secret" in err and sec.admin.id in err and "x" * 40 not in err
    unknown = NewKey("admin", "PFS" + "A" * 17, sec.admin.secret)
    assert "unknown or disabled access key" in fails(pfs("--url", sec.url_of(unknown), "ls"))
    err = fails(pfs("--url", sec.url.replace("http://", "http://user:hunter2hunter2@"), "ls"))
    assert "credentials from the URL are not ACCESS_KEY_ID:SECRET" in err and "hunter2" not in err
    err = fails(pfs("ls", env={"PFS_URL": sec.url, "PFS_ACCESS_KEY_ID": sec.admin.id}))
    assert "go together" in err


def write_ini(path: Path, sections: dict[str, NewKey]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(f"[{n}]\naccess_key_id = {k.id}\nsecret_access_key = {k.secret}\n\n" for n, k in sections.items())
    )
    return path


def test_credentials_file_section_per_server_else_default(sec: Secured, tmp_path: Path) -> None:
    reader, writer = sec.users["reader"], sec.users["writer"]
    home = tmp_path / "home"
    ini = home / ".config" / "pfs" / "credentials"
    # the server's own section wins over [default], whichever spelling of its URL
    write_ini(ini, {"default": writer, sec.url + "/": reader})
    assert ok(pfs("--url", sec.url, "whoami", home=home)).startswith("reader, ")
    assert ok(pfs("--url", sec.url + "/repo/images", "whoami", home=home)).startswith("reader, ")
    # [default] for a server without a section of its own
    write_ini(ini, {"default": writer, "http://127.0.0.1:1": reader})
    assert ok(pfs("--url", sec.url, "whoami", home=home)).startswith("writer, ")
    # PFS_CREDENTIALS_FILE names another file; the environment comes before any file
    other = write_ini(tmp_path / "other.ini", {sec.url: reader})
    assert ok(pfs("--url", sec.url, "whoami", home=home, env={"PFS_CREDENTIALS_FILE": str(other)})).startswith(
        "reader, "
    )
    assert ok(pfs("whoami", home=home, env=sec.env())).startswith("admin ")
    # a file that is not INI: where, never what (its line may be a secret)
    ini.write_text(f"access_key_id {reader.id}\n{reader.secret}\n")
    err = fails(pfs("--url", sec.url, "ls", home=home))
    assert f"{ini} is not INI (line 1)" in err and reader.secret not in err
    # a section without its secret
    ini.write_text(f"[default]\naccess_key_id = {reader.id}\n")
    assert "not ACCESS_KEY_ID:SECRET" in fails(pfs("--url", sec.url, "ls", home=home))


def test_login_checks_the_key_and_writes_a_private_file(sec: Secured, tmp_path: Path) -> None:
    home = tmp_path / "home"
    reader = sec.users["reader"]
    ini = home / ".config" / "pfs" / "credentials"
    # a wrong secret: refused by the server, nothing written
    err = fails(pfs("--url", sec.url, "login", home=home, stdin=f"{reader.id}\n{'y' * 40}\n".encode()))
    assert "wrong secret" in err and not ini.exists()
    write_ini(ini, {"http://127.0.0.1:1": sec.admin})  # another server's section stays
    out = ok(pfs("--url", sec.url, "login", home=home, stdin=f"{reader.id}\n{reader.secret}\n".encode()))
    assert out == f"Signed in to {sec.url} as reader; key {reader.id} saved in {ini}\n"
    assert ini.stat().st_mode & 0o777 == 0o600
    assert read_credentials_file(sec.url, str(ini)) is not None
    kept = read_credentials_file("http://127.0.0.1:1", str(ini))
    assert kept is not None and kept.key_id == sec.admin.id
    assert ok(pfs("--url", sec.url, "whoami", home=home)).startswith("reader, ")
    # again, as another user: the section is replaced, not doubled
    writer = sec.users["writer"]
    ok(pfs("--url", sec.url + "/", "login", home=home, stdin=f"{writer.id}\n{writer.secret}\n".encode()))
    assert ini.read_text().count(sec.url) == 1 and reader.secret not in ini.read_text()
    assert ok(pfs("--url", sec.url, "whoami", home=home)).startswith("writer, ")


def test_login_on_a_terminal_does_not_echo_the_secret(sec: Secured, tmp_path: Path) -> None:
    """The secret is typed at a prompt that does not echo it; the key id is echoed as typed."""
    reader = sec.users["reader"]
    master, slave = os.openpty()

    def own_terminal() -> None:  # the pty is the child's controlling terminal: /dev/tty is it
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {k: v for k, v in os.environ.items() if not k.startswith("PFS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pfs.cli", "--url", sec.url, "login"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**env, "HOME": str(tmp_path), "TERM": "dumb"},
        preexec_fn=own_terminal,
    )
    os.close(slave)
    screen = bytearray()

    def read_until(text: bytes) -> None:
        deadline = time.monotonic() + 30
        while text not in screen:
            assert time.monotonic() < deadline, bytes(screen)
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    screen.extend(os.read(master, 4096))
                except OSError:  # EIO: the child closed the terminal
                    break

    try:
        read_until(b"Access key id: ")
        os.write(master, reader.id.encode() + b"\n")
        read_until(b"Secret access key: ")
        os.write(master, reader.secret.encode() + b"\n")
        read_until(b"saved in")
        assert proc.wait(30) == 0, bytes(screen)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert reader.id.encode() in screen and reader.secret.encode() not in screen
    ini = tmp_path / ".config" / "pfs" / "credentials"
    creds = read_credentials_file(sec.url, str(ini))
    assert creds is not None and creds.key_id == reader.id and creds.secret == reader.secret
    assert ini.stat().st_mode & 0o777 == 0o600 and ini.parent.stat().st_mode & 0o777 == 0o700


# ---- users, keys, roles, protected branches, audit --------------------------------------------


@pytest.mark.slow
def test_user_and_key_verbs_round_trip(sec: Secured) -> None:
    env = sec.env()
    carol = new_key(ok(pfs("user", "create", "carol", env=env)))
    assert ok(pfs("user", "list", env=env)).splitlines()[1].startswith("carol\t")
    assert ok(pfs("user", "admin", "carol", "--on", env=env)) == "carol: server admin\n"
    assert "\tadmin" in [ln for ln in ok(pfs("user", "list", env=env)).splitlines() if ln.startswith("carol")][0]
    assert ok(pfs("user", "admin", "carol", "--off", env=env)) == "carol: not a server admin\n"
    assert "--on or --off" in fails(pfs("user", "admin", "carol", env=env))
    ok(pfs("--repo", "images", "access", "grant", "carol", "write", env=env))
    shown = ok(pfs("user", "show", "carol", env=env)).splitlines()
    assert shown[0].startswith("carol, created ") and shown[1] == f"  key   {carol.id}\tactive"
    assert shown[2] == "  role  images\twrite"
    # carol's own keys, USER defaulting to whoami's
    as_carol = sec.env(carol)
    second = new_key(ok(pfs("key", "create", env=as_carol)))
    listed = ok(pfs("key", "list", env=as_carol))
    assert {ln.split("\t")[0] for ln in listed.splitlines()} == {carol.id, second.id}
    assert all(ln.endswith("\tactive") for ln in listed.splitlines())
    # disable: refused until enabled again
    assert ok(pfs("key", "disable", second.id, env=as_carol)) == f"Access key {second.id} disabled.\n"
    assert "unknown or disabled" in fails(pfs("whoami", env=sec.env(second)))
    assert f"{second.id}\t" in ok(pfs("key", "list", "carol", env=env)) and "disabled" in ok(
        pfs("key", "list", "carol", env=env)
    )
    ok(pfs("key", "enable", second.id, env=as_carol))
    assert ok(pfs("whoami", env=sec.env(second))).startswith("carol, ")
    # rotate: a new pair, the old one disabled
    out = ok(pfs("key", "rotate", second.id, env=as_carol))
    rotated = new_key(out)
    assert out.splitlines()[0] == f"Created access key {rotated.id} for carol; {second.id} is disabled."
    assert ok(pfs("whoami", env=sec.env(rotated))).startswith("carol, ")
    fails(pfs("whoami", env=sec.env(second)))
    assert ok(pfs("key", "delete", second.id, env=as_carol)) == f"Deleted access key {second.id}.\n"
    # another user's keys are not carol's to see; nor the user list
    assert "not found" in fails(pfs("key", "disable", sec.admin.id, env=as_carol))
    assert "may not" in fails(pfs("user", "list", env=as_carol))
    assert "only its own access keys" in fails(pfs("key", "list", "reader", env=as_carol))
    # a server admin deletes her
    assert ok(pfs("user", "delete", "carol", env=env)) == "Deleted user carol and its keys.\n"
    assert "unknown or disabled" in fails(pfs("whoami", env=sec.env(rotated)))
    assert "not found" in fails(pfs("user", "show", "carol", env=env))


@pytest.mark.slow
def test_access_and_protect_verbs_round_trip(sec: Secured) -> None:
    env = sec.env()
    r = ("--repo", "images")
    with sec.client() as c:
        c.create_user("dave")
    assert ok(pfs(*r, "access", "grant", "dave", "admin", env=env)) == "dave has admin on images.\n"
    assert "dave\tadmin" in ok(pfs(*r, "access", "list", env=env)).splitlines()
    assert "'owner' is not one of" in fails(pfs(*r, "access", "grant", "dave", "owner", env=env))
    assert ok(pfs(*r, "access", "revoke", "dave", env=env)) == "dave has no role on images now.\n"
    assert "dave" not in ok(pfs(*r, "access", "list", env=env))
    assert "no role" in fails(pfs(*r, "access", "revoke", "dave", env=env))
    assert ok(pfs("access", "grant", "dave", "read", env=env)) == "dave has read on default.\n"
    # protection rules: a pattern, listed, removed
    assert ok(pfs(*r, "protect", "add", "release-*", env=env)) == "Branches matching release-* are protected.\n"
    assert "(they were already)" in ok(pfs(*r, "protect", "add", "release-*", env=env))
    assert "release-*" in ok(pfs(*r, "protect", "list", env=env)).splitlines()
    assert "release-*" in ok(pfs(*r, "protect", "list", env=sec.env(sec.users["reader"])))  # readers may see them
    assert "may not" in fails(pfs(*r, "protect", "add", "x", env=sec.env(sec.users["writer"])))
    assert "no longer protected" in ok(pfs(*r, "protect", "remove", "release-*", env=env))
    assert "no protection rule" in fails(pfs(*r, "protect", "remove", "release-*", env=env))
    assert "invalid branch pattern" in fails(pfs(*r, "protect", "add", "../x", env=env))


def test_audit_lists_mutations_newest_first_with_filters(sec: Secured) -> None:
    env = sec.env()
    with sec.client(sec.users["writer"], repo="images") as w:
        w.put_file("audited.txt", b"x", branch="master")
        w.commit(message="audited")
    with Client(sec.url, repo="images") as anonymous, pytest.raises(errors.Unauthorized):
        anonymous.put_file("refused.txt", b"x")
    lines = ok(pfs("audit", "--user", "writer", "--in-repo", "images", "-n", "5", env=env)).splitlines()
    first, second = lines[0].split("  "), lines[1].split("  ")
    assert first[2:] == ["writer", "127.0.0.1", "POST /repo/images/commit?branch=master&message=audited", "201"]
    assert second[2:] == ["writer", "127.0.0.1", "POST /repo/images/file/audited.txt?branch=master", "201"]
    newest = int(first[0])
    assert all("writer" in ln for ln in lines)
    every = ok(pfs("audit", "-n", "3", env=env)).splitlines()
    assert len(every) == 3 and "anonymous" in every[0] and "refused.txt" in every[0] and every[0].endswith("401")
    ids = [int(ln.split("  ")[0]) for ln in every]
    assert ids == sorted(ids, reverse=True) and newest in ids
    older = ok(pfs("audit", "--before", str(newest), "-n", "1000", env=env)).splitlines()
    assert older and all(int(ln.split("  ")[0]) < newest for ln in older)
    assert "may not" in fails(pfs("audit", env=sec.env(sec.users["reader"])))


def test_a_reader_is_forbidden_to_write(sec: Secured, tmp_path: Path) -> None:
    reader = sec.env(sec.users["reader"])
    assert ok(pfs("--repo", "images", "get", "seed.txt", env=reader)) == "seed\n"
    local = tmp_path / "x.txt"
    local.write_text("x")
    err = fails(pfs("--repo", "images", "put", str(local), "x.txt", env=reader))
    assert "reader may not" in err and "write" in err
    assert "reader may not" in fails(pfs("--repo", "images", "branch", "mine", env=reader))
    assert "needs read" in fails(pfs("ls", env=reader))  # no role on the default repository
    with sec.client(sec.users["reader"], repo="images") as c:
        with pytest.raises(errors.Forbidden) as exc:
            c.put_file("x.txt", b"x")
        assert exc.value.status == 403 and exc.value.code == "forbidden"
        assert c.get_file("seed.txt") == b"seed\n"


def test_a_protected_branch_refuses_a_put_and_takes_a_merge(sec: Secured, tmp_path: Path) -> None:
    env = sec.env(sec.users["writer"])
    r = ("--repo", "images")
    ok(pfs(*r, "protect", "add", "prod", env=sec.env()))
    try:
        ok(pfs(*r, "branch", "prod", env=env))  # making a protected branch is no change to it
        local = tmp_path / "p.txt"
        local.write_text("protected?")
        err = fails(pfs(*r, "put", str(local), "p.txt", "-b", "prod", env=env))
        assert "branch 'prod' is protected" in err and "merge" in err
        with sec.client(sec.users["writer"], repo="images") as c, pytest.raises(errors.BranchProtected):
            c.delete_branch("prod")
        ok(pfs(*r, "branch", "feature", env=env))
        ok(pfs(*r, "put", str(local), "p.txt", "-b", "feature", env=env))
        ok(pfs(*r, "commit", "-b", "feature", "-m", "via a branch", env=env))
        assert ok(pfs(*r, "merge", "feature", "prod", env=env)).startswith("fast-forward: ")
        assert ok(pfs(*r, "get", "p.txt", "-c", "prod", env=env)) == "protected?"
    finally:
        ok(pfs(*r, "protect", "remove", "prod", env=sec.env()))


# ---- the Python client ---------------------------------------------------------------------


def test_client_methods_and_error_classes_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = AppServer(tmp_path / "data").start()
    try:

        def client(key: NewKey | None = None, repo: str | None = None) -> Client:
            pair = {"key_id": key.id, "secret": key.secret} if key else {}
            return Client(app.url, transport=app.transport, repo=repo, **pair)

        anyone = client()
        assert not anyone.whoami().access_control  # no users: open
        root = anyone.create_user("root", admin=True)
        assert root.user == "root" and root.secret not in repr(root) and root.id in repr(root)
        assert anyone.whoami().access_control and anyone.whoami().user is None
        with pytest.raises(errors.Unauthorized) as unauth:
            anyone.users()
        assert unauth.value.status == 401 and "no credentials for http://pfs.test" in unauth.value.message
        admin = client(root)
        assert repr(admin) == f"Client('http://pfs.test', key_id={root.id!r})" and root.secret not in repr(admin)
        me = admin.whoami()
        assert (me.user, me.admin, me.key) == ("root", True, root.id)
        bob_key = admin.create_user("bob")
        bob = client(bob_key)
        assert [u.name for u in admin.users()] == ["bob", "root"]
        assert admin.set_admin("bob", True).admin and not admin.set_admin("bob", False).admin
        admin.create_repo("pics")
        pics = admin.repo("pics")  # the same key, for another repository
        assert pics.key_id == root.id and pics.grant("bob", "write") == Grant("bob", "write", "pics")
        assert pics.grants() == [Grant("bob", "write")]
        user = admin.user("bob")
        assert user.roles == {"pics": "write"} and [k.id for k in user.keys] == [bob_key.id]
        # keys: made, listed, disabled, enabled, rotated, deleted
        extra = bob.create_key("bob")
        assert {k.id for k in bob.keys("bob")} == {bob_key.id, extra.id} and bob.key(extra.id).user == "bob"
        bob.disable_key(extra.id)
        assert bob.key(extra.id).disabled
        with pytest.raises(errors.Unauthorized) as refused:
            client(extra).whoami()
        assert f"[access key {extra.id} from the key_id and secret arguments]" in refused.value.message
        bob.enable_key(extra.id)
        assert client(extra).whoami().user == "bob"
        new = bob.rotate_key(extra.id)
        assert new.user == "bob" and new.id != extra.id and bob.key(extra.id).disabled
        bob.delete_key(extra.id)
        with pytest.raises(errors.NotFound):
            bob.key(extra.id)
        with pytest.raises(errors.NotFound):  # another's key is not confirmed to exist
            bob.key(root.id)
        # roles: Forbidden is a user refused; protected branches: BranchProtected, a Forbidden
        with pytest.raises(errors.Forbidden) as forbidden:
            bob.users()
        assert type(forbidden.value) is errors.Forbidden and forbidden.value.code == "forbidden"
        bob_pics = client(bob_key, repo="pics")
        assert pics.protect("master") and not pics.protect("master") and bob_pics.protected() == ["master"]
        with pytest.raises(errors.BranchProtected) as protected:
            bob_pics.put_file("a.txt", b"a")
        assert protected.value.status == 403 and isinstance(protected.value, errors.Forbidden)
        bob_pics.create_branch("dev")
        bob_pics.put_file("a.txt", b"a", branch="dev")
        bob_pics.commit("dev")
        assert bob_pics.merge("dev", "master").kind == "fast-forward"
        pics.unprotect("master")
        with pytest.raises(errors.NotFound):
            pics.unprotect("master")
        pics.revoke("bob")
        with pytest.raises(errors.Forbidden):
            bob_pics.ls()
        with pytest.raises(errors.InvalidName):
            admin.grant("Not A User", "read")
        # the audit log: what changed, newest first, filtered
        entries = admin.audit(limit=1000)
        assert [e.id for e in entries] == sorted((e.id for e in entries), reverse=True)
        mine = admin.audit(user="bob", repo="pics")
        assert mine and {e.user for e in mine} == {"bob"} and {e.repo for e in mine} == {"pics"}
        assert admin.audit(limit=1, before=entries[0].id)[0].id == entries[1].id
        assert all(root.secret not in e.target and new.secret not in e.target for e in entries)
        admin.delete_user("bob")
        with pytest.raises(errors.NotFound):
            admin.user("bob")
        with pytest.raises(errors.Conflict):  # the last server admin stays one
            admin.set_admin("root", False)
        for c in (anyone, admin, bob, pics, bob_pics):
            c.close()
    finally:
        app.stop()


def test_credentials_resolve_in_order_and_env_keys_go_to_their_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = NewKey("a", "PFS" + "A" * 17, "a" * 40)
    b = NewKey("b", "PFS" + "B" * 17, "b" * 40)
    c = NewKey("c", "PFS" + "C" * 17, "c" * 40)
    ini = write_ini(tmp_path / "creds", {"http://srv.test:8080": c, "default": a})
    monkeypatch.setenv("PFS_CREDENTIALS_FILE", str(ini))
    # the file: the server's section, else [default]
    assert Client("http://srv.test:8080").key_id == c.id
    assert Client("HTTP://SRV.test:8080/repo/data/").key_id == c.id
    assert Client("http://elsewhere.test").key_id == a.id
    # the environment: for PFS_URL's server (however it is named), before the file
    monkeypatch.setenv("PFS_URL", "http://srv.test:8080/repo/data")
    monkeypatch.setenv("PFS_ACCESS_KEY_ID", b.id)
    monkeypatch.setenv("PFS_SECRET_ACCESS_KEY", b.secret)
    assert Client().key_id == b.id and Client("http://srv.test:8080").key_id == b.id
    assert Client("http://elsewhere.test").key_id == a.id  # not PFS_URL's server: not its keys
    # the URL, then the arguments
    userinfo = f"http://{a.id}:{a.secret}@srv.test:8080/repo/data"
    via_url = Client(userinfo)
    assert via_url.key_id == a.id and via_url.url == "http://srv.test:8080/repo/data"
    assert via_url.credentials is not None and via_url.credentials.source == "the URL"
    assert Client(userinfo, key_id=c.id, secret=c.secret).key_id == c.id
    monkeypatch.setenv("PFS_URL", userinfo)  # PFS_URL may carry them too
    assert Client().key_id == a.id and Client().url == "http://srv.test:8080/repo/data"
    # without any: anonymous
    for name in ("PFS_URL", "PFS_ACCESS_KEY_ID", "PFS_SECRET_ACCESS_KEY", "PFS_CREDENTIALS_FILE"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    assert Client("http://srv.test").credentials is None
    assert resolve_credentials("http://srv.test") is None
    # percent-escaped userinfo is decoded; a secret never shows in a message, repr or URL
    escaped = Client(f"http://{a.id}:{a.secret[:-1]}%2F@127.0.0.1:1")
    assert escaped.credentials is not None and escaped.credentials.secret == a.secret[:-1] + "/"
    with pytest.raises(errors.Unavailable) as down:
        escaped.ls()
    assert "http://127.0.0.1:1" in down.value.message and a.secret[:-1] not in down.value.message
    assert a.secret[:-1] not in repr(escaped) + repr(escaped.credentials) + escaped.url + escaped.root
    with pytest.raises(errors.BadRequest, match="go together"):
        Client("http://srv.test", key_id=a.id)


def test_too_many_failed_sign_ins_is_429_with_retry_after(tmp_path: Path) -> None:
    s = start_secured(tmp_path)
    s.server.stop()
    s.server.start(env={"PFS_AUTH_FREE_FAILURES": "1000"})  # no slowing down: straight to the block
    try:
        wrong = NewKey("admin", s.admin.id, "z" * 40)
        with s.client(wrong) as c:
            for _ in range(100):
                with pytest.raises(errors.Unauthorized):
                    c.whoami()
            with pytest.raises(errors.TooManyRequests) as exc:
                c.whoami()
        assert exc.value.status == 429 and 1 <= exc.value.retry_after <= 61
        assert "too many failed sign-ins" in fails(pfs("whoami", env=s.env()))
    finally:
        s.server.stop()


# ---- fsspec, clone and pull ----------------------------------------------------------------


def test_fsspec_takes_key_and_secret(sec: Secured) -> None:
    writer = sec.users["writer"]
    fs = fsspec.filesystem("pfs", url=sec.url, key=writer.id, secret=writer.secret, skip_instance_cache=True)
    assert isinstance(fs, PfsFileSystem)
    with fs.open("images/master/fs/a.txt", "wb") as f:
        f.write(b"through fsspec")
    assert fs.cat("images/master/fs/a.txt") == b"through fsspec"
    assert "images/master/fs/a.txt" in fs.ls("images/master/fs", detail=False)
    assert writer.secret not in repr(fs) + repr(fs.server)
    anonymous = fsspec.filesystem("pfs", url=sec.url, skip_instance_cache=True)
    with pytest.raises(errors.Unauthorized):
        anonymous.cat("images/master/seed.txt")
    reader = sec.users["reader"]
    as_reader = fsspec.filesystem("pfs", url=sec.url, key=reader.id, secret=reader.secret, skip_instance_cache=True)
    assert as_reader.cat("images/master/seed.txt") == b"seed\n"
    with pytest.raises(OSError, match="may not"), as_reader.open("images/master/fs/b.txt", "wb") as f:
        f.write(b"no")


@pytest.mark.slow
def test_clone_and_pull_between_servers_each_with_its_own_keys(sec: Secured, tmp_path: Path) -> None:
    """The source checks its keys, the destination its own: each end's client sends the
    key of its server's section of the credentials file (or of its URL), never the other's."""
    dest = start_secured(tmp_path / "dest")
    try:
        home = tmp_path / "home"
        ini = home / ".config" / "pfs" / "credentials"
        reader = sec.users["reader"]
        # refused without credentials for the source, with one line; nothing arrives
        write_ini(ini, {dest.url: dest.admin})
        err = fails(pfs("--url", dest.url, "clone", sec.url + "/repo/images", home=home))
        assert "sign in" in err and sec.url in err
        with dest.client() as d:
            assert all(b.head is None for b in d.branches())
        # the source's key in the URL: only the source is sent it
        out = ok(pfs("--url", dest.url, "clone", sec.url_of(reader, "images"), home=home))
        assert "master: created" in out and reader.secret not in out
        # a section each: pull a new commit
        write_ini(ini, {dest.url: dest.admin, sec.url: reader})
        with sec.client(sec.users["writer"], repo="images") as w:
            w.put_file("later.txt", b"later")
            head = w.commit(message="later").id
        out = ok(pfs("--url", dest.url, "pull", sec.url + "/repo/images", home=home))
        assert f"-> {head[:12]}" in out
        with dest.client() as d:
            assert d.get_file("later.txt", commit="master") == b"later"
        # the reader may not push to the source
        err = fails(pfs("--url", dest.url, "push", sec.url + "/repo/images", "-b", "master:pushed", home=home))
        assert "reader may not" in err
        # from Python: a URL end resolves its own keys; a Client end keeps the caller's
        with dest.client() as d:
            report = sync.pull(sec.url_of(reader, "images"), d)
            assert report.ok and d.http.is_closed is False
    finally:
        dest.server.stop()


# ---- secrets stay where they were made ----------------------------------------------------------


@pytest.mark.slow
def test_secrets_appear_only_on_the_line_that_makes_them(sec: Secured, tmp_path: Path) -> None:
    """Every CLI run of this module (and a round of failures here) shows a secret only on
    the `secret access key:` line of the command that made it; the server's log never."""
    made = new_key(ok(pfs("user", "create", "leaky", env=sec.env())))
    rotated = new_key(ok(pfs("key", "rotate", made.id, env=sec.env())))
    for env in (sec.env(made), sec.env(rotated), sec.env(NewKey("", rotated.id, made.secret))):
        pfs("whoami", env=env)
        pfs("--repo", "images", "put", "-", "leak.txt", env=env, stdin=b"x")
        pfs("user", "list", env=env)
    pfs("--url", sec.url_of(made), "ls")
    pfs("--url", sec.url_of(rotated, "images"), "audit")
    pfs("--url", sec.url_of(rotated, "images"), "clone", sec.url_of(made, "images"))
    assert made.secret in SECRETS and len(SECRETS) >= 4
    for args, out, err in RUNS:
        for secret in SECRETS:
            assert secret not in err, (args, err)
            shown = [ln for ln in out.splitlines() if secret in ln]
            assert shown in ([], [SECRET_LINE + secret]), (args, out)
    log = sec.server.log_path.read_text(errors="replace")
    assert re.search(r"POST '?/user/leaky", log)  # the log has request lines (--log-level info) ...
    assert not [s for s in SECRETS if s in log]  # ... and no secret
