"""The one place every job that ends failed arrives: it goes to the dead-letter queue.

A job that fails in a worker (retries exhausted, a permanent error, an invalid payload, a hard
time limit, a poison pill) and a message the worker cannot start (undecodable, unknown task)
are dead-lettered by the worker's main process *before* their message is let go:
:func:`dead_letter_then_ack` stores the entry, ends the record and releases the message in one
step, and only then lets Celery ack. While Redis refuses the write, the message stays held and
the write is tried again every :data:`RETRY_EVERY` seconds; if the worker stops first, the
message goes back on its queue. Nothing that fails is dropped.

Elsewhere (a task called eagerly, the outbox relay) :func:`handle_failure` writes the entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kombu.asynchronous import get_event_loop

from worker_app import keys
from worker_app.dlq import entries
from worker_app.dlq.entries import Entry, Reason
from worker_app.errors import InvalidPayload, PermanentError, PoisonPill
from worker_app.jobs import records, waits

logger = logging.getLogger(__name__)

#: Seconds between two tries of a dead-letter write that Redis refused.
RETRY_EVERY = 1.0


def reason_of(exc: BaseException) -> Reason:
    """Why a job that raised ``exc`` is dead-lettered."""
    if isinstance(exc, InvalidPayload):
        return "invalid_payload"
    if isinstance(exc, PoisonPill):
        return "poison_pill"
    if isinstance(exc, PermanentError):
        return "permanent_error"
    return "retries_exhausted"


def entry_for(
    task_name: str, default_queue: str, request: Any, exc: BaseException, traceback: str
) -> Entry:
    """The entry of a job that ended failed with ``exc``; ``request`` is its task context."""
    delivery = request.delivery_info or {}
    headers = dict(request.headers or {})
    kind = getattr(exc, "exc_cls_name", None) or type(exc).__name__  # unpicklable: wrapped
    return Entry(
        task_id=str(request.id),
        task_name=task_name,
        args=list(request.args or ()),
        kwargs=dict(request.kwargs or {}),
        queue=str(delivery.get("routing_key") or default_queue or ""),
        headers=headers,
        reason=reason_of(exc),
        exc_type=str(kind),
        exc_message=str(getattr(exc, "exc_msg", None) or exc),
        traceback=traceback or "",
        attempts=int(request.retries or 0) + 1,
        first_enqueued_at=waits.as_float(headers.get(keys.FIRST_ENQUEUED_AT)),
        hostname=str(request.hostname or ""),
    )


def handle_failure(entry: Entry) -> None:
    """Dead-letter ``entry`` where no held message waits on it (one ERROR line). A failure to
    write it is logged with the whole entry, so it is never lost silently."""
    try:
        entries.add(entry)
    except Exception:
        logger.exception("could not dead-letter %s: %r", entry.task_id, entry.to_dict())
    try:
        error = f"{entry.exc_type}: {entry.exc_message}"
        records.store().finished(
            entry.task_id, "failed", last_error=error[:2000], reason=entry.reason
        )
    except Exception:
        logger.exception("could not mark job %s failed", entry.task_id)


def dead_letter_then_ack(message: Any, entry: Entry, ack: Callable[[], Any]) -> None:
    """Dead-letter ``entry`` and release ``message`` in one step, then call ``ack`` (Celery's
    own ending of the delivery). While Redis refuses, the message stays held and the write is
    tried again; ``ack`` runs only after it succeeded."""
    tag = str(getattr(message, "delivery_tag", "") or "")
    job_id = entry.task_id if not entry.task_id.startswith("raw-") else ""

    def attempt(tries: int) -> None:
        try:
            entries.add_held(entry, tag, job_id)
        except Exception as exc:  # noqa: BLE001 - the message stays held; tried again
            loop = get_event_loop()
            if tries == 1:
                logger.warning(
                    "could not dead-letter %s[%s] (%s); its message stays held%s",
                    entry.task_name or "(undecodable)",
                    entry.task_id,
                    exc,
                    f", trying again every {RETRY_EVERY:g}s" if loop is not None else "",
                )
            if loop is not None:
                loop.call_later(RETRY_EVERY, attempt, tries + 1)
            return
        if tries > 1:
            logger.info("dead-lettered %s after %d tries", entry.task_id, tries)
        ack()

    attempt(1)


#: The error of a job whose message no longer exists anywhere.
LOST = "MessageLost: the job's message is on no queue, parked or held (deleted or lost)"


def dead_letter_lost(job_id: str) -> None:
    """Dead-letter a job whose record the sweep ended because its message was gone, from what
    its record tells, so it can be replayed."""
    job = records.store().get(job_id)
    if job is None:
        return
    payload = job.payload if isinstance(job.payload, dict) else {}
    kind, _, message = LOST.partition(": ")
    entry = Entry(
        task_id=job.id,
        task_name=job.type,
        reason="lost",
        args=list(payload.get("args") or []),
        kwargs=dict(payload.get("kwargs") or {}),
        queue=job.queue,
        exc_type=kind,
        exc_message=message,
        attempts=max(1, job.attempts),
        first_enqueued_at=job.created_at,
        hostname=job.worker or "",
    )
    try:
        entries.add(entry)
    except Exception:
        logger.exception("could not dead-letter lost job %s: %r", job_id, entry.to_dict())
