"""The redis-py client worker_app's own structures use (queue stats, later the DLQ and jobs)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.exceptions import RedisError
from redis.sentinel import Sentinel

from worker_app.config import Settings, get_settings, sentinel_master, sentinel_tls

# Fail fast instead of blocking forever on a half-open connection (celery #2906). A worker's
# blocking wait lasts at most 1 s on the server, so 10 s of silence means the connection is
# gone. Shared with the broker connection (worker_app.celery).
SOCKET_TIMEOUT = 10.0
SOCKET_CONNECT_TIMEOUT = 5.0
HEALTH_CHECK_INTERVAL = 25


logger = logging.getLogger(__name__)

#: Seconds a start-up check waits for each Sentinel to answer.
SENTINEL_CHECK_TIMEOUT = 2.0
#: Seconds between two questions to the sentinels about the master (:class:`MasterWatch`).
MASTER_WATCH_EVERY = 0.5


class MasterWatch:
    """Keep a process's Sentinel-managed connections on the current master.

    After a failover the old master, if still up (a planned ``SENTINEL FAILOVER``, a network
    split), keeps taking writes until Sentinel turns it into a replica, up to ten seconds later,
    and then drops them. redis-py asks the sentinels only when a connection is made, so
    connections made before stay on the old master. Twice a second, a thread of the process
    asks the sentinels for the master of each pool registered here; when they name another
    server it ends every connection of that pool, in use or idle, and the next command
    connects to the new master (an in-flight one fails and is retried as after a lost
    connection; a worker's consumer reconnects).
    """

    def __init__(self) -> None:
        self._pools: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._pid = 0

    def add(self, pool: Any) -> None:
        """Watch ``pool`` (a redis-py ``SentinelConnectionPool`` of a master)."""
        with self._lock:
            self._pools.add(pool)
            self._start()

    def _start(self) -> None:
        if self._pid != os.getpid():  # none yet in this process
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="master-watch", daemon=True).start()

    def after_fork(self) -> None:
        """In a forked process (a pool process, a web worker): a thread of its own for the
        pools it inherited (the parent's thread is not copied; its lock may have been held)."""
        self._lock = threading.Lock()
        self._pid = 0
        if len(self._pools):
            self._start()

    def _run(self) -> None:
        while True:
            time.sleep(MASTER_WATCH_EVERY)
            self.check()

    def check(self) -> int:
        """One round; returns how many pools were moved to a new master."""
        with self._lock:
            pools = list(self._pools)
        moved = 0
        told: set[tuple[Any, Any]] = set()
        for pool in pools:
            before = pool.master_address
            try:
                after = pool.get_master_address()  # also drops its idle connections if moved
            except RedisError:
                continue  # no sentinel answers: the connections' own errors tell
            if before is not None and after != before:
                if (before, after) not in told:
                    told.add((before, after))
                    logger.warning(
                        "the Sentinel master moved from %s:%s to %s:%s: reconnecting",
                        *before,
                        *after,
                    )
                _cut_in_use(pool, after)
                moved += 1
        return moved


MASTER_WATCH = MasterWatch()
os.register_at_fork(after_in_child=MASTER_WATCH.after_fork)


def _cut_in_use(pool: Any, master: Any) -> None:
    """Shut down (not close) the sockets of ``pool``'s connections in use that reach another
    server than ``master``: a command waiting on one fails as on a lost connection, and an
    event loop polling one sees it end (a socket closed under it would vanish from the poll
    without a word). The plain socket's shutdown, also under TLS (the TLS object's own would
    unwrap it under the thread reading it)."""
    for connection in list(getattr(pool, "_in_use_connections", ())):
        sock = getattr(connection, "_sock", None)
        if sock is None or (connection.host, connection.port) == tuple(master):
            continue
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def sentinel_nodes(url: str) -> list[tuple[str, int]]:
    """The (host, port) of every Sentinel a ``sentinel://`` URL names."""
    parts = [urlsplit(part) for part in url.split(";")]
    return [(part.hostname or "localhost", part.port or 26379) for part in parts]


def sentinel_kwargs(url: str) -> dict[str, Any]:
    """How a process talks to the sentinels themselves (redis-py's ``sentinel_kwargs``): short
    timeouts, as they are asked small questions often (:class:`MasterWatch`, a publish no
    replica confirmed), keepalive, and TLS when the URL asks for it."""
    return {
        "socket_timeout": SENTINEL_CHECK_TIMEOUT,
        "socket_connect_timeout": SENTINEL_CHECK_TIMEOUT,
        "socket_keepalive": True,
        **sentinel_tls(url),
    }


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
    tls = sentinel_tls(url)
    answered = []
    for host, port in nodes:
        client = redis.Redis(
            host=host,
            port=port,
            password=password,
            socket_timeout=SENTINEL_CHECK_TIMEOUT,
            socket_connect_timeout=SENTINEL_CHECK_TIMEOUT,
            **tls,
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
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        nodes,
        sentinel_kwargs={"password": parts[0].password, **sentinel_kwargs(url)},
        **options,
        **sentinel_tls(url),
    )
    master: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        sentinel_master(url) or "", db=db, password=parts[0].password
    )
    MASTER_WATCH.add(master.connection_pool)
    return master


@lru_cache(maxsize=1)
def get_redis() -> redis.Redis:
    """This process's client (its pool reconnects by itself after a fork)."""
    return connect(get_settings())
