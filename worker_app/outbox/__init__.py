"""Transactional enqueue: a job exists exactly when the business data it is about does.

:func:`enqueue_tx` writes the job into the outbox table inside the caller's open PostgreSQL
transaction, so a rollback leaves no job behind and a commit cannot lose one; ``worker-app
outbox relay`` publishes committed rows to Redis under the job id returned here. Nothing touches
Redis until the transaction commits. psycopg is imported only where a connection is opened, so
worker_app works without the ``postgres`` extra.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from kombu.utils.json import dumps

from worker_app.broker.queues import check_queue
from worker_app.config import get_settings
from worker_app.errors import InvalidPayload, OutboxUnavailable
from worker_app.jobs.payload import Payload, kwargs_of
from worker_app.outbox.sql import OutboxTable

if TYPE_CHECKING:
    from worker_app.producer.client import AnyTask

__all__ = ["OutboxTable", "enqueue_tx"]

_PYFORMAT = re.compile(r"%\((\w+)\)s")


def enqueue_tx(
    conn: Any,
    task: str | AnyTask,
    payload: Payload = None,
    queue: str | None = None,
    countdown: float | None = None,
) -> str:
    """Validate the job and insert it into the outbox in ``conn``'s open transaction.

    Args:
        conn: a psycopg connection (or another DB-API connection whose driver takes
            ``%(name)s`` parameters), or a SQLAlchemy ``Connection`` or ``Session``, in the
            transaction that writes the business data.
        task: a registered task, or its name.
        payload: the task's payload model, or its fields as a mapping.
        queue: a configured queue; the task's own queue (or the default) when None.
        countdown: run no earlier than this many seconds after this call.

    Returns:
        The job id: the Celery task id the job will run under, known before the commit.

    Raises:
        UnknownTask: ``task`` names no registered task.
        UnknownQueue: ``queue`` (or the task's queue) is not configured.
        InvalidPayload: the payload is invalid; nothing was written.
        OutboxUnavailable: ``conn`` is neither kind of connection.
        psycopg.Error (or the caller's driver's error): the insert failed; the caller's
            transaction decides what happens next, as with any other statement.
    """
    from worker_app.celery import get_task  # the Celery app, only when a job is enqueued

    target = get_task(task) if isinstance(task, str) else task
    settings = get_settings()
    chosen = queue or getattr(target, "queue_name", None) or settings.default_queue
    check_queue(chosen)
    if countdown is not None and countdown < 0:
        raise InvalidPayload(f"countdown must not be negative, not {countdown!r}")
    job_id = str(uuid.uuid4())
    params = {
        "job_id": job_id,
        "task": target.name,
        "queue": chosen,
        # kombu's JSON, as Celery would write it into the message: dates and UUIDs survive.
        "payload": dumps(kwargs_of(target, payload)),
        "run_at": datetime.now(UTC) + timedelta(seconds=countdown) if countdown else None,
        "headers": json.dumps(_trace_context()),
    }
    _execute(conn, OutboxTable.from_settings(settings).insert(), params)
    return job_id


def _trace_context() -> dict[str, str]:
    """The caller's trace context (``traceparent``), so the job joins the handler's trace."""
    from opentelemetry import propagate  # only in a process that traces, and only here

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def _execute(conn: Any, statement: str, params: dict[str, Any]) -> None:
    """Run ``statement`` on whichever kind of connection the caller holds."""
    if type(conn).__module__.startswith("sqlalchemy"):
        from sqlalchemy import text  # SQLAlchemy is the caller's, not a dependency

        conn.execute(text(_PYFORMAT.sub(r":\1", statement)), params)
    elif callable(getattr(conn, "cursor", None)):
        with conn.cursor() as cursor:
            cursor.execute(statement, params)
    else:
        raise OutboxUnavailable(
            "enqueue_tx needs a psycopg connection or a SQLAlchemy Connection or Session, "
            f"not {type(conn).__name__}"
        )
