"""Publish-once messages (the outbox relay's): a job id published twice runs once, while retries,
deferrals, dead-letter requeues and operator retries still run the job again."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from tests.helpers import e2e_tasks
from tests.helpers.env import wait_until
from tests.helpers.processes import Worker
from tests.helpers.publish_once import attempts, duplicates, publish_once, status
from worker_app import keys
from worker_app.dlq import manage
from worker_app.jobs import records


def test_a_repeat_after_the_job_finished_is_not_run_and_keeps_the_record(
    worker: Worker, redis_client: redis.Redis
) -> None:
    key, job_id = f"once:{uuid.uuid4()}", str(uuid.uuid4())
    publish_once(e2e_tasks.flaky, (key, 0), job_id)
    wait_until(lambda: status(job_id) == "succeeded", 30, "the job to succeed")
    first = records.store().get(job_id)
    publish_once(e2e_tasks.flaky, (key, 0), job_id)
    wait_until(lambda: duplicates(worker, job_id), 30, "the repeat to be skipped")
    assert attempts(redis_client, key) == [1]
    assert records.store().get(job_id) == first  # not reset to pending, not touched


def test_a_repeat_while_the_job_runs_is_not_run(worker: Worker, redis_client: redis.Redis) -> None:
    key, job_id = f"once-running:{uuid.uuid4()}", str(uuid.uuid4())
    publish_once(e2e_tasks.sleepy, (key, 2.0), job_id)
    wait_until(lambda: status(job_id) == "active", 30, "the job to start")
    publish_once(e2e_tasks.sleepy, (key, 2.0), job_id)
    wait_until(lambda: duplicates(worker, job_id), 30, "the repeat to be skipped")
    wait_until(lambda: status(job_id) == "succeeded", 30, "the job to succeed")
    assert attempts(redis_client, key) == [1]


def test_retries_of_a_publish_once_job_still_run(worker: Worker, redis_client: redis.Redis) -> None:
    key, job_id = f"once-retry:{uuid.uuid4()}", str(uuid.uuid4())
    publish_once(e2e_tasks.flaky, (key, 2), job_id)
    wait_until(lambda: status(job_id) == "succeeded", 60, "the job to succeed on attempt 3")
    assert attempts(redis_client, key) == [1, 2, 3]
    assert not duplicates(worker, job_id)


def test_deferred_publish_once_jobs_run_exactly_once(
    worker: Worker, redis_client: redis.Redis
) -> None:
    key = f"once-deferred:{uuid.uuid4()}"
    ids = [str(uuid.uuid4()) for _ in range(40)]  # 20/s: about half are deferred
    for job_id in ids:
        publish_once(e2e_tasks.limited, (key,), job_id)
    wait_until(lambda: redis_client.llen(key) >= len(ids), 60, "every job to run")
    wait_until(lambda: all(status(i) == "succeeded" for i in ids), 30, "every record to end")
    assert redis_client.llen(key) == len(ids)
    assert worker.lines("deferred for"), "the rate limit should have deferred some jobs"
    assert not any(duplicates(worker, job_id) for job_id in ids)


def test_a_dead_lettered_publish_once_job_is_requeued_and_runs_again(
    worker: Worker, redis_client: redis.Redis
) -> None:
    key, job_id = f"once-dlq:{uuid.uuid4()}", str(uuid.uuid4())
    publish_once(e2e_tasks.permanent, (key,), job_id)
    wait_until(lambda: manage.get(job_id) is not None, 30, "the job to be dead-lettered")
    entry = manage.get(job_id)
    assert entry is not None and entry.headers.get(keys.PUBLISH_ONCE) == "1"
    assert manage.requeue(job_id, actor="test")
    wait_until(lambda: len(attempts(redis_client, key)) == 2, 30, "the requeued job to run")
    wait_until(lambda: manage.get(job_id) is not None, 30, "it to fail again")
    assert not duplicates(worker, job_id)


def test_an_operator_retry_of_a_cancelled_publish_once_job_runs_it(
    worker: Worker, redis_client: redis.Redis
) -> None:
    from worker_app.api.routes.jobs import retry_job

    key, job_id = f"once-cancelled:{uuid.uuid4()}", str(uuid.uuid4())
    publish_once(e2e_tasks.flaky, (key, 0), job_id, countdown=3600)
    wait_until(lambda: status(job_id) == "scheduled", 30, "the job to be scheduled")
    records.store().cancel(job_id)
    assert status(job_id) == "cancelled"
    retry_job(job_id)
    wait_until(lambda: status(job_id) == "succeeded", 30, "the retried job to succeed")
    assert attempts(redis_client, key) == [1]


@pytest.mark.fault
def test_a_repeat_while_the_job_is_deferred_is_not_run(
    worker: Worker, redis_client: redis.Redis
) -> None:
    from worker_app.flow.concurrency import slot_key

    key, org, job_id = f"once-busy:{uuid.uuid4()}", uuid.uuid4().hex, str(uuid.uuid4())
    slots = slot_key("e2e.per_org", org)
    redis_client.zadd(slots, {f"other-{n}": time.time() + 120 for n in range(5)})  # org is full
    publish_once(e2e_tasks.per_org, (key, org), job_id)
    wait_until(lambda: worker.lines(rf"{job_id}.*deferred for"), 30, "the job to be deferred")
    publish_once(e2e_tasks.per_org, (key, org), job_id)
    # The job waits for that attempt already: the repeat writes nothing (publish is idempotent
    # by job id), so one message of it exists (parked, waiting, or held for its ETA).
    parked = redis_client.zrange("worker_app:delayed", 0, -1)
    waiting = [m for q in ("critical", "default", "low") for m in redis_client.lrange(q, 0, -1)]
    held = redis_client.hvals("unacked")
    assert sum(job_id in m for m in [*parked, *waiting, *held]) == 1
    redis_client.delete(slots)
    wait_until(lambda: status(job_id) == "succeeded", 30, "the deferred job to run")
    assert redis_client.llen(key) == 1
