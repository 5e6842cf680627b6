"""One contract suite for every storage backend.

Each fixture below is parametrised over the backends that exist; adding PostgreSQL or S3
means adding a parameter here, and every test in this file then runs against it too.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg import PostgresServer, postgres_fixture  # noqa: F401
from seaweed import SeaweedServer, seaweed_fixture  # noqa: F401

from pfs.config import normalize_meta_url
from pfs.errors import AlreadyExists, BranchMoved, BranchNotFound, CorruptObject, MissingObject
from pfs.storage.meta import MetaStore, SqlMetaStore, sqlite_url
from pfs.storage.objects import LocalObjectStore, ObjectStore, hash_bytes
from pfs.storage.s3 import S3Config
from pfs.storage.s3objects import S3ObjectStore
from pfs.storage.trees import Commit, Entry


@pytest.fixture(params=["local", "s3", "s3-boto3"])
def objects(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ObjectStore]:
    """ "s3": explicit keys, so objects go through obstore; "s3-boto3": keys only in the
    environment (boto3's credential chain), so boto3 does everything."""
    if request.param == "local":
        yield LocalObjectStore(tmp_path / "objects-root")
        return
    weed: SeaweedServer = request.getfixturevalue("seaweed")
    cfg = S3Config(**weed.config())
    if request.param == "s3-boto3":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", str(cfg.access_key))
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", str(cfg.secret_key))
        cfg = S3Config(cfg.endpoint_url, cfg.region)
    store = S3ObjectStore(f"s3://{weed.new_bucket('objects')}/repo", cfg)
    assert (store.fast is None) == (request.param == "s3-boto3")
    yield store
    store.close()


@pytest.fixture(params=["sqlite", "postgres"])
def meta(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MetaStore]:
    if request.param == "sqlite":
        store = SqlMetaStore(sqlite_url(str(tmp_path)))
    else:
        pg: PostgresServer = request.getfixturevalue("postgres")
        store = SqlMetaStore(normalize_meta_url(pg.new_database()))
    yield store
    store.close()


def _corrupt(objects: ObjectStore, key: str) -> None:
    """Flip the last byte of a stored object, behind the store's back."""
    if isinstance(objects, LocalObjectStore):
        path = Path(objects.path(key))
        blob = bytearray(path.read_bytes())
        blob[-1] ^= 0xFF
        path.write_bytes(bytes(blob))
    else:
        assert isinstance(objects, S3ObjectStore)
        name = objects.name(key)
        blob = bytearray(objects.client.get_object(Bucket=objects.bucket, Key=name)["Body"].read())
        blob[-1] ^= 0xFF
        objects.client.put_object(Bucket=objects.bucket, Key=name, Body=bytes(blob))


def _commit(cid_seed: str, parents: tuple[str, ...] = ()) -> Commit:
    cid = hash_bytes(cid_seed.encode())
    return Commit(cid, hash_bytes(b"tree" + cid_seed.encode()), parents, "master", 1.0, cid_seed)


# ---- object store ------------------------------------------------------------------
def test_put_get_roundtrip_and_dedupe(objects: ObjectStore) -> None:
    data = os.urandom(3000) + b"a" * 100_000
    key = objects.put_bytes(data)
    assert key == hash_bytes(data)
    assert objects.has(key)
    assert objects.get(key) == data
    assert objects.put_bytes(data) == key  # writing again is a no-op
    assert list(objects.keys()).count(key) == 1


def test_missing_object(objects: ObjectStore) -> None:
    with pytest.raises(MissingObject):
        objects.get("0" * 64)
    assert not objects.has("0" * 64)


def test_malformed_key_is_refused(objects: ObjectStore) -> None:
    for bad in ["../../etc/passwd", "ab", "G" * 64, "0" * 63 + "/"]:
        with pytest.raises(CorruptObject):
            objects.get(bad)
        with pytest.raises(CorruptObject), objects.batch() as b:
            b.put(bad, b"x")


def test_batch_objects_durable_once_flushed(objects: ObjectStore) -> None:
    data = [os.urandom(100 + i) for i in range(20)]
    with objects.batch() as b:
        for d in data:
            b.put(hash_bytes(d), d)
    assert all(objects.get(hash_bytes(d)) == d for d in data)


def test_abort_never_removes_what_another_writer_stored(objects: ObjectStore) -> None:
    """Objects are shared by content (dedupe): an aborted batch may leave garbage, but must
    never take away an object that someone else stored and may already reference."""
    d = os.urandom(500)
    key = objects.put_bytes(d)
    with pytest.raises(RuntimeError), objects.batch() as b:
        b.put(key, d)
        raise RuntimeError("upload failed")
    assert objects.get(key) == d


def test_local_batch_is_invisible_until_flush_and_abort_leaves_nothing(tmp_path: Path) -> None:
    """The local store stages objects as temporary files: stronger than the contract."""
    objects = LocalObjectStore(tmp_path / "objects-root")
    data = [os.urandom(100 + i) for i in range(20)]
    with objects.batch() as b:
        for d in data:
            b.put(hash_bytes(d), d)
        assert not any(objects.has(hash_bytes(d)) for d in data)
    assert all(objects.get(hash_bytes(d)) == d for d in data)
    d = os.urandom(500)
    with pytest.raises(RuntimeError), objects.batch() as b:
        b.put(hash_bytes(d), d)
        raise RuntimeError("upload failed")
    assert not objects.has(hash_bytes(d))
    assert os.listdir(tmp_path / "objects-root" / "tmp") == []


def test_delete(objects: ObjectStore) -> None:
    key = objects.put_bytes(b"bye")
    objects.delete(key)
    assert not objects.has(key)


def test_corruption_detected_on_read(objects: ObjectStore) -> None:
    data = b"important bytes" * 100
    key = objects.put_bytes(data, compress=False)
    _corrupt(objects, key)
    with pytest.raises(CorruptObject):
        objects.get(key)


def test_keys_lists_every_object_once(objects: ObjectStore) -> None:
    keys = {objects.put_bytes(os.urandom(50 + i)) for i in range(30)}
    listed = list(objects.keys())
    assert set(listed) == keys and len(listed) == len(keys)


def test_big_batch_with_bounded_inflight(objects: ObjectStore) -> None:
    blobs = [os.urandom(1 << 20) for _ in range(40)]  # more than any in-flight bound
    with objects.batch() as b:
        for d in blobs:
            b.put(hash_bytes(d), d, compress=False)
    assert all(objects.get(hash_bytes(d)) == d for d in blobs[::7])


# ---- metadata store ----------------------------------------------------------------
def test_master_exists_empty(meta: MetaStore) -> None:
    assert meta.get_ref("master") is None
    assert meta.list_refs() == [("master", None)]


def test_refs_create_get_delete(meta: MetaStore) -> None:
    meta.create_ref("dev", None)
    with pytest.raises(AlreadyExists):
        meta.create_ref("dev", None)
    assert ("dev", None) in meta.list_refs()
    meta.delete_ref("dev")
    with pytest.raises(BranchNotFound):
        meta.get_ref("dev")
    with pytest.raises(BranchNotFound):
        meta.delete_ref("dev")


def test_swap_ref_is_compare_and_swap(meta: MetaStore) -> None:
    c1, c2, c3 = _commit("1"), _commit("2"), _commit("3")
    meta.swap_ref("master", None, c1)
    with pytest.raises(BranchMoved):
        meta.swap_ref("master", None, c2)  # stale expectation
    assert meta.get_ref("master") == c1.id
    meta.swap_ref("master", c1.id, c3)
    assert meta.get_ref("master") == c3.id
    assert meta.get_commit(c3.id) == c3
    assert meta.get_commit(c2.id) is None  # the loser was not indexed
    with pytest.raises(BranchNotFound):
        meta.swap_ref("nope", None, c2)


def test_swap_ref_race_has_one_winner(meta: MetaStore) -> None:
    base = _commit("base")
    meta.swap_ref("master", None, base)
    wins: list[str] = []
    losses: list[str] = []

    def contender(i: int) -> None:
        c = _commit(f"c{i}", (base.id,))
        try:
            meta.swap_ref("master", base.id, c)
            wins.append(c.id)
        except BranchMoved:
            losses.append(c.id)

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 15
    assert meta.get_ref("master") == wins[0]


def test_staging_upsert_and_consume_only_what_was_committed(meta: MetaStore) -> None:
    e1 = Entry("file", "a" * 64, 1, data=b"1")
    e2 = Entry("file", "b" * 64, 1, data=b"2")
    meta.stage("master", "d/x", e1)
    meta.stage("master", "d/y", None)
    snapshot = meta.staged("master")
    assert [(s.path, s.entry) for s in snapshot] == [("d/x", e1), ("d/y", None)]
    meta.stage("master", "d/x", e2)  # a newer write lands after the snapshot
    meta.swap_ref("master", None, _commit("s"), max(s.seq for s in snapshot))
    left = meta.staged("master")
    assert [(s.path, s.entry) for s in left] == [("d/x", e2)]  # the newer write survived


def test_staging_queries(meta: MetaStore) -> None:
    e = Entry("file", "c" * 64, 1, data=b"c")
    meta.stage_many("master", [("a/b/c", e), ("a/d", e), ("a_b", e), ("a%/x", None)])
    assert [s.path for s in meta.staged_children("master", "a")] == ["a/d"]
    assert [s.path for s in meta.staged_under("master", "a")] == ["a/b/c", "a/d"]  # not a_b: LIKE escaped
    assert [s.path for s in meta.staged_under("master", "a%")] == ["a%/x"]
    assert meta.staged_under("master", "a%", puts=True) == []
    assert meta.staged_get("master", "a/d") is not None and meta.staged_get("master", "zz") is None
    assert meta.has_staged("master")
    assert meta.discard_staged("master") == 4
    assert not meta.has_staged("master")


def test_stage_on_unknown_branch(meta: MetaStore) -> None:
    with pytest.raises(BranchNotFound):
        meta.stage("ghost", "x", None)


def test_commit_index_prefix_and_paging(meta: MetaStore) -> None:
    made = []
    head = None
    for i in range(1203):  # more than one page of the listing
        c = Commit(hash_bytes(str(i).encode()), "0" * 64, (head,) if head else (), "master", float(i), str(i))
        meta.index_commit(c)
        made.append(c.id)
        head = c.id
    listed = [c.id for c in meta.list_commits()]
    assert listed == made  # oldest first, every one exactly once
    assert meta.find_commits(made[5][:12]) == [made[5]]
    assert meta.get_commit(made[7]) is not None


def test_s3_objects_fall_back_to_boto3_when_obstore_cannot_start(
    seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bare container image has no CA certificates, and obstore's HTTP client will not
    start without them (even for plain HTTP): the store then does everything with boto3,
    saying why once, instead of failing to open."""
    monkeypatch.setenv("SSL_CERT_FILE", "/nonexistent/ca.pem")
    monkeypatch.setenv("SSL_CERT_DIR", "/nonexistent")
    with caplog.at_level("WARNING", logger="pfs.s3"):
        store = S3ObjectStore(f"s3://{seaweed.new_bucket('bare')}/repo", S3Config(**seaweed.config()))
    assert store.fast is None
    assert "obstore cannot start" in caplog.text
    data = b"still stored" * 50
    with store.batch() as batch:
        batch.put(hash_bytes(data), data)
    assert store.get(hash_bytes(data)) == data
