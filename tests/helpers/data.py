"""What the tests look for in a Redis the suite runs."""

from __future__ import annotations

import redis

#: The broker's keys: the queues and kombu's index of held messages.
BROKER_KEYS = ("critical", "default", "low", "unacked", "unacked_index")


def written(client: redis.Redis) -> list[str]:
    """Keys holding jobs, records or messages (kombu's queue bindings are no job data)."""
    return [str(key) for key in client.keys("*") if not str(key).startswith("_kombu.")]
