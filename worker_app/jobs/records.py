"""Job records: one Redis hash per job that follows it from enqueue to its end.

``pending`` / ``scheduled`` (published, not yet due) -> ``active`` -> ``succeeded``; a failed
attempt makes it ``retrying`` (with the next run time and last error) and exhausted or permanent
failures ``failed`` (dead-lettered); ``cancelled`` is final too. Each transition is one script
of the broker (``worker_app/broker/scripts``) that also moves the job between the status
indexes: the record is written with its message's publish, started by the fetch that holds the
message and ended by the ack that releases it. Cancelling is stored here, so any worker,
including one started later, honours it.

A publish marked :data:`~worker_app.keys.PUBLISH_ONCE` (the outbox relay's, which may publish
one job id twice) leaves an existing record as it is, and the started script refuses a delivery
of such a job that already ran or is running elsewhere: the decision costs no extra round trip.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, get_args

import redis
from celery import current_task

from worker_app import keys
from worker_app.broker.publish import Record
from worker_app.broker.registry import now_iso, script
from worker_app.config import get_settings
from worker_app.errors import Cancelled
from worker_app.redis_client import get_redis

Status = Literal["pending", "scheduled", "active", "retrying", "succeeded", "failed", "cancelled"]
STATUSES: tuple[str, ...] = get_args(Status)
FINAL = ("succeeded", "failed", "cancelled")
WAITING = ("pending", "scheduled", "retrying")
DIMENSIONS = ("status", "type", "queue")
P = keys.PREFIX + ":"


@dataclass(frozen=True)
class Job:
    """A job as its record tells it."""

    id: str
    type: str
    queue: str
    status: str
    created_at: float
    updated_at: float
    attempts: int = 0
    run_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    last_error: str | None = None
    result: Any = None
    payload: Any = None
    worker: str | None = None
    cancel_requested: bool = False

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Job:
        def num(name: str) -> float | None:
            return float(data[name]) if data.get(name) else None

        return cls(
            id=data["id"],
            type=data.get("type", ""),
            queue=data.get("queue", ""),
            status=data.get("status", ""),
            created_at=num("created_at") or 0.0,
            updated_at=num("updated_at") or 0.0,
            attempts=int(data.get("attempts") or 0),
            run_at=num("run_at"),
            started_at=num("started_at"),
            finished_at=num("finished_at"),
            last_error=data.get("last_error"),
            result=json.loads(data["result"]) if data.get("result") else None,
            payload=json.loads(data["payload"]) if data.get("payload") else None,
            worker=data.get("worker"),
            cancel_requested=bool(data.get("cancel_requested")),
        )

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None


class JobStore:
    """Job records in Redis: transitions (each one script of the broker), reads, listings."""

    def __init__(self, client: redis.Redis, retention_seconds: float) -> None:
        self.client = client
        self.retention = int(max(1, retention_seconds))

    def published(
        self,
        job_id: str,
        task: str,
        queue: str,
        status: str,
        run_at: float,
        attempt: int,
        payload: Any,
        *,
        reset: bool,
    ) -> str:
        """Create or move the record of a job without publishing a message (seeding, tests)."""
        record = Record(
            id=job_id,
            task=task,
            queue=queue,
            status=status,
            run_at=run_at,
            attempt=attempt,
            payload=json.dumps(payload, default=str),
            reset="1" if reset else "0",
            once="0",
        )
        return _text(
            script("publish")(self.client, [""], ["none", 0, "", 0, *record.args(time.time())])
        )

    def started(
        self,
        job_id: str,
        attempt: int,
        hostname: str,
        queue: str = "",
        waited: float | None = None,
        *,
        once: bool = False,
        redelivered: bool = False,
    ) -> str:
        """Mark the job active (and count its wait); returns 'run', 'cancelled', or
        ``"duplicate"`` for a publish-once delivery of a job that ran or is running."""
        bucket = next(
            (str(b) for b in keys.WAIT_BUCKETS if waited is not None and waited <= b), "+Inf"
        )
        args = [
            job_id,
            attempt,
            "1" if once else "0",
            "1" if redelivered else "0",
            time.time(),
            hostname,
            queue or "unknown",
            "" if waited is None else f"{waited:.6f}",
            bucket,
        ]
        return _text(script("start")(self.client, [], args))

    def finished(self, job_id: str, status: str, **fields: str) -> str:
        """End the job with ``status``; ``fields`` are stored in its record too."""
        pairs = [item for pair in fields.items() for item in pair]
        now = time.time()
        args = [job_id, status, now, now_iso(now), self.retention, *pairs]
        return _text(script("finish")(self.client, [], args))

    def keep_result(self, job_id: str, result: str) -> None:
        """Store a job's result (JSON) in its record, if it has one."""
        script("result")(self.client, [], [job_id, result])

    def cancel(self, job_id: str, reason: str = "cancelled") -> str:
        """Cancel the job; returns its status before (see ``cancel.lua``)."""
        now = time.time()
        args = [job_id, now, now_iso(now), self.retention, reason]
        return _text(script("cancel")(self.client, [], args))

    def note_error(self, job_id: str, error: str) -> None:
        self.client.hset(keys.JOB + job_id, "last_error", error[:2000])

    def get(self, job_id: str) -> Job | None:
        data = _decode(self.client.hgetall(keys.JOB + job_id))
        return Job.from_hash(data) if data.get("id") else None

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.client.hexists(keys.JOB + job_id, "cancel_requested"))

    def page(
        self,
        status: str | None = None,
        type: str | None = None,
        queue: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> JobPage:
        """Jobs newest first, filtered; ``cursor`` is the previous page's ``next_cursor``."""
        wanted = {k: v for k, v in (("status", status), ("type", type), ("queue", queue)) if v}
        out: list[Job] = []
        last: tuple[float, str] | None = None
        for score, job_id, job in self._scan(wanted, cursor):
            if len(out) == limit:
                # The score in full (repr): jobs taken in one fetch share their creation time.
                return JobPage(out, f"{last[0]!r}:{last[1]}" if last else None)
            last = (score, job_id)
            if job is not None and all(getattr(job, k) == v for k, v in wanted.items()):
                out.append(job)
        return JobPage(out, None)

    def _scan(
        self, wanted: dict[str, str], cursor: str | None, batch: int = 200
    ) -> Iterator[tuple[float, str, Job | None]]:
        index = keys.JOBS_INDEX
        if wanted:
            name, value = next(iter(wanted.items()))
            index = f"{keys.JOBS_BY}{name}:{value}"
        top: float | str = "+inf"
        after: str | None = None
        if cursor:
            score_text, _, after = cursor.partition(":")
            top = float(score_text)
        while True:
            found: Any = self.client.zrevrangebyscore(
                index, top, "-inf", start=0, num=batch, withscores=True
            )
            rows = [(_text(m), float(s)) for m, s in found]
            if after is not None:
                rows = [(m, s) for m, s in rows if not (s == float(top) and m >= after)]
            if not rows:
                return
            pipe = self.client.pipeline(transaction=False)
            for member, _ in rows:
                pipe.hgetall(keys.JOB + member)
            stale = []
            for (member, score), data in zip(rows, pipe.execute(), strict=True):
                fields = _decode(data)
                if not fields.get("id"):
                    stale.append(member)
                    yield score, member, None
                else:
                    yield score, member, Job.from_hash(fields)
            if stale:  # their records expired: drop them from the index listed
                self.client.zrem(index, *stale)
            after, top = rows[-1][0], rows[-1][1]


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(data: Any) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in (data or {}).items()}


@lru_cache(maxsize=1)
def store() -> JobStore:
    """This process's job store."""
    return JobStore(get_redis(), get_settings().retention.total_seconds())


def result_json(result: Any) -> str:
    """A result as stored in a record: JSON, or a note when it is larger than the cap."""
    text = json.dumps(result, default=str)
    if len(text) > keys.JOB_RESULT_MAX:
        return json.dumps({"truncated": True, "size": len(text)})
    return text


def is_cancelled() -> bool:
    """Whether the job running in this task has been cancelled (for cooperative stops)."""
    task = current_task
    job_id = getattr(getattr(task, "request", None), "id", None)
    return bool(job_id) and store().cancel_requested(str(job_id))


def check_cancelled() -> None:
    """Raise :class:`Cancelled` when the running job has been cancelled.

    Raises:
        Cancelled: clean up and let it propagate; the job ends ``cancelled``, never failed.
    """
    if is_cancelled():
        raise Cancelled("cancelled while running")
