"""The deployment artefacts against the real Docker Engine: the pfs image (deploy/build-image.sh),
the compose file (PostgreSQL + SeaweedFS + two pfs nodes) and the swarm stack with the swarm
job runtime. Images are built by the deploy scripts themselves (cached by Docker), and every
test removes what it made: containers, services, networks, volumes and secrets.

Access control as deployed: the image refuses to serve 0.0.0.0 with no users (unless
PFS_INSECURE), compose and the stack get the server key and the admin key as files made by
deploy/compose-setup.sh / deploy/stack-secrets.sh, every request is made with the admin key
(anonymous ones get 401), and the secrets appear in no `docker inspect` and no log.

When Docker, Compose or the swarm cannot be made to work, these tests fail; never skip."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import socket
import ssl
import struct
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from conftest import free_port
from jobenv import ROOT, ensure_docker, job_image_fixture  # noqa: F401
from registry import build_variant, docker, forget_images
from relay import Relay
from test_swarm import ensure_swarm, service_ids

from pfs import Client
from pfs.jobs.registry import push_image

IMAGE = "pfs:local"


def sh(
    *cmd: str, timeout: float = 900, env: dict[str, str] | None = None, check: bool = True, input: str | None = None
) -> str:
    """Run a command; its stdout, or an AssertionError with its output."""
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        input=input,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-5000:]}")
    return proc.stdout


def output(*cmd: str, timeout: float = 120) -> str:
    """stdout and stderr of a command, together (`docker logs` splits a container's streams)."""
    proc = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}"
    return proc.stdout


def admin_key(secrets_dir: Path) -> tuple[str, str]:
    """KEY_ID, SECRET of the admin key file the deploy scripts made (PFS_ADMIN_KEY_FILE)."""
    key_id, _, secret = (secrets_dir / "admin_key").read_text().strip().partition(":")
    assert key_id and secret
    return key_id, secret


def signed_in(url: str, key: tuple[str, str]) -> Client:
    """A client of `url` that signs every request in with `key` (HTTP Basic)."""
    return Client(url, key_id=key[0], secret=key[1])


def assert_anonymous_refused(url: str, key: tuple[str, str]) -> None:
    """A node with users: reading or writing without a key is 401, with the admin key it works."""
    assert httpx.get(url + "/branch", timeout=10).status_code == 401
    assert httpx.post(url + "/file/anonymous.txt", content=b"x", timeout=10).status_code == 401
    assert httpx.get(url + "/branch", auth=key, timeout=10).status_code == 200
    assert httpx.get(url + "/branch", auth=(key[0], "x" * 40), timeout=10).status_code == 401
    who = httpx.get(url + "/whoami", auth=key, headers={"accept": "application/json"}, timeout=10).json()
    assert who["user"] == "admin" and who["admin"] is True and who["key"] == key[0]


def assert_hidden(text: str, secrets_: list[str], where: str) -> None:
    """None of the secrets in `text` (docker inspect, logs): only files' paths may be."""
    for value in secrets_:
        assert value.strip() and value.strip() not in text, f"a secret is in {where}"


def ids(kind: str, label: str) -> list[str]:
    """Docker objects of a kind (container, volume, network, service, secret) with a label."""
    cmd = {"container": ["docker", "ps", "-aq"], "service": ["docker", "service", "ls", "-q"]}.get(
        kind, ["docker", kind, "ls", "-q"]
    )
    return sh(*cmd, "--filter", f"label={label}").split()


def eventually(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def wait_registry(address: str, timeout: float = 120, ca: Path | None = None) -> None:
    """Until the registry answers (401 to an anonymous request: it is up and checks); over
    TLS, verified with `ca`, if given."""
    deadline = time.monotonic() + timeout
    url = f"https://{address}/v2/" if ca else f"http://{address}/v2/"
    while True:
        with contextlib.suppress(httpx.TransportError):
            verify = ssl.create_default_context(cafile=str(ca)) if ca else True
            if httpx.get(url, timeout=2, verify=verify).status_code == 401:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"the registry at {address} did not answer within {timeout:g} s")
        time.sleep(0.3)


