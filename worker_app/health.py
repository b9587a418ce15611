"""Worker liveness: a heartbeat in Redis, and the check ``worker-app health`` runs against it.

The check reads one key with redis-py; it builds no Celery app and broadcasts nothing, so a
Docker or Kubernetes probe can run it every few seconds.
"""

from __future__ import annotations

import logging
import socket
import time

import redis

from worker_app import keys
from worker_app.config import get_settings
from worker_app.redis_client import get_redis

logger = logging.getLogger(__name__)

#: A heartbeat older than this many intervals means the worker is gone or stuck.
STALE_AFTER_INTERVALS = 2


def default_node() -> str:
    """The node name a worker on this host has unless ``-n`` says otherwise."""
    return f"celery@{socket.gethostname()}"


def beat(node: str, interval: float) -> None:
    """Record that ``node`` is alive now."""
    get_redis().set(keys.HEARTBEAT + node, f"{time.time():.3f}", ex=int(interval * 3) + 1)


def check(node: str | None = None) -> tuple[bool, str]:
    """Whether the worker ``node`` (any worker when None) has a fresh heartbeat, and why."""
    interval = get_settings().asynq_health_check_interval.total_seconds()
    limit = interval * STALE_AFTER_INTERVALS
    client = get_redis()
    try:
        if node is None:
            names = [
                k.decode() if isinstance(k, bytes) else str(k)
                for k in client.scan_iter(f"{keys.HEARTBEAT}*", count=500)
            ]
            values = client.mget(names) if names else []
            beats = {n.removeprefix(keys.HEARTBEAT): v for n, v in zip(names, values, strict=True)}
        else:
            beats = {node: client.get(keys.HEARTBEAT + node)}
    except redis.RedisError as exc:
        return False, f"unhealthy: Redis is unreachable ({exc})"
    fresh = {n: time.time() - float(v) for n, v in beats.items() if v is not None}
    if not fresh:
        who = node or "any worker"
        return False, f"unhealthy: no heartbeat from {who} (not running, or never reached Redis)"
    name, age = min(fresh.items(), key=lambda item: item[1])
    if age > limit:
        return False, f"unhealthy: last heartbeat of {name} is {age:.1f}s old (limit {limit:.0f}s)"
    return True, f"ok: {name} beat {age:.1f}s ago"


def check_scheduler() -> tuple[bool, str]:
    """Whether some beat process holds the scheduler lock (periodic jobs are being sent)."""
    try:
        ttl_ms = get_redis().pttl(keys.BEAT_LOCK)
    except redis.RedisError as exc:
        return False, f"unhealthy: Redis is unreachable ({exc})"
    if ttl_ms is None or ttl_ms < 0:
        return False, "unhealthy: no scheduler holds the lock (no beat running, or none active)"
    renewed = keys.BEAT_LOCK_TTL - ttl_ms / 1000
    return True, f"ok: a scheduler holds the lock, renewed {max(0.0, renewed):.1f}s ago"
