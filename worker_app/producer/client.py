"""Enqueue helpers for web handlers: validate first, publish only what is valid, return the id."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Task
from pydantic import BaseModel

from worker_app import keys
from worker_app.celery import get_task
from worker_app.errors import InvalidPayload
from worker_app.jobs import records
from worker_app.jobs.payload import Payload
from worker_app.producer.publish import enqueue_many, publish_one
from worker_app.redis_client import get_redis

AnyTask = Task[Any, Any]

__all__ = [
    "Submitted",
    "enqueue",
    "enqueue_critical",
    "enqueue_default",
    "enqueue_low",
    "enqueue_many",
    "submit",
]


@dataclass(frozen=True)
class Submitted:
    """The outcome of :func:`submit`: the job's id, and whether this call created it."""

    job_id: str
    created: bool
    #: The job's record as this call wrote it; None when an equal job existed.
    job: records.Job | None = None


def enqueue(
    task: str | AnyTask,
    payload: Payload = None,
    *,
    queue: str | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
    task_id: str | None = None,
    unique_for: float | None = None,
    unique_key: str | None = None,
) -> str:
    """Validate ``payload`` against the task's model and publish the job; return its id.

    With ``unique_for`` (seconds), an equal job (same task and payload, or the same
    ``unique_key``) enqueued again within that window is not published twice: the id of the
    job already enqueued is returned.

    Raises:
        UnknownTask: ``task`` names no registered task.
        UnknownQueue: ``queue`` is not configured.
        InvalidPayload: the payload is invalid; nothing was published.
        PayloadTooLarge: the message is over ``ASYNQ_MAX_PAYLOAD``; nothing was published.
        BrokerUnavailable: Redis did not take the job.
    """
    return submit(
        task,
        payload,
        queue=queue,
        countdown=countdown,
        eta=eta,
        task_id=task_id,
        unique_for=unique_for,
        unique_key=unique_key,
    ).job_id


def submit(
    task: str | AnyTask,
    payload: Payload = None,
    *,
    queue: str | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
    task_id: str | None = None,
    unique_for: float | None = None,
    unique_key: str | None = None,
) -> Submitted:
    """:func:`enqueue`, telling also whether the job was created or an equal one existed."""
    target = get_task(task) if isinstance(task, str) else task
    if unique_for is not None:
        return _submit_unique(
            target,
            payload,
            unique_for,
            unique_key,
            queue=queue,
            countdown=countdown,
            eta=eta,
            task_id=task_id,
        )
    job = _publish(target, payload, queue, countdown, eta, task_id)
    return Submitted(job.id, True, job)


def _submit_unique(
    target: AnyTask,
    payload: Payload,
    window: float,
    key: str | None,
    **options: Any,
) -> Submitted:
    if window <= 0:
        raise InvalidPayload(f"unique_for must be a positive number of seconds, not {window!r}")
    data = (
        payload.model_dump(mode="json") if isinstance(payload, BaseModel) else dict(payload or {})
    )
    canonical = json.dumps([target.name, data], sort_keys=True, default=str)
    digest = key or hashlib.sha1(canonical.encode()).hexdigest()
    unique = keys.UNIQUE + f"{target.name}:{digest}"
    job_id = options.pop("task_id") or str(uuid.uuid4())
    client = get_redis()
    # One SET NX decides among any number of concurrent callers.
    if not client.set(unique, job_id, nx=True, px=max(1, int(window * 1000))):
        existing = client.get(unique)
        if existing is not None:
            return Submitted(
                existing.decode() if isinstance(existing, bytes) else str(existing), False
            )
        return _submit_unique(
            target, payload, window, key, task_id=job_id, **options
        )  # just expired
    try:
        job = _publish(target, payload, task_id=job_id, **options)
        return Submitted(job.id, True, job)
    except Exception:
        client.delete(unique)  # nothing was published: free the window
        raise


def _publish(
    target: AnyTask,
    payload: Payload,
    queue: str | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
    task_id: str | None = None,
) -> records.Job:
    return publish_one(target, payload, queue=queue, countdown=countdown, eta=eta, task_id=task_id)


def enqueue_critical(task: str | AnyTask, payload: Payload = None, **options: Any) -> str:
    """Enqueue on the ``critical`` queue (Asynq's EnqueueCritical)."""
    return enqueue(task, payload, queue="critical", **options)


def enqueue_default(task: str | AnyTask, payload: Payload = None, **options: Any) -> str:
    """Enqueue on the ``default`` queue."""
    return enqueue(task, payload, queue="default", **options)


def enqueue_low(task: str | AnyTask, payload: Payload = None, **options: Any) -> str:
    """Enqueue on the ``low`` queue."""
    return enqueue(task, payload, queue="low", **options)
