"""The job HTTP API over a real socket, with a real worker and a private Redis."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.helpers.env import wait_until
from tests.helpers.processes import API_TOKEN, ApiServer, Worker
from worker_app.jobs import records

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture(scope="module")
def http(api: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, headers=AUTH, timeout=30) as client:
        yield client


def status_of(http: httpx.Client, job_id: str) -> str:
    return str(http.get(f"/api/jobs/{job_id}").json()["status"])


def wait_status(http: httpx.Client, job_id: str, want: str, timeout: float = 30) -> dict[str, Any]:
    seen: list[str] = []

    def reached() -> bool:
        seen.append(status_of(http, job_id))
        return seen[-1] == want

    wait_until(reached, timeout, f"job {job_id} to be {want} (seen {sorted(set(seen))})")
    return dict(http.get(f"/api/jobs/{job_id}").json())


def test_every_api_route_needs_the_token_and_health_does_not(api: ApiServer) -> None:
    schema = httpx.get(f"{api.url}/openapi.json").json()
    for path, methods in schema["paths"].items():
        url = api.url + path.replace("{job_id}", "x").replace("{task_id}", "x")
        for method in methods:
            answer = httpx.request(method.upper(), url, json={}, timeout=10)
            if path.startswith("/api") or path == "/metrics":
                assert answer.status_code == 401, (method, path)
                assert answer.json() == {"error": "missing or wrong bearer token"}
            else:
                assert answer.status_code == 200, (method, path)
    wrong = httpx.get(f"{api.url}/api/jobs", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_a_job_goes_pending_active_succeeded(worker: Worker, http: httpx.Client) -> None:
    payload = {"user_id": 3, "date": "2026-05-01", "topics": ["rates"], "work_seconds": 1.0}
    created = http.post("/api/jobs", json={"type": "briefing.generate", "payload": payload})
    assert created.status_code == 202
    job = created.json()
    assert (job["queue"], job["type"]) == ("default", "briefing.generate")
    # The answer is the record right after the enqueue: an idle worker may have taken it already.
    assert job["status"] in ("pending", "active")

    active = wait_status(http, job["id"], "active")
    assert active["started_at"] and active["attempts"] == 1
    done = wait_status(http, job["id"], "succeeded")
    assert done["result"] == {"user_id": 3, "date": "2026-05-01", "sections": ["rates"]}
    assert done["finished_at"] >= done["started_at"] >= done["created_at"]


def test_a_failing_job_retries_fails_into_the_dlq_and_retry_runs_it_again(
    worker: Worker, http: httpx.Client, redis_client: redis.Redis
) -> None:
    key = f"switch:{uuid.uuid4()}"
    redis_client.set(f"broken:{key}", 1)
    job = http.post("/api/jobs", json={"type": "e2e.switch", "payload": {"key": key}}).json()

    retrying = wait_status(http, job["id"], "retrying")
    assert retrying["last_error"] == "RuntimeError: downstream is broken"
    assert retrying["run_at"] >= retrying["created_at"]
    failed = wait_status(http, job["id"], "failed")
    assert failed["attempts"] == 4
    entry = http.get(f"/api/dlq/{job['id']}")
    assert entry.status_code == 200 and entry.json()["reason"] == "retries_exhausted"

    redis_client.delete(f"broken:{key}")
    again = http.post(f"/api/jobs/{job['id']}/retry")
    assert again.status_code == 202
    done = wait_status(http, job["id"], "succeeded")
    assert done["attempts"] == 1 and done["result"] == "fixed"
    assert http.get(f"/api/dlq/{job['id']}").status_code == 404
    assert http.post(f"/api/jobs/{job['id']}/retry").status_code == 409


def test_cancelling_an_active_job_stops_it(worker: Worker, http: httpx.Client) -> None:
    for cooperative in (True, False):
        payload = {"key": f"sleepy:{uuid.uuid4()}", "seconds": 60, "cooperative": cooperative}
        job = http.post("/api/jobs", json={"type": "e2e.sleepy", "payload": payload}).json()
        wait_status(http, job["id"], "active")
        answer = http.delete(f"/api/jobs/{job['id']}")
        assert answer.status_code == 202 and answer.json()["cancel_requested"]
        started = time.monotonic()
        wait_status(http, job["id"], "cancelled", timeout=15)
        # cooperative: at its next check; otherwise terminated after the grace period
        assert time.monotonic() - started < (1.0 if cooperative else 5.0)
        assert http.get(f"/api/dlq/{job['id']}").status_code == 404
        assert http.delete(f"/api/jobs/{job['id']}").status_code == 409


def test_bad_requests_are_clear_json_errors(http: httpx.Client) -> None:
    invalid = http.post("/api/jobs", json={"type": "briefing.generate", "payload": {"user_id": 0}})
    assert invalid.status_code == 422
    assert any(e.startswith("user_id:") for e in invalid.json()["errors"])
    unknown = http.post("/api/jobs", json={"type": "nope.task", "payload": {}})
    assert unknown.status_code == 422 and "unknown task 'nope.task'" in unknown.json()["error"]
    queue = http.post("/api/jobs", json={"type": "alerts.send", "payload": {}, "queue": "urgent"})
    assert queue.status_code == 422
    extra = http.post("/api/jobs", json={"type": "alerts.send", "surprise": 1})
    assert extra.status_code == 422
    assert http.get("/api/jobs/never-enqueued").status_code == 404
    assert http.get("/api/jobs", params={"status": "sleeping"}).status_code == 422
    assert http.get("/api/jobs", params={"cursor": "garbage"}).status_code == 422
    assert http.post("/api/dlq/requeue", json={}).status_code == 409


def test_ten_thousand_jobs_page_through_without_gaps_or_duplicates(http: httpx.Client) -> None:
    store = records.store()
    kind = f"bulk.{uuid.uuid4().hex[:8]}"
    expected = set()
    for i in range(10_000):
        job_id = f"{kind}-{i}"
        queue = "low" if i % 2 else "critical"
        store.published(job_id, kind, queue, "pending", time.time(), 0, {}, reset=True)
        expected.add(job_id)

    for params in (
        {"type": kind},
        {"type": kind, "queue": "low"},
        {"status": "pending", "type": kind},
    ):
        seen: list[str] = []
        cursor = None
        while True:
            page = http.get(
                "/api/jobs",
                params={**params, "limit": 500, **({"cursor": cursor} if cursor else {})},
            ).json()
            seen.extend(j["id"] for j in page["jobs"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        want = {j for j in expected if "queue" not in params or int(j.rsplit("-", 1)[1]) % 2}
        assert len(seen) == len(set(seen)), "duplicates"
        assert set(seen) == want, "gaps"


def test_queues_and_probes(worker: Worker, http: httpx.Client) -> None:
    body = http.get("/api/queues").json()
    assert [q["name"] for q in body["queues"]] == ["critical", "default", "low"]
    assert any(w.startswith("test-") for w in body["workers"])
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/ready").json() == {"status": "ready"}


def test_metrics_show_queues_dead_letters_and_jobs(worker: Worker, http: httpx.Client) -> None:
    text = http.get("/metrics").text
    for line in (
        'worker_app_queue_ready{queue="critical"}',
        'worker_app_dead_letters{reason="poison_pill"}',
        'worker_app_jobs{status="succeeded"}',
        "worker_app_workers_online",
    ):
        assert line in text
    succeeded = next(
        row for row in text.splitlines() if row.startswith('worker_app_jobs{status="succeeded"}')
    )
    assert float(succeeded.split()[-1]) >= 1
