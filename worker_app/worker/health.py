"""Worker liveness: a heartbeat in Redis, and the check ``worker-app health`` runs against it.

The heartbeat also says when the worker's lease renewer last succeeded: a worker that beats
but no longer renews its leases lets other workers take its long tasks, so it is unhealthy too.
The check reads one key with redis-py; it builds no Celery app and broadcasts nothing, so a
Docker or Kubernetes probe can run it every few seconds.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Beat:
    """One worker's heartbeat as read back from Redis."""

    #: Unix time the worker wrote it.
    at: float
    #: Unix time of the lease renewer's last successful round (None: not reported, as by a
    #: worker of an earlier version, which wrote the bare time).
    leases_renewed_at: float | None = None
    #: The worker's own ASYNQ_VISIBILITY_TIMEOUT, in seconds.
    visibility_timeout: float | None = None

    def encode(self) -> str:
        """The value stored under the worker's heartbeat key."""
        value: dict[str, float] = {"at": round(self.at, 3)}
        if self.leases_renewed_at is not None:
            value["leases_renewed_at"] = round(self.leases_renewed_at, 3)
        if self.visibility_timeout is not None:
            value["visibility_timeout"] = self.visibility_timeout
        return json.dumps(value, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: bytes | str) -> Beat:
        """Read a stored heartbeat: a JSON object, or a bare Unix time (earlier versions).

        Raises:
            ValueError: the value is neither.
        """
        text = raw.decode() if isinstance(raw, bytes) else raw
        if not text.lstrip().startswith("{"):
            return cls(float(text))
        value = json.loads(text)
        renewed, timeout = value.get("leases_renewed_at"), value.get("visibility_timeout")
        return cls(
            float(value["at"]),
            None if renewed is None else float(renewed),
            None if timeout is None else float(timeout),
        )


def beat(
    node: str,
    interval: float,
    leases_renewed_at: float | None = None,
    visibility_timeout: float | None = None,
) -> None:
    """Record that ``node`` is alive now, and when its lease renewer last succeeded."""
    value = Beat(time.time(), leases_renewed_at, visibility_timeout).encode()
    get_redis().set(keys.HEARTBEAT + node, value, ex=int(interval * 3) + 1)


def check(node: str | None = None) -> tuple[bool, str]:
    """Whether the worker ``node`` (any worker when None) is healthy, and why.

    Healthy means a fresh heartbeat, and leases renewed within one visibility timeout as of
    that heartbeat: a worker that beats but no longer renews lets other workers take its
    long tasks.
    """
    settings = get_settings()
    limit = settings.health_check_interval.total_seconds() * STALE_AFTER_INTERVALS
    client = get_redis()
    try:
        if node is None:
            names = [
                k.decode() if isinstance(k, bytes) else str(k)
                for k in client.scan_iter(f"{keys.HEARTBEAT}*", count=500)
            ]
            values = client.mget(names) if names else []
            raw = {n.removeprefix(keys.HEARTBEAT): v for n, v in zip(names, values, strict=True)}
        else:
            raw = {node: client.get(keys.HEARTBEAT + node)}
    except redis.RedisError as exc:
        return False, f"unhealthy: Redis is unreachable ({exc})"
    beats = {name: value for name, value in raw.items() if value is not None}
    if not beats:
        who = node or "any worker"
        return False, f"unhealthy: no heartbeat from {who} (not running, or never reached Redis)"
    now = time.time()
    timeout = settings.visibility_timeout.total_seconds()
    verdicts = [_verdict(name, value, now, limit, timeout) for name, value in beats.items()]
    # A healthy worker before an unhealthy one, then the freshest beat first.
    ok, _, message = min(verdicts, key=lambda verdict: (not verdict[0], verdict[1]))
    return ok, message


def _verdict(
    name: str, raw: bytes | str, now: float, limit: float, default_timeout: float
) -> tuple[bool, float, str]:
    """Whether one worker is healthy by its heartbeat, the beat's age, and the line saying so."""
    try:
        one = Beat.decode(raw)
    except (ValueError, KeyError, TypeError):
        return False, math.inf, f"unhealthy: the heartbeat of {name} is unreadable ({raw!r})"
    age = now - one.at
    if age > limit:
        return (
            False,
            age,
            f"unhealthy: last heartbeat of {name} is {age:.1f}s old (limit {limit:.0f}s)",
        )
    if one.leases_renewed_at is None:
        return True, age, f"ok: {name} beat {age:.1f}s ago"
    timeout = one.visibility_timeout or default_timeout
    renewed = now - one.leases_renewed_at
    # Judged as of the beat: the renewer may have succeeded since the worker wrote it.
    if one.at - one.leases_renewed_at > timeout:
        return (
            False,
            age,
            f"unhealthy: {name}: leases not renewed for {renewed:.0f}s "
            f"(visibility timeout {timeout:g}s)",
        )
    return True, age, f"ok: {name} beat {age:.1f}s ago, leases renewed {renewed:.1f}s ago"


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
