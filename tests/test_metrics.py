"""`GET /metrics`: the process's Prometheus metrics, read as a scraper reads them (parsed
with prometheus-client's own parser of the text exposition format).

Counters are per process and the in-process app shares this test process's, so each test
compares a scrape after its requests with one before them.
"""

from __future__ import annotations

from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config as BotoConfig
from conftest import AppServer, ServerProc, free_port
from prometheus_client.parser import text_string_to_metric_families
from test_jobs import pspec

from pfs import Client, errors

Sample = tuple[str, frozenset[tuple[str, str]]]


def scrape(h: httpx.Client, **kw: object) -> dict[Sample, float]:
    r = h.get("/metrics", **kw)  # type: ignore[arg-type]
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(m: dict[Sample, float], name: str, **labels: str) -> float:
    return m.get((name, frozenset(labels.items())), 0.0)


def grown(before: dict[Sample, float], after: dict[Sample, float], name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def test_requests_commits_and_bytes_are_counted_by_route_template(tmp_path: Path) -> None:
    a = AppServer(tmp_path / "data").start()
    try:
        with a.http() as h:
            before = scrape(h)
            body = b"x" * 5000
            assert h.post("/file/d/a.txt", content=body).status_code == 201
            assert h.post("/file/d/e/b.txt", content=b"y").status_code == 201
            assert h.post("/commit").status_code == 201
            assert h.get("/file/d/a.txt").content == body
            assert h.get("/repo/default/file/d/e/b.txt").content == b"y"
            assert h.get("/file/nope.txt").status_code == 404
            assert h.request("PATCH", "/commit").status_code == 405
            assert h.request("BREW", "/commit").status_code == 405
            assert h.get("/no/such/route").status_code == 404
            assert h.post("/branch", params={"branch": "master"}).status_code == 409  # exists: an answer
            after = scrape(h)
    finally:
        a.stop()

    def requests(method: str, route: str, status: str) -> float:
        return grown(before, after, "pfs_http_requests_total", front="api", method=method, route=route, status=status)

    assert requests("POST", "/file/{path}", "201") == 2  # two paths, one series: the route's template
    assert requests("POST", "/commit", "201") == 1
    assert requests("GET", "/file/{path}", "200") == 1 and requests("GET", "/file/{path}", "404") == 1
    assert requests("GET", "/repo/{repo}/file/{path}", "200") == 1
    assert requests("PATCH", "/commit", "405") == 1
    assert requests("other", "/commit", "405") == 1  # a method outside HTTP's is one label, not any string
    assert requests("GET", "unmatched", "404") == 1
    labels = "".join(v for (_, pairs) in after for _, v in pairs)
    assert "a.txt" not in labels and "nope" not in labels and "BREW" not in labels  # no path, no free text
    assert (
        grown(
            before, after, "pfs_http_request_duration_seconds_count", front="api", method="POST", route="/file/{path}"
        )
        == 2
    )
    assert grown(before, after, "pfs_commits_total") == 1
    assert grown(before, after, "pfs_ref_updates_total", result="done") == 1
    assert grown(before, after, "pfs_http_received_bytes_total", front="api") >= 5001
    assert grown(before, after, "pfs_http_sent_bytes_total", front="api") >= 5001
    assert value(after, "process_resident_memory_bytes") > 0  # the process collector is on
    errors_now = sum(v for (name, _), v in after.items() if name == "pfs_store_errors_total")
    assert errors_now == sum(v for (name, _), v in before.items() if name == "pfs_store_errors_total")


def test_a_lost_compare_and_swap_is_counted(tmp_path: Path) -> None:
    a = AppServer(tmp_path / "data").start()
    try:
        with a.client() as c, a.http() as h:
            c.put_file("a.txt", b"1")
            first = c.commit().id
            c.put_file("a.txt", b"2")
            second = c.commit().id
            before = scrape(h)
            # a writer that read the head before the last commit: its swap loses
            with pytest.raises(errors.BranchMoved):
                a.repo.meta.swap_ref("master", first, a.repo.get_commit(second))
            after = scrape(h)
    finally:
        a.stop()
    assert grown(before, after, "pfs_ref_updates_total", result="lost") == 1
    assert grown(before, after, "pfs_ref_updates_total", result="done") == 0


@pytest.mark.slow
def test_jobs_s3_and_access_in_a_served_process(tmp_path: Path) -> None:
    """A real `pfs serve` with users, the S3 gateway and the process runtime: /metrics needs
    a key, counts the gateway's requests by operation, and a job run's files and workers."""
    s3_port = free_port()
    key_file = tmp_path / "admin_key"
    key_file.write_text("PFSMETRICSTEST0000001:" + "s" * 40)
    srv = ServerProc(
        tmp_path / "data",
        env={"PFS_JOB_RUNTIME": "process", "PFS_ADMIN_KEY_FILE": str(key_file)},
        args=["--s3-addr", f"127.0.0.1:{s3_port}"],
    ).start()
    auth = ("PFSMETRICSTEST0000001", "s" * 40)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as h:
            assert h.get("/metrics").status_code == 401  # anonymous: no
            before = scrape(h, auth=auth)
            s3 = boto3.client(
                "s3",
                endpoint_url=f"http://127.0.0.1:{s3_port}",
                aws_access_key_id=auth[0],
                aws_secret_access_key=auth[1],
                region_name="us-east-1",
                config=BotoConfig(s3={"addressing_style": "path"}),
            )
            for i in range(3):
                s3.put_object(Bucket="default", Key=f"master/in/f{i}.txt", Body=f"hello {i}\n".encode())
            with Client(srv.url, key_id=auth[0], secret=auth[1]) as c:
                c.put_job("up", pspec("map", "in", "upper", parallelism=1))
                status = c.wait_run(c.commit(run=True).id, 120)
                assert status.state == "succeeded", status
            after = scrape(h, auth=auth)
    finally:
        srv.stop()
    assert (
        grown(before, after, "pfs_http_requests_total", front="s3", method="PUT", route="PutObject", status="200") == 3
    )
    assert grown(before, after, "pfs_job_runs_total", state="succeeded") == 1
    assert grown(before, after, "pfs_jobs_total", state="succeeded") == 1
    assert grown(before, after, "pfs_job_files_total", outcome="done") == 3
    assert grown(before, after, "pfs_job_worker_starts_total", runtime="process") >= 1
    assert value(after, "pfs_jobs_running") == 0
