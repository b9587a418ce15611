"""Queue declarations: where a task goes, and refusing queues that are not configured."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import redis
from celery import current_app

from worker_app import keys
from worker_app.broker.delays import parked_by_queue
from worker_app.broker.envelope import lists_of
from worker_app.config import get_settings
from worker_app.errors import UnknownQueue

# Weight of a queue the worker consumes but ASYNQ_QUEUES does not name (none in practice: the
# worker refuses such queues at start); the lowest a configured queue can have.
UNKNOWN_WEIGHT = 1


class WeightedOrder:
    """kombu queue-order strategy: the order of the queues for each fetch.

    The worker's fetch (worker_app.broker.fetch) asks :meth:`consume` for the queue order of
    every slot it fetches for, and the fetch script takes from the first non-empty list in that
    order (each queue's priority lists in priority order). Weighted mode draws a random
    permutation in which a queue comes first with probability ``weight / total`` (Asynq's
    method), so busy queues share the worker in proportion to their weights and none starves.
    Strict mode always orders by weight, highest first: a lower queue is served only when the
    higher ones are empty. Configured through the transport option ``queue_order_strategy``.
    """

    def __init__(self, items: Iterable[str] | None = None) -> None:
        settings = get_settings()
        self.weights = settings.queues
        self.strict = settings.strict_priority
        self.items: list[str] = list(items or ())

    def update(self, items: Iterable[str]) -> None:
        """Set the queues being consumed (a ``-Q`` subset keeps its configured weights)."""
        self.items[:] = list(items)

    def consume(self, n: int) -> list[str]:
        """The order in which to try the first ``n`` queues for the next fetch."""
        items = self.items[:n]
        if self.strict:
            return sorted(items, key=lambda queue: -self.weights.get(queue, UNKNOWN_WEIGHT))
        # Efraimidis-Spirakis: sorting by u ** (1 / w) draws a weighted permutation in one pass.
        keyed = [
            (random.random() ** (1.0 / self.weights.get(queue, UNKNOWN_WEIGHT)), queue)
            for queue in items
        ]
        return [queue for _, queue in sorted(keyed, reverse=True)]

    def rotate(self, last_used: str) -> str:
        """Unused: every fetch draws a fresh order."""
        return last_used


def check_queue(queue: str) -> str:
    """Return ``queue`` when it is configured.

    Raises:
        UnknownQueue: the queue is not in ``ASYNQ_QUEUES``.
    """
    names = get_settings().queue_names
    if queue not in names:
        raise UnknownQueue(
            f"queue {queue!r} is not configured; configured queues: {', '.join(names)}"
        )
    return queue


def check_worker_queues(selected: str | Iterable[str] | None) -> None:
    """Refuse to start a worker whose ``-Q`` names a queue that is not configured.

    Raises:
        SystemExit: with one line listing the configured queues.
    """
    if not selected:
        return
    names = selected.split(",") if isinstance(selected, str) else list(selected)
    configured = get_settings().queue_names
    unknown = [name.strip() for name in names if name.strip() not in configured]
    if unknown:
        raise SystemExit(
            f"error: -Q names {', '.join(map(repr, unknown))}, which ASYNQ_QUEUES does not "
            f"configure; configured queues: {', '.join(configured)}"
        )


def route_task(
    name: str, args: Any, kwargs: Any, options: dict[str, Any], task: Any = None, **_: Any
) -> dict[str, str] | None:
    """Celery router: a task goes to the queue it declares (``queue_name``), also when sent by
    name; an explicit ``queue=`` on the call wins.

    Raises:
        UnknownQueue: the declared queue is not configured.
    """
    if task is None:
        task = current_app.tasks.get(name)
    queue = getattr(task, "queue_name", None)
    return {"queue": check_queue(queue)} if isinstance(queue, str) else None


@dataclass(frozen=True)
class QueueStats:
    """One queue as an operator sees it."""

    name: str
    weight: int
    #: Expected share of a busy worker, in percent, while every queue has work.
    share: float
    #: Messages waiting to be fetched.
    ready: int
    #: Messages whose ETA (countdown, retry backoff) is still ahead: parked in Redis, or
    #: fetched and waiting in a worker for a short delay.
    scheduled: int
    #: Fetched messages not yet acknowledged (running, reserved or scheduled).
    unacked: int
    #: Seconds the oldest ready message has waited (0 when the queue is empty).
    oldest_age: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def queue_stats(client: redis.Redis) -> list[QueueStats]:
    """Weight, share, depth and in-flight counts of every configured queue."""
    weights = get_settings().queues
    total = sum(weights.values())
    pipe = client.pipeline(transaction=False)
    for name in weights:
        for list_name in lists_of(name):
            pipe.llen(list_name)
    for name in weights:
        pipe.lindex(name, -1)  # LPUSH in, taken from the tail: the oldest is there
    replies = pipe.execute()
    per_queue = len(lists_of(""))
    lengths, oldest = replies[: -len(weights)], replies[-len(weights) :]
    now = time.time()
    unacked, scheduled = _in_flight(client)
    for name, parked in parked_by_queue(client).items():
        scheduled[name] = scheduled.get(name, 0) + parked
    return [
        QueueStats(
            name=name,
            weight=weight,
            share=round(100.0 * weight / total, 1),
            ready=sum(lengths[i * per_queue : (i + 1) * per_queue]),
            scheduled=scheduled.get(name, 0),
            unacked=unacked.get(name, 0),
            oldest_age=_age(oldest[i], now),
        )
        for i, (name, weight) in enumerate(weights.items())
    ]


def _in_flight(client: redis.Redis) -> tuple[dict[str, int], dict[str, int]]:
    """Unacked and scheduled counts by queue, read from kombu's unacked hash."""
    unacked: dict[str, int] = {}
    scheduled: dict[str, int] = {}
    now = time.time()
    for _, raw in client.hscan_iter(keys.HELD):
        try:
            message, _exchange, queue = json.loads(raw)
            eta = (message.get("headers") or {}).get("eta")
        except (ValueError, TypeError, AttributeError):
            continue
        unacked[queue] = unacked.get(queue, 0) + 1
        if eta and _timestamp(eta) > now:
            scheduled[queue] = scheduled.get(queue, 0) + 1
    return unacked, scheduled


def _age(raw: Any, now: float) -> float:
    """Seconds since the message ``raw`` (a kombu envelope) was published; 0 if unknown."""
    if not raw:
        return 0.0
    try:
        published = float(json.loads(raw)["headers"][keys.PUBLISHED_AT])
    except (ValueError, TypeError, KeyError):
        return 0.0
    return round(max(0.0, now - published), 3)


def _timestamp(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return 0.0
