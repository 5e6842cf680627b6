"""The cluster registry's configuration and image names, without a registry: what pfs
pins, pulls and refuses is decided by these."""

from __future__ import annotations

import pytest

from pfs.errors import BadRequest
from pfs.jobs.registry import Registry, RegistryConfig, auth_from_env


def test_config_is_checked() -> None:
    cfg = RegistryConfig.parse("http://127.0.0.1:5000/", "u", "hunter2")
    assert cfg.url == "http://127.0.0.1:5000" and cfg.address == "127.0.0.1:5000"
    assert "hunter2" not in repr(cfg)  # the password never shows in a repr (logs, tracebacks)
    for bad in ("127.0.0.1:5000", "ftp://h:1", "http://h:1/v2", "http://h:1?x=1", "http://"):
        with pytest.raises(BadRequest):
            RegistryConfig.parse(bad, None, None)
    with pytest.raises(BadRequest, match="incomplete"):
        RegistryConfig.parse("https://reg.example:5000", "u", None)
    with pytest.raises(BadRequest, match="must not hold credentials") as err:
        RegistryConfig.parse("https://u:hunter2@reg.example:5000", None, None)
    assert "hunter2" not in str(err.value)


def test_names_in_the_registry_and_pinning() -> None:
    reg = Registry(RegistryConfig.parse("http://127.0.0.1:5000", None, None))
    try:
        assert reg.owns("127.0.0.1:5000/wc:v1") and reg.owns("127.0.0.1:5000/team/wc@sha256:" + "a" * 64)
        for other in ("wc:v1", "127.0.0.1:5001/wc", "127.0.0.1:50000/wc", "docker.io/127.0.0.1:5000/wc", None, ""):
            assert not reg.owns(other)
        ref = reg.split("127.0.0.1:5000/team/wc:v1")
        assert (ref.repository, ref.reference) == ("team/wc", "v1")
        assert reg.split("127.0.0.1:5000/wc").reference == "latest"
        digest = "sha256:" + "b" * 64
        assert reg.split(f"127.0.0.1:5000/wc:v1@{digest}").reference == digest
        assert reg.pinned("127.0.0.1:5000/team/wc:v1", digest) == f"127.0.0.1:5000/team/wc@{digest}"
        with pytest.raises(BadRequest):
            reg.split("elsewhere:5000/wc:v1")
        with pytest.raises(BadRequest):
            reg.split("127.0.0.1:5000/WC:v1")  # not a Docker reference
        assert reg.auth_config() is None
    finally:
        reg.close()


def test_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in ("PFS_REGISTRY_USER", "PFS_REGISTRY_PASSWORD", "PFS_REGISTRY_PASSWORD_FILE", "PFS_REGISTRY_URL"):
        monkeypatch.delenv(name, raising=False)
    assert RegistryConfig.from_env() is None and auth_from_env("r:1") is None
    monkeypatch.setenv("PFS_REGISTRY_USER", "dev")
    with pytest.raises(BadRequest, match="incomplete"):
        auth_from_env("r:1")
    path = tmp_path / "pw"  # type: ignore[operator]
    path.write_text("s3cret\n")
    monkeypatch.setenv("PFS_REGISTRY_PASSWORD_FILE", str(path))
    assert auth_from_env("r:1") == {"username": "dev", "password": "s3cret", "serveraddress": "r:1"}
    monkeypatch.setenv("PFS_REGISTRY_URL", "https://r:1")
    cfg = RegistryConfig.from_env()
    assert cfg is not None and cfg.user == "dev" and cfg.password == "s3cret"
    monkeypatch.setenv("PFS_REGISTRY_PASSWORD_FILE", str(path) + ".missing")
    with pytest.raises(BadRequest, match="cannot read"):
        RegistryConfig.from_env()


def test_a_registry_reached_by_one_name_and_named_by_another() -> None:
    """In a stack pfs asks http://registry:5000 while the engines on the hosts pull from
    127.0.0.1:5000: images carry the latter, and only those are the registry's."""
    cfg = RegistryConfig.parse("http://registry:5000", None, None, name="127.0.0.1:5000")
    reg = Registry(cfg)
    try:
        assert reg.address == "127.0.0.1:5000" and str(reg.http.base_url).rstrip("/") == "http://registry:5000"
        assert reg.owns("127.0.0.1:5000/wc:v1") and not reg.owns("registry:5000/wc:v1")
        digest = "sha256:" + "c" * 64
        assert reg.pinned("127.0.0.1:5000/wc:v1", digest) == f"127.0.0.1:5000/wc@{digest}"
    finally:
        reg.close()
    for bad in ("http://x:1", "Upper:1", "h:port", "h/path", "-h:1"):
        with pytest.raises(BadRequest, match="registry name"):
            RegistryConfig.parse("http://registry:5000", None, None, name=bad)
