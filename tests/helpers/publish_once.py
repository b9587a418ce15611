"""Publish-once jobs and what their records say, for the tests that lose and repeat them."""

from __future__ import annotations

import json
from typing import Any

import redis

from tests.helpers.processes import Worker
from worker_app import keys
from worker_app.jobs import records

#: The header that makes a publish publish-once.
ONCE = {keys.PUBLISH_ONCE: "1"}


def attempts(client: redis.Redis, key: str) -> list[int]:
    return [json.loads(item)["attempt"] for item in client.lrange(key, 0, -1)]


def status(job_id: str) -> str:
    job = records.store().get(job_id)
    return job.status if job is not None else ""


def duplicates(worker: Worker, job_id: str) -> list[str]:
    return worker.lines(rf"{job_id}.*duplicate delivery, not run")


def publish_once(task: Any, args: tuple[Any, ...], job_id: str, **options: Any) -> None:
    task.apply_async(args, task_id=job_id, headers=ONCE, **options)
