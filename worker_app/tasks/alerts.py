"""Alerts that must go out before anything else: routed to ``critical``."""

from __future__ import annotations

import logging
import time

from pydantic import BaseModel, Field

from worker_app.celery import app

logger = logging.getLogger(__name__)


class AlertPayload(BaseModel):
    """Whom to alert and what to say."""

    user_id: int = Field(gt=0)
    message: str = Field(min_length=1, max_length=500)


@app.task(name="alerts.send", queue_name="critical", payload_model=AlertPayload)
def send(payload: AlertPayload) -> str:
    """Deliver an alert (simulated)."""
    time.sleep(0.05)
    logger.info("alert delivered to user %d", payload.user_id)
    return "delivered"