def retrying(call: Any, timeout: float) -> Any:
    """call() until it returns, for up to `timeout` seconds (what a starting stack needs)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def wait_ping(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:  # up, and its stores answer
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer /ready within {timeout:g} s")
        time.sleep(0.3)


@pytest.fixture(scope="session")
def pfs_image() -> str:
    ensure_docker()
    sh("bash", str(ROOT / "deploy" / "build-image.sh"))
    return IMAGE


@pytest.fixture(scope="session")
def store_images(pfs_image: str) -> None:
    sh("bash", str(ROOT / "deploy" / "build-store-images.sh"))


# ---- the image --------------------------------------------------------------------------


def key_file(d: Path) -> tuple[Path, tuple[str, str]]:
    """An admin key file as deploy/compose-setup.sh leaves it: KEY_ID:SECRET, mode 0440,
    group 10001 (the image's `pfs` group; readable by all where this test may not chgrp)."""
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ("PFS" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30))
    path = d / "admin_key"
    path.write_text(f"{key[0]}:{key[1]}")
    try:
        os.chown(path, -1, 10001)
        path.chmod(0o440)
    except PermissionError:
        path.chmod(0o444)  # in a private directory (0700); the bind mount is the only way in
    return path, key


def test_image_serves_as_non_root(pfs_image: str, tmp_path: Path) -> None:
    name = "pfs-test-image-" + uuid.uuid4().hex[:8]
    path, key = key_file(tmp_path / "secrets")
    sh(
        "docker", "run", "-d", "--name", name, "--label", "pfs.test=deploy",
        "-p", "127.0.0.1::8080", "--memory", "512m", "--pids-limit", "256", "--cpus", "1",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--health-interval", "1s", "--health-start-period", "1s",  # the image's check, sooner
        "-v", f"{path}:/run/secrets/admin_key:ro", "-e", "PFS_ADMIN_KEY_FILE=/run/secrets/admin_key",
        pfs_image,
    )  # fmt: skip
    try:
        port = sh("docker", "port", name, "8080/tcp").split()[0].rsplit(":", 1)[1]
        url = f"http://127.0.0.1:{port}"
        wait_ping(url, 60)
        assert_anonymous_refused(url, key)
        with signed_in(url, key) as c:
            c.put_file("data/a.txt", b"hello from a container\n")
            cid = c.commit(message="first").id
            assert c.get_file("data/a.txt", commit=cid) == b"hello from a container\n"
            assert [e.path for e in c.ls("data", commit=cid)] == ["data/a.txt"]
        info = json.loads(sh("docker", "inspect", name))[0]
        assert info["Config"]["User"] == "pfs"
        assert info["Config"]["Entrypoint"] == ["pfs"] and info["Config"]["Cmd"] == ["serve", "--addr", "0.0.0.0:8080"]
        assert "8080/tcp" in info["Config"]["ExposedPorts"]
        status = sh("docker", "exec", name, "cat", "/proc/1/status")  # the server itself, not just `exec`
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        assert set(uids) == {"10001"}, status
        assert eventually(
            lambda: sh("docker", "inspect", "-f", "{{.State.Health.Status}}", name).strip() == "healthy", 30
        )
        # The server key it made for itself (embedded metadata): in the data dir, the pfs user's only.
        server_key = sh("docker", "exec", name, "cat", "/var/lib/pfs/server.key")
        assert sh("docker", "exec", name, "stat", "-c", "%a %U", "/var/lib/pfs/server.key").split() == ["600", "pfs"]
        logs = output("docker", "logs", name)
        assert key[0] in logs  # "created the first server admin ... with the access key <id>"
        assert_hidden(json.dumps(info) + logs, [key[1], server_key], f"docker inspect / logs of {name}")
    finally:
        sh("docker", "rm", "-f", "-v", name, check=False)
    assert ids("container", "pfs.test=deploy") == []


