"""The README, run as a newcomer runs it: every ```sh and ```python block, in order, in one
bash session (variables, functions and `cd` carry from block to block as in a terminal),
in a fresh copy of the working tree with a fresh HOME, next to a `pfs serve` on
127.0.0.1:8080 that stands in for the README's first set-up line. A block that fails
fails the test with its text and its output; so does a README claim (such as a job's
output) that its output contradicts.

Stricter than a terminal, on purpose: each block runs under `set -e -o pipefail`, and
`curl` fails on an HTTP error (it is wrapped with `--fail-with-body`), so a block cannot
"run" while answering 4xx. Since `set -e` ignores a failure on the left of `&&` or `||`,
runnable blocks may not use them.

Everything the blocks start (servers, containers, the compose project, the swarm stack,
volumes) is removed afterwards, also when a block fails. Docker's cache keeps the deploy
blocks to seconds once their images were built (by tests/test_deploy.py or an earlier run).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```([\w-]*)[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
RUNNABLE = ("sh", "python")
# Ports the README uses: the quickstart's pfs, the compose stack (pfs, S3, PostgreSQL), the
# host's third node, the swarm's published port, the clone's second pfs, the image's container,
# and the compose registry.
PORTS = (5000, 8080, 8081, 8082, 8083, 8084, 8085, 8090, 8091, 8333, 9000, 15432)
STACK = "pfs"  # the README's stack name; its volumes and networks are prefixed with it
CONTAINER, VOLUME, JOB_IMAGE = "pfs", "pfs-data", "wc:local"  # what the README's blocks name
BUDGET = 900.0  # seconds for all blocks; a warm run takes a few minutes at most

# What blocks must print, proving the README's comments true: (a line of the block, output lines).
EXPECT = [
    ('curl "localhost:8080/diff?from=master&to=exp"', ["M\ta.txt"]),
    ("# the reduce's output: 9", ["9", "4", "12"]),
    ("# a commit is a ref too: Oslo,3", ["PRE master/", "Oslo,3"]),
    ("print(fs.ls(", ["['lake/master/weather/t.csv']"]),
    ("# without force: 409, it has commits", ["meow", "Deleted repository scratch.", "Deleted repository images."]),
    ('print(c.get_file("py/a.txt", commit=head))', ["b'hello'", "master is not at that commit"]),
    ("curl localhost:8082/file/a.txt", ["hello compose"]),
    ("curl localhost:8083/file/a.txt", ["hello compose", "from the host"]),
    ("pfs_swarm get hello.txt", ["hello swarm", "127.0.0.1:5000/wc:local"]),
]


@dataclass
class Block:
    lang: str
    code: str
    line: int  # where the block starts in README.md


def readme_blocks(text: str) -> list[Block]:
    return [Block(m[1], m[2], text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


# ---- the README's shape (fast) ----------------------------------------------------------


def test_readme_starts_with_the_two_setup_commands() -> None:
    """A newcomer's first lines: one command installs and runs pfs (embedded storage), one
    installs what tests need and runs them all."""
    text = README.read_text()
    first = readme_blocks(text)[0]
    assert text[: text.index("```")].strip() == "# pfs", "the set-up block must come first, right after the title"
    lines = [ln for ln in first.code.splitlines() if ln.strip()]
    assert first.lang == "sh" and len(lines) == 2, lines
    assert lines[0].split("#")[0].split() == [
        "python3", "-m", "venv", ".venv", "&&", ".venv/bin/pip", "install", ".", "&&", ".venv/bin/pfs", "serve",
    ]  # fmt: skip
    assert lines[1].split("#")[0].split() == ["bash", "scripts/test.sh"]


def test_readme_stands_alone() -> None:
    """The docs a user gets are the project's own: no pointer outside it, no placeholder to fill in."""
    text = README.read_text()
    assert "../" not in text and "shared/DESIGN" not in text
    for doc in re.findall(r"`(docs/[\w.-]+)`", text):
        assert (ROOT / doc).is_file(), doc
    assert "docs/design.md" in text and "docs/decisions.md" in text
    blocks = readme_blocks(text)
    assert {b.lang for b in blocks} <= set(RUNNABLE), "every block is one the README test runs"
    for b in blocks[1:]:
        for ln in b.code.splitlines():
            code = ln.split(" #")[0]
            assert "&&" not in code and "||" not in code, f"README.md:{b.line}: set -e cannot see through {ln!r}"
            assert not re.search(r"<\w[\w -]*>|some/dir|my-wc|\.\.\.", code), f"README.md:{b.line}: placeholder {ln!r}"


