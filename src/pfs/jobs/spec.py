"""Job specs: an allow-list schema, so a spec can never ask for mounts, privileges or
anything else the runtime does not offer, and every mistake is a clear 400."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any

import blake3
import orjson

from ..errors import BadRequest, InvalidName
from ..paths import clean_path

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
ENV_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MEMORY_RE = re.compile(r"(\d+)\s*([kmg]i?b?|b)?", re.IGNORECASE)
MAX_SPEC_BYTES = 64 << 10
# Docker's image reference grammar (github.com/distribution/reference, regexp.go), checked
# before any engine is asked, so a malformed name is the caller's 400, never the engine's error.
_ALNUM = r"[a-z0-9]+"
_PATH_COMPONENT = rf"{_ALNUM}(?:(?:[._]|__|-+){_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_NAME = rf"(?:{_HOST}(?::[0-9]+)?/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_RE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?")
MAX_IMAGE_NAME = 255  # Docker's limit on the name (registry and repository, without tag or digest)
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


def check_image(image: object) -> str:
    """A Docker image reference: [registry[:port]/]path[:tag][@digest], as Docker parses it."""
    if not isinstance(image, str) or not image:
        raise BadRequest("image must be a Docker image name such as pfs-python-base:local")
    if len(image) > 1024:  # name, tag and a long digest fit easily; spare the regex a 64 KB string
        raise BadRequest("image reference longer than 1024 characters")
    m = IMAGE_RE.fullmatch(image)
    if m is None:
        hint = ""
        if image.lower() != image and IMAGE_RE.fullmatch(image.lower()):
            hint = " (repository names are lowercase)"
        raise BadRequest(
            f"image {image[:300]!r} is not a valid Docker image reference{hint}: "
            "[registry[:port]/]name[:tag][@sha256:digest], where a name is lowercase letters and digits "
            "separated by '.', '_', '__', '-' or '/', and a tag is up to 128 letters, digits, '_', '.' or '-'"
        )
    if len(m.group(1)) > MAX_IMAGE_NAME:
        raise BadRequest(f"image name longer than {MAX_IMAGE_NAME} characters")
    return image


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
    skip_failed: bool = False  # a map job whose files fail still succeeds, without those files

    @property
    def upstream(self) -> str | None:
        """The job this one reads from, if any."""
        return self.input[4:] if self.input.startswith("job/") else None

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


def parse_spec(name: str, body: bytes, stored: bool = False) -> JobSpec:
    """Validate a spec as posted. Structural checks only; the DAG, the input's existence and
    what the server allows (runtime, S3 buckets) are checked by `check_dag` and `Jobs.put_spec`.

    `stored`: a spec read back from the metadata store. Checks added since it was stored
    (the image grammar) are left to run time, so one old spec cannot break every listing."""
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
    if image is not None and not stored:
        check_image(image)
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
    skip_failed = spec.get("skip_failed", False)
    if not isinstance(skip_failed, bool):
        raise BadRequest("skip_failed must be true or false")
    if skip_failed and kind != "map":
        raise BadRequest("skip_failed applies to map jobs only: a reduce has one input, all or nothing")
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
        skip_failed=skip_failed,
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
    return parse_spec(name, text.encode(), stored=True)


def check_dag(specs: Iterable[JobSpec]) -> list[JobSpec]:
    """The jobs in an order where each comes after the job it reads from (jobs that could
    run at the same point in name order); a missing upstream or a cycle is a 400 naming the jobs."""
    by_name = {s.name: s for s in specs}
    for s in by_name.values():
        if s.upstream is not None and s.upstream not in by_name:
            raise BadRequest(f"job {s.name!r} reads from job {s.upstream!r}, which does not exist")
    graph = TopologicalSorter({n: [s.upstream] if s.upstream else [] for n, s in sorted(by_name.items())})
    try:
        graph.prepare()
    except CycleError as exc:
        cycle = list(reversed(exc.args[1]))  # graphlib lists each job before the one reading from it
        raise BadRequest(f"jobs form a cycle (each reads from the next): {' -> '.join(cycle)}") from None
    order: list[JobSpec] = []
    while graph.is_active():
        ready = sorted(graph.get_ready())
        order.extend(by_name[n] for n in ready)
        graph.done(*ready)
    return order
