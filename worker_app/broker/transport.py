"""The binding to kombu's Redis transport: what kombu's channel does, routed to the protocol.

Every kombu member overridden here, in :mod:`.fetch` and in :mod:`.qos` is listed with its
reason in ``docs/protocol.md`` ("kombu members overridden"), with the private ones only read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps as kombu_dumps
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from worker_app import keys
from worker_app.broker import envelope, publish
from worker_app.broker.fetch import FetchingChannel
from worker_app.broker.qos import QoS
from worker_app.broker.registry import now_iso, retention, script
from worker_app.config import get_settings
from worker_app.redis_client import MASTER_WATCH, get_redis

#: Most messages one purge call removes.
PURGE_BATCH = 500


@cache
def job_queues() -> frozenset[str]:
    """The configured queues: messages published to them are jobs, with records."""
    return frozenset(get_settings().queue_names)


class ProtocolChannel(FetchingChannel):
    """Publishes, fetches, purges and holds by the product's scripts; reuses one client."""

    _sync_client: Any = None

    def _put(self: Any, queue: str, message: dict[str, Any], **kwargs: Any) -> Any:
        kwargs.pop("_publish_batch", None)  # each publish is one call of its own
        if queue not in job_queues():
            return super()._put(queue, message, **kwargs)  # type: ignore[misc]
        now = time.time()
        headers = message.get("headers")
        if isinstance(headers, dict) and headers.get("task"):
            headers[keys.PUBLISHED_AT] = now  # the message carries it: queue age, wait time
        list_key = envelope.list_key(queue, envelope.priority_of(message))
        with self.conn_or_acquire() as client:
            publish.publish(
                client,
                list_key,
                kombu_dumps(message),
                due=publish.due_at(headers if isinstance(headers, dict) else None),
                record=publish.record_of_envelope(message, queue),
                now=now,
            )
        return None

    def basic_get(self: Any, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        if no_ack or queue not in job_queues():
            return super().basic_get(queue, no_ack, **kwargs)  # type: ignore[misc]
        # Taken and held in one step, as the worker's fetch does.
        reply = self.call_fetch([queue], 1, [])
        if len(reply) < 4:
            return None
        verdict, item = reply[2], reply[3]
        if verdict not in (b"held", "held", b"poison", "poison"):  # a consumer, not a worker
            return None
        message = self.Message(envelope.parse(item), channel=self)
        self.delivering_held = True
        try:
            self.qos.append(message, message.delivery_tag)
        finally:
            self.delivering_held = False
        return message

    def _receive_one(self: Any, c: Any) -> Any:
        try:
            return super()._receive_one(c)  # type: ignore[misc]
        except ResponseError as exc:
            # BUSY, LOADING, READONLY... answered to a (re)subscription of the broadcast
            # channel (remote control): the subscription did not happen. As a lost connection,
            # so the worker reconnects and subscribes again instead of stopping.
            self._in_listen = None
            raise RedisConnectionError(f"subscription refused by Redis: {exc}") from exc

    def _purge(self: Any, queue: str) -> int:
        """Remove ``queue``'s waiting and parked messages and cancel their jobs."""
        with self.conn_or_acquire() as client:
            return sum(purge(client, queue))

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        # kombu builds a new redis-py client (a ~170-entry callback table) for every command
        # it sends outside the polling connection: twice per message. One client over the same
        # connection pool does the same job; a new pool (after a reconnect) gets a new client.
        if client:
            yield client
            return
        this: Any = self
        if this.connection is None or this.connection.client is None or this._closing:
            # Closed by a failed publish that kombu's retry policy sends again on this same
            # channel (it has no pool any more), or closing (the acks it still holds are
            # released on the way out, and kombu would build a pool from a connection that may
            # be gone): the app's own client to the same Redis.
            yield get_redis()
            return
        cached = this._sync_client
        if cached is None or cached.connection_pool is not this.pool:
            cached = this._sync_client = this._create_client()
        yield cached


def purge(client: Any, queue: str, reason: str = "purged") -> tuple[int, int]:
    """Remove ``queue``'s waiting and parked messages; their jobs end ``cancelled`` with
    ``reason``. Returns how many waiting and how many parked messages were removed."""
    now = time.time()
    stamp = [now, now_iso(now), retention(), reason]
    waiting = 0
    for list_key in envelope.lists_of(queue):
        while True:
            count = int(script("purge")(client, [list_key], ["list", *stamp, PURGE_BATCH]))
            waiting += count
            if count < PURGE_BATCH:
                break
    members = [
        member
        for member, _ in client.zscan_iter(keys.DELAYED, count=1000)
        if publish.parked_queue(member.decode() if isinstance(member, bytes) else member) == queue
    ]
    parked = 0
    for start in range(0, len(members), PURGE_BATCH):
        chunk = members[start : start + PURGE_BATCH]
        parked += int(script("purge")(client, [queue], ["parked", *stamp, *chunk]))
    return waiting, parked


class Channel(ProtocolChannel, kombu_redis.Channel):
    """The Redis channel."""

    QoS = QoS


class SentinelChannel(ProtocolChannel, kombu_redis.SentinelChannel):
    """The Sentinel channel."""

    QoS = QoS

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        # Watched: a consumer's connection made before a failover would stay on the old
        # master, still up and taking writes it later drops (worker_app.redis_client).
        pool = super()._sentinel_managed_pool(asynchronous)  # type: ignore[misc]
        MASTER_WATCH.add(pool)
        return pool


class QuietTickMixin:
    """kombu re-adds every Redis socket to the event loop on every tick (a failing epoll_ctl
    and a Python exception each, several per job); this adds a socket once, and again only
    when it is a new socket object (after a reconnect)."""

    cycle: Any
    on_readable: Any

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        before = set(loop.on_tick)
        super().register_with_event_loop(connection, loop)  # type: ignore[misc]
        added = [tick for tick in loop.on_tick if tick not in before]
        if len(added) != 1:  # not the shape this knows: keep kombu's own tick
            return
        cycle, on_readable, readers = self.cycle, self.on_readable, loop.readers
        added_sockets: dict[int, Any] = {}

        def on_poll_start() -> None:
            cycle.on_poll_start()
            fds = cycle.fds
            if not fds:
                return
            sockets = {sock.fileno(): sock for sock in cycle._chan_to_sock.values() if sock}
            for fd in fds:
                sock = sockets.get(fd)
                if sock is None or added_sockets.get(fd) is not sock or fd not in readers:
                    loop.add_reader(fd, on_readable, fd)
                    added_sockets[fd] = sock

        loop.on_tick.discard(added[0])
        loop.on_tick.add(on_poll_start)


class Transport(QuietTickMixin, kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(QuietTickMixin, kombu_redis.SentinelTransport):
    Channel = SentinelChannel
