"""The worker's fetch: take messages only with the script that holds them, wait on tokens.

kombu's Redis channel keeps one command in flight on its polling connection and reads the
reply when the socket is readable (``_brpop_start`` / ``_brpop_read``). A channel that consumes
with acks (a worker's task queues) uses that slot for one of two commands, never ``BRPOP``:

- ``FETCHING``: the fetch script (``fetch.lua``) releases the acks made since the last call,
  takes up to as many messages as the worker has room for, in weighted queue order and, within
  a queue, priority order, and holds each in the same atomic step. Sent while the lists may hold
  more (the last fetch filled its slots), or acks wait to be released.
- ``WAITING``: ``BLPOP`` on the wake-up tokens of the worker's lists, for at most ``IDLE_WAIT``
  seconds. A token (or the timeout) makes the next tick fetch. Popping a token loses nothing: it
  is not the job. A publish onto a short list leaves one, so an idle worker starts a new job
  within a round trip or two; a message from a producer that leaves none (a plain Celery app)
  is seen within ``IDLE_WAIT``.

Between the two the channel is ``READY`` (nothing in flight). A channel that consumes only
without acks (``celery inspect``'s reply queue, Flower) is left to kombu's own ``BRPOP``: what it
pops is never acked, so there is nothing to hold.

Acks made while a fetch is in flight (or about to be sent) ride on the next fetch: a busy worker
spends one round trip per fetch, none per ack.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from queue import Empty
from typing import Any

from kombu.asynchronous import get_event_loop
from redis.exceptions import NoScriptError, ResponseError

from worker_app import keys
from worker_app.broker import envelope
from worker_app.broker.leases import ASKED_FIELD
from worker_app.broker.registry import (
    join_packed,
    load_all,
    now_iso,
    pack_args,
    pack_command,
    retention,
    run_packed,
    script,
)

logger = logging.getLogger(__name__)

#: Slots a busy worker fetches for at once while a job still waits in it for a slot.
FETCH_BATCH = 2
#: Longest an ack waits in memory for the next fetch to carry it.
ACK_HOLD = 0.005
#: Longest a start mark (with no ack beside it) holds back a fetch that could wait for a
#: second slot: marks are not worth a call of their own, and the next fetch carries them.
START_HOLD = 0.05
#: Seconds before a fetch that Redis refused (BUSY, OOM, READONLY) is tried again.
RETRY_AFTER = 0.5

#: A delivery to release: its tag, its job's id, and how the job ended: 'succeeded', 'ended'
#: (without a result or a recorded failure: a record still active ends failed), or '' (nothing
#: to record: not a job, or its record has moved on already). Or a start to mark: 'started'
#: (a pool process started the task; nothing is released).
Ack = tuple[str, str, str]
#: Dead-letters an item taken off ``queue`` that is no message; True once it is stored.
BadItemHandler = Callable[[bytes, str, Exception], bool]
#: Dead-letters a held message whose runs died too often, and releases it; True once stored.
PoisonHandler = Callable[[dict[str, Any], str, str], bool]


class Phase(enum.Enum):
    """What the polling connection has in flight."""

    READY = "ready"
    WAITING = "waiting"
    FETCHING = "fetching"


class FetchingChannel:
    """The fetch side of the Redis channel (mixed into it before kombu's class)."""

    #: Injected by the worker: written on the jobs it starts.
    worker_name = ""
    #: Injected by the worker: dead-letters items that are no message (else they stay held).
    on_bad_item: BadItemHandler | None = None
    #: Injected by the worker: told of every message held and about to be delivered.
    on_held: Callable[[str, dict[str, Any]], None] | None = None
    #: Injected by the worker: dead-letters a poison message (else it is delivered).
    on_poison: PoisonHandler | None = None

    phase = Phase.READY
    #: The lists may hold messages: fetch rather than wait.
    more = True
    #: No fetch before this (monotonic): Redis refused the last one.
    _retry_at = 0.0
    _acks_in_flight: list[Ack] = []
    #: Messages being delivered were held by the fetch script already.
    delivering_held = False
    _loop_thread: int | None = None
    _acks_since = 0.0
    _wake_pending = False

    # State of one channel object (set on first use: kombu builds channels in its own way).
    @property
    def pending_acks(self: Any) -> list[Ack]:
        """Deliveries acked in memory, to be released in Redis by the next fetch."""
        acks: list[Ack] | None = self.__dict__.get("_pending_acks")
        if acks is None:
            acks = self.__dict__["_pending_acks"] = []
        return acks

    @property
    def _noack(self: Any) -> set[str]:
        queues: set[str] | None = self.__dict__.get("_noack_queues")
        if queues is None:
            queues = self.__dict__["_noack_queues"] = set()
        return queues

    def basic_consume(self: Any, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        (self._noack.add if no_ack else self._noack.discard)(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)  # type: ignore[misc]

    # Acks ------------------------------------------------------------------------------------

    def ack_later(self: Any) -> bool:
        """Whether an ack now can ride on the next fetch (one is in flight or about to be sent)
        rather than needing a call of its own (a wait may last ``IDLE_WAIT``, and an ack from
        another thread than the event loop's is released at once)."""
        return (
            bool(self.active_queues)
            and self.phase is not Phase.WAITING
            and threading.get_ident() == self._loop_thread
        )

    def add_ack(self: Any, ack: Ack) -> None:
        acks = self.pending_acks
        if not acks:
            self._acks_since = time.monotonic()
        acks.append(ack)

    def flush_acks(self: Any) -> None:
        """Release every pending ack in Redis now."""
        acks = self.pending_acks
        if acks:
            taken = list(acks)
            self.release(taken)
            del acks[: len(taken)]

    def release(self: Any, acks: list[Ack]) -> None:
        """Release ``acks`` in Redis now (ending the jobs that succeeded)."""
        self.call_fetch([], 0, acks)

    def call_fetch(self: Any, queues: list[str], slots: int, acks: list[Ack]) -> list[Any]:
        """The fetch script, called and answered at once (not on the polling connection), for
        ``queues`` in the order given."""
        command = self._fetch_command(queues, slots, acks, ordered=True)
        with self.conn_or_acquire() as client:
            try:
                reply: list[Any] = run_packed(client, command)
            except NoScriptError:
                load_all(client)
                reply = run_packed(client, command)
        return reply

    # The command in flight ---------------------------------------------------------------------

    def _brpop_start(self: Any, timeout: Any = None) -> None:
        queues = self.active_queues
        noack = self._noack
        if all(queue in noack for queue in queues):  # kombu's own BRPOP: nothing is held
            self.phase = Phase.READY
            super()._brpop_start(timeout)  # type: ignore[misc]
            return
        self._loop_thread = threading.get_ident()
        if self.more or self.pending_acks:
            self._send_fetch(queues)
        else:
            self._send_wait(queues)

    def _send_wait(self: Any, queues: list[str]) -> None:
        tokens = [keys.WAKE + name for queue in queues for name in envelope.lists_of(queue)]
        self._send(Phase.WAITING, pack_command("BLPOP", *tokens, keys.IDLE_WAIT))

    def _send_fetch(self: Any, queues: list[str]) -> None:
        if time.monotonic() < self._retry_at:
            return  # Redis refused the last fetch: let it recover (a timer wakes the loop)
        slots = self.qos.can_consume_max_estimate() or 1
        if slots < FETCH_BATCH and self.more and self._can_wait():
            return  # fetch for two slots once the next one frees, or the oldest ack is due
        acks = self.pending_acks
        self._acks_in_flight = list(acks)
        acks.clear()
        self._fetch_queues = queues
        try:
            self._send(Phase.FETCHING, self._fetch_command(queues, slots, self._acks_in_flight))
        except BaseException:
            self._return_acks()
            raise

    def _return_acks(self: Any) -> None:
        """Acks carried by a fetch that did not happen wait for the next one (they are
        idempotent: one sent twice releases nothing twice)."""
        acks, self._acks_in_flight = self._acks_in_flight, []
        self.pending_acks[:0] = acks

    def _send(self: Any, phase: Phase, command: bytes) -> None:
        connection = self.client.connection
        connection.send_packed_command([command])
        self._in_poll = connection
        self._brpop_sent_at = time.monotonic()
        self.phase = phase

    def _fetch_command(
        self: Any, queues: list[str], slots: int, acks: list[Ack], ordered: bool = False
    ) -> bytes:
        """The fetch command: each slot tries ``queues`` in the weighted order of the queue
        cycle (the consumed queues), or in the order given when ``ordered``."""
        heads: dict[tuple[Any, ...], Any] = self.__dict__.setdefault("_fetch_heads", {})
        noack = self._noack
        key = (*queues, *(queue in noack for queue in queues))
        cached = heads.get(key)
        if cached is None:
            lists = [name for queue in queues for name in envelope.lists_of(queue)]
            command = ["EVALSHA", *script("fetch").args(lists, [])]
            packed = (len(command), pack_args(*command))
            tail = [
                len(queues),
                len(envelope.PRIORITY_STEPS),
                *queues,
                *("0" if queue in noack else "1" for queue in queues),
            ]
            position = {queue: n for n, queue in enumerate(queues, 1)}
            cached = heads[key] = (packed, tail, position)
        (count, prefix), tail, position = cached
        now = time.time()
        args = [now, now_iso(now), self.worker_name, retention(), tail[0], tail[1]]
        args += [slots, len(acks), *tail[2:]]
        consume = self._queue_cycle.consume
        for _ in range(slots):
            order = queues if ordered else consume(len(queues))
            args += [position[queue] for queue in order]
        for ack in acks:
            args += ack
        return join_packed(count, prefix, args)

    def _can_wait(self: Any) -> bool:
        """Whether a fetch for one slot can wait for a second one (one call for two jobs): a
        job already waits in the worker for the slot, and no ack has waited ``ACK_HOLD``."""
        # Imported on a worker's first fetch: producers load this transport too, and
        # celery.worker brings the whole worker with it.
        from celery.worker import state

        if len(state.reserved_requests) <= len(state.active_requests):
            return False  # nothing waits: a slot would idle
        acks = self.pending_acks
        if not acks:
            return True
        hold = ACK_HOLD if any(ack[2] != "started" for ack in acks) else START_HOLD
        waited = time.monotonic() - self._acks_since
        if waited >= hold:
            return False
        loop = get_event_loop()
        if loop is not None and not self._wake_pending:
            # Wake the event loop when the oldest ack is due, even if nothing else happens.
            self._wake_pending = True
            loop.call_later(hold - waited, self._wake)
        return True

    def _wake(self: Any) -> None:
        self._wake_pending = False

    # Replies -----------------------------------------------------------------------------------

    def _brpop_read(self: Any, **options: Any) -> bool:
        phase, self.phase = self.phase, Phase.READY
        if phase is Phase.READY:
            return bool(super()._brpop_read(**options))  # type: ignore[misc]
        command = "EVALSHA" if phase is Phase.FETCHING else "BLPOP"
        try:
            try:
                reply = self.client.parse_response(self.client.connection, command, **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
        except NoScriptError:
            # The server lost its scripts (a restart, a failover): the call did nothing.
            self._return_acks()
            with self.conn_or_acquire() as client:
                load_all(client)
            raise Empty() from None
        except ResponseError as exc:
            # BUSY, OOM, READONLY...: the call did nothing; look again a little later.
            self._return_acks()
            self._back_off(exc)
            raise Empty() from None
        except BaseException:
            self._return_acks()
            raise
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()
        if phase is Phase.WAITING:
            self.more = True  # a token, or the wait ran out: look
            raise Empty()
        self._acks_in_flight = []
        self.more = not int(reply[0])
        if len(reply) == 1:
            raise Empty()
        self._deliver_batch(self._fetch_queues, reply)
        return True

    def _back_off(self: Any, exc: Exception) -> None:
        logger.warning("fetch refused by Redis (%s); trying again in %.1fs", exc, RETRY_AFTER)
        self._retry_at = time.monotonic() + RETRY_AFTER
        self.more = True
        loop = get_event_loop()
        if loop is not None:
            loop.call_later(RETRY_AFTER, self._wake)

    def _deliver_batch(self: Any, queues: list[str], reply: list[Any]) -> None:
        """Deliver what the fetch script took; dead-letter what is no message; log the rest."""
        errors: list[BaseException] = []
        for index in range(1, len(reply), 3):
            position, verdict, item = reply[index : index + 3]
            queue = queues[int(position) - 1]
            verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
            if verdict in ("cancelled", "duplicate"):
                _log_not_run(item, verdict)
                continue
            error: Exception = envelope.MalformedEnvelope("not a kombu message envelope")
            payload: dict[str, Any] | None = None
            try:
                payload = envelope.parse(item)
            except Exception as exc:  # noqa: BLE001 - JSON errors, deep nesting: kept raw
                error = exc
            if verdict == "bad":  # the script's rule is the one that counts
                payload = None
            if payload is None:
                tag = envelope.held_tag(item, verdict)
                self._dead_letter(item, queue, tag, error)
                continue
            if verdict == "poison" and self.on_poison is not None:
                self._dead_letter_poison(payload, queue, str(payload["properties"]["delivery_tag"]))
                continue
            held = verdict in ("held", "poison")
            if held and self.on_held is not None:
                self.on_held(queue, payload)
            self.delivering_held = held
            info = payload["properties"].get("delivery_info")
            if isinstance(info, dict):
                info[ASKED_FIELD] = self._brpop_sent_at
            try:
                self.connection._deliver(payload, queue)
            except Exception as exc:  # deliver the rest of the batch; raise the first error
                errors.append(exc)
            finally:
                self.delivering_held = False
        if errors:
            raise errors[0]

    def _dead_letter(self: Any, item: bytes, queue: str, tag: str, exc: Exception) -> None:
        """Dead-letter an item that is no message; release it once that is stored (until then
        it stays held, and comes back if the worker is lost)."""
        handler = self.on_bad_item
        stored = False
        if handler is not None:
            try:
                stored = handler(item, queue, exc)
            except Exception:  # noqa: BLE001 - kept held; the sweep brings it back
                logger.exception("could not dead-letter an item of %s; kept held", queue)
        if not handler:
            logger.error("an item of %s is no message (%s); kept held", queue, exc)
        if stored and tag:
            self.add_ack((tag, "", ""))
            self.more = True  # a fetch will carry the release

    def _dead_letter_poison(self: Any, payload: dict[str, Any], queue: str, tag: str) -> None:
        """Dead-letter a message whose runs died too often, releasing it in the same step; an
        error leaves it held (it comes back, and is dead-lettered then)."""
        handler = self.on_poison
        try:
            if handler is not None and handler(payload, queue, tag):
                return
        except Exception:  # noqa: BLE001 - kept held; the sweep brings it back
            logger.exception("could not dead-letter a poison message of %s; kept held", queue)


def _log_not_run(item: bytes, verdict: str) -> None:
    try:
        headers = envelope.parse(item).get("headers") or {}
    except Exception:  # noqa: BLE001 - only for the log line
        headers = {}
    what = f"{headers.get('task', '?')}[{headers.get('id', '?')}]"
    if verdict == "cancelled":
        logger.info("%s not run: the job was cancelled before it started", what)
    else:
        logger.info("%s duplicate delivery, not run", what)
