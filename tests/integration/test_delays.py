"""Delays parked in Redis: released once, on time, by whichever worker sweeps first; nothing
held in worker memory meanwhile (own module: own workers)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import e2e_tasks
from tests.helpers.env import child_env, wait_until
from tests.helpers.processes import Worker
from worker_app import app, enqueue, keys
from worker_app.broker.queues import queue_stats
from worker_app.jobs import records

pytestmark = pytest.mark.fault

LEASE = 3.0
BROKER = ("critical", "default", "low", "unacked", "unacked_index", keys.DELAYED)


@pytest.fixture(autouse=True)
def empty_broker(redis_client: redis.Redis) -> Iterator[None]:
    """Earlier modules may leave parked or queued messages behind."""
    redis_client.delete(*BROKER)
    yield
    redis_client.delete(*BROKER)


def test_a_countdown_longer_than_the_visibility_timeout_runs_once_on_time(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    env = child_env(ASYNQ_VISIBILITY_TIMEOUT=f"{LEASE}s")
    workers = [Worker(tmp_path / f"w{n}.log", env).start() for n in range(2)]
    try:
        key = f"delayed:{uuid.uuid4()}"
        delay = 3 * LEASE
        published = time.time()
        task_id = enqueue("e2e.record", {"key": key, "value": 1}, countdown=delay)

        assert redis_client.zcard(keys.DELAYED) == 1  # parked, not on the queue
        assert redis_client.llen("default") == 0 and redis_client.hlen("unacked") == 0
        job = records.store().get(task_id)
        assert job is not None and job.status == "scheduled"
        stats = {q.name: q for q in queue_stats(redis_client)}
        assert stats["default"].scheduled == 1

        wait_until(lambda: redis_client.llen(key) == 1, 3 * delay, "the delayed job to run")
        ran_after = time.time() - published
        time.sleep(2 * LEASE)
        assert redis_client.llen(key) == 1  # exactly once
        print(
            f"countdown {delay:.0f}s with a {LEASE:.0f}s visibility timeout: ran once, "
            f"{ran_after - delay:.2f}s after due"
        )
        assert delay <= ran_after < delay + 3, f"ran after {ran_after:.1f}s"
        assert redis_client.zcard(keys.DELAYED) == 0
    finally:
        for worker in workers:
            worker.stop()


def test_many_scheduled_jobs_wait_in_redis_not_in_a_worker(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    worker = Worker(tmp_path / "w.log", child_env()).start()
    try:
        before = redis_client.zcard(keys.DELAYED)
        with app.producer_or_acquire() as producer:
            for n in range(2000):
                e2e_tasks.stamp.apply_async((f"later:{n}",), countdown=3600, producer=producer)
        time.sleep(1.0)
        assert redis_client.zcard(keys.DELAYED) == before + 2000
        assert redis_client.hlen("unacked") == 0  # the worker holds none of them
        assert redis_client.llen("default") == 0
        member = str(redis_client.zrange(keys.DELAYED, 0, 0)[0])
        sample = json.loads(member.split("\n", 1)[1])
        assert sample["headers"]["task"] == "e2e.stamp"
    finally:
        worker.stop()
