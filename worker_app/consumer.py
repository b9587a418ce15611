"""Celery's worker consumer, with every message it would drop dead-lettered first."""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

from worker_app.poison import dead_letter as _dead_letter
from worker_app.poison import message_entry
from worker_app.stats import COUNTERS


def dead_letter(entry: Any) -> None:
    COUNTERS.dead_lettered += 1
    _dead_letter(entry)


class NotACeleryMessage(ValueError):
    """The message has no Celery task headers."""


class Consumer(CeleryConsumer):
    """Keeps undecodable, foreign, unknown and malformed messages in the dead-letter queue."""

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
