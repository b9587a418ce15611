"""The scheduler ``celery -A worker_app beat`` runs: celery-redbeat with worker_app's guarantees.

redbeat keeps the schedule and a lock in Redis, so any number of beat processes may run: one
holds the lock and schedules, the others wait for it. The lock lapses ``BEAT_LOCK_TTL`` after
its holder's last renewal and a standby retries every ``BEAT_TICK_MAX`` (both in
:mod:`worker_app.keys`), so a standby takes over well within a minute of the active
scheduler's death. What it sends goes through :func:`worker_app.flow.schedules.fire`: one job per
slot, no overlapping runs.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from redbeat import RedBeatScheduler
from redis.exceptions import LockError

from worker_app.config import get_settings
from worker_app.errors import WorkerAppError
from worker_app.flow import schedules
from worker_app.redis_client import check_sentinel

logger = logging.getLogger(__name__)


class Scheduler(RedBeatScheduler):  # type: ignore[misc]
    """redbeat's scheduler, fed from :data:`worker_app.flow.schedules.SCHEDULES`."""

    def setup_schedule(self) -> None:
        # Declarations live beside their tasks: load them before the schedule is stored.
        self.app.loader.import_default_modules()
        problems = schedules.check_all()
        if problems:
            raise SystemExit("\n".join(f"configuration error: {line}" for line in problems))
        check_sentinel(get_settings())
        self.app.conf.beat_schedule = {
            entry.name: {"task": entry.task, "schedule": entry.timing, "kwargs": {}}
            for entry in schedules.SCHEDULES.values()
        }
        super().setup_schedule()
        logger.info(
            "beat: %d schedule(s): %s",
            len(schedules.SCHEDULES),
            ", ".join(f"{e.name} ({e.describe})" for e in schedules.SCHEDULES.values()),
        )

    def tick(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().tick(*args, **kwargs)
        except LockError as exc:
            # The lock's key is gone or another's: a Redis failover lost it (not replicated
            # yet), or it lapsed while Redis was unreachable. redbeat stops the scheduler here;
            # this one takes the lock again (waiting as a standby while another holds it) and
            # goes on. Slots stay one run each: each is claimed by its job id.
            logger.warning("beat: the scheduler lock was lost (%s); taking it again", exc)
            self.lock.acquire()
            logger.info("beat: Acquired lock")
            return 0.0

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **_: Any) -> Any:
        declared = schedules.SCHEDULES.get(entry.name)
        if declared is None:  # a schedule removed from the code while this process ran
            return None
        slot = _slot(declared, entry.last_run_at)
        if advance:
            # Advance first, as Celery does: a slot that fails to send is not sent forever.
            entry = self.reserve(entry)
        try:
            return schedules.fire(declared, slot)
        except WorkerAppError as exc:
            logger.error("schedule %s: slot not enqueued: %s", declared.name, exc)
            return None


def _slot(declared: schedules.Periodic, last_run: datetime | None) -> datetime:
    """The due time of the slot being run, the same in every scheduler (whole seconds, UTC).

    It derives from the last run stored in Redis, which every scheduler shares; a schedule
    that has no last run yet takes the current step of its interval (or minute).
    """
    if last_run is None:
        now = datetime.now(UTC)
        step = declared.every.total_seconds() if declared.every is not None else 60.0
        return datetime.fromtimestamp(now.timestamp() // step * step, UTC)
    if last_run.tzinfo is None:
        last_run = last_run.replace(tzinfo=UTC)
    return declared.due_after(last_run).replace(microsecond=0)
