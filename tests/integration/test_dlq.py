"""The dead-letter queue with a real worker: every way in, and replaying what landed there."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from celery.result import AsyncResult
from kombu import Connection, Exchange, Producer

from tests.helpers import e2e_tasks
from tests.helpers.dlq import entry_of, good_batch_succeeds, runs
from tests.helpers.env import wait_until
from tests.helpers.processes import Worker
from worker_app import app, keys
from worker_app.dlq import entries, manage

pytestmark = pytest.mark.usefixtures("empty_product_data")


def test_retries_exhausted_keeps_the_whole_job(worker: Worker, redis_client: redis.Redis) -> None:
    key = f"flaky:{uuid.uuid4()}"
    task_id = e2e_tasks.flaky.delay(key, 99).id
    entry = entry_of(task_id)
    assert entry.reason == "retries_exhausted"
    assert (entry.task_name, entry.args, entry.queue, entry.attempts) == (
        "e2e.flaky",
        [key, 99],
        "default",
        4,
    )
    assert (entry.exc_type, entry.exc_message) == ("RuntimeError", "transient failure 4")
    assert "raise RuntimeError" in entry.traceback
    assert entry.first_enqueued_at is not None and entry.first_enqueued_at <= entry.failed_at
    assert entry.hostname.startswith("test-")


def test_a_permanent_error_and_an_invalid_payload_are_dead_lettered_at_once(worker: Worker) -> None:
    permanent = e2e_tasks.permanent.delay(f"p:{uuid.uuid4()}").id
    invalid = app.send_task("e2e.record", kwargs={"key": "k", "value": -1}).id
    assert (entry_of(permanent).reason, entry_of(permanent).attempts) == ("permanent_error", 1)
    entry = entry_of(invalid)
    assert (entry.reason, entry.kwargs, entry.exc_type) == (
        "invalid_payload",
        {"key": "k", "value": -1},
        "InvalidPayload",
    )


def test_poison_messages_are_kept_and_the_worker_keeps_serving(
    worker: Worker, redis_client: redis.Redis
) -> None:
    before = {e.task_id for e in entries.store().iter()}
    redis_client.lpush("default", b"\xff\xfe not json at all")
    redis_client.lpush("default", json.dumps({"hello": "world"}))
    unknown = app.send_task("nope.missing_task", args=[1, 2], queue="default").id
    pickled = app.send_task(
        "e2e.record", kwargs={"key": "never", "value": 1}, serializer="pickle"
    ).id
    malformed = str(uuid.uuid4())
    with Connection(app.conf.broker_url) as conn:
        producer = Producer(conn.default_channel, exchange=Exchange("default", type="direct"))
        producer.publish({"not": "a celery message"}, routing_key="default", serializer="json")
        producer.publish(
            "this body is not [args, kwargs, embed]",
            routing_key="default",
            serializer="json",
            headers={"id": malformed, "task": "e2e.record", "lang": "py", "retries": 0},
        )

    wait_until(
        lambda: len({e.task_id for e in entries.store().iter()} - before) >= 6,
        30,
        "six poison messages",
    )

    new = [e for e in entries.store().iter() if e.task_id not in before]
    assert sorted((e.reason, e.exc_type) for e in new) == [
        ("undecodable", "ContentDisallowed"),  # pickle
        ("undecodable", "InvalidTaskError"),  # a body that is not [args, kwargs, embed]
        ("undecodable", "JSONDecodeError"),  # bytes that are not JSON
        ("undecodable", "MalformedEnvelope"),  # JSON that is not a message
        ("undecodable", "NotACeleryMessage"),  # a message without Celery's headers
        ("unknown_task", "KeyError"),
    ]
    unknown_entry = manage.get(unknown)
    assert unknown_entry is not None and unknown_entry.reason == "unknown_task"
    assert (unknown_entry.task_name, unknown_entry.args) == ("nope.missing_task", [1, 2])
    pickle_entry = manage.get(pickled)
    assert pickle_entry is not None and pickle_entry.reason == "undecodable"
    assert pickle_entry.content_type == "application/x-python-serialize" and pickle_entry.raw
    raw_bytes = [
        e
        for e in new
        if e.raw
        and "not json at all" in __import__("base64").b64decode(e.raw).decode(errors="replace")
    ]
    assert len(raw_bytes) == 1
    assert manage.get(malformed) is not None
    assert worker.process is not None and worker.process.poll() is None
    good_batch_succeeds()
    assert redis_client.llen("never") == 0


def test_a_hard_time_limit_is_retried_then_dead_lettered(
    worker: Worker, redis_client: redis.Redis
) -> None:
    key = f"hang:{uuid.uuid4()}"
    task_id = e2e_tasks.hang.delay(key, 60).id  # ASYNQ_TASK_TIMEOUT=4s kills every attempt
    entry = entry_of(task_id, timeout=90)
    assert (entry.reason, entry.exc_type) == ("retries_exhausted", "TimeLimitExceeded")
    assert runs(redis_client, key) == 4
    good_batch_succeeds()


def test_requeue_after_the_cause_is_fixed_runs_once_and_removes_the_entry(
    worker: Worker, redis_client: redis.Redis
) -> None:
    key = f"switch:{uuid.uuid4()}"
    redis_client.set(f"broken:{key}", 1)
    task_id = e2e_tasks.switch.delay(key).id
    entry_of(task_id)
    assert runs(redis_client, key) == 4

    redis_client.delete(f"broken:{key}")
    assert manage.requeue(task_id, actor="test")

    wait_until(lambda: AsyncResult(task_id, app=app).state == "SUCCESS", 30, "the replay")
    assert runs(redis_client, key) == 5
    assert manage.get(task_id) is None
    assert manage.history(task_id=task_id)[0]["action"] == "requeue"


def test_requeue_with_a_corrected_payload(worker: Worker, redis_client: redis.Redis) -> None:
    key = f"fixed:{uuid.uuid4()}"
    task_id = app.send_task("e2e.record", kwargs={"key": key, "value": -5}).id
    entry_of(task_id)
    with pytest.raises(Exception, match="value"):
        manage.requeue(task_id, payload={"key": key, "value": -6})
    assert manage.requeue(task_id, actor="test", payload={"key": key, "value": 5})
    assert AsyncResult(task_id, app=app).get(timeout=30) == 5
    assert redis_client.lrange(key, 0, -1) == ["5"]


@pytest.fixture
def three_kinds(worker: Worker) -> Iterator[dict[str, list[str]]]:
    for key in redis.Redis.from_url(app.conf.broker_url).scan_iter(f"{keys.PREFIX}:dlq:*"):
        redis.Redis.from_url(app.conf.broker_url).delete(key)
    ids: dict[str, list[str]] = {"missing": [], "rejected": [], "timeout": []}
    for n in range(100):
        for kind in ids:
            ids[kind].append(e2e_tasks.fail_kind.delay(kind, n * 7919 + 13).id)
    wait_until(lambda: entries.store().count() >= 300, 60, "300 failures")
    yield ids


def test_failures_group_by_fingerprint_and_replay_by_one_at_a_bounded_rate(
    three_kinds: dict[str, list[str]],
) -> None:
    stats = manage.stats()
    assert stats["total"] == 300
    assert sorted(g["count"] for g in stats["by_fingerprint"]) == [100, 100, 100]
    target = manage.get(three_kinds["timeout"][0])
    assert target is not None
    untouched = {
        e.task_id: e.failed_at
        for e in entries.store().iter()
        if e.fingerprint != target.fingerprint
    }

    started = time.monotonic()
    result = manage.requeue_many(
        entries.Filter(fingerprint=target.fingerprint), actor="test", rate=20
    )
    elapsed = time.monotonic() - started

    assert (result.done, result.refused) == (100, 0)
    assert elapsed >= 99 / 20  # never faster than the rate
    assert {
        e.task_id: e.failed_at
        for e in entries.store().iter()
        if e.fingerprint != target.fingerprint
    } == untouched
    record = manage.history(limit=1)[0]
    assert (record["action"], record["count"], record["filter"]) == (
        "requeue",
        100,
        {"fingerprint": target.fingerprint},
    )
    assert set(record["task_ids"]) == set(three_kinds["timeout"])
