"""Dead-letter checks shared by the tests that make jobs fail."""

from __future__ import annotations

import redis
from celery.result import AsyncResult

from tests.helpers.env import wait_until
from worker_app import app, enqueue
from worker_app.dlq import manage
from worker_app.dlq.entries import Entry


def entry_of(task_id: str, timeout: float = 30) -> Entry:
    found: list[Entry] = []

    def check() -> bool:
        got = manage.get(task_id)
        if got is not None:
            found.append(got)
        return got is not None

    wait_until(check, timeout, f"{task_id} in the dead-letter queue")
    return found[0]


def runs(client: redis.Redis, key: str) -> int:
    return int(client.llen(key))


def good_batch_succeeds(n: int = 10) -> None:
    ids = [enqueue("e2e.record", {"key": "good-batch", "value": i}) for i in range(n)]
    for task_id in ids:
        assert AsyncResult(task_id, app=app).get(timeout=30) is not None
