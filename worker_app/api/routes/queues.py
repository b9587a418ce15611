"""``/api/queues``: depth, weight and dead letters per queue; workers online."""

from __future__ import annotations

import redis
from fastapi import APIRouter

from worker_app import keys
from worker_app.api.schemas import QueueOut, QueuesOut
from worker_app.broker.queues import queue_stats
from worker_app.dlq import entries
from worker_app.redis_client import get_redis

router = APIRouter(tags=["queues"])


def workers_online(client: redis.Redis) -> list[str]:
    """Hostnames of the workers whose heartbeat key has not expired, sorted."""
    return sorted(
        (k.decode() if isinstance(k, bytes) else str(k)).removeprefix(keys.WORKER)
        for k in client.scan_iter(f"{keys.WORKER}*", count=500)
    )


@router.get("/queues", response_model=QueuesOut)
def queues() -> QueuesOut:
    """Every configured queue, the dead-letter totals, and the workers whose heartbeat is fresh."""
    client = get_redis()
    store = entries.store()
    rows = [
        QueueOut(**q.as_dict(), dead_letters=store.count(entries.Filter(queue=q.name)))
        for q in queue_stats(client)
    ]
    return QueuesOut(queues=rows, dead_letters=store.count(), workers=workers_online(client))
