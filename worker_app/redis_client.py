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


#: Seconds a start-up check waits for each Sentinel to answer.
SENTINEL_CHECK_TIMEOUT = 2.0


def sentinel_nodes(url: str) -> list[tuple[str, int]]:
    """The (host, port) of every Sentinel a ``sentinel://`` URL names."""
    parts = [urlsplit(part) for part in url.split(";")]
    return [(part.hostname or "localhost", part.port or 26379) for part in parts]


def check_sentinel(settings: Settings) -> None:
    """Stop a process at start, with one line, when ``REDIS_URL`` names Sentinels of which none
    answers, or which know no master by the URL's ``master_name``. Nothing for other URLs.

    Raises:
        SystemExit: with that line.
    """
    url = settings.redis_url
    if not url.startswith("sentinel://"):
        return
    nodes = sentinel_nodes(url)
    password = urlsplit(url.split(";")[0]).password
    name = sentinel_master(url) or ""
    answered = []
    for host, port in nodes:
        client = redis.Redis(
            host=host,
            port=port,
            password=password,
            socket_timeout=SENTINEL_CHECK_TIMEOUT,
            socket_connect_timeout=SENTINEL_CHECK_TIMEOUT,
        )
        try:
            address = client.sentinel_get_master_addr_by_name(name)
        except redis.RedisError:
            continue
        finally:
            client.close()
        if address:
            return
        answered.append(f"{host}:{port}")
    where = ", ".join(f"{host}:{port}" for host, port in nodes)
    if not answered:
        raise SystemExit(f"error: REDIS_URL: no Sentinel answers at {where}")
    raise SystemExit(
        f"error: REDIS_URL: the Sentinels at {', '.join(answered)} know no master named "
        f"{name!r} (?master_name=); check the name they monitor (SENTINEL MASTERS)"
    )


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
    nodes = sentinel_nodes(url)
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
