"""Publishing is idempotent by job id: a publish sent again after its reply was lost (redis-py's
retry, kombu's retry policy, the enqueue loop) never pushes a second message, and the caller
gets the job id rather than an error."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
import redis

from tests.helpers import e2e_tasks
from worker_app.broker.publish import publish, record_of
from worker_app.jobs import records
from worker_app.producer.client import enqueue

pytestmark = pytest.mark.fault


def messages_of(client: redis.Redis, list_key: str, job_id: str) -> int:
    return sum(job_id in item for item in client.lrange(list_key, 0, -1))


def test_the_same_publish_twice_pushes_one_message(raw_redis: redis.Redis) -> None:
    job_id = str(uuid.uuid4())
    headers = {"task": "e2e.ledger", "id": job_id, "retries": 0}
    record = record_of(headers, [f"k:{job_id}"], {}, "low")
    message = json.dumps({"headers": headers, "body": "", "id": job_id})
    assert publish(raw_redis, "low", message, record=record) == ""
    assert publish(raw_redis, "low", message, record=record) == "pending"  # not pushed again
    assert raw_redis.llen("low") == 1
    # The next attempt (a retry) and a fresh run after the job ended are new publishes.
    retry = record_of({**headers, "retries": 1}, [], {}, "low")
    publish(raw_redis, "low", message, record=retry)
    assert raw_redis.llen("low") == 2
    records.JobStore(raw_redis, 60).finished(job_id, "failed")
    publish(raw_redis, "low", message, record=record)
    assert raw_redis.llen("low") == 3


def test_a_publish_whose_reply_is_late_is_sent_again_and_stored_once(
    redis_client: redis.Redis,
) -> None:
    """``CLIENT PAUSE WRITE`` holds the publish past the client's socket timeout (10 s): the
    publisher sends it again on a new connection; when the pause ends both run, and the second
    finds the job waiting already."""
    key = f"late:{uuid.uuid4()}"
    delay_id, enqueue_id = str(uuid.uuid4()), str(uuid.uuid4())
    results: dict[str, Any] = {}

    def by_delay() -> None:
        try:
            results["delay"] = e2e_tasks.ledger.apply_async((key,), task_id=delay_id).id
        except Exception as exc:  # noqa: BLE001 - reported below
            results["delay"] = exc

    def by_enqueue() -> None:
        try:
            results["enqueue"] = enqueue("e2e.record", {"key": key, "value": 1}, task_id=enqueue_id)
        except Exception as exc:  # noqa: BLE001 - reported below
            results["enqueue"] = exc

    redis_client.execute_command("CLIENT", "PAUSE", 13_000, "WRITE")  # type: ignore[no-untyped-call]
    started = time.monotonic()
    threads = [threading.Thread(target=by_delay), threading.Thread(target=by_enqueue)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    took = time.monotonic() - started
    try:
        print(f"publishes held by CLIENT PAUSE WRITE answered after {took:.1f}s: {results}")
        assert results == {"delay": delay_id, "enqueue": enqueue_id}
        assert took > 10  # each was sent again after its reply was late
        for job_id in (delay_id, enqueue_id):
            lists = ("critical", "default", "low")
            assert sum(messages_of(redis_client, name, job_id) for name in lists) == 1, job_id
            assert redis_client.hget(f"worker_app:job:{job_id}", "status") == "pending"
    finally:
        for job_id in (delay_id, enqueue_id):
            records.store().cancel(job_id)


def test_a_new_id_sent_again_after_its_job_moved_on_is_not_pushed_again(
    raw_redis: redis.Redis,
) -> None:
    """A publish of a generated id whose reply was lost, sent again once a worker has taken
    the job: the record and the queue stay as the worker left them."""
    job_id = str(uuid.uuid4())
    headers = {"task": "e2e.ledger", "id": job_id, "retries": 0}
    record = record_of(headers, [f"k:{job_id}"], {}, "low", new_id=True)
    message = json.dumps({"headers": headers, "body": "", "id": job_id})
    assert publish(raw_redis, "low", message, record=record) == ""
    raw_redis.rpop("low")  # a worker took it ...
    raw_redis.hset(f"worker_app:job:{job_id}", "status", "active")  # ... and started it
    assert publish(raw_redis, "low", message, record=record) == "active"
    assert raw_redis.llen("low") == 0
    assert raw_redis.hget(f"worker_app:job:{job_id}", "status") == b"active"
