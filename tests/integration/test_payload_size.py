"""Messages over ASYNQ_MAX_PAYLOAD (1 MiB by default) are refused by every way of publishing,
with one clear error, and nothing reaches Redis."""

from __future__ import annotations

import httpx
import redis

from tests.helpers.data import written
from tests.helpers.processes import API_TOKEN, ApiServer

BIG = "x" * (2 * 1024 * 1024)


def test_the_api_answers_413_with_json(api: ApiServer, empty_redis: redis.Redis) -> None:
    answer = httpx.post(
        f"{api.url}/api/jobs",
        json={"type": "e2e.record", "payload": {"key": BIG, "value": 1}},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
        timeout=30,
    )
    assert answer.status_code == 413
    assert "ASYNQ_MAX_PAYLOAD" in answer.json()["error"]
    assert written(empty_redis) == []
