"""The one place every job that ends failed arrives, with everything needed to understand it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """A job that ended failed: what it was, where it ran and why it stopped."""

    task_id: str
    task_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str
    headers: dict[str, Any]
    #: ``retries_exhausted``, ``permanent_error`` or ``invalid_payload``.
    reason: str
    exc_type: str
    exc_message: str
    traceback: str
    attempts: int
    hostname: str
    failed_at: float = field(default_factory=time.time)


def handle_failure(failure: Failure) -> None:
    """Record a failed job: one ERROR line naming the job, the reason and the last error."""
    logger.error(
        "job failed: %s[%s] reason=%s attempts=%d queue=%s: %s: %s",
        failure.task_name,
        failure.task_id,
        failure.reason,
        failure.attempts,
        failure.queue,
        failure.exc_type,
        failure.exc_message,
    )
