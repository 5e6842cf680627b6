"""Job specs: an allow-list schema, so a spec can never ask for mounts, privileges or
anything else the runtime does not offer, and every mistake is a clear 400."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import blake3
import orjson

from ..errors import BadRequest, InvalidName
from ..paths import clean_path

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MEMORY_RE = re.compile(r"(\d+)\s*([kmg]i?b?|b)?", re.IGNORECASE)
MAX_SPEC_BYTES = 64 << 10
MAX_PARALLELISM = 64
MAX_INFLIGHT = 64
RESERVED_ENV = {"PORT"}

DEFAULTS: dict[str, Any] = {
    "parallelism": 2,  # workers (containers) for a map job; a reduce always has one
    "inflight": 4,  # requests in flight per worker
    "timeout": 600.0,  # seconds per request
    "start_timeout": 60.0,  # seconds for a worker's server to start answering
    "retries": 3,  # extra attempts per file (and per worker start)
    "memory": 512 << 20,
    "cpus": 1.0,
    "pids": 256,
}


def check_job_name(name: str) -> str:
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise InvalidName(f"invalid job name {name!r}: letters, digits, '.', '_' and '-', up to 100")
    return name


def parse_memory(value: Any) -> int:
    """Bytes from 536870912, "512m", "512MiB" or "1g" (Docker's spelling works too)."""
    if isinstance(value, bool):
        raise BadRequest("memory must be a size such as 512m")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and (m := MEMORY_RE.fullmatch(value.strip())):
        unit = (m.group(2) or "b")[0].lower()
        n = int(m.group(1)) * {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit]
    else:
        raise BadRequest(f"memory must be a size such as 512m, not {value!r}")
    if not (6 << 20) <= n <= (256 << 30):
        raise BadRequest("memory must be between 6m and 256g")
    return n


@dataclass(frozen=True)
class JobSpec:
    name: str
    type: str  # "map" | "reduce"
    input: str  # a directory in pfs, "job/<name>", or "s3://bucket/prefix"
    command: list[str]
    image: str | None = None  # required by the docker runtime
    runtime: str | None = None  # None: the server's default
    parallelism: int = DEFAULTS["parallelism"]
    inflight: int = DEFAULTS["inflight"]
    timeout: float = DEFAULTS["timeout"]
    start_timeout: float = DEFAULTS["start_timeout"]
    retries: int = DEFAULTS["retries"]
    memory: int = DEFAULTS["memory"]
    cpus: float = DEFAULTS["cpus"]
    pids: int = DEFAULTS["pids"]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def upstream(self) -> str | None:
        """The job this one reads from, if any."""
        return self.input[4:] if self.input.startswith("job/") else None

    @property
    def is_s3(self) -> bool:
        return self.input.startswith("s3://")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["name"]
        return {k: v for k, v in out.items() if v is not None}

    def dumps(self) -> str:
        return orjson.dumps(self.to_json(), option=orjson.OPT_SORT_KEYS).decode()

    def key(self, image_id: str) -> str:
        """What makes one output reusable for the same input: the spec as it shapes output
        (not its scheduling knobs) and the exact image."""
        shaping = {"type": self.type, "command": self.command, "env": self.env, "image": self.image, "id": image_id}
        return blake3.blake3(orjson.dumps(shaping, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _num(spec: Mapping[str, Any], key: str, kind: type, lo: float, hi: float) -> Any:
    value = spec.get(key, DEFAULTS[key])
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or not lo <= value <= hi:
        raise BadRequest(f"{key} must be a number between {lo:g} and {hi:g}")
    return kind(value)


def parse_spec(name: str, body: bytes) -> JobSpec:
    """Validate a spec as posted. Structural checks only; the DAG and the input's existence
    are checked against the other jobs by `check_dag` and the caller."""
    check_job_name(name)
    if len(body) > MAX_SPEC_BYTES:
        raise BadRequest(f"job spec larger than {MAX_SPEC_BYTES} bytes")
    try:
        spec = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"job spec is not valid JSON: {e}") from None
    if not isinstance(spec, dict):
        raise BadRequest("job spec must be a JSON object")
    allowed = {f for f in JobSpec.__dataclass_fields__ if f != "name"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise BadRequest(f"unknown field(s) in job spec: {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    kind = spec.get("type")
    if kind not in ("map", "reduce"):
        raise BadRequest(f"type must be 'map' or 'reduce', not {kind!r}")
    command = spec.get("command")
    if isinstance(command, str) or not (
        isinstance(command, list) and command and all(isinstance(c, str) and "\0" not in c for c in command)
    ):
        raise BadRequest('command must be a non-empty JSON array of strings, e.g. ["python3", "server.py"]')
    image = spec.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image)):
        raise BadRequest("image must be a Docker image name such as pfs-python-base:local")
    runtime = spec.get("runtime")
    if runtime not in (None, "docker", "process", "swarm"):
        raise BadRequest(f"runtime must be 'docker', 'process' or 'swarm', not {runtime!r}")
    if image is None and runtime != "process":
        raise BadRequest("image is required (or set runtime to 'process' to run the command as a local process)")
    env = spec.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and ENV_RE.fullmatch(k) and isinstance(v, str) and "\0" not in v for k, v in env.items()
    ):
        raise BadRequest("env must be an object of NAME: string")
    reserved = RESERVED_ENV & set(env)
    if reserved:
        raise BadRequest(f"env may not set {', '.join(sorted(reserved))}: pfs sets it")
    return JobSpec(
        name=name,
        type=kind,
        input=parse_input(spec.get("input")),
        command=list(command),
        image=image,
        runtime=runtime,
        parallelism=1 if kind == "reduce" else _num(spec, "parallelism", int, 1, MAX_PARALLELISM),
        inflight=_num(spec, "inflight", int, 1, MAX_INFLIGHT),
        timeout=_num(spec, "timeout", float, 0.1, 7 * 86400),
        start_timeout=_num(spec, "start_timeout", float, 0.1, 3600),
        retries=_num(spec, "retries", int, 0, 100),
        memory=parse_memory(spec.get("memory", DEFAULTS["memory"])),
        cpus=_num(spec, "cpus", float, 0.01, 256),
        pids=_num(spec, "pids", int, 16, 65536),
        env=dict(env),
    )


def parse_input(value: Any) -> str:
    if not isinstance(value, str) or value == "":
        raise BadRequest('input must be a directory in pfs, "job/<name>" or "s3://bucket/prefix"')
    if value.startswith("s3://"):
        from .s3input import parse_s3_url

        parse_s3_url(value)
        return value
    if value.startswith("job/"):
        check_job_name(value[4:])
        return value
    path = clean_path(value)
    if path == "":
        return ""
    return path


def load_spec(name: str, text: str) -> JobSpec:
    """A stored spec (validated when it was stored)."""
    return parse_spec(name, text.encode())


def check_dag(specs: Iterable[JobSpec]) -> list[JobSpec]:
    """The jobs in an order where each comes after the job it reads from; a missing
    upstream or a cycle is a 400 naming the jobs."""
    by_name = {s.name: s for s in specs}
    for s in by_name.values():
        if s.upstream is not None and s.upstream not in by_name:
            raise BadRequest(f"job {s.name!r} reads from job {s.upstream!r}, which does not exist")
    order: list[JobSpec] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: placed
    for start in sorted(by_name):
        path: list[str] = []
        name: str | None = start
        while name is not None and state.get(name) != 2:
            if state.get(name) == 1:
                cycle = path[path.index(name) :] + [name]
                raise BadRequest(f"jobs form a cycle (each reads from the next): {' -> '.join(cycle)}")
            state[name] = 1
            path.append(name)
            name = by_name[name].upstream
        for n in reversed(path):
            state[n] = 2
            order.append(by_name[n])
    return order
