"""Requeueing dead letters over HTTP whose task the API's process does not have."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import redis

from tests.helpers.env import child_env, wait_until
from tests.helpers.processes import API_TOKEN, ApiServer, ReplayWorker
from worker_app.dlq import entries, manage
from worker_app.dlq.entries import Entry

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def unknown_entry(key: str, value: int) -> str:
    """A dead letter of ``replay.note``, which neither this process nor the API has."""
    task_id = str(uuid.uuid4())
    entries.store().add(
        Entry(
            task_id=task_id,
            task_name="replay.note",
            reason="unknown_task",
            args=[key, value],
            kwargs={"tag": "over http"},
            queue="low",
            headers={"traceparent": TRACEPARENT},
            exc_type="KeyError",
        )
    )
    return task_id


def test_an_unknown_task_is_requeued_unchanged_and_a_worker_with_it_runs_it(
    api: ApiServer, tmp_path: Path, redis_client: redis.Redis
) -> None:
    key = f"replay:{uuid.uuid4()}"
    one, other = unknown_entry(key, 1), unknown_entry(key, 2)
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    with httpx.Client(base_url=api.url, headers=auth, timeout=30) as http:
        refused = http.post(f"/api/dlq/{one}/requeue", json={"payload": {"key": key}})
        assert refused.status_code == 422
        assert "task 'replay.note' is not registered in this process" in refused.json()["error"]
        assert manage.get(one) is not None

        answer = http.post(f"/api/dlq/{one}/requeue")
        assert answer.status_code == 202
        assert answer.json() == {
            "done": 1,
            "refused": 0,
            "total": 1,
            "stopped": None,
            "unvalidated": 1,
        }
        bulk = http.post("/api/dlq/requeue", json={"task": "replay.note"})
        assert bulk.status_code == 202
        assert bulk.json() == {
            "done": 1,
            "refused": 0,
            "total": 1,
            "stopped": None,
            "unvalidated": 1,
        }
    assert manage.get(one) is None and manage.get(other) is None
    assert manage.history(task_id=one)[0]["validated"] is False

    worker = ReplayWorker(tmp_path / "worker.log", child_env()).start()
    try:
        wait_until(lambda: redis_client.llen(key) == 2, 30, "a worker with the task to run both")
    finally:
        worker.stop()
    runs = [json.loads(run) for run in redis_client.lrange(key, 0, -1)]
    assert sorted(runs, key=lambda run: run["args"][1]) == [
        {
            "id": task_id,
            "args": [key, value],
            "kwargs": {"tag": "over http"},
            "queue": "low",
            "retries": 0,
            "traceparent": TRACEPARENT,
        }
        for task_id, value in ((one, 1), (other, 2))
    ]
