"""The queue order a fetch uses: strict order by weight; weighted order a permutation."""

from __future__ import annotations

from worker_app.broker.queues import WeightedOrder
from worker_app.config import get_settings


def test_strict_order_is_by_weight_and_weighted_order_is_a_permutation() -> None:
    order = WeightedOrder(["low", "critical", "default"])
    assert sorted(order.consume(3)) == ["critical", "default", "low"]
    order.strict = True
    assert order.consume(3) == ["critical", "default", "low"]
    assert get_settings().queues == {"critical": 6, "default": 3, "low": 1}