def test_image_refuses_to_serve_anonymously(pfs_image: str) -> None:
    """No users and no PFS_INSECURE: `pfs serve` on 0.0.0.0 exits at once, saying why. With
    PFS_INSECURE=1 it serves anyone, and says so in its log."""
    name = "pfs-test-refuse-" + uuid.uuid4().hex[:8]
    limits = ["--label", "pfs.test=deploy", "--memory", "512m", "--pids-limit", "256", "--cap-drop", "ALL"]
    proc = subprocess.run(
        ["docker", "run", "--rm", "--name", name, *limits, pfs_image],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "refusing to serve on 0.0.0.0:8080 with no users" in proc.stdout + proc.stderr, proc.stderr
    sh("docker", "run", "-d", "--name", name, *limits, "-p", "127.0.0.1::8080", "-e", "PFS_INSECURE=1", pfs_image)
    try:
        url = "http://127.0.0.1:" + sh("docker", "port", name, "8080/tcp").split()[0].rsplit(":", 1)[1]
        wait_ping(url, 60)
        assert httpx.post(url + "/file/a.txt", content=b"anyone\n", timeout=10).status_code < 300
        assert httpx.get(url + "/file/a.txt", timeout=10).content == b"anyone\n"
        assert "--insecure" in output("docker", "logs", name)
    finally:
        sh("docker", "rm", "-f", "-v", name, check=False)
    assert ids("container", "pfs.test=deploy") == []


# ---- compose ----------------------------------------------------------------------------


def test_compose_two_nodes_share_postgres_and_s3(
    pfs_image: str, store_images: None, job_image: str, tmp_path: Path
) -> None:
    project = "pfs-test-" + uuid.uuid4().hex[:8]
    keys = tmp_path / "secrets"
    # Compose (Debian's docker-compose, installed if none) and pfs's keys, readable by the image's group
    compose = sh("bash", str(ROOT / "deploy" / "compose-setup.sh"), str(keys)).split()
    for f in ("server_key", "admin_key", "registry_password"):
        st = (keys / f).stat()
        assert oct(st.st_mode & 0o777) == "0o440" and st.st_gid == 10001, f
    assert oct(keys.stat().st_mode & 0o777) == "0o700"
    assert compose == sh("bash", str(ROOT / "deploy" / "compose-setup.sh"), str(keys)).split()  # idempotent
    key = admin_key(keys)
    server_key = (keys / "server_key").read_text()
    registry_password = (keys / "registry_password").read_text()
    p1, p2, p3, p4 = free_port(), free_port(), free_port(), free_port()
    s3_access, s3_secret = f"pfs-{secrets.token_hex(4)}", secrets.token_hex(16)
    env_file = tmp_path / "env"
    env_file.write_text(
        f"PFS_DB_PASSWORD={secrets.token_hex(12)}\n"
        f"PFS_S3_ACCESS_KEY={s3_access}\n"
        f"PFS_S3_SECRET_KEY={s3_secret}\n"
        f"PFS1_PORT={p1}\nPFS2_PORT={p2}\nPFS_S3_PORT={p3}\nPFS_REGISTRY_PORT={p4}\n"
        f"PFS_SECRETS_DIR={keys}\n"
    )
    base = [*compose, "--env-file", str(env_file), "-p", project, "-f", str(ROOT / "deploy" / "compose.yaml")]
    label = f"com.docker.compose.project={project}"
    try:
        sh(*base, "up", "-d", timeout=300)
        a, b = f"http://127.0.0.1:{p1}", f"http://127.0.0.1:{p2}"
        wait_ping(a)
        wait_ping(b)
        # One node made `admin` with the key, encrypted under the server key in PostgreSQL; the
        # other checks it too: both have the same server key.
        assert_anonymous_refused(a, key)
        assert_anonymous_refused(b, key)
        with signed_in(a, key) as c1, signed_in(b, key) as c2:
            c1.put_file("shared/big.bin", os.urandom(3 << 20))  # chunks, so objects really go to S3
            c1.put_file("shared/a.txt", b"written through node 1\n")
            cid = c1.commit(message="via node 1").id
            assert c2.get_file("shared/a.txt", commit=cid) == b"written through node 1\n"
            assert c2.get_file("shared/big.bin") == c1.get_file("shared/big.bin", commit=cid)
            c2.put_file("shared/b.txt", b"and node 2\n")
            c2.commit(message="via node 2")
            assert c1.get_file("shared/b.txt", branch="master") == b"and node 2\n"
            # the registry of job images: a push from this host, listed by the nodes, stored on S3
            registry = f"127.0.0.1:{p4}"
            wait_registry(registry)
            repo = f"pfs-regtest/deploy-{uuid.uuid4().hex[:8]}"  # its own bytes: job_image stays unpushed
            local = build_variant(job_image, f"{repo}:v1")
            pushed = push_image(local, registry, {"username": "pfs", "password": registry_password})
            docker("rmi", "-f", local)
            forget_images(registry)
            assert pushed.image == f"{registry}/{repo}:v1"
            listing = c2.images()
            assert listing.registry == registry
            assert {(i.repository, t.tag, t.digest) for i in listing.images for t in i.tags} == {
                (f"{registry}/{repo}", "v1", pushed.digest)
            }
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{p3}",
            aws_access_key_id=s3_access,
            aws_secret_access_key=s3_secret,
            region_name="us-east-1",
        )
        stored = s3.list_objects_v2(Bucket="pfs", Prefix=f"registry/docker/registry/v2/repositories/{repo}/")
        assert stored.get("KeyCount", 0) > 0, "the registry did not store the image on the S3 store"
        containers = ids("container", label)
        assert len(containers) == 5
        infos = json.loads(sh("docker", "inspect", *containers))
        for info in infos:
            hc = info["HostConfig"]
            assert hc["Memory"] > 0 and hc["PidsLimit"] > 0 and hc["CapDrop"] == ["ALL"]
            assert not hc["Privileged"] and "docker.sock" not in json.dumps(info["Mounts"])
            for bindings in (hc.get("PortBindings") or {}).values():
                assert all(bnd["HostIp"] == "127.0.0.1" for bnd in bindings)
        nodes = [i for i in infos if i["Config"]["Labels"]["com.docker.compose.service"] in ("pfs1", "pfs2")]
        assert len(nodes) == 2
        for info in nodes:
            mounts = {m["Destination"]: m for m in info["Mounts"]}
            for f in ("server_key", "admin_key"):  # the same files for both nodes, read-only
                m = mounts[f"/run/secrets/{f}"]
                assert m["Type"] == "bind" and m["Source"] == str(keys / f) and m["RW"] is False
            env = info["Config"]["Env"]
            assert "PFS_SERVER_KEY_FILE=/run/secrets/server_key" in env
            assert "PFS_ADMIN_KEY_FILE=/run/secrets/admin_key" in env
            name = info["Name"].lstrip("/")
            logs = output("docker", "logs", name)
            assert "refusing" not in logs and "Traceback" not in logs, logs
            assert_hidden(
                json.dumps(info) + logs, [key[1], server_key, registry_password], f"docker inspect / logs of {name}"
            )
        reg = next(i for i in infos if i["Config"]["Labels"]["com.docker.compose.service"] == "registry")
        reg_logs = output("docker", "logs", reg["Name"].lstrip("/"))
        assert_hidden(json.dumps(reg) + reg_logs, [registry_password], "docker inspect / logs of the registry")
        assert reg["HostConfig"]["ReadonlyRootfs"] and reg["Config"]["User"] == "registry"
        # the admin was made once, by whichever node came first
        assert (
            sum(output("docker", "logs", i["Name"].lstrip("/")).count("created the first server admin") for i in nodes)
            == 1
        )
        assert len(ids("volume", label)) == 4  # what `down -v` must remove
    finally:
        sh(*base, "down", "-v", "--remove-orphans", "-t", "10", timeout=300, check=False)
    assert ids("container", label) == [] and ids("volume", label) == [] and ids("network", label) == []


