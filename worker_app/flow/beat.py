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
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from redbeat import RedBeatScheduler
from redbeat.schedulers import acquire_distributed_beat_lock
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import MasterNotFoundError

from worker_app.config import get_settings
from worker_app.errors import WorkerAppError
from worker_app.flow import schedules
from worker_app.redis_client import check_sentinel, get_redis

logger = logging.getLogger(__name__)

#: Seconds between two tries while Redis is unreachable.
RETRY_INTERVAL = 1.0
#: The errors of a Redis that is away for a while (beat waits them out).
_REDIS_AWAY = (RedisConnectionError, RedisTimeoutError, ReadOnlyError)


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
        while True:  # a beat started while Redis is away waits for it, as a worker does
            try:
                super().setup_schedule()
                break
            except _REDIS_AWAY as exc:
                self._away(exc)
                time.sleep(RETRY_INTERVAL)
        logger.info(
            "beat: %d schedule(s): %s",
            len(schedules.SCHEDULES),
            ", ".join(f"{e.name} ({e.describe})" for e in schedules.SCHEDULES.values()),
        )

    #: Whether the last tick found Redis unreachable (its first failure and its return are logged).
    _unreachable = False

    def tick(self, *args: Any, **kwargs: Any) -> Any:
        try:
            interval = self._tick(*args, **kwargs)
        except _REDIS_AWAY as exc:
            # Redis restarting, its master failing over or the network down: redbeat lets the
            # error stop beat; this one waits and tries again (the lock lapses meanwhile and is
            # taken again, or by a standby; slots stay one run each, claimed by their job ids).
            self._away(exc)
            return RETRY_INTERVAL
        if self._unreachable:
            logger.info("beat: Redis reachable again; scheduling goes on")
            self._unreachable = False
            self._reinstall()
        return interval

    def _away(self, exc: Exception) -> None:
        """Redis did not answer: said once per outage."""
        if not self._unreachable:
            logger.warning(
                "beat: Redis unreachable (%s); trying again every %.0fs",
                _brief(exc),
                RETRY_INTERVAL,
            )
        self._unreachable = True

    def _reinstall(self) -> None:
        """Write the schedule's entries again (each keeps its last run if the server has it):
        a failover may have lost them with the last writes of the old master, and redbeat
        writes them only at start; without them the scheduler has nothing due, ever."""
        try:
            RedBeatScheduler.setup_schedule(self)
        except _REDIS_AWAY as exc:
            logger.warning("beat: schedule not written again yet (%s)", _brief(exc))

    def _missing(self) -> list[str]:
        """The schedule's entries the master does not have."""
        conf = self.app.redbeat_conf
        names = list(conf.schedule)
        with get_redis().pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zscore(conf.schedule_key, self.Entry.generate_key(self.app, name))
            scores = pipe.execute()
        return [name for name, score in zip(names, scores, strict=True) if score is None]

    def _tick(self, *args: Any, **kwargs: Any) -> Any:
        if self.lock_key and self.lock is None:
            # redbeat's take of the lock at start failed (Redis away; Celery squashes the
            # error and redbeat's tick would then stop beat): taken here, waiting as a standby.
            acquire_distributed_beat_lock(SimpleNamespace(scheduler=self))
            self._reinstall()
        missing = self._missing()
        if missing:
            # A failover drops what the old master acknowledged but had not replicated yet, the
            # schedule written at start among them, and no error need reach this process (its
            # next connection simply reaches the new master): redbeat would then find nothing
            # due, ever. Written again; each entry keeps its last run if the master has it.
            logger.warning(
                "beat: the master lacks schedule(s) %s (lost in a failover?); writing them again",
                ", ".join(missing),
            )
            self._reinstall()
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
            self._reinstall()
            return 0.0

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **_: Any) -> Any:
        declared = schedules.SCHEDULES.get(entry.name)
        if declared is None:  # a schedule removed from the code while this process ran
            return None
        slot = _slot(declared, entry.last_run_at)
        try:
            if advance:
                # Advance first, as Celery does: a slot that fails to send is not sent forever.
                entry = self.reserve(entry)
            return schedules.fire(declared, slot)
        except WorkerAppError as exc:
            logger.error("schedule %s: slot not enqueued: %s", declared.name, exc)
        except _REDIS_AWAY as exc:
            # Tried again at the next tick under the same slot id if the entry was not advanced
            # yet; once advanced (as Celery does first), the slot is skipped.
            logger.error(
                "schedule %s: slot not enqueued: Redis unreachable (%s)", declared.name, _brief(exc)
            )
        return None


def _brief(exc: Exception) -> str:
    """An error of an unreachable Redis in a few words (redis-py's "no master found" error
    carries the description of every Sentinel client it tried)."""
    text = str(exc).split(" : ", 1)[0] if isinstance(exc, MasterNotFoundError) else str(exc)
    return text if len(text) <= 200 else f"{text[:200]}..."


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
