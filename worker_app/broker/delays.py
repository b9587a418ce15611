"""Delayed messages parked in Redis instead of worker memory.

Celery publishes a ``countdown``/``eta``/retry message at once and the worker that takes it
holds it until due: memory for every scheduled job, and a second run when the delay outlasts
the visibility timeout. Here the publisher parks any message due more than ``PARK_AHEAD`` seconds
ahead in one sorted set (``publish.lua``), and every worker's release sweep moves the due ones
onto their lists in one script (``release.lua``): exactly one release, nothing lost in between.
"""

from __future__ import annotations

from typing import Any

from worker_app import keys
from worker_app.broker.publish import parked_queue
from worker_app.broker.registry import script


def release_due(client: Any) -> int:
    """Release every parked message due now onto its list; returns how many."""
    total = 0
    while True:
        moved = int(script("release")(client, [], [keys.RELEASE_BATCH, keys.WAKE_CAP]))
        total += moved
        if moved < keys.RELEASE_BATCH:
            return total


def parked_by_queue(client: Any) -> dict[str, int]:
    """Messages parked per queue name (its priority lists folded in)."""
    counts: dict[str, int] = {}
    for member, _ in client.zscan_iter(keys.DELAYED, count=1000):
        text = member.decode() if isinstance(member, bytes) else str(member)
        queue = parked_queue(text)
        counts[queue] = counts.get(queue, 0) + 1
    return counts
