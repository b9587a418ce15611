"""enqueue_many: validated first, published in one round trip, each job run and tracked as if
enqueued alone (a real worker on the private Redis)."""

from __future__ import annotations

import time
import uuid

import redis

from tests.helpers.env import wait_until
from tests.helpers.processes import Worker
from worker_app import keys
from worker_app.jobs import records
from worker_app.producer.client import enqueue, enqueue_many


def test_a_batch_runs_every_job_once_and_tracks_each(
    worker: Worker, redis_client: redis.Redis
) -> None:
    key = f"batch:{uuid.uuid4()}"
    ids = enqueue_many("e2e.record", [{"key": key, "value": n} for n in range(500)])
    assert len(set(ids)) == 500
    wait_until(lambda: redis_client.llen(key) >= 500, 60, "500 batch jobs to run")
    time.sleep(0.5)
    assert sorted(int(v) for v in redis_client.lrange(key, 0, -1)) == list(range(500))
    store = records.store()
    wait_until(
        lambda: all((job := store.get(i)) is not None and job.status == "succeeded" for i in ids),
        30,
        "every record to say succeeded",
    )
    first = store.get(ids[0])
    assert first is not None and first.type == "e2e.record" and first.queue == "default"
    assert first.payload == {"args": [], "kwargs": {"key": key, "value": 0}}


def test_a_delayed_batch_waits_in_redis_and_runs_when_due(
    worker: Worker, redis_client: redis.Redis
) -> None:
    key = f"batch:{uuid.uuid4()}"
    ids = enqueue_many(
        "e2e.record", [{"key": key, "value": n} for n in range(20)], countdown=3, queue="low"
    )
    assert redis_client.zcard(keys.DELAYED) >= 20
    record = records.store().get(ids[0])
    assert record is not None and record.status == "scheduled" and record.queue == "low"
    assert redis_client.llen(key) == 0
    wait_until(lambda: redis_client.llen(key) >= 20, 30, "the delayed batch to run")


def test_a_restarted_redis_without_its_scripts_loses_no_job_and_no_record(
    worker: Worker, redis_client: redis.Redis
) -> None:
    key = f"batch:{uuid.uuid4()}"
    redis_client.script_flush()  # what a Redis restart does to the script cache
    ids = [enqueue("e2e.record", {"key": key, "value": 0})]
    redis_client.script_flush()
    ids += enqueue_many("e2e.record", [{"key": key, "value": n} for n in (1, 2, 3)])
    wait_until(lambda: redis_client.llen(key) >= 4, 30, "the four jobs")
    store = records.store()
    wait_until(
        lambda: all((job := store.get(i)) is not None and job.status == "succeeded" for i in ids),
        30,
        "every record to say succeeded",
    )
    time.sleep(0.5)
    assert sorted(int(v) for v in redis_client.lrange(key, 0, -1)) == [0, 1, 2, 3]
