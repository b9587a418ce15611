"""kombu's Redis transport, guarded and batched.

- An item on a queue list that is not a kombu message envelope is dead-lettered as raw bytes
  instead of crashing the worker, and every message recovered from a lost worker (its lease
  expired) is logged.
- While there is work, the worker fetches with one script call instead of BRPOP plus a hold:
  the call releases every delivery acked since the previous one, then pops as many messages as
  the worker has room for, in weighted queue order, and holds each (unacked index and hash) in
  the same atomic step, so no message is ever popped without being held. An idle worker blocks
  in BRPOP as kombu does; the first message after idle is held with one more call. Acks made
  while a fetch is in flight ride on the next one: a busy worker spends one round trip per
  fetch, none per ack.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from queue import Empty
from typing import Any

from kombu.asynchronous import get_event_loop
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps as kombu_dumps
from redis.exceptions import NoScriptError

from worker_app import delays, job_scripts, keys
from worker_app.config import get_settings
from worker_app.poison import dead_letter, raw_entry
from worker_app.redis_client import pack_command
from worker_app.stats import COUNTERS
from worker_app.waits import WAITS

logger = logging.getLogger(__name__)

# The in-memory bookkeeping of kombu's QoS, below its Redis layer.
virtual_qos_append = virtual.QoS.append
virtual_qos_ack = virtual.QoS.ack


class MalformedEnvelope(ValueError):
    """The queue item is JSON but not a kombu message envelope."""


def _envelope(item: bytes) -> dict[str, Any]:
    payload: Any = json.loads(item)
    properties = payload.get("properties") if isinstance(payload, dict) else None
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_info"), dict):
        raise MalformedEnvelope("not a kombu message envelope (no properties.delivery_info)")
    if "delivery_tag" not in properties:
        raise MalformedEnvelope("not a kombu message envelope (no properties.delivery_tag)")
    envelope: dict[str, Any] = payload
    return envelope


#: Slots a busy worker fetches for at once while a job still waits in it for a slot.
FETCH_BATCH = 2
#: Longest an ack waits in memory for the next fetch to carry it.
ACK_HOLD = 0.005
#: How often a worker that holds jobs, and so never blocks in BRPOP, looks for new ones.
BUSY_POLL = 0.025

_FETCH = job_scripts.FETCH
_FETCH_SHA = hashlib.sha1(_FETCH.encode()).hexdigest()


class GuardedChannelMixin:
    """Fetches with the worker's script while there is work and with BRPOP when idle,
    checking every envelope before delivering it; parks messages due later in Redis instead of
    the queue; reuses one client object."""

    _sync_client: Any = None
    #: The command in flight on the polling connection is the fetch script (else BRPOP).
    _fetching = False
    #: The last fetch found work: fetch again rather than block.
    _busy = False
    #: The fetch script is known to be loaded on the server.
    _fetch_loaded = False
    #: Messages being delivered were held by the fetch script already.
    _held = False
    _fetch_names: list[str]
    #: The thread of the event loop that fetches.
    _loop_thread: int | None = None
    #: When the oldest pending ack was made (monotonic), and whether a wake-up is scheduled.
    _acks_since = 0.0
    _wake_pending = False
    #: A fetch is due (a worker holding jobs polls instead of blocking), or scheduled.
    _poll_due = False
    _poll_timer = False
    _acks_in_flight: list[Ack]

    @property
    def pending_acks(self: Any) -> list[Ack]:
        """Deliveries acked in memory, to be released in Redis by the next fetch."""
        acks: list[Ack] | None = self.__dict__.get("_pending_acks")
        if acks is None:
            acks = self.__dict__["_pending_acks"] = []
        return acks

    def ack_later(self: Any) -> bool:
        """Whether an ack now can ride on the next fetch (a fetch is in flight or about to be
        sent), rather than needing a call of its own (a BRPOP may block for a second, and an
        ack from another thread than the event loop's is released at once)."""
        return (
            not self.global_keyprefix
            and bool(self.active_queues)  # still consuming: a fetch will come
            and not (self._in_poll and not self._fetching)
            and threading.get_ident() == self._loop_thread
        )

    def flush_acks(self: Any) -> None:
        """Release every pending ack in Redis now."""
        acks = self.pending_acks
        if acks:
            taken = list(acks)
            self.release(taken)
            del acks[: len(taken)]

    def release(self: Any, acks: list[Ack]) -> None:
        """Release ``acks`` in Redis now (ending the jobs that succeeded)."""
        self._call_fetch([], 0, acks, [])

    def _fetch_args(
        self: Any, names: list[str], slots: int, acks: list[Ack], given: list[tuple[int, bytes]]
    ) -> list[Any]:
        key = tuple(names)
        cached = self.__dict__.get("_fetch_head")
        if cached is None or cached[0] != key:
            head = [
                _FETCH_SHA,
                2 + len(names),
                self.qos.unacked_index_key,
                self.qos.unacked_key,
                *(self._q_for_pri(name, 0) for name in names),
                keys.PREFIX + ":",
            ]
            position = {name: index for index, name in enumerate(names, 1)}
            cached = self.__dict__["_fetch_head"] = (key, head, position)
        _, head, position = cached
        args = [*head, time.time(), len(names), slots, len(acks), WORKER_NAME, _retention()]
        args.append(len(given))
        consume = self._queue_cycle.consume
        for _ in range(slots):
            args += [position[name] for name in consume(len(names))]
        for ack in acks:
            args += ack
        for pair in given:
            args += pair
        return args

    def _can_wait(self: Any) -> bool:
        """Whether a fetch for one slot can wait for a second one (one call for two jobs): a
        job already waits in the worker for the slot, and no ack has waited ``ACK_HOLD``."""
        from celery.worker import state

        if len(state.reserved_requests) <= len(state.active_requests):
            return False  # nothing waits: a slot would idle
        if not self.pending_acks:
            return True
        if time.monotonic() - self._acks_since >= ACK_HOLD:
            return False
        loop = get_event_loop()
        if loop is not None and not self._wake_pending:
            # Wake the event loop when the oldest ack is due, even if nothing else happens.
            self._wake_pending = True
            loop.call_later(ACK_HOLD, self._wake)
        return True

    def _wake(self: Any) -> None:
        self._wake_pending = False

    @staticmethod
    def _holds_jobs() -> bool:
        from celery.worker import state

        return bool(len(state.reserved_requests))

    def _poll_later(self: Any) -> None:
        """Fetch again after ``BUSY_POLL`` (once the loop ticks), instead of blocking."""
        if self._poll_timer:
            return
        loop = get_event_loop()
        if loop is None:  # no event loop to wake it: look now
            self._poll_due = True
            return
        self._poll_timer = True
        loop.call_later(BUSY_POLL, self._poll_now)

    def _poll_now(self: Any) -> None:
        self._poll_timer = False
        self._poll_due = True

    def _load_fetch(self: Any, client: Any) -> None:
        if not self._fetch_loaded:
            client.script_load(_FETCH)
            self._fetch_loaded = True

    def _call_fetch(
        self: Any, names: list[str], slots: int, acks: list[Ack], given: list[tuple[int, bytes]]
    ) -> list[Any]:
        """The fetch script, called and answered at once (not on the polling connection)."""
        args = self._fetch_args(names, slots, acks, given)
        with self.conn_or_acquire() as client:
            self._load_fetch(client)
            try:
                reply: list[Any] = client.evalsha(*args)
            except NoScriptError:
                self._fetch_loaded = False
                self._load_fetch(client)
                reply = client.evalsha(*args)
        return reply

    def _brpop_start(self: Any, timeout: Any = None) -> None:
        self._loop_thread = threading.get_ident()
        due, self._poll_due = self._poll_due, False
        if self.global_keyprefix or not (self._busy or self.pending_acks or due):
            if not self.global_keyprefix and self._holds_jobs():
                # BRPOP pops before the worker holds what it popped: a worker killed with a
                # reply in flight, or with a reply paused while it has no room, would lose that
                # message. While it holds jobs, the worker looks with the fetch script instead.
                self._poll_later()
                return None
            self._fetching = False
            super()._brpop_start(timeout)  # type: ignore[misc]
            return None
        names = list(self.active_queues)
        if not names:
            return None
        if not self._fetch_loaded:
            with self.conn_or_acquire() as client:
                self._load_fetch(client)
        slots = self.qos.can_consume_max_estimate() or 1
        if slots < FETCH_BATCH and self._busy and self._can_wait():
            return None
        acks = self.pending_acks
        self._acks_in_flight = list(acks)
        acks.clear()
        args = self._fetch_args(names, slots, self._acks_in_flight, [])
        self._fetch_names = names
        self._in_poll = self.client.connection
        self._brpop_sent_at = time.monotonic()
        self._fetching = True
        self.client.connection.send_packed_command([pack_command("EVALSHA", *args)])
        return None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        # kombu builds a new redis-py client (a ~170-entry callback table) for every command
        # it sends outside BRPOP: twice per message. One client over the same connection pool
        # does the same job; a new pool (after a reconnect) gets a new client.
        if client:
            yield client
            return
        this: Any = self
        cached = this._sync_client
        if cached is None or cached.connection_pool is not this.pool:
            cached = this._sync_client = this._create_client()
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
        if self._fetching:
            return bool(self._fetch_read(**options))
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not reply:
                raise Empty()
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()
        dest, item = reply
        queue = bytes_to_str(dest).rsplit(self.sep, 1)[0]
        try:
            payload = _envelope(item)
        except ValueError as exc:  # JSONDecodeError and MalformedEnvelope
            self._busy = True  # there may be more: look with a fetch before blocking again
            dead_letter(raw_entry(item, queue, exc))
            return True
        # Popped by BRPOP: start its job and hold it (with any acks pending) in one call.
        acks = list(self.pending_acks)
        self.pending_acks.clear()
        try:
            reply = self._call_fetch([queue], 0, acks, [(1, item)])
        except BaseException:
            self.pending_acks[:0] = acks
            raise
        # Fetch in batches while the queues hold more; block in BRPOP again when they do not.
        self._busy = int(reply.pop()) > 0
        self._deliver_batch([queue], reply, {item: payload})
        return True

    def _fetch_read(self: Any, **options: Any) -> bool:
        acks, self._acks_in_flight = self._acks_in_flight, []
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "EVALSHA", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                self.pending_acks[:0] = acks
                raise
            except NoScriptError:
                # The server lost its scripts (a restart): the call did nothing at all.
                self.pending_acks[:0] = acks
                self._fetch_loaded = False
                raise Empty() from None
        finally:
            self._in_poll = None
            self._fetching = False
            self._flush_brpop_reauth()
        if not reply:
            self._busy = False
            raise Empty()
        self._deliver_batch(self._fetch_names, reply)
        return True

    def _deliver_batch(
        self: Any, names: list[str], reply: list[Any], decoded: dict[bytes, Any] | None = None
    ) -> None:
        """Deliver what the fetch script held; dead-letter what is no message; log the rest.
        ``decoded``: envelopes already parsed, by message."""
        errors: list[BaseException] = []
        for index in range(0, len(reply), 3):
            position, verdict, item = reply[index : index + 3]
            queue = names[int(position) - 1]
            verdict = bytes_to_str(verdict)
            try:
                payload = decoded[item] if decoded and item in decoded else _envelope(item)
            except ValueError as exc:  # JSONDecodeError and MalformedEnvelope
                if verdict == "held":  # held after all: release it with the next fetch
                    self.pending_acks.append((_tag_of(item), ""))
                dead_letter(raw_entry(item, queue, exc))
                continue
            if verdict != "held":
                _log_not_run(payload, verdict)
                continue
            headers = payload.get("headers") or {}
            if not headers.get("eta"):  # one with an ETA is counted when it starts
                WAITS.observe(queue, headers)
            self._held = True
            try:
                self.connection._deliver(payload, queue)
            except Exception as exc:  # deliver the rest of the batch; raise the first error
                errors.append(exc)
            finally:
                self._held = False
        if errors:
            raise errors[0]


#: A delivery to release: its tag, and the id of its job if it succeeded ('' otherwise).
Ack = tuple[str, str]

#: The name of the worker in this process (set by its consumer), written on the jobs it starts.
WORKER_NAME = ""


@cache
def _retention() -> int:
    return int(max(1, get_settings().asynq_retention.total_seconds()))


def _log_not_run(payload: dict[str, Any], verdict: str) -> None:
    headers = payload.get("headers") or {}
    what = f"{headers.get('task', '?')}[{headers.get('id', '?')}]"
    if verdict == "cancelled":
        COUNTERS.cancelled += 1
        logger.info("%s not run: the job was cancelled before it started", what)
    else:
        logger.info("%s duplicate delivery, not run", what)


def _tag_of(item: bytes) -> str:
    try:
        return str(json.loads(item)["properties"]["delivery_tag"])
    except (ValueError, TypeError, KeyError):
        return ""


# KEYS: unacked index, unacked hash. ARGV: now, delivery tag, the message as kombu stores it.
_HOLD = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
"""


class QoS(kombu_redis.QoS):
    """kombu's acks for Redis, each one script call instead of a MULTI pipeline (one command
    fewer, and no pipeline object per message); logs each message the periodic sweep puts back
    because its lease expired."""

    _sweeping = False
    _hold_script: Any = None

    def append(self, message: Any, delivery_tag: Any) -> None:
        if self.channel._held:  # type: ignore[attr-defined]
            virtual_qos_append(self, message, delivery_tag)
            return
        # Not through the fetch script (a basic_get): held as kombu does, no job started.
        delivery = message.delivery_info
        raw = kombu_dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        with self.channel.conn_or_acquire() as client:  # type: ignore[attr-defined]
            if self._hold_script is None:
                self._hold_script = client.register_script(_HOLD)
            hold = self._hold_script
            hold(
                keys=[self.unacked_index_key, self.unacked_key],
                args=[time.time(), delivery_tag, raw],
                client=client,
            )
        virtual_qos_append(self, message, delivery_tag)

    def ack(self, delivery_tag: Any) -> None:
        channel: Any = self.channel
        message = (self._delivered or {}).get(delivery_tag)
        ack = (str(delivery_tag), str(getattr(message, "job_succeeded", "") or ""))
        if not channel.ack_later():  # released now, in a call of its own
            channel.release([ack])
            virtual_qos_ack(self, delivery_tag)
            return
        if not channel.pending_acks:
            channel._acks_since = time.monotonic()
        channel.pending_acks.append(ack)
        virtual_qos_ack(self, delivery_tag)
        if not self.can_consume():  # no fetch will come to carry it
            channel.flush_acks()

    def restore_unacked(self, client: Any = None) -> Any:
        # Acked deliveries are released before the rest go back on their queues.
        self._flush_acks()
        return super().restore_unacked(client)

    def restore_unacked_once(self, stderr: Any = None) -> Any:
        # On close (and at exit): kombu calls restore_unacked only when some delivery is left.
        self._flush_acks()
        return super().restore_unacked_once(stderr)

    def _flush_acks(self) -> None:
        channel: Any = self.channel
        try:
            channel.flush_acks()
        except channel.connection_errors as exc:
            # Their leases lapse and the sweep puts them back: they may run once more.
            logger.warning(
                "%d acks not released: Redis unreachable (%s)", len(channel.pending_acks), exc
            )

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
