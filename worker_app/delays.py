"""Delayed messages parked in Redis instead of worker memory.

Celery publishes a ``countdown``/``eta``/retry message at once and the worker that fetches it
holds it until it is due: memory for every scheduled job, and (without leases) a second run
when the delay outlasts the visibility timeout. Here the transport parks any message due more
than ``PARK_AHEAD`` seconds ahead in one sorted set, and every worker's release sweep moves the
due ones onto their queue in one Lua script: exactly one release, nothing lost in between.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any

import redis

from worker_app import keys

logger = logging.getLogger(__name__)

# KEYS: the delayed set. ARGV: now, batch. Moves due messages onto their lists; returns how many.
_RELEASE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(due) do
  local cut = string.find(member, '\\n', 1, true)
  redis.call('ZREM', KEYS[1], member)
  redis.call('LPUSH', string.sub(member, 1, cut - 1), string.sub(member, cut + 1))
end
return #due
"""


def due_at(message: dict[str, Any]) -> float | None:
    """When a kombu envelope's task is due (its ``eta`` header), as Unix time."""
    eta = (message.get("headers") or {}).get("eta")
    if not eta:
        return None
    try:
        return datetime.fromisoformat(str(eta)).timestamp()
    except ValueError:
        return None


def member(list_key: str, message_json: str) -> str:
    """The delayed set's member of a message bound for ``list_key``."""
    return f"{list_key}\n{message_json}"


def park(client: Any, list_key: str, message: dict[str, Any], due: float) -> None:
    """Keep ``message`` (bound for ``list_key``) in the delayed set until ``due``."""
    client.zadd(keys.DELAYED, {member(list_key, json.dumps(message)): due})


class Releaser:
    """Moves due messages onto their queues; any number of workers may run one."""

    def __init__(self, client: redis.Redis) -> None:
        self._release = client.register_script(_RELEASE)

    def release(self) -> int:
        """Release every message due now; returns how many."""
        total = 0
        while True:
            moved = int(self._release(keys=[keys.DELAYED], args=[time.time(), keys.RELEASE_BATCH]))
            total += moved
            if moved < keys.RELEASE_BATCH:
                return total


def parked_by_queue(client: redis.Redis) -> dict[str, int]:
    """Messages parked per queue name (the priority sublists folded in)."""
    counts: dict[str, int] = {}
    for member, _ in client.zscan_iter(keys.DELAYED, count=1000):
        text = member.decode() if isinstance(member, bytes) else str(member)
        queue = text.split("\n", 1)[0].split("\x06\x16", 1)[0]
        counts[queue] = counts.get(queue, 0) + 1
    return counts
