"""The task body every benchmark runs: count one execution, nothing else."""

from __future__ import annotations

import os
import time
from functools import cache

import redis

from worker_app.celery import app


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


@app.task(name="bench.noop")
def noop() -> None:
    _redis().incr("bench:done")


@app.task(name="bench.stamp")
def stamp(key: str) -> None:
    _redis().rpush(key, time.time())


@app.task(name="bench.work")
def work(sent_at: float = 0.0) -> None:
    """The comparison's task body (bench.body), as a worker_app task."""
    from bench.body import body

    body(sent_at)
