"""Unique jobs: equal jobs enqueued within the window run once; callers get the same id."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import redis
from celery.result import AsyncResult

from tests.helpers import e2e_tasks  # noqa: F401  - registers the tasks enqueued by name
from tests.helpers.env import wait_until
from tests.helpers.processes import API_TOKEN, ApiServer, Worker
from worker_app import app, enqueue


def test_a_hundred_concurrent_equal_enqueues_run_once(
    worker: Worker, redis_client: redis.Redis
) -> None:
    key = f"unique:{uuid.uuid4()}"

    def send(_: int) -> str:
        return enqueue("e2e.record", {"key": key, "value": 1}, unique_for=30)

    with ThreadPoolExecutor(max_workers=20) as pool:
        ids = set(pool.map(send, range(100)))
    assert len(ids) == 1
    assert AsyncResult(ids.pop(), app=app).get(timeout=30) == 1
    wait_until(lambda: redis_client.llen(key) >= 1, 10, "the execution")
    assert redis_client.llen(key) == 1

    other = enqueue("e2e.record", {"key": key, "value": 2}, unique_for=30)  # not equal: runs
    assert AsyncResult(other, app=app).get(timeout=30) == 2
    by_key = {
        enqueue("e2e.record", {"key": key, "value": v}, unique_for=30, unique_key=key)
        for v in (3, 4)
    }
    assert len(by_key) == 1  # an explicit key makes different payloads equal


def test_the_api_answers_409_with_the_existing_job(worker: Worker, api: ApiServer) -> None:
    body = {
        "type": "e2e.record",
        "payload": {"key": f"u:{uuid.uuid4()}", "value": 5},
        "unique_for": 60,
    }
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as http:
        first = http.post("/api/jobs", json=body)
        second = http.post("/api/jobs", json=body)
    assert first.status_code == 202
    assert second.status_code == 409
    assert second.json() == {
        "error": "an equal job is already enqueued",
        "job_id": first.json()["id"],
    }
