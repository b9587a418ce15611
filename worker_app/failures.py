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
