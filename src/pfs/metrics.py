"""What an operator graphs and alerts on: the process's Prometheus metrics
(prometheus-client), rendered by `GET /metrics` in the text exposition format.

One registry per process, filled by the layers that count (HTTP front ends, the ref
compare-and-swap, job runs and workers, the stores). Labels are bounded sets — a route's
template, a status, a runtime, an outcome — never a path, a repository or a user, so the
number of series does not grow with the data. Counters are per process: a cluster's
totals are the sum over its nodes, as Prometheus adds them.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # RSS, CPU seconds, open fds: process_*
PlatformCollector(registry=REGISTRY)  # the Python version: python_info

HTTP_REQUESTS = Counter(
    "pfs_http_requests",
    "HTTP requests answered, by front end (api, s3), method, route template (or S3 operation) and status.",
    ["front", "method", "route", "status"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "pfs_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by front end, method and route.",
    ["front", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
HTTP_IN_FLIGHT = Gauge(
    "pfs_http_requests_in_flight", "Requests being answered now, by front end.", ["front"], registry=REGISTRY
)
HTTP_RECEIVED = Counter(
    "pfs_http_received_bytes", "Request body bytes read, by front end.", ["front"], registry=REGISTRY
)
HTTP_SENT = Counter("pfs_http_sent_bytes", "Response body bytes sent, by front end.", ["front"], registry=REGISTRY)

COMMITS = Counter(
    "pfs_commits", "Commits made (a commit, a merge, a revert, a job's output is not one).", registry=REGISTRY
)
REF_UPDATES = Counter(
    "pfs_ref_updates",
    "Compare-and-swap updates of a ref, by result: done, or lost (another writer moved it first).",
    ["result"],
    registry=REGISTRY,
)
STORE_ERRORS = Counter(
    "pfs_store_errors",
    "Store operations that failed, by store (objects, meta) and kind (unavailable, corrupt, other).",
    ["store", "kind"],
    registry=REGISTRY,
)

JOB_RUNS = Counter(
    "pfs_job_runs", "Runs of the job DAG this node drove to an end, by state.", ["state"], registry=REGISTRY
)
JOBS = Counter(
    "pfs_jobs", "Jobs of runs this node executed, by state (succeeded, reused, failed).", ["state"], registry=REGISTRY
)
JOB_FILES = Counter(
    "pfs_job_files",
    "Input files of jobs, by outcome: done (sent to a worker), reused (a previous output), failed.",
    ["outcome"],
    registry=REGISTRY,
)
WORKER_STARTS = Counter("pfs_job_worker_starts", "Job workers started, by runtime.", ["runtime"], registry=REGISTRY)
WORKER_FAILURES = Counter(
    "pfs_job_worker_failures",
    "Job workers that could not start or died while working, by runtime.",
    ["runtime"],
    registry=REGISTRY,
)
JOBS_RUNNING = Gauge("pfs_jobs_running", "Jobs executing on this node now.", registry=REGISTRY)


def render(accept: str | None) -> tuple[bytes, str]:
    """The registry and its content type, in the format the scraper's Accept header asks
    for (OpenMetrics, or Prometheus's text format by default)."""
    encode, content_type = choose_encoder(accept or "")
    return encode(REGISTRY), content_type


GC_RUNS = Counter(
    "pfs_gc_runs", "Garbage collections ended, by result (done, dry_run, failed).", ["result"], registry=REGISTRY
)
GC_DELETED = Counter("pfs_gc_deleted_objects", "Objects garbage collection deleted.", registry=REGISTRY)
GC_FREED = Counter("pfs_gc_freed_bytes", "Stored bytes garbage collection gave back.", registry=REGISTRY)
GC_PHASE = Gauge(
    "pfs_gc_phase",
    "1 for the phase a garbage collection on this node is in (waiting, marking, listing, sweeping), else 0.",
    ["phase"],
    registry=REGISTRY,
)
GC_PROGRESS = Gauge(
    "pfs_gc_progress_objects",
    "Objects the running garbage collection has marked (marking) or deleted (sweeping) so far.",
    registry=REGISTRY,
)
