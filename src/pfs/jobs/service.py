"""The jobs of each repository, as the HTTP API sees them: specs stored once they are checked
against what this server allows, runs recorded for the `Scheduler` (which drives them)
and read back, and job outputs opened as `Reader`s. Front ends parse and render only."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import orjson

from ..errors import Conflict, JobNotFound, JobNotReady, RunNotFound, Unavailable
from ..repository.reader import Reader
from ..repository.repo import Repository
from ..storage.meta import Failure, JobRun, JobStore, Run, RunStore
from .execution import REDUCE_OUTPUT
from .inputs import InputRules, input_of
from .registry import Registry
from .runtime import JobLimits, Runtimes, Sandbox
from .scheduler import JOBS_AT_ONCE, STALE, Scheduler
from .spec import JobSpec, check_dag, load_spec, parse_spec

log = logging.getLogger("pfs.jobs")

FAILURES_SHOWN = 20  # failed files listed in a run's status and job log (all are stored)
RUNS_SHOWN = 100  # runs listed, newest first


class JobEngine:
    """One per server process: the runtimes, the rules for inputs, and the scheduler that
    drives the runs of every repository. `default_runtime`: the operator's choice (None:
    docker); "process" alone lets jobs run as host processes. `s3_inputs`: the `bucket` or
    `bucket/prefix` entries that s3:// inputs may read; `own_bucket`: pfs's object bucket,
    never an input. `repos`: every repository, each time the scheduler looks for runs.
    `takeover`, `stale` and `jobs_at_once`: see `Scheduler`."""

    def __init__(
        self,
        repos: Callable[[], Iterable[Repository]],
        instance: str,
        state_dir: str,
        default_runtime: str | None = None,
        takeover: bool = True,
        stale: float = STALE,
        s3_inputs: Sequence[str] = (),
        own_bucket: str | None = None,
        limits: JobLimits | None = None,
        sandbox: Sandbox | None = None,
        registry: Registry | None = None,
        jobs_at_once: int = JOBS_AT_ONCE,
    ) -> None:
        self.runtimes = Runtimes(instance, state_dir, default_runtime, limits, sandbox, registry)
        self.rules = InputRules.parse(s3_inputs, own_bucket)
        self.scheduler = Scheduler(
            repos, self.runtimes, self.rules, takeover=takeover, stale=stale, jobs_at_once=jobs_at_once
        )

    def start(self) -> None:
        self.scheduler.start()

    def close(self) -> None:
        self.scheduler.close()

    def of(self, repo: Repository) -> Jobs:
        """The jobs of one repository."""
        return Jobs(repo, self)


class Jobs:
    """The jobs of one repository: its specs, its runs and their outputs."""

    def __init__(self, repo: Repository, engine: JobEngine) -> None:
        self.repo = repo
        self.specs_store: JobStore = repo.meta
        self.runs_store: RunStore = repo.meta
        self.runtimes = engine.runtimes
        self.rules = engine.rules
        self.scheduler = engine.scheduler

    # ---- specs -------------------------------------------------------------------
    def specs(self) -> list[JobSpec]:
        return [load_spec(name, text) for name, text, _ in self.specs_store.list_jobs()]

    def get_spec(self, name: str) -> JobSpec:
        text = self.specs_store.get_job(name)
        if text is None:
            raise JobNotFound(f"job {name!r} not found")
        return load_spec(name, text)

    def put_spec(self, name: str, body: bytes, branch: str = "master") -> tuple[JobSpec, bool]:
        """Store or replace job `name` from its JSON; (the spec, whether it is new). Every
        check comes first, so a refused spec changes nothing."""
        spec = parse_spec(name, body)
        check_dag([*(s for s in self.specs() if s.name != name), spec])
        self.check_spec(spec, branch)
        created = self.specs_store.get_job(name) is None
        self.specs_store.put_job(name, spec.dumps())
        return spec, created

    def check_spec(self, spec: JobSpec, branch: str = "master") -> None:
        """Everything a spec needs from this server before it is stored, each a clear 4xx
        (503 when the Docker Engine does not answer): its runtime, its input, its image."""
        runtime = self.runtimes.check(spec)
        input_of(spec, self.rules).check(self.repo, branch)
        registry = self.runtimes.registry
        if spec.image is not None and runtime != "process" and registry is not None and registry.owns(spec.image):
            try:
                registry.resolve(spec.image)  # a 400 if the registry says it has no such tag
            except Unavailable as exc:  # checked again when a run starts, and fails then if it must
                log.warning("job %s stored unchecked: %s", spec.name, exc.message)
            if runtime == "docker":
                self.runtimes.get(runtime).check_isolation()
        elif spec.image is not None and runtime == "docker":
            engine = self.runtimes.get(runtime)
            engine.image_id(spec.image)  # 400 if not built here
            engine.check_isolation()  # 503 if its workers could not be cut off from this host

    def delete_spec(self, name: str) -> None:
        """Past outputs stay readable; a job another one reads from cannot go (409)."""
        if self.specs_store.get_job(name) is None:
            raise JobNotFound(f"job {name!r} not found")
        users = [s.name for s in self.specs() if s.upstream == name]
        if users:
            raise Conflict(f"job {name!r} is the input of {', '.join(users)}; delete or change those first")
        self.specs_store.delete_job(name)

    def plan(self) -> list[JobSpec]:
        """The jobs in the order a run runs them; a 400 if they do not form a DAG."""
        return check_dag(self.specs())

    # ---- runs --------------------------------------------------------------------
    def submit(self, commit: str, branch: str) -> list[str]:
        """Record a run of every job on `commit`; returns the jobs in the order they run."""
        order = self.plan()
        self.runs_store.create_run(commit, branch, [(s.name, s.dumps()) for s in order])
        self.scheduler.wake()
        return [s.name for s in order]

    def runs(self) -> list[Run]:
        """The newest runs, newest first."""
        return self.runs_store.list_runs(RUNS_SHOWN)

    def prune_runs(self, older_than: float) -> int:
        """Drop the records of runs that ended more than `older_than` seconds ago: their
        outputs stop being readable (and become garbage). Kept: the runs on a branch's
        head, and the newest run each job would build on incrementally."""
        heads = {head for _, head in self.repo.meta.list_refs() if head is not None}
        return self.runs_store.drop_runs(time.time() - older_than, heads)

    def run(self, commit: str) -> Run:
        run = self.runs_store.get_run(commit)
        if run is None:
            raise RunNotFound(f"no run on commit {commit[:12]}; commit with ?run to run the jobs")
        return run

    def run_jobs(self, commit: str, log: bool = True) -> list[JobRun]:
        """The jobs of the run on `commit`, in the order they run (`log=False`: without
        their logs, for a page that shows only their states)."""
        return self.runs_store.job_runs(commit, log)

    def job_run(self, commit: str, name: str, log: bool = True) -> JobRun:
        jr = self.runs_store.get_job_run(commit, name, log)
        if jr is None:
            if self.specs_store.get_job(name) is None:
                raise JobNotFound(f"job {name!r} not found")
            raise RunNotFound(f"job {name!r} has not run on commit {commit[:12]}; commit with ?run to run the jobs")
        return jr

    def job_runs(self, name: str) -> list[JobRun]:
        """Job `name` in the newest runs that include it, newest first."""
        if self.specs_store.get_job(name) is None:
            raise JobNotFound(f"job {name!r} not found")
        found = (self.runs_store.get_job_run(r.commit, name) for r in self.runs_store.list_runs(RUNS_SHOWN, name))
        return [jr for jr in found if jr is not None]

    def job_run_page(self, name: str, limit: int, before: str | None = None) -> list[tuple[Run, JobRun]]:
        """Job `name` in `limit` runs, newest first, from the one before the run on commit
        `before` on (RunNotFound if there is none), without logs: one query a page, however
        many runs there are."""
        if self.specs_store.get_job(name) is None:
            raise JobNotFound(f"job {name!r} not found")
        cursor = None
        if before is not None:
            run = self.run(before)
            cursor = (run.created, run.commit)
        return self.runs_store.job_run_page(name, limit, cursor)

    def log_piece(self, jr: JobRun, start: int, size: int) -> tuple[str, int]:
        """At most `size` characters of a job run's log from character `start`, and the
        log's length: a page of a log without reading all of it."""
        found = self.runs_store.job_log(jr.commit, jr.job, start, size)
        return found if found is not None else ("", 0)

    def failures(self, jr: JobRun, limit: int = FAILURES_SHOWN, after: str | None = None) -> list[Failure]:
        """The first failed files of a job run (after path `after`), in path order."""
        return self.runs_store.job_failures(jr.commit, jr.job, limit, after) if jr.failed else []

    def all_failures(self, jr: JobRun) -> Iterator[Failure]:
        """Every failed file of a job run, a page at a time."""
        return self.runs_store.iter_job_failures(jr.commit, jr.job)

    # ---- outputs -----------------------------------------------------------------
    def output_reader(self, jr: JobRun) -> Reader:
        """The job's output on that run; 409 until it has one (running, failed, skipped)."""
        short = jr.commit[:12]
        if not jr.state.over:
            raise JobNotReady(f"job {jr.job!r} on commit {short} is {jr.state} ({jr.done}/{jr.total} files)")
        if not jr.state.has_output or jr.output_tree is None:
            raise JobNotReady(f"job {jr.job!r} on commit {short} {jr.state}: {jr.error or 'no output'}")
        return self.repo.tree_reader(jr.output_tree)

    @staticmethod
    def output_path(jr: JobRun, path: str) -> str:
        """The path to read in a job's output: a reduce's only file when none is given."""
        if path == "" and orjson.loads(jr.spec)["type"] == "reduce":
            return REDUCE_OUTPUT
        return path
