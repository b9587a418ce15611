"""The queue order a fetch uses: strict order by weight; weighted order a permutation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from worker_app.config import get_settings

QUEUES = ("critical", "default", "low")


BROKER_KEYS = (*QUEUES, "unacked", "unacked_index")


@pytest.fixture
def broker(redis_client: redis.Redis) -> Iterator[redis.Redis]:
    """Empty queues before and after: left-over messages would skew the shares."""
    redis_client.delete(*BROKER_KEYS)
    yield redis_client
    redis_client.delete(*BROKER_KEYS)


def test_strict_order_is_by_weight_and_weighted_order_is_a_permutation() -> None:
    from worker_app.broker.queues import WeightedOrder

    order = WeightedOrder(["low", "critical", "default"])
    assert sorted(order.consume(3)) == ["critical", "default", "low"]
    order.strict = True
    assert order.consume(3) == ["critical", "default", "low"]
    assert get_settings().queues == {"critical": 6, "default": 3, "low": 1}