# ---- the swarm stack --------------------------------------------------------------------


def tls_docker_api(host: str, certs: Path) -> Relay:
    """The local engine's API over mutual TLS on one address, as `dockerd --tlsverify -H tcp://...`
    serves it: how deploy/stack.swarm-runtime.yaml gives pfs containers a manager's API without
    the Docker socket. A test stand-in for reconfiguring the shared engine."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(str(certs / "server.pem"), str(certs / "server-key.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no API
    return Relay(host, lambda: asyncio.open_unix_connection("/var/run/docker.sock"), tls=ctx).start()


def bridge_address() -> str:
    """The host's address on Docker's default bridge (docker0): containers reach the host there."""
    net = json.loads(sh("docker", "network", "inspect", "bridge"))[0]
    for cfg in net["IPAM"]["Config"] or []:
        if cfg.get("Gateway"):
            return str(cfg["Gateway"])
    name = net["Options"].get("com.docker.network.bridge.name", "docker0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))  # SIOCGIFADDR
    return socket.inet_ntoa(packed[20:24])


def make_certs(d: Path, ip: str) -> None:
    """A CA, a server certificate for `ip` and a client certificate (ca.pem, cert.pem, key.pem)."""
    d.mkdir(parents=True, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh("openssl", "req", "-x509", *key, "-keyout", f"{d}/ca-key.pem", "-out", f"{d}/ca.pem", "-days", "1",
       "-subj", "/CN=pfs-test-ca")  # fmt: skip
    for name, keyfile, ext in (
        ("server", "server-key.pem", f"subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\n"),
        ("cert", "key.pem", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(ext)
        sh("openssl", "req", *key, "-keyout", f"{d}/{keyfile}", "-out", f"{d}/{name}.csr", "-subj", f"/CN={name}")
        sh("openssl", "x509", "-req", "-in", f"{d}/{name}.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca-key.pem",
           "-CAcreateserial", "-out", f"{d}/{name}.pem", "-days", "1", "-extfile", f"{d}/{name}.ext")  # fmt: skip
    for f in d.iterdir():
        f.chmod(0o600)


# Runs in a container on the stack's attachable `backend` network: the routing mesh (ingress)
# needs IPVS, which some kernels lack, so the replicas are reached by their task addresses.
# The admin key comes on stdin: an argument would be in the container's `docker inspect`.
CHECK = """
import json, socket, sys, time
import httpx
from pfs import Client
key = tuple(sys.stdin.read().strip().split(":", 1))
deadline = time.monotonic() + 180
while True:
    try:
        ips = sorted(socket.gethostbyname_ex("tasks.pfs")[2])
        if len(ips) == 2 and all(httpx.get(f"http://{ip}:8080/ready", timeout=2).status_code == 200 for ip in ips):
            break
    except OSError:
        pass
    except httpx.HTTPError:
        pass
    if time.monotonic() > deadline:
        sys.exit("the pfs replicas did not come up")
    time.sleep(0.5)
