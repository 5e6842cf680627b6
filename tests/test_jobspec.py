"""Job specs: what is accepted, and a clear 400 for everything else (no server needed)."""

from __future__ import annotations

import pytest

from pfs.errors import BadRequest, InvalidName
from pfs.jobs.spec import JobSpec, check_dag, parse_memory, parse_spec

GOOD = b'{"type": "map", "input": "data", "image": "img:1", "command": ["python3", "s.py"]}'


def spec(name: str, upstream: str | None = None, kind: str = "map") -> JobSpec:
    return JobSpec(name=name, type=kind, input=f"job/{upstream}" if upstream else "data", command=["x"], image="i")


def test_defaults_are_sane() -> None:
    s = parse_spec("wc", GOOD)
    assert (s.type, s.input, s.image, s.command) == ("map", "data", "img:1", ["python3", "s.py"])
    assert s.parallelism >= 1 and s.retries >= 1 and s.timeout > 0 and s.memory == 512 << 20
    assert s.upstream is None and not s.is_s3


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


def test_dag_cycle_and_missing_upstream() -> None:
    with pytest.raises(BadRequest, match="cycle"):
        check_dag([spec("a", "b"), spec("b", "a")])
    with pytest.raises(BadRequest, match="cycle"):
        check_dag([spec("a", "a")])
    with pytest.raises(BadRequest, match="does not exist"):
        check_dag([spec("a", "ghost")])
