"""Celery's worker consumer, with every message it would drop dead-lettered first."""

from __future__ import annotations

from typing import Any

from celery import bootsteps
from celery.worker.consumer import Consumer as CeleryConsumer

from worker_app.poison import dead_letter as _dead_letter
from worker_app.poison import message_entry, raw_entry
from worker_app.stats import COUNTERS
from worker_app.waits import WAITS


def dead_letter(entry: Any) -> None:
    COUNTERS.dead_lettered += 1
    _dead_letter(entry)


def dead_letter_item(item: bytes, queue: str, exc: Exception) -> bool:
    """Dead-letter bytes taken off ``queue`` that are no message; True once stored (an error
    leaves the item held: it comes back and is dead-lettered again)."""
    from worker_app import dlq

    dlq.add(raw_entry(item, queue, exc))
    COUNTERS.dead_lettered += 1
    return True


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
        channel.on_held = observe_wait

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        dead_letter(message_entry(message, exc, "undecodable"))
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        dead_letter(
            message_entry(message, NotACeleryMessage("not a Celery task message"), "undecodable")
        )
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        dead_letter(message_entry(message, exc, "unknown_task"))
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        dead_letter(message_entry(message, exc, "undecodable"))
        super().on_invalid_task(body, message, exc)
