"""Enqueue helpers for web handlers: validate first, publish only what is valid, return the id."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from celery import Task
from pydantic import BaseModel

from worker_app.celery import app
from worker_app.errors import UnknownTask
from worker_app.queues import check_queue

Payload = BaseModel | Mapping[str, Any] | None


def get_task(name: str) -> Task:  # type: ignore[type-arg]
    """The registered task called ``name``.

    Raises:
        UnknownTask: no task of that name is registered; the message lists the known ones.
    """
    if name not in app.tasks:
        app.loader.import_default_modules()
    try:
        return app.tasks[name]
    except KeyError:
        known = sorted(n for n in app.tasks if not n.startswith("celery."))
        raise UnknownTask(f"unknown task {name!r}; registered tasks: {', '.join(known)}") from None


def enqueue(
    task: str | Task,  # type: ignore[type-arg]
    payload: Payload = None,
    *,
    queue: str | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
    task_id: str | None = None,
) -> str:
    """Validate ``payload`` against the task's model and publish the job; return its id.

    Raises:
        UnknownTask: ``task`` names no registered task.
        UnknownQueue: ``queue`` is not configured.
        InvalidPayload: the payload is invalid; nothing was published.
    """
    target = get_task(task) if isinstance(task, str) else task
    options: dict[str, Any] = {}
    if queue is not None:
        options["queue"] = check_queue(queue)
    if countdown is not None:
        options["countdown"] = countdown
    if eta is not None:
        options["eta"] = eta
    if isinstance(payload, BaseModel):
        args: tuple[Any, ...] = (payload,)
        kwargs: dict[str, Any] = {}
    else:
        args, kwargs = (), dict(payload or {})
    result = target.apply_async(args, kwargs, task_id=task_id, **options)
    return str(result.id)


def enqueue_critical(task: str | Task, payload: Payload = None, **options: Any) -> str:  # type: ignore[type-arg]
    """Enqueue on the ``critical`` queue (Asynq's EnqueueCritical)."""
    return enqueue(task, payload, queue="critical", **options)


def enqueue_default(task: str | Task, payload: Payload = None, **options: Any) -> str:  # type: ignore[type-arg]
    """Enqueue on the ``default`` queue."""
    return enqueue(task, payload, queue="default", **options)


def enqueue_low(task: str | Task, payload: Payload = None, **options: Any) -> str:  # type: ignore[type-arg]
    """Enqueue on the ``low`` queue."""
    return enqueue(task, payload, queue="low", **options)
