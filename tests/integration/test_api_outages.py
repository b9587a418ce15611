"""Cancels that survive a worker restart, and the API while Redis is away (own workers and
servers: nothing else may consume the queues or share the Redis being stopped)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import redis

from tests.helpers.env import child_env, wait_until
from tests.helpers.processes import API_TOKEN, ApiServer, Worker
from worker_app.cli.devredis import RedisServer

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def test_a_cancelled_pending_job_never_runs_even_on_a_worker_started_later(
    api: ApiServer, redis_client: redis.Redis, tmp_path: Path
) -> None:
    with httpx.Client(base_url=api.url, headers=AUTH, timeout=30) as http:
        cancel_then_restart(http, redis_client, tmp_path)


def cancel_then_restart(http: httpx.Client, redis_client: redis.Redis, tmp_path: Path) -> None:
    first = Worker(tmp_path / "first.log", child_env()).start()
    first.stop()  # a worker came and went; the next one starts after the cancel
    key = f"record:{uuid.uuid4()}"
    job = http.post(
        "/api/jobs", json={"type": "e2e.record", "payload": {"key": key, "value": 1}}
    ).json()
    assert job["status"] == "pending"
    cancelled = http.delete(f"/api/jobs/{job['id']}")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    marker = http.post(
        "/api/jobs", json={"type": "e2e.record", "payload": {"key": key, "value": 2}}
    ).json()

    later = Worker(tmp_path / "later.log", child_env()).start()
    try:
        wait_until(
            lambda: http.get(f"/api/jobs/{marker['id']}").json()["status"] == "succeeded",
            30,
            "the marker",
        )
    finally:
        later.stop()
    assert redis_client.lrange(key, 0, -1) == ["2"]  # the cancelled job never ran
    assert http.get(f"/api/jobs/{job['id']}").json()["status"] == "cancelled"
    assert http.get(f"/api/dlq/{job['id']}").status_code == 404


def test_the_api_answers_503_while_redis_is_down_and_recovers(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    api = ApiServer(
        tmp_path / "api.log", child_env(REDIS_URL=server.url, API_TOKEN=API_TOKEN)
    ).start()
    http = httpx.Client(base_url=api.url, headers=AUTH, timeout=30)
    try:
        assert http.get("/ready").status_code == 200
        server.stop()
        for method, path, body in [
            ("GET", "/ready", None),
            ("GET", "/api/jobs", None),
            ("GET", "/api/queues", None),
            ("GET", "/api/dlq", None),
            (
                "POST",
                "/api/jobs",
                {"type": "alerts.send", "payload": {"user_id": 1, "message": "x"}},
            ),
        ]:
            answer = http.request(method, path, json=body)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json() == {"error": "Redis is unreachable; try again shortly"}
        assert http.get("/health").status_code == 200

        server.start()  # same port, same data directory
        wait_until(lambda: http.get("/ready").status_code == 200, 30, "the API to recover")
        created = http.post(
            "/api/jobs", json={"type": "alerts.send", "payload": {"user_id": 1, "message": "x"}}
        )
        assert created.status_code == 202
        assert http.get("/api/jobs").status_code == 200
    finally:
        http.close()
        api.stop()
        server.stop()
    assert "Traceback" not in (tmp_path / "api.log").read_text()
