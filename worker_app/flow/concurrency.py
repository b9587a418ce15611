"""Per-key concurrency: at most N jobs of one key (an organization, a user) run at once across
every worker.

``@app.task(..., concurrency_key="org_id", concurrency_limit=50)``. Slots are leases in one
sorted set per key value, scored by when they lapse, so a crashed worker's slots free
themselves after the attempt's time limit. A job over the limit is deferred, using no retry.
"""

from __future__ import annotations

import random
import time

from worker_app import keys
from worker_app.broker.registry import script
from worker_app.redis_client import get_redis

#: How long a job over the limit waits before it tries again, plus up to as much jitter.
RECHECK = 0.5


def slot_key(task_name: str, value: object) -> str:
    return f"{keys.SLOTS}{task_name}:{value}"


def acquire(key: str, job_id: str, limit: int, lease: float) -> bool:
    """Take (or keep) a slot for ``job_id``; False when ``limit`` are taken."""
    now = time.time()
    return bool(script("concurrency")(get_redis(), [key], [now, job_id, limit, now + lease]))


def release(key: str, job_id: str) -> None:
    get_redis().zrem(key, job_id)


def recheck_delay() -> float:
    return RECHECK + random.uniform(0, RECHECK)
