"""Transfer progress as a person sees it: the real `pfs` command with stderr on a real
pseudo-terminal, against a real server. A bar with the total, percent, rate and ETA when
the size is known, bytes and rate when not, and a closing summary line, all on stderr;
stdout stays byte-exact (it may be the data); without a terminal, stderr stays empty.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from conftest import ServerProc

from pfs import Client

SIZE = 9_437_184  # 9.4 MB
ESC = b"\x1b"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path_factory.mktemp("tty") / "data").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def data(srv: ServerProc) -> bytes:
    blob = os.urandom(SIZE)
    with Client(srv.url) as c:
        c.put_file("t/big", blob)
        c.put_file("t/small.txt", b"hello\n")
    return blob


def _env() -> dict[str, str]:
    """A plain terminal: nothing that forces or forbids colour or terminal behaviour."""
    drop = ("PFS_URL", "PFS_DATA_DIR", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "TERM": "xterm-256color"}


def on_tty(
    url: str, *args: str, stdin: IO[bytes] | int | None = None, stdout_tty: bool = False
) -> tuple[int, bytes, bytes]:
    """Run `pfs` with stderr (and stdout too, if asked) on a new pseudo-terminal;
    returns (exit status, stdout bytes, everything the terminal received)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pfs.cli", "--url", url, *args],
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=slave if stdout_tty else subprocess.PIPE,
        stderr=slave,
        env=_env(),
    )
    os.close(slave)
    screen = bytearray()
    out = bytearray()
    streams = [master] + ([proc.stdout.fileno()] if proc.stdout is not None else [])
    while streams:
        ready, _, _ = select.select(streams, [], [], 60)
        assert ready, "pfs hung"
        for fd in ready:
            try:
                piece = os.read(fd, 1 << 16)
            except OSError:  # EIO: the terminal's last writer closed it
                piece = b""
            if not piece:
                streams.remove(fd)
            else:
                (screen if fd == master else out).extend(piece)
    os.close(master)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.wait(60), bytes(out), bytes(screen)


def _plain(screen: bytes) -> str:
    """The terminal's text without escape sequences, a carriage return as a new line."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode(errors="replace")).replace("\r", "\n")


def assert_full_bar(screen: bytes, verb: str, name: str) -> None:
    text = _plain(screen)
    assert f"{verb} {name}" in text, text
    assert re.search(r"\b9\.4/9\.4 MB\b", text), text  # bytes with the total
    assert re.search(r"\b100%", text) and re.search(r"\b0%", text), text  # percent
    assert re.search(r"\d(\.\d)? [kMG]?B/s", text), text  # rate
    assert re.search(r"\d:\d\d:\d\d", text), text  # time remaining


def summary(screen: bytes, done_verb: str, name: str) -> re.Match[str] | None:
    return re.search(
        rf"^{done_verb} {re.escape(name)}: (\d+ files, )?9\.4 MB in \d+\.\d s \(\d+(\.\d)? [kMG]?B/s\)$",
        _plain(screen),
        re.M,
    )


def test_get_to_stdout_shows_a_full_bar_on_stderr(srv: ServerProc, data: bytes) -> None:
    """The size comes from the answer's Content-Length: total and percent, not `8.4/? MB`."""
    rc, out, screen = on_tty(srv.url, "get", "t/big")
    assert rc == 0 and out == data  # the data, byte-exact, with the bar beside it
    assert_full_bar(screen, "get", "t/big")
    assert summary(screen, "got", "t/big"), _plain(screen)
    assert "/?" not in _plain(screen)


def test_get_to_a_file(srv: ServerProc, data: bytes, tmp_path: Path) -> None:
    rc, out, screen = on_tty(srv.url, "get", "t/big", str(tmp_path / "big"))
    assert rc == 0 and out == b"" and (tmp_path / "big").read_bytes() == data
    assert_full_bar(screen, "get", "t/big")
    assert summary(screen, "got", "t/big"), _plain(screen)


def test_get_to_stdout_on_the_terminal_shows_only_the_data(srv: ServerProc, data: bytes) -> None:
    """A bar drawn over data being shown on the same terminal would garble it."""
    rc, _, screen = on_tty(srv.url, "get", "t/small.txt", stdout_tty=True)
    assert rc == 0 and screen.replace(b"\r\n", b"\n") == b"hello\n"


def test_put_file_shows_a_full_bar(srv: ServerProc, data: bytes, tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(data)
    rc, out, screen = on_tty(srv.url, "put", str(tmp_path / "big"), "up/file")
    assert rc == 0 and out == f"master/up/file  {SIZE} bytes\n".encode()  # stdout as without a terminal
    assert_full_bar(screen, "put", "up/file")
    assert summary(screen, "put", "up/file"), _plain(screen)


def test_put_stdin_from_a_file_knows_its_size(srv: ServerProc, data: bytes, tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(data)
    with open(tmp_path / "big", "rb") as f:
        rc, out, screen = on_tty(srv.url, "put", "-", "up/redirected", stdin=f)
    assert rc == 0 and out == f"master/up/redirected  {SIZE} bytes\n".encode()
    assert_full_bar(screen, "put", "up/redirected")


def test_put_stdin_from_a_pipe_shows_bytes_and_rate(srv: ServerProc, data: bytes) -> None:
    """A pipe's size is unknown: bytes so far and the rate, no made-up total or percent."""
    r, w = os.pipe()

    def feed() -> None:
        with open(w, "wb") as f:
            f.write(data)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        rc, out, screen = on_tty(srv.url, "put", "-", "up/piped", stdin=r)
    finally:
        os.close(r)
        feeder.join()
    assert rc == 0 and out == f"master/up/piped  {SIZE} bytes\n".encode()
    text = _plain(screen)
    assert "put up/piped" in text and re.search(r"\b9\.4 MB\b", text) and re.search(r"[kMG]?B/s", text), text
    assert "%" not in text and "/?" not in text, text
    assert summary(screen, "put", "up/piped"), text
    with Client(srv.url) as c:
        assert c.get_file("up/piped", branch="master") == data


def test_put_directory_summary_counts_files(srv: ServerProc, data: bytes, tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "a").write_bytes(data[: SIZE // 2])
    (root / "sub" / "b").write_bytes(data[SIZE // 2 :])
    rc, out, screen = on_tty(srv.url, "put", str(root), "up/tree")
    assert rc == 0 and out == f"master/up/tree  2 files, {SIZE} bytes\n".encode()
    assert_full_bar(screen, "put", "up/tree")
    assert (m := summary(screen, "put", "up/tree")) and m[1] == "2 files, ", _plain(screen)


def test_no_terminal_no_progress(srv: ServerProc, data: bytes, tmp_path: Path) -> None:
    """Off a terminal stderr stays empty: no bar, no summary, no control sequence."""
    (tmp_path / "big").write_bytes(data)
    for args, stdin, stdout in (
        (["get", "t/big"], None, data),
        (["get", "t/big", str(tmp_path / "out")], None, b""),
        (["put", str(tmp_path / "big"), "quiet/file"], None, f"master/quiet/file  {SIZE} bytes\n".encode()),
        (["put", "-", "quiet/stdin"], data, f"master/quiet/stdin  {SIZE} bytes\n".encode()),
    ):
        res = subprocess.run(
            [sys.executable, "-m", "pfs.cli", "--url", srv.url, *args],
            input=stdin,
            capture_output=True,
            env=_env(),
            timeout=60,
        )
        assert (res.returncode, res.stderr) == (0, b""), args
        assert res.stdout == stdout, args
    assert (tmp_path / "out").read_bytes() == data
