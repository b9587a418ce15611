"""The producer side: nothing invalid is ever published."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.helpers import e2e_tasks
from worker_app import enqueue, enqueue_critical, enqueue_low, keys
from worker_app.errors import InvalidPayload, UnknownQueue, UnknownTask, UnsafeSerializer
from worker_app.tasks.briefing import BriefingPayload

QUEUES = ("critical", "default", "low")


@pytest.fixture
def empty_queues(redis_client: redis.Redis) -> Iterator[redis.Redis]:
    redis_client.delete(*QUEUES, keys.DELAYED)
    yield redis_client
    redis_client.delete(*QUEUES, keys.DELAYED)  # nothing parked here is released later


def depths(client: redis.Redis) -> list[int]:
    return [int(client.llen(queue)) for queue in QUEUES]


def test_an_invalid_payload_raises_with_every_field_error_and_publishes_nothing(
    empty_queues: redis.Redis,
) -> None:
    with pytest.raises(InvalidPayload) as caught:
        enqueue("briefing.generate", {"user_id": -3, "topics": []})
    assert [error.split(":")[0] for error in caught.value.errors] == ["user_id", "date", "topics"]
    with pytest.raises(InvalidPayload):
        e2e_tasks.record.delay(key="k", value=-1)  # .delay() is checked too
    assert depths(empty_queues) == [0, 0, 0]


def test_tasks_go_to_their_declared_queue_unless_the_call_names_one(
    empty_queues: redis.Redis,
) -> None:
    payload = BriefingPayload(user_id=1, date="2026-03-01", topics=["a"])
    enqueue("briefing.generate", payload)
    enqueue("alerts.send", {"user_id": 1, "message": "x"})
    enqueue("maintenance.cleanup", {})
    e2e_tasks.record.delay(key="k", value=1)  # declares no queue: default
    assert depths(empty_queues) == [1, 2, 1]
    enqueue_critical("maintenance.cleanup", {})
    enqueue_low("alerts.send", {"user_id": 1, "message": "x"})
    e2e_tasks.record.apply_async(kwargs={"key": "k", "value": 1}, queue="low")
    assert depths(empty_queues) == [2, 2, 3]


def test_unknown_queues_tasks_and_serializers_are_refused(empty_queues: redis.Redis) -> None:
    with pytest.raises(UnknownQueue, match="configured queues: critical, default, low"):
        enqueue("maintenance.cleanup", {}, queue="urgent")
    with pytest.raises(UnknownQueue):
        e2e_tasks.record.apply_async(kwargs={"key": "k", "value": 1}, queue="urgent")
    with pytest.raises(UnknownTask):
        enqueue("nope.missing", {})
    with pytest.raises(UnsafeSerializer):
        e2e_tasks.record.apply_async(kwargs={"key": "k", "value": 1}, serializer="pickle")
    assert depths(empty_queues) == [0, 0, 0]


def test_publishing_is_logged_once_on_the_producer_side(
    empty_queues: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="worker_app.jobs"):
        task_id = enqueue("maintenance.cleanup", {"older_than_days": 9}, countdown=30)
    lines = [r.getMessage() for r in caplog.records if task_id in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith(f"published maintenance.cleanup[{task_id}] queue=low attempt=1 eta=")
