"""The one place every job that ends failed arrives: it goes to the dead-letter queue.

Failed tasks (retries exhausted, permanent errors, invalid payloads, poison pills) and messages
the worker cannot start (undecodable, unknown task) all come through :func:`handle_failure`.
"""

from __future__ import annotations

import logging

from worker_app.dlq_store import Entry

logger = logging.getLogger(__name__)


def handle_failure(entry: Entry) -> None:
    """Dead-letter ``entry`` (one ERROR line). A failure to write it is logged with the whole
    entry, so it is never lost silently, and never stops the worker."""
    from worker_app import dlq, jobs

    try:
        dlq.add(entry)
    except Exception:
        logger.exception("could not dead-letter %s: %r", entry.task_id, entry.to_dict())
    try:
        error = f"{entry.exc_type}: {entry.exc_message}"
        jobs.store().finished(entry.task_id, "failed", last_error=error[:2000], reason=entry.reason)
    except Exception:
        logger.exception("could not mark job %s failed", entry.task_id)


#: The error of a job whose message no longer exists anywhere.
LOST = "MessageLost: the job's message is on no queue, parked or held (deleted or lost)"


def dead_letter_lost(job_id: str) -> None:
    """Dead-letter a job whose record the sweep ended because its message was gone, from what
    its record tells, so it can be replayed."""
    from worker_app import dlq, jobs

    job = jobs.store().get(job_id)
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
        dlq.add(entry)
    except Exception:
        logger.exception("could not dead-letter lost job %s: %r", job_id, entry.to_dict())