# ---- running it (slow) ------------------------------------------------------------------


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def docker(*args: str) -> str:
    """stdout of a docker command; failures are the caller's to notice (cleanup goes on regardless)."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False).stdout


def labelled(kind: str, label: str) -> list[str]:
    cmd = {"container": ["ps", "-aq"]}.get(kind, [kind, "ls", "-q"])
    return docker(*cmd, "--filter", f"label={label}").split()


def copy_tree(dest: Path) -> None:
    """What a user's checkout holds: tracked and untracked files that git does not ignore,
    plus the install of the first set-up line (the checkout's .venv, linked)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    for name in sorted({n for n in out.decode().split("\0") if n}):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".venv").symlink_to(ROOT / ".venv")


def driver(blocks: list[Block], bdir: Path, token: str) -> str:
    """One bash script that sources every block in order, marking where each begins."""
    lines = [
        "set -e -o pipefail",
        "curl() {  # an HTTP error fails the block (unless it asked for --fail itself); no progress meter",
        "    local a",
        '    for a in "$@"; do case $a in --fail|--fail-with-body|-[!-]*f*) command curl -sS "$@"; return;; esac; done',
        '    command curl -sS --fail-with-body "$@"',
        "}",
    ]
    for i, b in enumerate(blocks):
        path = bdir / f"{i:02d}.{'py' if b.lang == 'python' else 'sh'}"
        path.write_text(b.code)
        lines.append(f'echo "{token} {i} $(date +%s.%N)"')
        lines.append(f"python3 {path}" if b.lang == "python" else f". {path}")
    lines.append(f'echo "{token} end $(date +%s.%N)"')
    return "\n".join(lines) + "\n"


def split_output(out: str, token: str) -> tuple[dict[int, str], dict[int, float], bool]:
    """Each block's output and duration, and whether the script reached its end."""
    outputs: dict[int, str] = {}
    stamps: list[tuple[int, float]] = []  # (block, when it began); -1: the end
    for line in out.splitlines(keepends=True):
        if line.startswith(token + " "):
            _, which, stamp = line.split()
            stamps.append((-1 if which == "end" else int(which), float(stamp)))
            if which != "end":
                outputs[int(which)] = ""
        elif stamps and stamps[-1][0] >= 0:
            outputs[stamps[-1][0]] += line
    took = {i: (stamps[k + 1][1] if k + 1 < len(stamps) else time.time()) - t for k, (i, t) in enumerate(stamps)}
    took.pop(-1, None)
    return outputs, took, bool(stamps) and stamps[-1][0] == -1


def cleanup(project: str, had_image: bool) -> list[str]:
    """Remove what the README's blocks made; return what could not be removed."""
    left: list[str] = []
    docker("rm", "-f", "-v", CONTAINER)
    docker("volume", "rm", VOLUME)
    compose = f"com.docker.compose.project={project}"
    if ids := labelled("container", compose):
        docker("rm", "-f", "-v", *ids)
    for kind in ("volume", "network"):
        if ids := labelled(kind, compose):
            docker(kind, "rm", *ids)
    stack = f"com.docker.stack.namespace={STACK}"
    if STACK in docker("stack", "ls", "--format", "{{.Name}}").split():
        docker("stack", "rm", STACK)
    deadline = time.monotonic() + 90
    while labelled("container", stack) and time.monotonic() < deadline:
        time.sleep(1)
    while labelled("network", stack) and time.monotonic() < deadline:
        time.sleep(1)
    if ids := labelled("volume", stack):
        docker("volume", "rm", *ids)
    if not had_image:
        docker("rmi", JOB_IMAGE)
    for kind, label in (("container", compose), ("volume", compose), ("container", stack), ("volume", stack)):
        left += [f"{kind} {i}" for i in labelled(kind, label)]
    left += [f"secret {s}" for s in labelled("secret", stack)]
    if docker("ps", "-aq", "--filter", f"name=^{CONTAINER}$").split():
        left.append(f"container {CONTAINER}")
    return left


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group the test started (what its blocks left running in the
    background too), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.cluster  # the compose stack and the swarm stack: PostgreSQL, SeaweedFS, several nodes
@pytest.mark.timeout(BUDGET + 300)
def test_readme_runs_top_to_bottom(tmp_path: Path) -> None:
    busy = [p for p in PORTS if not port_free(p)]
    assert not busy, f"the README's ports are in use here: {busy}"
    assert not docker("ps", "-aq", "--filter", f"name=^{CONTAINER}$").split(), f"a container {CONTAINER} exists"
    assert STACK not in docker("stack", "ls", "--format", "{{.Name}}").split(), f"a stack {STACK} exists"
    assert not labelled("volume", f"com.docker.stack.namespace={STACK}"), f"volumes of a stack {STACK} exist"
    assert VOLUME not in docker("volume", "ls", "-q").split(), f"a volume {VOLUME} exists"
    had_image = bool(docker("images", "-q", JOB_IMAGE).strip())

    tree, home, bdir = tmp_path / "pfs", tmp_path / "home", tmp_path / "blocks"
    for d in (tree, home, bdir):
        d.mkdir()
    copy_tree(tree)
    blocks = readme_blocks((tree / "README.md").read_text())[1:]  # the first: the set-up lines
    token = "@@readme-" + secrets.token_hex(8)
    (tmp_path / "driver.sh").write_text(driver(blocks, bdir, token))
    project = "pfs-readme-" + secrets.token_hex(4)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PFS_", "AWS_", "COMPOSE_", "VIRTUAL_ENV"))}
    env.update(
        HOME=str(home),
        PATH=f"{ROOT / '.venv' / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        COMPOSE_PROJECT_NAME=project,  # the README's compose project, apart from any other on this machine
    )

    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(  # the first set-up line, "pfs serve running in another terminal"
        ["pfs", "serve"], cwd=tree, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    run: subprocess.Popen[bytes] | None = None
    out_path = tmp_path / "blocks.out"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get("http://127.0.0.1:8080/ready", timeout=2).status_code == 200:
                    break
            assert serve.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        with out_path.open("wb") as out:
            run = subprocess.Popen(  # its own process group: servers the blocks start in the background too
                ["bash", "--noprofile", "--norc", str(tmp_path / "driver.sh")],
                cwd=tree, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
            try:
                rc = run.wait(BUDGET)
            except subprocess.TimeoutExpired:
                rc = None
        text = out_path.read_text(errors="replace")
        outputs, took, ended = split_output(text, token)
        timing = ", ".join(f"{blocks[i].line}: {d:.0f}s" for i, d in sorted(took.items()))
        print(f"README blocks (line: seconds): {timing}")
        if rc != 0 or not ended:
            i = max(outputs) if outputs else 0
            why = "timed out" if rc is None else f"exit status {rc}"
            raise AssertionError(
                f"README.md block at line {blocks[i].line} failed ({why}):\n{blocks[i].code}\n"
                f"---- its output:\n{outputs.get(i, text)[-6000:]}\n---- pfs serve's log:\n"
                + (tmp_path / "serve.log").read_text()[-3000:]
            )
        for anchor, want in EXPECT:
            i = next(k for k, b in enumerate(blocks) if anchor in b.code)
            got = [ln.strip() for ln in outputs[i].splitlines()]
            missing = [w for w in want if w not in got]
            assert not missing, f"README.md block at line {blocks[i].line} did not print {missing}:\n{outputs[i]}"
    finally:
        if run is not None:
            stop(run)
        stop(serve)
        log.close()
        left = cleanup(project, had_image)
        shutil.rmtree(tree / "build", ignore_errors=True)  # the deploy scripts' wheels: ~200 MB
    assert not left, f"left behind: {left}"
