"""A task only some test workers load (:class:`~tests.helpers.processes.ReplayWorker`).

The test process, the API it serves and the CLI never import this module: to them
``replay.note`` is a task of another deployment, which is what a dead-letter replay from a
process without the task needs.
"""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any

import redis

from worker_app.celery import app


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)


@app.task(name="replay.note", bind=True)
def note(self: Any, key: str, value: int, tag: str = "") -> None:
    """Record the message as this worker received it: id, arguments, queue, attempt, trace."""
    _redis().rpush(
        key,
        json.dumps(
            {
                "id": self.request.id,
                "args": [key, value],
                "kwargs": {"tag": tag},
                "queue": self.request.delivery_info["routing_key"],
                "retries": self.request.retries,
                "traceparent": self.request.get("traceparent"),
            }
        ),
    )