anonymous = [httpx.get(f"http://{ip}:8080/branch", timeout=10).status_code for ip in ips]
signed = [httpx.get(f"http://{ip}:8080/branch", auth=key, timeout=10).status_code for ip in ips]
a, b = (Client(f"http://{ip}:8080", key_id=key[0], secret=key[1]) for ip in ips)
for i in range(6):
    a.put_file(f"in/f{i}.txt", f"hello {i}\\n".encode())
cmd = ["python3", "/jobserver.py", "upper"]
a.put_job("up", {"type": "map", "input": "in", "image": sys.argv[1], "command": cmd, "parallelism": 2})
cid = a.commit(run=True).id
st = b.wait_run(cid, timeout=180)
out = {"state": st.state, "error": st.error, "log": b.job_log("up", cid), "anonymous": anonymous, "signed": signed}
out["pinned"] = st.job("up").pinned_image
out["registry"] = b.images().registry
if st.state == "succeeded":
    out["files"] = {f"f{i}.txt": b.get_job_file("up", f"f{i}.txt", commit=cid).decode() for i in range(6)}
    out["read_b"] = b.get_file("in/f3.txt", commit=cid).decode()
print(json.dumps(out))
"""


def test_stack_with_swarm_runtime(pfs_image: str, store_images: None, job_image: str, tmp_path: Path) -> None:
    """The stack with the swarm runtime runs a job whose image was pushed to the stack's
    registry (TLS, a password, on SeaweedFS) and is on no node until a run pins and pulls it."""
    ensure_swarm()
    stack = "pfs-test-" + uuid.uuid4().hex[:8]
    gateway = bridge_address()
    certs = tmp_path / "certs"
    make_certs(certs, gateway)
    secrets_dir = tmp_path / "secrets"
    sh("bash", str(ROOT / "deploy" / "stack-secrets.sh"), str(secrets_dir))
    key = admin_key(secrets_dir)
    registry_password = (secrets_dir / "registry_password").read_text()
    hidden = [key[1], (secrets_dir / "server_key").read_text(), registry_password]
    api = tls_docker_api(gateway, certs)
    # The registry's port is published in host mode, as shipped: on every interface of this
    # node (swarm cannot bind one address), behind TLS and a password, for this test only.
    registry = f"127.0.0.1:{free_port()}"
    env = {
        "PFS_SECRETS_DIR": str(secrets_dir),
        "PFS_DOCKER_CERTS": str(certs),
        "PFS_DOCKER_HOST": f"tcp://{gateway}:{api.port}",
        "PFS_REPLICAS": "2",
        "PFS_REGISTRY_PORT": registry.rsplit(":", 1)[1],
    }
    repo = f"pfs-regtest/stack-{uuid.uuid4().hex[:8]}"
    image = f"{registry}/{repo}:v1"
    pinned = ""  # what the workers run: the registry's digest of `image`, once pushed
    label = f"com.docker.stack.namespace={stack}"
    workers: dict[str, dict[str, Any]] = {}
    done = threading.Event()

    def watch() -> None:  # the job's workers, as the swarm saw them
        while not done.is_set():
            with contextlib.suppress(Exception):  # a service may go between listing and inspecting
                for sid in service_ids("pfs.image=" + pinned) if pinned else []:
                    workers.setdefault(sid, json.loads(sh("docker", "service", "inspect", sid))[0])
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    # The stack as shipped publishes pfs on the routing mesh, which swarm opens on every
    # interface; the test deploys it without that port (it reaches replicas on `backend`).
    import yaml

    spec = yaml.safe_load((ROOT / "deploy" / "stack.yaml").read_text())
    assert spec["services"]["pfs"].pop("ports")
    unpublished = tmp_path / "stack.yaml"
    unpublished.write_text(yaml.safe_dump(spec))
    try:
        sh(
            "docker", "stack", "deploy", "-c", str(unpublished),
            "-c", str(ROOT / "deploy" / "stack.swarm-runtime.yaml"), stack, env=env, timeout=120,
        )  # fmt: skip
        assert len(ids("service", label)) == 4
        # a job image into the registry (this host's instance: TLS, checked against the
        # stack's CA), once pfs has made the bucket; then off this engine
        wait_registry(registry, ca=secrets_dir / "registry_ca.pem")
        local = build_variant(job_image, f"{repo}:v1")
        auth = {"username": "pfs", "password": registry_password}
        pushed = retrying(lambda: push_image(local, registry, auth), 180)
        docker("rmi", "-f", local)
        forget_images(registry)
        assert pushed.image == image
        pinned = f"{registry}/{repo}@{pushed.digest}"
        watcher.start()
        out = sh(
            "docker", "run", "--rm", "-i", "--label", "pfs.test=deploy", "--network", f"{stack}_backend",
            "--memory", "256m", "--pids-limit", "64", "--cap-drop", "ALL", "--entrypoint", "python3",
            pfs_image, "-c", CHECK, image, timeout=400, input=f"{key[0]}:{key[1]}",
        )  # fmt: skip
        result = json.loads(out.strip().splitlines()[-1])
        assert result["anonymous"] == [401, 401] and result["signed"] == [200, 200], result
        assert result["state"] == "succeeded", result
        assert result["pinned"] == pinned and result["registry"] == registry, result
        assert result["files"] == {f"f{i}.txt": f"HELLO {i}\n" for i in range(6)}
        assert result["read_b"] == "hello 3\n"  # written through one replica, read through the other
        done.set()
        watcher.join(10)
        assert workers, "no worker service was seen"
        jobs_net = json.loads(sh("docker", "network", "inspect", f"{stack}_jobs"))[0]
        for svc in workers.values():
            spec = svc["Spec"]
            targets = [n["Target"] for n in spec["TaskTemplate"]["Networks"]]
            assert targets in ([jobs_net["Id"]], [f"{stack}_jobs"])  # the internal network only
            assert not spec.get("EndpointSpec", {}).get("Ports")  # nothing published
            assert spec["Labels"]["pfs.owner-task"]  # a replica's task: reaped if that replica dies
            assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == pinned  # every node pulls that digest
        assert json.loads(sh("docker", "image", "inspect", pinned))[0]["Id"]  # and this node did
        assert jobs_net["Internal"] is True
        assert eventually(lambda: service_ids("pfs.image=" + pinned) == [], 30)
        # The keys are Docker secrets, files of the pfs user's: in no inspect and no log.
        pfs = json.loads(sh("docker", "service", "inspect", f"{stack}_pfs"))[0]
        mounted = {s["File"]["Name"]: s for s in pfs["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]}
        for f in ("server_key", "admin_key", "registry_password"):
            assert mounted[f]["SecretName"] == f"{stack}_{f}"
            assert (mounted[f]["File"]["UID"], mounted[f]["File"]["Mode"]) == ("10001", 0o400)
        reg = json.loads(sh("docker", "service", "inspect", f"{stack}_registry"))[0]["Spec"]
        assert reg["Mode"] == {"Global": {}} and reg["EndpointSpec"]["Ports"][0]["PublishMode"] == "host"
        reg_secrets = {s["File"]["Name"]: s["File"] for s in reg["TaskTemplate"]["ContainerSpec"]["Secrets"]}
        assert {n: (f["UID"], f["Mode"]) for n, f in reg_secrets.items()} == {
            n: ("10003", 0o400)
            for n in ("s3_secret_key", "registry_password", "registry_tls_cert.pem", "registry_tls_key.pem")
        }
        env = pfs["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
        assert (
            "PFS_SERVER_KEY_FILE=/run/secrets/server_key" in env and "PFS_ADMIN_KEY_FILE=/run/secrets/admin_key" in env
        )
        services = sh("docker", "service", "inspect", *ids("service", label))
        containers = sh(
            "docker", "inspect", *ids("container", f"com.docker.swarm.service.name={stack}_pfs"),
            *ids("container", f"com.docker.swarm.service.name={stack}_registry"),
        )  # fmt: skip
        logs = output("docker", "service", "logs", "--raw", f"{stack}_pfs")
        assert "created the first server admin" in logs and "refusing" not in logs, logs
        logs += output("docker", "service", "logs", "--raw", f"{stack}_registry")
        assert_hidden(services + containers + logs, hidden, f"docker inspect / logs of {stack}")
    finally:
        done.set()
        sh("docker", "stack", "rm", stack, check=False)
        gone = eventually(lambda: not ids("service", label) and not ids("container", label), 90)
        eventually(lambda: not ids("network", label), 60)
        for vol in ids("volume", label):
            sh("docker", "volume", "rm", vol, check=False)
        api.stop()
        forget_images(registry)
        leaked = [s for s in service_ids("pfs.image=" + pinned) if s in set(service_ids("pfs.owner-task"))]
        if leaked:  # workers of a pfs killed before it could remove them
            sh("docker", "service", "rm", *leaked, check=False)
    assert gone and not leaked
    assert ids("network", label) == [] and ids("volume", label) == [] and ids("secret", label) == []
    assert ids("container", "pfs.test=deploy") == []
