"""Daily briefings: the seed's ``briefing.generate``."""

from __future__ import annotations

import logging
import time
from datetime import date
from typing import Any

from pydantic import BaseModel, Field

from worker_app.celery import app
from worker_app.errors import RetryableError

logger = logging.getLogger(__name__)


class BriefingPayload(BaseModel):
    """What to brief whom about."""

    user_id: int = Field(gt=0)
    date: date
    topics: list[str] = Field(min_length=1, max_length=20)
    #: Simulated upstream outage: the first ``fail_times`` attempts fail transiently.
    fail_times: int = Field(0, ge=0, le=10)
    #: Simulated work, in seconds.
    work_seconds: float = Field(0.2, ge=0, le=60)


class UpstreamUnavailable(RetryableError):
    """The news source did not answer; trying again later may work."""


@app.task(name="briefing.generate", bind=True, queue_name="default", payload_model=BriefingPayload)
def generate(self: Any, payload: BriefingPayload) -> dict[str, Any]:
    """Build a user's briefing for a day."""
    attempt = self.request.retries + 1
    if attempt <= payload.fail_times:
        raise UpstreamUnavailable(f"news source unavailable (simulated, attempt {attempt})")
    time.sleep(payload.work_seconds)
    logger.info(
        "briefing for user %d on %s: %d topic(s)",
        payload.user_id,
        payload.date,
        len(payload.topics),
    )
    return {
        "user_id": payload.user_id,
        "date": payload.date.isoformat(),
        "sections": payload.topics,
    }
