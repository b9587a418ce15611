"""A global rate limit holds across two workers; nothing dropped, no retry used (own module)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import redis

from tests.helpers import e2e_tasks
from tests.helpers.env import child_env, wait_until
from tests.helpers.processes import Worker
from worker_app.dlq import manage


def test_twenty_per_second_across_two_workers(tmp_path: Path, redis_client: redis.Redis) -> None:
    workers = [Worker(tmp_path / f"w{n}.log", child_env()).start() for n in range(2)]
    try:
        key = f"limited:{uuid.uuid4()}"
        ids = [e2e_tasks.limited.delay(key).id for _ in range(100)]
        wait_until(lambda: redis_client.llen(key) >= 100, 60, "all 100 jobs")
    finally:
        for worker in workers:
            worker.stop()
    runs = [json.loads(r) for r in redis_client.lrange(key, 0, -1)]
    assert len(runs) == 100  # nothing dropped, nothing twice
    assert {r["retries"] for r in runs} == {0}  # deferrals used no retry
    assert all(manage.get(i) is None for i in ids)
    times = sorted(r["at"] for r in runs)
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    span = times[-1] - times[0]
    print(f"20/s over two workers: 100 jobs in {span:.2f}s, busiest 1 s window {busiest}")
    assert busiest <= 21  # the limit plus at most one token
    assert span >= 99 / 20 - 0.5
