"""The outbox relay: publishes committed outbox rows to Redis, each once, under its job id.

A relay claims the oldest unsent rows with ``FOR UPDATE SKIP LOCKED`` (so any number of relays
share the work without waiting on each other), publishes each through Celery's normal path
(``send_task``: job records, lifecycle log lines, tracing headers) with the row's job id as
task id, and marks them sent in the same transaction. A committed insert wakes it through
LISTEN/NOTIFY; it also polls, in case a notification is lost with its connection.

A relay that dies after publishing and before its commit leaves the rows unsent: the next relay
publishes them again under the same ids. Those publishes carry :data:`keys.PUBLISH_ONCE`, so the
job records recognise the repeat and no worker runs the job twice.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

from celery.result import denied_join_result
from kombu.exceptions import OperationalError as BrokerError
from kombu.utils.json import loads
from opentelemetry import context, propagate
from redis import RedisError

from worker_app import keys
from worker_app.celery import app
from worker_app.config import get_settings, mask_url
from worker_app.dlq.capture import handle_failure
from worker_app.dlq.entries import Entry
from worker_app.errors import OutboxUnavailable
from worker_app.outbox.sql import OutboxTable, connect, database_url, load_psycopg
from worker_app.redis_client import get_redis

logger = logging.getLogger("worker_app.outbox")

#: Message headers of the W3C trace context, carried from the enqueueing transaction.
TRACE_HEADERS = ("traceparent", "tracestate")
#: How the relay's connections show in ``pg_stat_activity``.
APPLICATION_NAME = "worker-app outbox relay"
#: Rows claimed (and held locked) per transaction: large enough to amortise the round trips,
#: small enough that a relay killed mid-batch re-publishes little.
BATCH = 100
#: Seconds between two claims while no notification comes: the fallback when one is missed.
POLL = 5.0
#: How often a waiting relay looks at its stop flag, in seconds.
STOP_CHECK = 0.5
#: Backoff after a failure, in seconds: from START, doubling (with jitter) up to MAX.
BACKOFF_START = 0.5
BACKOFF_MAX = 5.0
#: Seconds between two deletions of rows sent longer than ASYNQ_RETENTION ago, and rows per
#: DELETE, so a large backlog never holds one long transaction.
PURGE_PERIOD = 60.0
PURGE_CHUNK = 10_000


def outage_of(exc: BaseException) -> str | None:
    """``"PostgreSQL"`` or ``"Redis"`` when ``exc`` means that server is unreachable."""
    psycopg = load_psycopg()
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return "PostgreSQL"
    if isinstance(exc, BrokerError | RedisError | OSError):
        return "Redis"
    # The result store's subscription gives up with a RuntimeError when Redis is away.
    if isinstance(exc, RuntimeError) and isinstance(exc.__cause__, RedisError | OSError):
        return "Redis"
    return None


class Relay:
    """One relay loop; :meth:`run` until ``stop`` is set (any number may run at once)."""

    def __init__(
        self,
        url: str | None = None,
        table: OutboxTable | None = None,
        *,
        batch: int = BATCH,
        poll: float = POLL,
    ) -> None:
        settings = get_settings()
        self.url = url or database_url(settings)
        self.table = table or OutboxTable.from_settings(settings)
        self.batch = batch
        self.poll = poll
        self.retention = settings.retention.total_seconds()
        self.relayed = 0
        self._outage: tuple[str, float] | None = None
        self._delay = BACKOFF_START
        self._next_purge = 0.0

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set, riding out PostgreSQL and Redis outages.

        Raises:
            OutboxUnavailable: the outbox table does not exist (run ``outbox migrate``).
        """
        logger.info("outbox relay started: %s, table %s", mask_url(self.url), self.table.qualified)
        while not stop.is_set():
            try:
                self._serve(stop)
            except Exception as exc:
                what = outage_of(exc)
                if what is None:
                    if isinstance(exc, load_psycopg().errors.UndefinedTable):
                        raise OutboxUnavailable(
                            f"the outbox table {self.table.qualified} does not exist; "
                            "run: worker-app outbox migrate"
                        ) from None
                    raise
                self._down(what, exc)
                stop.wait(random.uniform(self._delay / 2, self._delay))
                self._delay = min(BACKOFF_MAX, self._delay * 2)
        logger.info("outbox relay stopped after relaying %d jobs", self.relayed)

    def _serve(self, stop: threading.Event) -> None:
        with (
            connect(self.url, autocommit=True, application_name=APPLICATION_NAME) as listener,
            connect(self.url, application_name=APPLICATION_NAME) as conn,
        ):
            listener.execute(f'LISTEN "{self.table.channel}"')
            while not stop.is_set():
                count = self.relay_once(conn)
                if self._outage is not None and (self._outage[0] == "PostgreSQL" or count):
                    self._up()
                if count >= self.batch:
                    continue  # a backlog: claim again at once
                if time.monotonic() >= self._next_purge:
                    self.purge(conn)
                self._wait(listener, stop)

    def relay_once(self, conn: Any) -> int:
        """Claim, publish and mark one batch; returns the rows claimed.

        Rows published before a failure are still marked sent; the failure is raised after.
        """
        failure: BaseException | None = None
        done: list[str] = []
        with conn.transaction():
            rows = conn.execute(self.table.claim(), (self.batch,)).fetchall()
            if rows:
                # One round trip per batch finds Redis away before any publish does (whose
                # hooks would each log a traceback meanwhile).
                get_redis().ping()
            for row in rows:
                try:
                    self._publish(row)
                except Exception as exc:
                    if outage_of(exc) is not None:
                        failure = exc
                        break
                    self._dead_letter(row, exc)  # it can never be published as it is
                done.append(row[0])
            if done:
                conn.execute(self.table.mark_sent(), (done,))
        self.relayed += len(done)
        if done:
            logger.debug("relayed %d jobs", len(done))
        if failure is not None:
            raise failure
        return len(rows)

    def _publish(self, row: tuple[Any, ...]) -> None:
        job_id, task, queue, payload, run_at, created_at, trace_text = row
        options: dict[str, Any] = {}
        if run_at is not None and run_at > datetime.now(UTC):
            options["eta"] = run_at
        trace = {k: v for k, v in loads(trace_text).items() if k in TRACE_HEADERS}
        headers = {**trace, keys.PUBLISH_ONCE: "1", keys.FIRST_ENQUEUED_AT: created_at}
        # Under the enqueueing transaction's trace: with tracing on here, the publish span is
        # its child; with it off, the message carries that context as it is.
        token = context.attach(propagate.extract(trace)) if trace else None
        try:
            # By name: the relay need not import the task's module, and the worker validates
            # the payload again (an invalid one is dead-lettered there, as for any publish).
            # Nobody waits for results here: no subscription to each job's result channel.
            with denied_join_result():
                app.send_task(
                    task,
                    (),
                    loads(payload),
                    task_id=job_id,
                    queue=queue,
                    headers=headers,
                    **options,
                )
        finally:
            if token is not None:
                context.detach(token)

    def _dead_letter(self, row: tuple[Any, ...], exc: Exception) -> None:
        job_id, task, queue, payload, _run_at, created_at, trace_text = row
        logger.error("outbox row %s (%s) cannot be published: %s", job_id, task, exc)
        handle_failure(
            Entry(
                task_id=job_id,
                task_name=task,
                reason="permanent_error",
                kwargs=loads(payload),
                queue=queue,
                headers=loads(trace_text),
                exc_type=type(exc).__name__,
                exc_message=str(exc),
                first_enqueued_at=created_at,
            )
        )

    def purge(self, conn: Any) -> int:
        """Delete rows sent longer than ``ASYNQ_RETENTION`` ago; returns how many."""
        self._next_purge = time.monotonic() + PURGE_PERIOD
        total = 0
        while True:
            with conn.transaction():
                deleted = int(
                    conn.execute(self.table.purge(), (self.retention, PURGE_CHUNK)).rowcount
                )
            total += deleted
            if deleted < PURGE_CHUNK:
                return total

    def _wait(self, listener: Any, stop: threading.Event) -> None:
        """Until a notification, the poll period, or ``stop``."""
        deadline = time.monotonic() + self.poll
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            for _ in listener.notifies(timeout=min(left, STOP_CHECK), stop_after=1):
                return

    def _down(self, what: str, exc: BaseException) -> None:
        if self._outage is not None and self._outage[0] == what:
            return  # one line per outage
        self._outage = (what, time.monotonic())
        detail = (str(exc).strip().splitlines() or [""])[0]
        logger.warning(
            "outbox relay: %s unreachable (%s: %s); retrying with backoff up to %.0fs",
            what,
            type(exc).__name__,
            detail,
            BACKOFF_MAX,
        )

    def _up(self) -> None:
        assert self._outage is not None
        what, since = self._outage
        self._outage = None
        self._delay = BACKOFF_START
        logger.info(
            "outbox relay: %s reachable again after %.1fs; catching up",
            what,
            time.monotonic() - since,
        )
