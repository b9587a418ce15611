"""Housekeeping that can wait: routed to ``low``."""

from __future__ import annotations

import logging
import time

from pydantic import BaseModel, Field

from worker_app.celery import app
from worker_app.flow.schedules import periodic

logger = logging.getLogger(__name__)


class CleanupPayload(BaseModel):
    """What to clean up."""

    older_than_days: int = Field(30, ge=1, le=3650)


@app.task(name="maintenance.cleanup", queue_name="low", payload_model=CleanupPayload)
def cleanup(payload: CleanupPayload) -> int:
    """Remove stale drafts (simulated); returns how many were removed."""
    time.sleep(0.1)
    removed = payload.older_than_days // 10
    logger.info("removed %d stale draft(s) older than %d days", removed, payload.older_than_days)
    return removed


periodic(
    "maintenance.cleanup-nightly",
    "maintenance.cleanup",
    cron="0 3 * * *",
    payload={"older_than_days": 30},
)
