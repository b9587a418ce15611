"""The redis-py client worker_app's own structures use (queue stats, later the DLQ and jobs)."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

import redis
from redis.sentinel import Sentinel

from worker_app.config import Settings, get_settings, sentinel_master

# Fail fast instead of blocking forever on a half-open connection (celery #2906). A worker's
# blocking wait lasts at most 1 s on the server, so 10 s of silence means the connection is
# gone. Shared with the broker connection (worker_app.celery).
SOCKET_TIMEOUT = 10.0
SOCKET_CONNECT_TIMEOUT = 5.0
HEALTH_CHECK_INTERVAL = 25


def connect(settings: Settings) -> redis.Redis:
    """A client for ``settings.redis_url`` with the same timeouts as the broker connection."""
    url = settings.redis_url
    options = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
        "socket_keepalive": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
    }
    if not url.startswith("sentinel://"):
        return redis.Redis.from_url(url, **options)
    parts = [urlsplit(part) for part in url.split(";")]
    nodes = [(part.hostname or "localhost", part.port or 26379) for part in parts]
    db = int(parts[-1].path.strip("/") or 0)
    # redis-py's sentinel module has no annotations.
    sentinel = Sentinel(nodes, sentinel_kwargs={"password": parts[0].password}, **options)  # type: ignore[no-untyped-call]
    master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        sentinel_master(url) or "", db=db, password=parts[0].password
    )
    return master


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    """This process's client (its pool reconnects by itself after a fork)."""
    return connect(get_settings())
