"""The one task body every system in the comparison runs: count the execution in a second
Redis (so the broker's command counts stay the system's own), and when the job carries the time
it was sent, record how long it waited to start."""

from __future__ import annotations

import os
import time
from functools import cache

import redis


@cache
def counter() -> redis.Redis:
    return redis.Redis.from_url(os.environ["BENCH_COUNTER_URL"])


def body(sent_at: float = 0.0) -> None:
    if sent_at:
        counter().rpush("latency", time.time() - sent_at)
    counter().incr("done")
