"""The API's /metrics against real queues: depths, oldest age, wait times, dead letters."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import redis

from tests.helpers.env import child_env, wait_until
from tests.helpers.processes import API_TOKEN, ApiServer, Worker
from worker_app.dlq import entries
from worker_app.dlq.entries import Entry

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def sample(text: str, name: str, **labels: str) -> float:
    label = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{{{re.escape(label)}}} (\S+)$" if labels else rf"^{name} (\S+)$"
    match = re.search(pattern, text, re.M)
    assert match is not None, f"{name} {labels} not in /metrics"
    return float(match.group(1))


def test_depth_and_oldest_age_grow_without_a_worker_and_drop_when_drained(
    api: ApiServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    redis_client.delete("critical", "default", "low")
    with httpx.Client(base_url=api.url, headers=AUTH, timeout=30) as http:
        ids = []
        for n in range(3):
            body = {"type": "alerts.send", "payload": {"user_id": n + 1, "message": "m"}}
            created = http.post("/api/jobs", json=body)
            assert created.status_code == 202
            ids.append(created.json()["id"])
        first = http.get("/metrics").text
        assert sample(first, "worker_app_queue_ready", queue="critical") == 3
        assert sample(first, "worker_app_queue_ready", queue="low") == 0
        age = sample(first, "worker_app_queue_oldest_age_seconds", queue="critical")
        time.sleep(1.0)
        later = sample(
            http.get("/metrics").text, "worker_app_queue_oldest_age_seconds", queue="critical"
        )
        assert later >= age + 0.9  # no worker: it keeps growing

        dead = entries.store().count(entries.Filter(reason="unknown_task"))
        entries.store().add(
            Entry(task_id=f"m-{time.time()}", task_name="x.y", reason="unknown_task")
        )

        worker = Worker(tmp_path / "worker.log", child_env()).start()
        try:
            # Drained means run, not just fetched: a fetched job would go back on stop.
            wait_until(
                lambda: all(
                    http.get(f"/api/jobs/{i}").json()["status"] == "succeeded" for i in ids
                ),
                30,
                "the queue to drain",
            )
        finally:
            worker.stop()
        drained = http.get("/metrics").text
        assert sample(drained, "worker_app_queue_oldest_age_seconds", queue="critical") == 0
        assert sample(drained, "worker_app_dead_letters", reason="unknown_task") == dead + 1
        assert sample(drained, "worker_app_wait_seconds_count", queue="critical") >= 3
        assert sample(drained, "worker_app_wait_seconds_bucket", le="+Inf", queue="critical") >= 3
        assert sample(drained, "worker_app_jobs", status="succeeded") >= 3
