"""Many repositories on one server: created, listed and deleted over HTTP, the client and
the CLI; every route per repository under `/repo/<name>/`; the seed's unprefixed routes on
the default one; nothing of one repository readable through another; jobs, runs, sync and
fsck per repository; data directories made before repositories existed still open."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import AppServer, ServerProc, Storage
from test_cli import fails, ok, pfs

from pfs import Client, errors, sync
from pfs.config import Config

J = {"accept": "application/json"}
JOBSERVER = str(Path(__file__).parent / "jobimage" / "jobserver.py")


def names(h: httpx.Client) -> list[str]:
    r = h.get("/repo", headers=J)
    assert r.status_code == 200, r.text
    return [x["name"] for x in r.json()]


# ---- create, list, delete --------------------------------------------------------------
def test_create_list_delete_over_http(http: httpx.Client) -> None:
    assert names(http) == ["default"]
    r = http.post("/repo/data-1")
    assert r.status_code == 201 and r.text == "Created repository data-1.\n"
    r = http.put("/repo/logs", headers=J)
    assert r.status_code == 201 and r.json()["name"] == "logs" and r.json()["default"] is False
    assert names(http) == ["data-1", "default", "logs"]
    lines = http.get("/repo").text.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["data-1", "default", "logs"]
    assert lines[1].endswith("\tdefault") and not lines[0].endswith("default")
    assert http.get("/repo/logs", headers=J).json()["name"] == "logs"

    r = http.post("/repo/logs", headers=J)
    assert r.status_code == 409 and r.json()["error"] == "already_exists"
    assert http.delete("/repo/logs").status_code == 200
    assert names(http) == ["data-1", "default"]
    r = http.delete("/repo/logs", headers=J)
    assert r.status_code == 404 and r.json()["error"] == "repository_not_found"
    assert http.get("/repo/logs").status_code == 404


@pytest.mark.parametrize(
    "bad",
    ["ab", "A-bucket", "a_b", "-abc", "abc-", "a" * 64, "xn--abc", "abc-s3alias", "192.168.1.1", "a.b.c", "caf%C3%A9"],
)
def test_invalid_names_are_400_and_create_nothing(http: httpx.Client, bad: str) -> None:
    r = http.post(f"/repo/{bad}", headers=J)
    assert r.status_code == 400 and r.json()["error"] == "invalid_name", r.text
    assert names(http) == ["default"]
    assert http.get(f"/repo/{bad}/branch", headers=J).status_code == 400


def test_unknown_repository_is_404_on_every_route(http: httpx.Client) -> None:
    for method, path in [("GET", "/file/a"), ("POST", "/file/a"), ("POST", "/commit"), ("GET", "/branch"),
                         ("GET", "/job"), ("POST", "/sync/fetch")]:  # fmt: skip
        r = http.request(method, f"/repo/nope{path}", headers=J, content=b"x")
        assert r.status_code == 404 and r.json()["error"] == "repository_not_found", (method, path, r.text)
    assert names(http) == ["default"]


def test_delete_refuses_a_non_empty_repository_unless_forced(http: httpx.Client, storage: Storage) -> None:
    http.post("/repo/full")
    assert http.post("/repo/full/file/a.txt", content=b"x").status_code == 201
    r = http.delete("/repo/full", headers=J)
    assert r.status_code == 409 and r.json()["error"] == "repository_not_empty"
    assert "uncommitted writes" in r.json()["message"]
    assert http.post("/repo/full/commit").status_code == 201
    r = http.delete("/repo/full", headers=J)
    assert r.status_code == 409 and "commits" in r.json()["message"]
    assert http.get("/repo/full/file/a.txt").content == b"x"  # refused: nothing removed

    def stored() -> int:  # the repository's objects (id 1: the first made after the default)
        if storage.weed is None:
            return sum(1 for p in (storage.data_dir / "repos" / "1").rglob("*") if p.is_file())
        listed = storage.weed.client().list_objects_v2(Bucket=storage.bucket, Prefix="repo/repos/1/")
        return int(listed.get("KeyCount", 0))

    assert stored() > 0
    r = http.delete("/repo/full", params={"force": "1"})
    assert r.status_code == 200
    assert names(http) == ["default"]
    assert stored() == 0  # its objects went with it
    # the same name again is a new, empty repository: nothing of the old one shows
    http.post("/repo/full")
    assert http.get("/repo/full/file/a.txt").status_code == 404
    assert http.get("/repo/full/commit", headers=J).json() == []


def test_the_default_repository_cannot_be_deleted(http: httpx.Client) -> None:
    r = http.delete("/repo/default", params={"force": "1"}, headers=J)
    assert r.status_code == 409 and "default" in r.json()["message"]
    assert names(http) == ["default"]


def test_wrong_methods_and_unknown_parameters(http: httpx.Client) -> None:
    r = http.delete("/repo")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    assert http.patch("/repo/abc").status_code == 405
    r = http.post("/repo/abc", params={"color": "red"}, headers=J)
    assert r.status_code == 400 and "color" in r.json()["message"]
    assert names(http) == ["default"]
    assert http.head("/repo").status_code == 200 and names(http) == ["default"]  # HEAD writes nothing


# ---- routes per repository ----------------------------------------------------------------
def test_same_paths_in_two_repositories_stay_apart(http: httpx.Client) -> None:
    for repo in ("red", "blue"):
        assert http.post(f"/repo/{repo}").status_code == 201
    http.post("/repo/red/file/x.txt", content=b"red data")
    http.post("/repo/blue/file/x.txt", content=b"blue data")
    red = http.post("/repo/red/commit", params={"message": "r"}, headers=J).json()["id"]
    assert http.get("/repo/red/file/x.txt").content == b"red data"
    assert http.get("/repo/blue/file/x.txt").content == b"blue data"  # dirty, on its own master
    assert http.get("/file/x.txt").status_code == 404  # the default repository has neither
    blue = http.post("/repo/blue/commit", headers=J).json()["id"]
    assert blue != red

    # a commit of one repository names nothing in another
    r = http.get("/repo/blue/file/x.txt", params={"commit": red}, headers=J)
    assert r.status_code == 404 and r.json()["error"] == "commit_not_found"
    assert http.post("/repo/blue/branch", params={"branch": "stolen", "commit": red}).status_code == 404
    assert [b["name"] for b in http.get("/repo/blue/branch", headers=J).json()] == ["master"]
    assert [c["id"] for c in http.get("/repo/red/log", headers=J).json()] == [red]

    # nor does an object: sync serves only what the repository holds
    info = http.get("/repo/red/file/x.txt", headers={**J}, params={"commit": red})
    assert info.status_code == 200
    tree = http.get(f"/repo/red/commit/{red}", headers=J).json()["tree"]
    r = http.post("/repo/blue/sync/fetch", json={"objects": [["tree", tree]]})
    assert b"red data" not in r.content
    assert r.status_code != 200 or b"missing" in r.content


def test_unprefixed_routes_address_the_default_repository(http: httpx.Client) -> None:
    assert http.post("/file/seed.txt", content=b"seed").status_code == 201
    cid = http.post("/commit").text.strip()
    assert http.get("/repo/default/file/seed.txt", params={"commit": cid}).content == b"seed"
    http.post("/repo/default/file/two.txt", content=b"2")
    assert http.get("/file/two.txt").content == b"2"


def test_default_repository_is_named_by_configuration(storage: Storage) -> None:
    a = AppServer(storage.data_dir, env={"PFS_DEFAULT_REPO": "seed"}, storage=storage).start()
    try:
        with a.http() as h:
            assert names(h) == ["seed"]
            h.post("/file/a", content=b"A")
            assert h.get("/repo/seed/file/a").content == b"A"
            assert h.get("/repo/default/file/a").status_code == 404
            assert h.delete("/repo/seed", params={"force": "1"}).status_code == 409
    finally:
        a.stop()


# ---- the client -------------------------------------------------------------------------
def test_client_repositories(client: Client) -> None:
    info = client.create_repo("alpha")
    assert info.name == "alpha" and not info.default
    a = client.repo("alpha")
    a.put_file("f.txt", b"alpha")
    a.commit(message="one")
    assert a.get_file("f.txt") == b"alpha"
    with pytest.raises(errors.FileNotFound):
        client.get_file("f.txt")
    assert [r.name for r in client.repos()] == ["alpha", "default"]
    assert client.repo(None).url == client.root
    with pytest.raises(errors.RepositoryNotEmpty):
        client.delete_repo("alpha")
    with pytest.raises(errors.InvalidName):
        client.create_repo("Not_Valid")
    with pytest.raises(errors.RepositoryNotFound):
        client.repo("ghost").branches()
    client.delete_repo("alpha", force=True)
    assert [r.name for r in client.repos()] == ["default"]


# ---- jobs per repository ----------------------------------------------------------------
@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path / "data", env={"PFS_JOB_RUNTIME": "process"}).start()
    yield s
    s.stop()


def test_jobs_and_runs_are_per_repository(srv: ServerProc) -> None:
    spec = {
        "type": "map",
        "input": "in",
        "runtime": "process",
        "command": [sys.executable, JOBSERVER, "upper"],
        "start_timeout": 20,
    }
    with Client(srv.url) as c:
        c.create_repo("one")
        c.create_repo("two")
        one, two = c.repo("one"), c.repo("two")
        one.put_file("in/a.txt", b"from one")
        two.put_file("in/a.txt", b"from two")
        one.put_job("up", spec)
        assert [j.name for j in one.jobs()] == ["up"]
        assert two.jobs() == [] and c.jobs() == []
        cid = one.commit(run=True).id
        assert one.wait_run(cid, timeout=60).state == "succeeded"
        assert one.get_job_file("up", "a.txt", commit=cid) == b"FROM ONE"
        two_cid = two.commit().id
        with pytest.raises(errors.NotFound):
            two.get_job_file("up", "a.txt", commit=two_cid)
        with pytest.raises(errors.CommitNotFound):  # one's commit is nothing in two
            two.run_status(cid)
        with pytest.raises(errors.RunNotFound):
            two.run_status(two_cid)


# ---- sync and the CLI -------------------------------------------------------------------
def test_clone_push_pull_between_repositories(srv: ServerProc, tmp_path: Path) -> None:
    with Client(srv.url) as c:
        c.create_repo("src")
        c.create_repo("copy")
        s = c.repo("src")
        s.put_file("d/x", b"payload")
        first = s.commit(message="first").id
        sync.clone(f"{srv.url}/repo/src", f"{srv.url}/repo/copy")
        assert c.repo("copy").get_file("d/x", commit=first) == b"payload"
        assert c.repo("copy").log("master")[0].id == first
        with pytest.raises(errors.CommitNotFound):
            c.get_file("d/x", commit=first)  # the default repository got nothing
        s.put_file("d/y", b"more")
        second = s.commit().id
        sync.pull(f"{srv.url}/repo/src", f"{srv.url}/repo/copy")
        assert c.repo("copy").log("master")[0].id == second
        c.put_file("seed", b"s")
        c.commit()
        with pytest.raises(errors.BadRequest):
            sync.clone(srv.url, f"{srv.url}/elsewhere/x")


def test_cli_repositories(srv: ServerProc, tmp_path: Path) -> None:
    assert ok(pfs(srv.url, "repo", "create", "cli-data")) == "Created repository cli-data.\n"
    listed = ok(pfs(srv.url, "repo", "list")).splitlines()
    assert [ln.split("\t")[0] for ln in listed] == ["cli-data", "default"]
    f = tmp_path / "a.txt"
    f.write_bytes(b"via cli")
    ok(pfs(srv.url, "--repo", "cli-data", "put", str(f), "a.txt"))
    ok(pfs(srv.url, "-r", "cli-data", "commit", "-m", "c"))
    assert ok(pfs(srv.url, "-r", "cli-data", "get", "a.txt")) == "via cli"
    assert ok(pfs(srv.url, "get", "a.txt", env={"PFS_REPO": "cli-data"})) == "via cli"
    assert "not found" in fails(pfs(srv.url, "get", "a.txt"))
    assert "repository 'nope' not found" in fails(pfs(srv.url, "-r", "nope", "ls"))
    assert "not empty" in fails(pfs(srv.url, "repo", "delete", "cli-data"))
    assert "invalid repository name" in fails(pfs(srv.url, "repo", "create", "Bad_Name"))
    ok(pfs(srv.url, "repo", "delete", "--force", "cli-data"))
    assert ok(pfs(srv.url, "repo", "list")).startswith("default\t")


def test_offline_fsck_checks_every_repository(tmp_path: Path) -> None:
    cfg = Config(str(tmp_path / "data"))
    repos = cfg.open_repos()
    repos.create("second")
    for repo in (repos.default, repos.get("second")):
        w = repo.writer()
        w.write(repo.name.encode() * 1000)
        repo.stage_file("master", "f", w.finish())
        repo.commit_branch("master")
    second = repos.get("second")
    victim = second.get_commit(second.branch_head("master") or "").tree
    repos.close()
    env = {"PFS_DATA_DIR": str(tmp_path / "data")}
    res = pfs(None, "fsck", "--data-dir", str(tmp_path / "data"), env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.decode().startswith("ok: 2 commits")
    path = tmp_path / "data" / "repos" / "1" / "objects" / victim[:2] / victim[2:]
    assert path.exists()
    os.unlink(path)
    res = pfs(None, "fsck", "--data-dir", str(tmp_path / "data"))
    out = res.stdout.decode()
    assert res.returncode == 1 and out.startswith(f"second: tree / {victim}: ") and "is missing" in out
    res = pfs(None, "--repo", "default", "fsck", "--data-dir", str(tmp_path / "data"))
    assert res.returncode == 0, res.stdout


# ---- data made before repositories ---------------------------------------------------------
def test_a_data_dir_from_before_repositories_opens_as_the_default(tmp_path: Path) -> None:
    data = tmp_path / "data"
    repo = Config(str(data)).open()
    w = repo.writer()
    w.write(b"old data")
    repo.stage_file("master", "old.txt", w.finish())
    cid = repo.commit_branch("master").id
    repo.meta.db.close()
    # what pfs made before: no catalog
    db = sqlite3.connect(data / "meta.sqlite")
    db.execute("DROP TABLE repos")
    db.execute("DROP TABLE counters")
    db.commit()
    db.close()
    repos = Config(str(data)).open_repos()
    try:
        assert [r.name for r in repos.list()] == ["default"]
        assert repos.default.view(commit=cid).lookup("old.txt") is not None
        assert repos.create("next").name == "next"
        assert repos.get("next").branches() == [("master", None)]
    finally:
        repos.close()


def test_pfs_repo_goes_with_pfs_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """A url given in code (a sync remote, say) names its repository itself; PFS_REPO only
    completes PFS_URL, as the CLI's --repo completes --url."""
    monkeypatch.setenv("PFS_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("PFS_REPO", "data")
    assert Client().url == "http://127.0.0.1:1/repo/data"
    assert Client("http://127.0.0.1:2").url == "http://127.0.0.1:2"
    assert Client("http://127.0.0.1:2/repo/other").repo_name == "other"
    assert Client("http://127.0.0.1:2", repo="third").url == "http://127.0.0.1:2/repo/third"
    with pytest.raises(errors.InvalidName):
        Client("http://127.0.0.1:2", repo="Bad_Name")
