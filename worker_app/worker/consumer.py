"""Celery's worker consumer, with every message it would drop dead-lettered first."""

from __future__ import annotations

import base64
import json
from typing import Any

from celery import bootsteps
from celery.signals import worker_ready
from celery.worker.consumer import Consumer as CeleryConsumer

from worker_app import keys
from worker_app.dlq import entries
from worker_app.dlq.capture import dead_letter_then_ack
from worker_app.dlq.poison import message_entry, raw_entry
from worker_app.errors import PoisonPill
from worker_app.jobs.waits import WAITS
from worker_app.worker import shutdown
from worker_app.worker.stats import COUNTERS


def dead_letter_item(item: bytes, queue: str, exc: Exception) -> bool:
    """Dead-letter bytes taken off ``queue`` that are no message; True once stored (an error
    leaves the item held: it comes back and is dead-lettered again)."""
    entries.add(raw_entry(item, queue, exc))
    COUNTERS.dead_lettered += 1
    return True


def dead_letter_poison(payload: dict[str, Any], queue: str, tag: str) -> bool:
    """Dead-letter a held message whose runs died ``POISON_DEATHS`` times in a row, releasing
    it in the same step; True once stored (an error leaves it held)."""
    headers = payload.get("headers") or {}
    raw = _body_bytes(payload)
    exc = PoisonPill(f"its runs killed their process {keys.POISON_DEATHS} times in a row")
    entry = raw_entry(raw, queue, exc, reason="poison_pill", headers=headers)
    try:
        args, kwargs, _embed = json.loads(raw)
        entry.args, entry.kwargs, entry.raw = list(args), dict(kwargs), None
    except (ValueError, TypeError):
        pass  # kept raw
    entry.attempts = int(headers.get("retries") or 0) + 1
    job_id = str(headers.get("id") or "")
    entries.add_held(entry, tag, job_id)
    COUNTERS.dead_lettered += 1
    return True


def _body_bytes(payload: dict[str, Any]) -> bytes:
    body = payload.get("body") or ""
    encoding = (payload.get("properties") or {}).get("body_encoding")
    if encoding == "base64":
        return base64.b64decode(body)
    return body.encode("utf-8", "surrogateescape") if isinstance(body, str) else bytes(body)


def observe_wait(queue: str, message: dict[str, Any]) -> None:
    """Count how long a job waited to be taken (one with an ETA is counted when it starts)."""
    headers = message.get("headers") or {}
    if not headers.get("eta"):
        WAITS.observe(queue, headers)


class BindChannel(bootsteps.StartStopStep):
    """Consumer bootstep: after every (re)connection, bind the task channel to this worker."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, c: Any) -> None:
        c.bind_channel(c.task_consumer.channel)


class NotACeleryMessage(ValueError):
    """The message has no Celery task headers."""


#: Messages a worker holds beyond one per task slot, so a slot that frees up starts its next
#: job at once instead of after a fetch. Each is leased like a running job (a lost worker's
#: come back) and put back on its queue at shutdown; it can make a job that arrives later on a
#: higher-weight queue wait for one job to start first.
PREFETCH_EXTRA = 2


class Consumer(CeleryConsumer):
    """Keeps undecodable, foreign, unknown and malformed messages in the dead-letter queue;
    holds :data:`PREFETCH_EXTRA` messages beyond its task slots."""

    initial_prefetch_count: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.initial_prefetch_count:
            self.initial_prefetch_count += PREFETCH_EXTRA

    def _update_prefetch_count(self, index: int = 0) -> Any:
        result = super()._update_prefetch_count(index)  # type: ignore[misc]
        if self.initial_prefetch_count:
            self.initial_prefetch_count += PREFETCH_EXTRA
        return result

    def bind_channel(self, channel: Any) -> None:
        """Tell the task channel whose it is: the worker's name is written on the jobs it starts,
        items on a queue that are no message are dead-lettered by this worker, and the wait of
        every job it takes is counted."""
        channel.worker_name = str(self.hostname)
        channel.on_bad_item = dead_letter_item
        channel.on_poison = dead_letter_poison
        channel.on_held = observe_wait

    # Each is dead-lettered (its record ended, its message released, in one step) before
    # Celery's own handling acks or rejects the message.

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        entry = message_entry(message, exc, "undecodable")
        _dead_letter(message, entry, lambda: super(Consumer, self).on_decode_error(message, exc))

    def on_unknown_message(self, body: Any, message: Any) -> None:
        exc = NotACeleryMessage("not a Celery task message")
        entry = message_entry(message, exc, "undecodable")
        _dead_letter(
            message, entry, lambda: super(Consumer, self).on_unknown_message(body, message)
        )

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        entry = message_entry(message, exc, "unknown_task")
        _dead_letter(
            message, entry, lambda: super(Consumer, self).on_unknown_task(body, message, exc)
        )

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        entry = message_entry(message, exc, "undecodable")
        _dead_letter(
            message, entry, lambda: super(Consumer, self).on_invalid_task(body, message, exc)
        )


def _dead_letter(message: Any, entry: Any, then: Any) -> None:
    COUNTERS.dead_lettered += 1
    dead_letter_then_ack(message, entry, then)


@worker_ready.connect
def _install_shutdown(sender: Any = None, **_: Any) -> None:
    # Once the worker is ready, Celery has installed its own signal handlers: replace them.
    shutdown.install(sender.controller)
