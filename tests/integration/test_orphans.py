"""Records whose message is gone (a list deleted by hand) end failed and dead-lettered as
``lost``, so nothing waits on them forever, periodic schedules included."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from tests.helpers import e2e_tasks
from tests.helpers.beat import Beat
from tests.helpers.env import child_env, wait_until
from tests.helpers.processes import Worker
from worker_app import keys
from worker_app.dlq import manage
from worker_app.jobs import records
from worker_app.producer.client import enqueue

LEASE = "3s"


def status(job_id: str) -> str | None:
    job = records.store().get(job_id)
    return job.status if job else None


@pytest.mark.fault
@pytest.mark.timeout(180)
def test_a_periodic_job_whose_message_was_removed_runs_again_at_a_later_slot(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    redis_client.flushdb()  # records other tests left would each take a turn in the search
    name = f"unblock-{uuid.uuid4().hex[:8]}"
    schedule = {"name": name, "task": "e2e.tick", "every": "1s", "payload": {"key": name}}
    beat = Beat(tmp_path / "beat.log", [schedule]).start()
    worker: Worker | None = None
    try:
        # No worker yet: the first slot's job waits on its queue; its message is then deleted.
        wait_until(lambda: redis_client.hget(keys.PERIODIC_LAST, name), 60, "the first slot")
        first = str(redis_client.hget(keys.PERIODIC_LAST, name))
        redis_client.delete("default")
        wait_until(
            lambda: int(redis_client.hget(keys.PERIODIC_SKIPPED, name) or 0) >= 1,
            60,
            "a later slot to be skipped behind the lost one",
        )
        assert status(first) == "pending"
        worker = Worker(tmp_path / "worker.log", child_env(ASYNQ_VISIBILITY_TIMEOUT=LEASE)).start()
        wait_until(lambda: redis_client.llen(name) >= 1, 90, "a later slot to run")
    finally:
        beat.stop()
        if worker is not None:
            worker.stop()
    job = records.store().get(first)
    assert job is not None and job.status == "failed"
    assert "MessageLost" in (job.last_error or "")
    entry = manage.get(first)
    assert entry is not None and entry.reason == "lost" and entry.task_name == "e2e.tick"
    assert entry.kwargs == {"key": name}
    assert redis_client.hget(keys.PERIODIC_LAST, name) != first


@pytest.mark.fault
@pytest.mark.timeout(120)
def test_only_records_without_a_message_are_ended(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """Jobs waiting on another queue, parked or held by a running task are left alone."""
    redis_client.flushdb()
    key = f"orphan:{uuid.uuid4()}"
    lost = enqueue("e2e.record", {"key": key, "value": 1}, queue="critical")
    waiting = enqueue("e2e.record", {"key": key, "value": 2}, queue="low")
    parked = enqueue("e2e.record", {"key": key, "value": 3}, countdown=600)
    redis_client.delete("critical")
    env = child_env(ASYNQ_VISIBILITY_TIMEOUT=LEASE)
    worker = Worker(tmp_path / "worker.log", env, queues="critical").start()
    try:
        running = e2e_tasks.sleepy.apply_async(
            (key, 8.0), queue="critical", time_limit=60, soft_time_limit=55
        ).id
        wait_until(lambda: status(lost) == "failed", 60, "the lost job to be ended")
        wait_until(lambda: status(running) == "succeeded", 60, "the long job to finish")
    finally:
        worker.stop()
    assert status(waiting) == "pending"
    assert status(parked) == "scheduled"
    assert status(running) == "succeeded"
    assert "recovered" not in worker.log()
