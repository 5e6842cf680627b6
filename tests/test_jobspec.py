"""Job specs: what is accepted, and a clear 400 for everything else (no server needed)."""

from __future__ import annotations

import orjson
import pytest

from pfs.errors import BadRequest, InvalidName
from pfs.jobs.spec import JobSpec, check_dag, check_image, load_spec, parse_memory, parse_spec

GOOD = b'{"type": "map", "input": "data", "image": "img:1", "command": ["python3", "s.py"]}'


def spec(name: str, upstream: str | None = None, kind: str = "map") -> JobSpec:
    return JobSpec(name=name, type=kind, input=f"job/{upstream}" if upstream else "data", command=["x"], image="i")


def test_defaults_are_sane() -> None:
    s = parse_spec("wc", GOOD)
    assert (s.type, s.input, s.image, s.command) == ("map", "data", "img:1", ["python3", "s.py"])
    assert s.parallelism >= 1 and s.retries >= 1 and s.timeout > 0 and s.memory == 512 << 20
    assert s.upstream is None


def test_reduce_has_one_worker_and_reads_a_job() -> None:
    s = parse_spec("sum", b'{"type":"reduce","input":"job/wc","image":"i","command":["c"],"parallelism":8}')
    assert s.parallelism == 1 and s.upstream == "wc"


def test_spec_key_changes_with_what_shapes_output_only() -> None:
    a = parse_spec("a", GOOD)
    b = parse_spec("a", GOOD.replace(b'"map"', b'"map", "parallelism": 9, "timeout": 5'))
    c = parse_spec("a", GOOD.replace(b'"s.py"', b'"t.py"'))
    assert a.key("sha256:1") == b.key("sha256:1")
    assert a.key("sha256:1") != a.key("sha256:2")  # a rebuilt image
    assert a.key("sha256:1") != c.key("sha256:1")


def test_round_trip_through_storage() -> None:
    s = parse_spec("wc", GOOD.replace(b'"map"', b'"map", "env": {"A": "1"}, "memory": "64m"'))
    assert parse_spec("wc", s.dumps().encode()) == s


@pytest.mark.parametrize(
    "body, words",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"type": "sort", "input": "d", "image": "i", "command": ["c"]}', "type must be"),
        (b'{"input": "d", "image": "i", "command": ["c"]}', "type must be"),
        (b'{"type": "map", "input": "d", "command": ["c"]}', "image is required"),
        (b'{"type": "map", "input": "d", "image": "", "command": ["c"]}', "image must be"),
        (b'{"type": "map", "input": "d", "image": "i", "command": "python3 s.py"}', "command must be"),
        (b'{"type": "map", "input": "d", "image": "i", "command": []}', "command must be"),
        (b'{"type": "map", "input": "d", "image": "i"}', "command must be"),
        (b'{"type": "map", "image": "i", "command": ["c"]}', "input must be"),
        (b'{"type": "map", "input": "../etc", "image": "i", "command": ["c"]}', ".."),
        (b'{"type": "map", "input": "/abs", "image": "i", "command": ["c"]}', "absolute"),
        (b'{"type": "map", "input": "job/../x", "image": "i", "command": ["c"]}', "invalid job name"),
        (b'{"type": "map", "input": "d", "image": "i", "command": ["c"], "privileged": true}', "unknown field"),
        (b'{"type": "map", "input": "d", "image": "i", "command": ["c"], "volumes": ["/:/h"]}', "unknown field"),
        (b'{"type": "map", "input": "d", "image": "i", "command": ["c"], "parallelism": 0}', "parallelism"),
        (b'{"type": "map", "input": "d", "image": "i", "command": ["c"], "parallelism": 1.5}', "parallelism"),
        (b'{"type": "map", "input": "d", "image": "i", "command": ["c"], "retries": -1}', "retries"),
        (b'{"type": "map", "input": "d", "image": "i", "command": ["c"], "timeout": "1h"}', "timeout"),
        (b'{"type": "map", "input": "d", "image": "i", "command": ["c"], "memory": "lots"}', "memory"),
        (b'{"type": "map", "input": "d", "image": "i", "command": ["c"], "memory": "1k"}', "memory"),
        (b'{"type": "map", "input": "d", "image": "i", "command": ["c"], "env": {"PORT": "1"}}', "PORT"),
        (b'{"type": "map", "input": "d", "image": "i", "command": ["c"], "env": {"A": 1}}', "env"),
        (b'{"type": "map", "input": "d", "image": "i", "command": ["c"], "runtime": "k8s"}', "runtime"),
        (b'{"type": "map", "input": "d", "image": "i", "command": ["a\\u0000"]}', "command must be"),
    ],
)
def test_bad_specs_are_refused_with_a_reason(body: bytes, words: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse_spec("j", body)
    assert words in e.value.message


@pytest.mark.parametrize("name", ["", "..", "a/b", "-x", "a" * 101, "a\x00", "sp ace", "x..y"])
def test_bad_job_names(name: str) -> None:
    with pytest.raises(InvalidName):
        parse_spec(name, GOOD)


def test_huge_spec_refused() -> None:
    with pytest.raises(BadRequest, match="larger than"):
        parse_spec("j", b'{"type": "map", "x": "' + b"a" * (100 << 10) + b'"}')


def test_process_runtime_needs_no_image() -> None:
    s = parse_spec("j", b'{"type": "map", "input": "d", "runtime": "process", "command": ["c"]}')
    assert s.image is None and s.runtime == "process"


@pytest.mark.parametrize(
    "value, n", [(1 << 20 << 5, 32 << 20), ("64m", 64 << 20), ("1g", 1 << 30), ("512MiB", 512 << 20)]
)
def test_memory_sizes(value: object, n: int) -> None:
    assert parse_memory(value) == n


def test_dag_order_puts_inputs_first() -> None:
    order = [s.name for s in check_dag([spec("c", "b"), spec("a"), spec("b", "a"), spec("z")])]
    assert order.index("a") < order.index("b") < order.index("c")
    assert sorted(order) == ["a", "b", "c", "z"]
    # Jobs that could run at the same point go in name order: the order is stable.
    order = [s.name for s in check_dag([spec("c", "b"), spec("y", "z"), spec("a"), spec("b", "a"), spec("z")])]
    assert order == ["a", "z", "b", "y", "c"]


def test_dag_cycle_and_missing_upstream() -> None:
    with pytest.raises(BadRequest, match="cycle .*: a -> b -> a$"):
        check_dag([spec("a", "b"), spec("b", "a")])
    with pytest.raises(BadRequest, match="cycle .*: a -> a$"):
        check_dag([spec("a", "a")])
    with pytest.raises(BadRequest, match=r"each reads from the next\): a -> c -> b -> a$"):
        check_dag([spec("c", "b"), spec("a", "c"), spec("b", "a"), spec("z"), spec("y", "z")])
    with pytest.raises(BadRequest, match="does not exist"):
        check_dag([spec("a", "ghost")])


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "pfs-python-base:local",
        "library/busybox:1.36",
        "localhost:5000/team/img:v1.2-rc_3",
        "registry.example.com/a/b__c.d-e",
        "Registry.Example.com/img",  # a registry host may have capitals; a repository may not
        "[::1]:5000/img",
        "img@sha256:" + "a" * 64,
        "img:tag@sha256:" + "b" * 64,
        "sha256:" + "c" * 64,  # an image id
        "x" * 255,
        "img:" + "t" * 128,
    ],
)
def test_docker_image_references_accepted(image: str) -> None:
    assert check_image(image) == image
    assert parse_spec("j", GOOD.replace(b'"img:1"', orjson.dumps(image))).image == image


