"""Messages over ASYNQ_MAX_PAYLOAD (1 MiB by default) are refused by every way of publishing,
with one clear error, and nothing reaches Redis."""

from __future__ import annotations

import pytest
import redis

from tests.helpers import e2e_tasks
from tests.helpers.data import written
from worker_app.errors import PayloadTooLarge
from worker_app.producer.client import enqueue
from worker_app.producer.publish import enqueue_many

BIG = "x" * (2 * 1024 * 1024)


def test_enqueue_refuses_a_2_mib_payload_and_writes_nothing(empty_redis: redis.Redis) -> None:
    with pytest.raises(PayloadTooLarge, match="over ASYNQ_MAX_PAYLOAD"):
        enqueue("e2e.record", {"key": BIG, "value": 1})
    assert written(empty_redis) == []


def test_delay_refuses_a_2_mib_payload_and_writes_nothing(empty_redis: redis.Redis) -> None:
    with pytest.raises(PayloadTooLarge):
        e2e_tasks.stamp.delay(BIG)
    assert written(empty_redis) == []


def test_enqueue_many_names_the_payload_and_publishes_none(empty_redis: redis.Redis) -> None:
    payloads = [{"key": "k", "value": n} for n in range(600)]
    payloads[550] = {"key": BIG, "value": 0}
    with pytest.raises(PayloadTooLarge, match="payload #550"):
        enqueue_many("e2e.record", payloads)
    assert written(empty_redis) == []
