"""pfs as an fsspec file system, driven as pandas and fsspec users drive it, against a
real `pfs serve`: `pfs://<repo>/<ref>/<path>`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pandas as pd
import pytest
from conftest import ServerProc

from pfs import Client
from pfs.fs import PfsFileSystem


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    s = ServerProc(tmp_path_factory.mktemp("fs") / "data").start()
    with Client(s.url) as c:
        c.create_repo("data")
    yield s
    s.stop()


@pytest.fixture
def fs(srv: ServerProc) -> PfsFileSystem:
    PfsFileSystem.clear_instance_cache()
    return fsspec.filesystem("pfs", url=srv.url)  # type: ignore[no-any-return]


def test_registered_through_the_entry_point(srv: ServerProc) -> None:
    assert fsspec.get_filesystem_class("pfs") is PfsFileSystem


def test_pandas_round_trip_and_history(srv: ServerProc, fs: PfsFileSystem, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PFS_URL", srv.url)  # storage options may be left out, as with the CLI
    df = pd.DataFrame({"id": range(1000), "name": [f"n{i}" for i in range(1000)]})
    df.to_parquet("pfs://data/master/tables/t.parquet")
    df.to_csv("pfs://data/master/tables/t.csv", index=False)
    first = fs.commit("data/master", "tables").id
    pd.testing.assert_frame_equal(pd.read_parquet("pfs://data/master/tables/t.parquet"), df)
    pd.DataFrame({"id": [1]}).to_parquet("pfs://data/master/tables/t.parquet")
    fs.commit("data/master", "shrink")
    assert len(pd.read_parquet("pfs://data/master/tables/t.parquet")) == 1
    old = pd.read_parquet(f"pfs://data/{first}/tables/t.parquet")  # any commit, read-only
    pd.testing.assert_frame_equal(old, df)
    assert pd.read_csv(f"pfs://data/{first}/tables/t.csv")["id"].sum() == sum(range(1000))
    with Client(srv.url, repo="data") as c:  # the same bytes through the native API
        assert c.get_file("tables/t.csv", commit=first) == df.to_csv(index=False).encode()


def test_listing_info_glob_and_ranges(fs: PfsFileSystem) -> None:
    data = os.urandom(3 << 20)
    with fs.open("data/master/d/big.bin", "wb", block_size=1 << 20) as f:
        for i in range(0, len(data), 100_000):
            f.write(data[i : i + 100_000])
    fs.pipe("data/master/d/sub/a.txt", b"alpha")
    fs.pipe("data/master/d/sub/b.csv", b"beta")
    assert "data" in fs.ls("", detail=False)
    assert "data/master" in fs.ls("data", detail=False)
    assert sorted(fs.ls("data/master/d", detail=False)) == ["data/master/d/big.bin", "data/master/d/sub"]
    info = fs.info("data/master/d/big.bin")
    assert info["type"] == "file" and info["size"] == len(data)
    assert fs.info("data/master/d/sub")["type"] == "directory"
    assert fs.isdir("data/master") and not fs.exists("data/master/nope") and not fs.exists("nope-repo/master")
    assert sorted(fs.glob("data/master/d/sub/*.txt")) == ["data/master/d/sub/a.txt"]
    assert sorted(fs.find("data/master/d")) == [
        "data/master/d/big.bin",
        "data/master/d/sub/a.txt",
        "data/master/d/sub/b.csv",
    ]
    with fs.open("data/master/d/big.bin", "rb", block_size=64 << 10) as f:
        f.seek((1 << 20) + 7)
        assert f.read(1000) == data[(1 << 20) + 7 : (1 << 20) + 1007]
        f.seek(-10, 2)
        assert f.read() == data[-10:]
    assert fs.cat_file("data/master/d/big.bin", start=5, end=25) == data[5:25]
    assert fs.cat_file("data/master/d/big.bin", start=-4) == data[-4:]
    assert fs.cat("data/master/d/sub/a.txt") == b"alpha"


def test_put_get_rm(fs: PfsFileSystem, tmp_path: Path) -> None:
    local = tmp_path / "up"
    local.mkdir()
    (local / "x.txt").write_bytes(b"x")
    (local / "y.txt").write_bytes(b"y")
    fs.put(str(local), "data/master/up", recursive=True)
    assert sorted(fs.ls("data/master/up", detail=False)) == ["data/master/up/x.txt", "data/master/up/y.txt"]
    fs.get("data/master/up/x.txt", str(tmp_path / "x.copy"))
    assert (tmp_path / "x.copy").read_bytes() == b"x"
    fs.rm("data/master/up", recursive=True)
    assert not fs.exists("data/master/up/x.txt")


def test_errors(fs: PfsFileSystem) -> None:
    fs.pipe("data/master/e.txt", b"e")
    cid = fs.commit("data/master", "e").id
    with pytest.raises(FileNotFoundError):
        fs.cat("data/master/missing")
    with pytest.raises(FileNotFoundError):
        fs.open("data/master/missing", "rb")
    with pytest.raises(PermissionError):
        fs.pipe(f"data/{cid}/e.txt", b"no")  # a commit is read-only
    with pytest.raises(PermissionError):
        fs.rm(f"data/{cid}/e.txt")
    with pytest.raises(OSError):
        fs.pipe("data/master/../x", b"no")
    assert fs.cat(f"data/{cid}/e.txt") == b"e"
