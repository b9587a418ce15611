"""Batch enqueue: many jobs of one task, validated first, published in one pipelined round trip.

``enqueue`` pays one Celery publish (a few hundred microseconds of Python) and two round trips
(the message, the job record) per job. ``enqueue_many`` builds each message with Celery's own
protocol-2 builder and kombu's own envelope code, then sends every message and every job record
in one Redis pipeline: the same bytes on the queue, the same records, a fraction of the cost.

What it does not do per message: Flower's ``task-sent`` event and the per-job ``published`` log
line (one line per batch instead); the trace context of the caller is still carried in each
message when tracing is on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from kombu.exceptions import OperationalError
from kombu.serialization import dumps
from kombu.utils.json import dumps as json_dumps
from pydantic import BaseModel
from redis.exceptions import RedisError

from worker_app import jobs, keys, tracing
from worker_app.base import validate_payload
from worker_app.celery import app
from worker_app.client import AnyTask, Payload, get_task
from worker_app.config import get_settings
from worker_app.delays import due_at, park
from worker_app.errors import BrokerUnavailable, InvalidPayload
from worker_app.queues import check_queue

logger = logging.getLogger(__name__)


def _kwargs_of(target: AnyTask, payload: Payload, index: int) -> dict[str, Any]:
    model = getattr(target, "payload_model", None)
    try:
        if model is not None:
            data = payload if isinstance(payload, BaseModel) else dict(payload or {})
            args = (data,) if isinstance(data, BaseModel) else ()
            kwargs = {} if isinstance(data, BaseModel) else data
            validated: BaseModel = validate_payload(model, args, kwargs)
            return validated.model_dump(mode="json")
    except InvalidPayload as exc:
        raise InvalidPayload(f"payload #{index}: {exc}", exc.errors) from None
    if isinstance(payload, BaseModel):
        return payload.model_dump(mode="json")
    return dict(payload or {})


def enqueue_many(
    task: str | AnyTask,
    payloads: Iterable[Payload],
    *,
    queue: str | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
) -> list[str]:
    """Validate every payload, then publish one job per payload; return the job ids in order.

    Nothing is published when any payload is invalid. Each job is tracked and runs exactly as
    if it had been enqueued alone.

    Raises:
        UnknownTask: ``task`` names no registered task.
        UnknownQueue: ``queue`` (or the task's declared queue) is not configured.
        InvalidPayload: a payload is invalid (the message says which); nothing was published.
        BrokerUnavailable: Redis did not take the batch.
    """
    target = get_task(task) if isinstance(task, str) else task
    queue_name = check_queue(
        queue or getattr(target, "queue_name", None) or get_settings().default_queue
    )
    all_kwargs = [_kwargs_of(target, payload, n) for n, payload in enumerate(payloads)]
    if not all_kwargs:
        return []
    conf = app.conf
    limits = (
        target.time_limit or conf.task_time_limit,
        target.soft_time_limit or conf.task_soft_time_limit,
    )
    now = time.time()
    trace: dict[str, Any] = {}
    if tracing.enabled():
        from opentelemetry.propagate import inject

        inject(trace)
    ids: list[str] = []
    try:
        pool: Any = app.pool  # a pool of kombu connections
        with pool.acquire(block=True) as connection:
            channel = connection.default_channel
            list_key = channel._q_for_pri(queue_name, 0)
            with channel.conn_or_acquire() as client:
                pipe = client.pipeline(transaction=False)
                records = jobs.store()
                for kwargs in all_kwargs:
                    job_id = str(uuid.uuid4())
                    headers, properties, body, _ = app.amqp.create_task_message(
                        job_id,
                        target.name,
                        (),
                        kwargs,
                        countdown=countdown,
                        eta=eta,
                        time_limit=limits[0],
                        soft_time_limit=limits[1],
                        ignore_result=target.ignore_result,
                    )
                    headers.update(trace)
                    headers[keys.FIRST_ENQUEUED_AT] = headers[keys.PUBLISHED_AT] = now
                    content_type, encoding, data = dumps(body, serializer="json")
                    message = channel.prepare_message(
                        data,
                        0,
                        content_type,
                        encoding,
                        headers,
                        {**properties, "delivery_mode": 2},
                    )
                    channel._inplace_augment_message(message, "", queue_name)
                    run_at = due_at(message)
                    if run_at is not None and run_at - now > keys.PARK_AHEAD:
                        park(pipe, list_key, message, run_at)
                    else:
                        pipe.lpush(list_key, json_dumps(message))
                    records.published(
                        job_id,
                        target.name,
                        queue_name,
                        "scheduled" if run_at is not None else "pending",
                        run_at or now,
                        0,
                        {"args": [], "kwargs": kwargs},
                        reset=True,
                        client=pipe,
                    )
                    ids.append(job_id)
                pipe.execute()
    except (RedisError, OperationalError, OSError) as exc:
        raise BrokerUnavailable(
            f"could not publish {len(all_kwargs)} {target.name} job(s): Redis unreachable ({exc})"
        ) from exc
    logger.info("published %d %s job(s) queue=%s", len(ids), target.name, queue_name)
    return ids
