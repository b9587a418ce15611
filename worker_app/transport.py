"""kombu's Redis transport with two additions: an item on a queue list that is not a kombu
message envelope is dead-lettered as raw bytes instead of crashing the worker, and every message
recovered from a lost worker (its lease expired) is logged."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps as kombu_dumps

from worker_app import delays, keys
from worker_app.poison import dead_letter, raw_entry

logger = logging.getLogger(__name__)

# The in-memory bookkeeping of kombu's QoS, below its Redis layer.
virtual_qos_append = virtual.QoS.append
virtual_qos_ack = virtual.QoS.ack


class MalformedEnvelope(ValueError):
    """The queue item is JSON but not a kombu message envelope."""


def _envelope(item: bytes) -> dict[str, Any]:
    payload: Any = json.loads(bytes_to_str(item))
    properties = payload.get("properties") if isinstance(payload, dict) else None
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_info"), dict):
        raise MalformedEnvelope("not a kombu message envelope (no properties.delivery_info)")
    if "delivery_tag" not in properties:
        raise MalformedEnvelope("not a kombu message envelope (no properties.delivery_tag)")
    envelope: dict[str, Any] = payload
    return envelope


class GuardedChannelMixin:
    """Reads the BRPOP reply like kombu, checking the envelope before delivering it; parks
    messages due later in Redis instead of the queue; reuses one client object."""

    _sync_client: Any = None

    @contextmanager
    def conn_or_acquire(self: Any, client: Any = None) -> Iterator[Any]:
        # kombu builds a new redis-py client (a ~170-entry callback table) for every command
        # it sends outside BRPOP: twice per message. One client over the same connection pool
        # does the same job; a new pool (after a reconnect) gets a new client.
        if client:
            yield client
            return
        cached = self._sync_client
        if cached is None or cached.connection_pool is not self.pool:
            cached = self._sync_client = self._create_client()
        yield cached

    def _put(self: Any, queue: str, message: dict[str, Any], **kwargs: Any) -> Any:
        due = delays.due_at(message)
        if due is not None and due - time.time() > keys.PARK_AHEAD:
            list_key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
            with self.conn_or_acquire() as client:
                delays.park(client, list_key, message, due)
            return None
        return super()._put(queue, message, **kwargs)  # type: ignore[misc]

    def _brpop_read(self: Any, **options: Any) -> bool:
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not reply:
                raise Empty()
            dest, item = reply
            queue = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            try:
                payload = _envelope(item)
            except ValueError as exc:  # JSONDecodeError and MalformedEnvelope
                dead_letter(raw_entry(item, queue, exc))
                return True
            self.connection._deliver(payload, queue)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()


# KEYS: unacked index, unacked hash. ARGV: now, delivery tag, the message as kombu stores it.
_HOLD = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
"""
# KEYS: unacked index, unacked hash. ARGV: delivery tag.
_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
"""


class QoS(kombu_redis.QoS):
    """kombu's acks for Redis, each one script call instead of a MULTI pipeline (one command
    fewer, and no pipeline object per message); logs each message the periodic sweep puts back
    because its lease expired."""

    _sweeping = False
    _scripts: tuple[Any, Any] | None = None

    def _hold_release(self, client: Any) -> tuple[Any, Any]:
        if self._scripts is None:
            self._scripts = (client.register_script(_HOLD), client.register_script(_RELEASE))
        return self._scripts

    def append(self, message: Any, delivery_tag: Any) -> None:
        delivery = message.delivery_info
        raw = kombu_dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        with self.channel.conn_or_acquire() as client:  # type: ignore[attr-defined]
            hold, _ = self._hold_release(client)
            hold(
                keys=[self.unacked_index_key, self.unacked_key],
                args=[time.time(), delivery_tag, raw],
                client=client,
            )
        virtual_qos_append(self, message, delivery_tag)

    def ack(self, delivery_tag: Any) -> None:
        with self.channel.conn_or_acquire() as client:  # type: ignore[attr-defined]
            _, release = self._hold_release(client)
            release(
                keys=[self.unacked_index_key, self.unacked_key], args=[delivery_tag], client=client
            )
        virtual_qos_ack(self, delivery_tag)

    def restore_visible(self, *args: Any, **kwargs: Any) -> Any:
        self._sweeping = True
        try:
            return super().restore_visible(*args, **kwargs)
        finally:
            self._sweeping = False

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> Any:
        if self._sweeping:
            self._log_recovery(tag, client)
        return super().restore_by_tag(tag, client, leftmost)

    def _log_recovery(self, tag: Any, client: Any) -> None:
        try:
            with self.channel.conn_or_acquire(client) as conn:  # type: ignore[attr-defined]
                raw = conn.hget(self.unacked_key, tag)
            message, _exchange, queue = json.loads(bytes_to_str(raw)) if raw else ({}, "", "")
            headers = message.get("headers") or {}
        except (ValueError, TypeError, AttributeError):
            headers, queue = {}, "?"
        logger.warning(
            "recovered %s[%s] from a lost worker (its lease expired): back on %s",
            headers.get("task", "?"),
            headers.get("id", tag),
            queue,
        )


class Channel(GuardedChannelMixin, kombu_redis.Channel):
    """The Redis channel, guarded."""

    QoS = QoS


class SentinelChannel(GuardedChannelMixin, kombu_redis.SentinelChannel):
    """The Sentinel channel, guarded."""

    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
