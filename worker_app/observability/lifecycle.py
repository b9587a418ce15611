"""One log line per lifecycle event a job goes through, each written exactly once.

published (here, producer side) -> started (here) -> succeeded with its duration (Celery's
own line) | retrying with delay, bound and reason (:mod:`worker_app.task`) | dead-lettered with
reason and attempts (:mod:`worker_app.dlq.entries`); rejected messages (here). Lines written
inside a task carry its id, name, queue, attempt and trace id through the logging filter.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger("worker_app.jobs")


def published(headers: dict[str, Any], queue: str) -> None:
    name = str(headers.get("task") or "")
    if name and not name.startswith("celery."):
        retries = int(headers.get("retries") or 0)
        when = f" eta={headers['eta']}" if headers.get("eta") else ""
        logger.info(
            "published %s[%s] queue=%s attempt=%d%s",
            name,
            headers.get("id"),
            queue,
            retries + 1,
            when,
        )


def started() -> None:
    logger.info("started")


def rejected(message: Any, exc: BaseException | None) -> None:
    headers = getattr(message, "headers", None) or {}
    logger.warning(
        "rejected %s[%s]: %s",
        headers.get("task") or "(not a task)",
        headers.get("id") or "-",
        exc or "not a Celery task message",
    )
