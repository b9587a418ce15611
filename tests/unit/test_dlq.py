"""Dead-letter entries and their operations without a worker: one entry per task id, trimming,
and requeues that Redis refuses keep the entry and the audit record."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError

from worker_app import keys
from worker_app.dlq import entries, manage
from worker_app.dlq.entries import Entry, Store
from worker_app.errors import BrokerUnavailable

pytestmark = pytest.mark.usefixtures("empty_product_data")


def test_requeue_while_redis_refuses_the_publish_keeps_the_entry(redis_client: redis.Redis) -> None:
    entry = Entry(
        task_id=str(uuid.uuid4()),
        task_name="e2e.record",
        reason="permanent_error",
        kwargs={"key": "k", "value": 1},
        queue="default",
    )
    entries.store().add(entry)
    redis_client.config_set("maxmemory", "1")
    try:
        with pytest.raises((OperationalError, redis.RedisError)):
            manage.requeue(entry.task_id, actor="test")
    finally:
        redis_client.config_set("maxmemory", "0")
    assert manage.get(entry.task_id) is not None


def test_the_same_task_id_twice_is_one_entry(redis_client: redis.Redis) -> None:
    store = Store(redis_client, retention_seconds=3600, max_size=100)
    task_id = str(uuid.uuid4())
    before = store.count()
    store.add(
        Entry(task_id=task_id, task_name="a.b", reason="permanent_error", exc_message="first")
    )
    store.add(
        Entry(task_id=task_id, task_name="a.b", reason="retries_exhausted", exc_message="second")
    )
    assert store.count() == before + 1
    got = store.get(task_id)
    assert got is not None and got.exc_message == "second"
    assert task_id not in {e.task_id for e in store.iter(entries.Filter(reason="permanent_error"))}


def test_retention_and_size_trimming_are_logged_with_counts(
    redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    for key in redis_client.scan_iter(f"{keys.PREFIX}:dlq:*"):
        redis_client.delete(key)
    store = Store(redis_client, retention_seconds=60, max_size=5)
    now = time.time()
    for i in range(3):
        store.add(
            Entry(
                task_id=f"old-{i}", task_name="a.b", reason="permanent_error", failed_at=now - 3600
            )
        )
    for i in range(6):
        store.add(
            Entry(task_id=f"new-{i}", task_name="a.b", reason="permanent_error", failed_at=now + i)
        )
    assert store.count() == 5
    assert {e.task_id for e in store.iter()} == {f"new-{i}" for i in range(1, 6)}
    assert store.trimmed_total() == 4

    entries.store.cache_clear()
    settings_store = entries.store()
    settings_store.retention, settings_store.max_size = 60, 5
    with caplog.at_level(logging.WARNING, logger="worker_app.dlq"):
        entries.add(
            Entry(task_id="newest", task_name="a.b", reason="permanent_error", failed_at=now + 10)
        )
    assert (
        "trimmed 1 entry: 0 older than ASYNQ_DLQ_RETENTION, 1 beyond ASYNQ_DLQ_MAX_SIZE"
        in caplog.text
    )
    entries.store.cache_clear()


def test_a_bulk_requeue_stopped_by_redis_keeps_the_audit_record_of_what_it_did(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seeded = [
        Entry(
            task_id=str(uuid.uuid4()),
            task_name="e2e.record",
            reason="permanent_error",
            kwargs={"key": f"half-way:{n}", "value": n},
            queue="default",
            exc_type="HalfWay",
            failed_at=time.time() + n,
        )
        for n in range(5)
    ]
    for entry in seeded:
        entries.store().add(entry)
    newest_first = [e.task_id for e in reversed(seeded)]
    publish = manage._publish
    published: list[str] = []

    def redis_goes_away_after_two(entry: Entry, payload: Any) -> bool:
        if len(published) == 2:
            raise BrokerUnavailable("could not publish e2e.record: Redis unreachable")
        published.append(entry.task_id)
        return publish(entry, payload)

    monkeypatch.setattr(manage, "_publish", redis_goes_away_after_two)
    result = manage.requeue_many(entries.Filter(fingerprint=seeded[0].fingerprint), actor="test")

    assert (result.done, result.total, result.refused) == (2, 5, 0)
    assert result.stopped == f"{newest_first[2]}: could not publish e2e.record: Redis unreachable"
    assert [manage.get(i) is None for i in newest_first] == [True, True, False, False, False]
    record = manage.history(limit=1)[0]
    assert (record["count"], record["total"], record["stopped"], record["task_ids"]) == (
        2,
        5,
        result.stopped,
        newest_first[:2],
    )
