"""Periodic jobs: schedules declared in code, each run of a slot enqueued once, never overlapping.

Declare a schedule next to its task::

    periodic("cleanup-nightly", "maintenance.cleanup", cron="0 3 * * *",
             payload={"older_than_days": 30})
    periodic("digest", "briefing.generate", every="10m", payload={...}, queue="low")

``celery -A worker_app beat`` runs them (:mod:`worker_app.flow.beat`). Each run of a schedule slot
gets a job id derived from the schedule and the slot's due time, and the id is claimed in Redis
before it is published, so a restarted or a second scheduler never enqueues a slot twice. While
the previous run of the same schedule has not finished (pending, active, retrying), the next
slot is skipped, logged and counted instead of piling up behind it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.schedules import crontab, schedule

from worker_app import keys
from worker_app.broker.queues import check_queue
from worker_app.celery import get_task
from worker_app.durations import format_duration, parse_duration
from worker_app.errors import WorkerAppError
from worker_app.jobs import records
from worker_app.jobs.payload import validate_payload
from worker_app.producer.client import submit
from worker_app.redis_client import get_redis

logger = logging.getLogger(__name__)

#: How long a slot's claim is kept: far longer than two schedulers could race for one slot.
SLOT_CLAIM_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Periodic:
    """One schedule: which task, with which payload, on which queue, how often."""

    name: str
    task: str
    every: timedelta | None = None
    cron: str | None = None
    payload: Mapping[str, Any] = field(default_factory=dict)
    queue: str | None = None

    @property
    def timing(self) -> crontab | schedule:
        """The Celery schedule object (UTC) the scheduler runs this on."""
        if self.every is not None:
            return schedule(run_every=self.every)
        minute, hour, day_of_month, month, day_of_week = str(self.cron).split()
        return crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month,
            day_of_week=day_of_week,
        )

    @property
    def describe(self) -> str:
        if self.every is not None:
            return f"every {format_duration(self.every)}"
        return f"cron {self.cron}"

    def due_after(self, last_run: datetime) -> datetime:
        """The due time of the slot that follows a run at ``last_run``."""
        if self.every is not None:
            return last_run + self.every
        start, delta, _ = self.timing.remaining_delta(last_run)  # type: ignore[union-attr]
        return start + delta  # type: ignore[no-any-return]

    def job_id(self, slot: datetime) -> str:
        """The id every scheduler gives the run of ``slot``: schedule name plus due second."""
        return f"periodic:{self.name}:{slot.astimezone(UTC):%Y%m%dT%H%M%SZ}"


#: Every declared schedule by name, in declaration order.
SCHEDULES: dict[str, Periodic] = {}


def periodic(
    name: str,
    task: str,
    *,
    every: str | float | timedelta | None = None,
    cron: str | None = None,
    payload: Mapping[str, Any] | None = None,
    queue: str | None = None,
) -> Periodic:
    """Declare a periodic job; ``every`` takes a duration (``"10s"``, ``"1h30m"``, seconds).

    Raises:
        ValueError: the name is taken, or the timing is missing, doubled or malformed.
    """
    if name in SCHEDULES:
        raise ValueError(f"schedule {name!r} is declared twice")
    if (every is None) == (cron is None):
        raise ValueError(f"schedule {name!r}: give exactly one of every= or cron=")
    interval = None if every is None else _interval(name, every)
    entry = Periodic(name, task, interval, cron, dict(payload or {}), queue)
    if cron is not None:
        if len(cron.split()) != 5:
            raise ValueError(
                f"schedule {name!r}: cron {cron!r} must have five fields "
                "(minute hour day-of-month month day-of-week)"
            )
        try:
            entry.timing.remaining_estimate(datetime.now(UTC))
        except (ValueError, IndexError) as exc:
            raise ValueError(f"schedule {name!r}: cron {cron!r} is invalid: {exc}") from None
    SCHEDULES[name] = entry
    return entry


def _interval(name: str, every: str | float | timedelta) -> timedelta:
    if isinstance(every, timedelta):
        value = every
    elif isinstance(every, str):
        try:
            value = parse_duration(every)
        except ValueError as exc:
            raise ValueError(f"schedule {name!r}: every={every!r} is {exc}") from None
    else:
        value = timedelta(seconds=float(every))
    if value.total_seconds() < 1:
        raise ValueError(f"schedule {name!r}: every= must be at least 1s, not {every!r}")
    return value


def check_all() -> list[str]:
    """What is wrong with the declared schedules (unknown task or queue, invalid payload)."""
    problems = []
    for entry in SCHEDULES.values():
        try:
            target = get_task(entry.task)
            if entry.queue is not None:
                check_queue(entry.queue)
            model = getattr(target, "payload_model", None)
            if model is not None:
                validate_payload(model, (), entry.payload)
        except WorkerAppError as exc:
            problems.append(f"schedule {entry.name!r}: {exc}")
    return problems


def fire(entry: Periodic, slot: datetime) -> str | None:
    """Enqueue the run of ``slot`` unless the previous run is unfinished or the slot was taken.

    Returns:
        The job id when this call enqueued it, else None (skipped or already enqueued).
    """
    client = get_redis()
    job_id = entry.job_id(slot)
    previous = client.hget(keys.PERIODIC_LAST, entry.name)
    if previous is not None:
        previous_id = _text(previous)
        record = records.store().get(previous_id) if previous_id != job_id else None
        if record is not None and record.status not in records.FINAL:
            client.hincrby(keys.PERIODIC_SKIPPED, entry.name, 1)
            logger.warning(
                "schedule %s: slot %s skipped, the previous run %s is still %s",
                entry.name,
                job_id,
                previous_id,
                record.status,
            )
            return None
    if records.store().get(job_id) is not None:
        # Its record (written with its message, replicated before the publish returned) says
        # the slot was sent: by another scheduler, or by this one before a failover lost the
        # claim below (written apart from the message).
        logger.info("schedule %s: slot %s was already enqueued", entry.name, job_id)
        return None
    submitted = submit(
        entry.task,
        entry.payload,
        queue=entry.queue,
        task_id=job_id,
        unique_for=SLOT_CLAIM_SECONDS,
        unique_key=job_id,
    )
    if not submitted.created:
        logger.info("schedule %s: slot %s was already enqueued", entry.name, job_id)
        return None
    client.hset(keys.PERIODIC_LAST, entry.name, job_id)
    logger.info("schedule %s: enqueued %s", entry.name, job_id)
    return job_id


@dataclass(frozen=True)
class ScheduleState:
    """A declared schedule as Redis tells it: its last run and the next."""

    name: str
    task: str
    timing: str
    queue: str | None
    last_run_at: datetime | None
    next_run_at: datetime | None
    last_job_id: str | None
    last_status: str | None
    skipped: int

    def as_dict(self) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat(timespec="seconds")

        return {
            "name": self.name,
            "task": self.task,
            "schedule": self.timing,
            "queue": self.queue,
            "last_run_at": iso(self.last_run_at),
            "next_run_at": iso(self.next_run_at),
            "last_job_id": self.last_job_id,
            "last_status": self.last_status,
            "skipped": self.skipped,
        }


def states() -> list[ScheduleState]:
    """Every declared schedule with its latest run, its next one and its skipped slots."""
    # Only this listing reads redbeat's entries: producers and workers never load redbeat.
    from redbeat.decoder import RedBeatJSONDecoder

    names = list(SCHEDULES)
    if not names:
        return []
    pipe = get_redis().pipeline(transaction=False)
    for name in names:
        pipe.hget(keys.BEAT + name, "meta")
    pipe.hmget(keys.PERIODIC_LAST, names)
    pipe.hmget(keys.PERIODIC_SKIPPED, names)
    *metas, last_ids, skipped = pipe.execute()
    store = records.store()
    result = []
    for name, meta, last_id, skips in zip(names, metas, last_ids, skipped, strict=True):
        entry = SCHEDULES[name]
        # redbeat's last run time: when the scheduler last handled a slot (or stored the entry).
        handled = json.loads(meta, cls=RedBeatJSONDecoder).get("last_run_at") if meta else None
        job_id = _text(last_id) if last_id else None
        record = store.get(job_id) if job_id else None
        result.append(
            ScheduleState(
                name=name,
                task=entry.task,
                timing=entry.describe,
                queue=entry.queue,
                last_run_at=(
                    datetime.fromtimestamp(record.created_at, UTC) if record is not None else None
                ),
                next_run_at=None if handled is None else entry.due_after(handled),
                last_job_id=job_id,
                last_status=record.status if record is not None else None,
                skipped=int(skips or 0),
            )
        )
    return result


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