@pytest.mark.parametrize(
    "image, words",
    [
        ("Busybox", "lowercase"),
        ("$(id)", "not a valid Docker image reference"),
        ("`id`", "not a valid"),
        ("img;rm -rf /", "image must be"),
        ("img:", "not a valid"),
        ("img:-tag", "not a valid"),
        ("img:" + "t" * 129, "not a valid"),
        ("img@sha256:abc", "not a valid"),
        ("img@", "not a valid"),
        ("/img", "not a valid"),
        ("img/", "not a valid"),
        ("a//b", "not a valid"),
        ("a..b", "not a valid"),
        ("a___b", "not a valid"),
        ("-img", "not a valid"),
        ("img_", "not a valid"),
        ("host:port/img", "not a valid"),
        ("x" * 256, "longer than 255"),
        ("x" * 2000, "longer than 1024"),
        ("img\x00", "not a valid"),
        ("ímg", "not a valid"),
    ],
)
def test_bad_image_references_are_a_400(image: str, words: str) -> None:
    with pytest.raises(BadRequest) as e:
        parse_spec("j", GOOD.replace(b'"img:1"', orjson.dumps(image)))
    assert words in e.value.message


def test_a_stored_spec_is_read_back_even_if_newer_checks_refuse_it() -> None:
    """A spec stored before the image grammar was checked still lists and loads: its run
    fails instead (the runtime checks the image again), not every listing of jobs."""
    old = GOOD.replace(b'"img:1"', b'"Busybox"')
    with pytest.raises(BadRequest):
        parse_spec("j", old)
    assert load_spec("j", old.decode()).image == "Busybox"


def test_skip_failed() -> None:
    assert parse_spec("j", GOOD).skip_failed is False
    s = parse_spec("j", GOOD.replace(b'"map"', b'"map", "skip_failed": true'))
    assert s.skip_failed is True and parse_spec("j", s.dumps().encode()) == s
    assert s.key("i") == parse_spec("j", GOOD).key("i")  # it does not change what a file maps to
    with pytest.raises(BadRequest, match="true or false"):
        parse_spec("j", GOOD.replace(b'"map"', b'"map", "skip_failed": 1'))
    with pytest.raises(BadRequest, match="map jobs only"):
        parse_spec("j", b'{"type":"reduce","input":"job/a","image":"i","command":["c"],"skip_failed":true}')
