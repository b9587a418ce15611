"""kombu's QoS for the Redis channel, bound to the product's protocol.

- A message the fetch script delivered is held already: ``append`` only records it in memory.
- An ack is carried by the next fetch (see :mod:`.fetch`), or released at once when none comes.
- Giving a message back (``reject`` with requeue, a stopping worker's ``restore_unacked``) runs
  ``restore.lua``: the message goes back on its list and its job waits again, in one step.
- ``restore_visible`` does nothing: only a worker sweeps expired leases (:mod:`.sweep`), so a
  process that merely reads replies (``celery inspect``, Flower) never restores anything.
- A connection lost while tasks run does not give their messages back: they stay held (their
  leases renewed, :data:`CARRIED`) and are acked through any connection when the tasks end, so a
  Redis blip (a ``BUSY`` reply, a failover) re-runs no job that was running. Only a stopping
  worker gives everything back.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.asynchronous import get_event_loop
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.json import dumps as kombu_dumps
from redis.exceptions import ResponseError

from worker_app import keys
from worker_app.broker.fetch import START_HOLD
from worker_app.broker.sweep import restore, server_time

logger = logging.getLogger(__name__)

# The in-memory bookkeeping of kombu's QoS, below its Redis layer.
_virtual_append = virtual.QoS.append
_virtual_ack = virtual.QoS.ack

#: Seconds between tries to release an ack of a closed channel while Redis refuses.
RELEASE_RETRY = 1.0
#: Messages of started tasks still held after their channel closed (a lost connection), by
#: delivery tag: the worker renews their leases and their acks release them.
CARRIED: dict[str, Any] = {}


class QoS(kombu_redis.QoS):
    """Holds, acks and gives back messages by the product's scripts."""

    def __init__(self, channel: Any, prefetch_count: int = 0) -> None:
        super().__init__(channel, prefetch_count)
        #: Delivery tags whose tasks a pool process started.
        self.started_tags: set[str] = set()

    def append(self, message: Any, delivery_tag: Any) -> None:
        channel: Any = self.channel
        if not channel.delivering_held:
            # Taken by a basic_get of a consumer with acks: held as the fetch script would.
            delivery = message.delivery_info
            value = kombu_dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
            with channel.conn_or_acquire() as client:
                lease = server_time(client)  # leases are scored by the server's clock
                pipe = client.pipeline()
                pipe.zadd(keys.HELD_INDEX, {delivery_tag: lease})
                pipe.hset(keys.HELD, delivery_tag, value)
                pipe.execute()
        _virtual_append(self, message, delivery_tag)

    def ack(self, delivery_tag: Any) -> None:
        channel: Any = self.channel
        ack = self._ack_of(delivery_tag, "ended")
        _virtual_ack(self, delivery_tag)
        if channel.closed or not channel.ack_later():  # released now, in a call of its own
            self._release_now(ack)
            return
        channel.add_ack(ack)
        if not self.can_consume():  # no fetch will come to carry it
            self._flush_acks()

    def started(self, delivery_tag: Any, job_id: str) -> None:
        """A pool process started the task of ``delivery_tag``: marked in Redis with the next
        fetch, or at once when none is coming soon (a lost worker's lease recovered for a
        started task then counts a death of its job)."""
        channel: Any = self.channel
        self.started_tags.add(str(delivery_tag))
        mark = (str(delivery_tag), job_id, "started")
        # Started during its own delivery (a pool that runs it in this thread): no fetch comes
        # before it ends.
        if channel.ack_later() and not channel.delivering_held:
            channel.add_ack(mark)
            if not self.can_consume():
                # Full: the ack of the job whose process this one took usually comes within
                # the same turn and lets a fetch carry both; if none has soon, sent on its own.
                loop = get_event_loop()
                if loop is None:
                    self._flush_acks()
                else:
                    loop.call_later(START_HOLD, self._flush_if_pending, mark)
            return
        self._release_now(mark)

    def _flush_if_pending(self, mark: tuple[str, str, str]) -> None:
        channel: Any = self.channel
        if mark in channel.pending_acks:  # no fetch carried it meanwhile
            self._flush_acks()

    def _forget(self, delivery_tag: Any) -> None:
        """The delivery ended here: no longer started, nor carried across a reconnect."""
        self.started_tags.discard(str(delivery_tag))
        CARRIED.pop(str(delivery_tag), None)

    def _message_of(self, delivery_tag: Any) -> Any:
        message = (self._delivered or {}).get(delivery_tag)
        return message if message is not None else CARRIED.get(str(delivery_tag))

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if requeue:
            # A message whose pool process died running it says so (``died``): a death.
            message = self._message_of(delivery_tag)
            why = "died" if getattr(message, "died", False) else "back"
            with self.channel.conn_or_acquire() as conn:  # type: ignore[attr-defined]
                restore(conn, [str(delivery_tag)], head=True, why=why)
            _virtual_ack(self, delivery_tag)
            self._forget(delivery_tag)
        else:
            ack = self._ack_of(delivery_tag, "ended")
            _virtual_ack(self, delivery_tag)
            self._release_now(ack)

    def _ack_of(self, delivery_tag: Any, otherwise: str) -> tuple[str, str, str]:
        """The ack of a delivery: 'succeeded' when its task said so, else ``otherwise``."""
        message = self._message_of(delivery_tag)
        self._forget(delivery_tag)
        succeeded = getattr(message, "job_succeeded", "")
        if succeeded:
            return str(delivery_tag), str(succeeded), "succeeded"
        headers = getattr(message, "headers", None) or {}
        job_id = headers.get("id") if isinstance(headers, dict) else None
        if not isinstance(job_id, str):
            return str(delivery_tag), "", ""
        return str(delivery_tag), job_id, otherwise

    def _release_now(self, ack: tuple[str, str, str]) -> None:
        channel: Any = self.channel
        try:
            channel.release([ack])
        except Exception as exc:  # noqa: BLE001 - the next fetch carries it
            loop = get_event_loop() if channel.closed else None
            if loop is None:
                logger.warning("ack of %s deferred to the next fetch: %s", ack[0], exc)
                channel.add_ack(ack)
                return
            # No fetch comes on a closed channel: tried again every second until Redis takes it.
            logger.warning("ack of %s not released yet, trying again in 1s: %s", ack[0], exc)
            loop.call_later(RELEASE_RETRY, self._release_now, ack)

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> Any:
        with self.channel.conn_or_acquire(client) as conn:  # type: ignore[attr-defined]
            restore(conn, [str(tag)], head=leftmost)

    def restore_unacked(self, client: Any = None) -> Any:
        # Acked deliveries are released first; the rest go back on their lists in one call.
        self._flush_acks()
        delivered: dict[Any, Any] = self._delivered or {}
        started = self.started_tags
        if started and not _stopping():
            # A lost connection: running tasks keep their messages (see CARRIED).
            for tag in [tag for tag in delivered if str(tag) in started]:
                CARRIED[str(tag)] = delivered.pop(tag)
            if CARRIED:
                logger.info(
                    "%d running job(s) keep their messages across the reconnect", len(CARRIED)
                )
        tags = [str(tag) for tag in delivered]
        if tags:
            with self.channel.conn_or_acquire(client) as conn:  # type: ignore[attr-defined]
                restore(conn, tags, head=False)
        delivered.clear()

    def restore_unacked_once(self, stderr: Any = None) -> Any:
        # On close (and at exit): kombu calls restore_unacked only when some delivery is left.
        self._flush_acks()
        return super().restore_unacked_once(stderr)

    def _flush_acks(self) -> None:
        channel: Any = self.channel
        try:
            channel.flush_acks()
        except (*channel.connection_errors, ResponseError) as exc:
            # Kept pending for the next fetch or flush; if none comes (the worker stops), their
            # leases lapse and the sweep puts them back: they may run once more.
            logger.warning(
                "%d acks not released yet: Redis refused (%s)", len(channel.pending_acks), exc
            )

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """Nothing: expired leases are swept by workers only (worker_app.broker.sweep)."""


def _stopping() -> bool:
    """Whether this worker is stopping (else a channel closes because its connection was lost)."""
    # Imported when a channel closes: producers load this module too, and celery.worker brings
    # the whole worker with it.
    from celery.worker import state

    return state.should_stop is not None or state.should_terminate is not None
