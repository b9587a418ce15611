"""``.delay()`` and ``.apply_async()`` straight to the one publish call.

Celery's ``send_task`` builds a task message, then takes a kombu producer from its pool, binds
the exchange, serializes the body, wraps it for the Redis channel and calls the transport, which
decodes the body once more to write the job's record: most of a ``.delay()``'s time. Here the
same steps run in Celery's order with Celery's own parts — the task's options, its router, its
message builder (``app.amqp.create_task_message``), its signals — and the message goes to the
publish script (record and message in one call) with the record built from the arguments in
hand. The queue gets the same envelope kombu would put there.

Calls this path does not serve go through Celery unchanged (:func:`served`): eager mode, an
explicit producer or connection, a named exchange, a compression, ``task_send_sent_event`` (its
event needs a producer), stamps, and any option it does not know.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery.signals import after_task_publish, before_task_publish, task_sent
from celery.utils.functional import maybe_list
from dateutil.parser import isoparse  # type: ignore[import-untyped]  # Celery's ISO parser
from kombu import Queue
from kombu.utils.json import dumps as json_dumps
from kombu.utils.uuid import uuid
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker_app import keys
from worker_app.broker import envelope
from worker_app.broker.publish import Record, due_at, publish, record_of
from worker_app.errors import BrokerUnavailable
from worker_app.redis_client import get_redis

logger = logging.getLogger(__name__)

#: Options of ``apply_async`` this path serves; any other sends the call through Celery.
SERVED = frozenset(
    {
        "add_to_parent",
        "chain",
        "chord",
        "countdown",
        "declare",
        "eta",
        "expires",
        "group_id",
        "group_index",
        "headers",
        "ignore_result",
        "link",
        "link_error",
        "parent_id",
        "priority",
        "queue",
        "replaced_task_nesting",
        "reply_to",
        "retries",
        "retry",
        "retry_policy",
        "root_id",
        "route_name",
        "routing_key",
        "serializer",
        "shadow",
        "soft_time_limit",
        "time_limit",
    }
)

#: Parameters of Celery's ``send_task_message`` and kombu's ``Producer.publish`` that are not
#: message properties (priority and expiration are read on their own).
_PARAMETERS = (
    "compression",
    "confirm_timeout",
    "content_encoding",
    "content_type",
    "delivery_mode",
    "event_dispatcher",
    "exchange",
    "exchange_type",
    "immediate",
    "mandatory",
    "routing_key",
    "serializer",
    "timeout",
)

#: Task attributes (Celery's exec options) that take a call to Celery's path when set.
UNSERVED_PRESETS = ("exchange", "compression", "delivery_mode", "immediate", "mandatory")

#: What a failed publish is retried on: the connection, never a refusal by Redis.
_RETRIED = (RedisConnectionError, RedisTimeoutError, OSError)


def served(task: Any, options: dict[str, Any]) -> bool:
    """Whether this path sends a call with ``options`` of ``task`` (else Celery does)."""
    if not options.keys() <= SERVED:
        return False
    preset = task._get_exec_options()  # the task's own routing attributes
    if any(preset.get(name) is not None for name in UNSERVED_PRESETS):
        return False
    conf = task.app.conf
    return not (
        conf.task_always_eager
        or conf.task_send_sent_event
        or task_sent.receivers  # Celery's deprecated signal: left to Celery
        or task.__v2_compat__
        or options.get("serializer") not in (None, "json")
    )


def send(task: Any, args: Any, kwargs: Any, task_id: str | None, options: dict[str, Any]) -> Any:
    """Publish one call of ``task`` as Celery's ``apply_async`` would; return its AsyncResult.

    Raises:
        ValueError: the task's soft time limit is over its hard one (as Celery).
        TypeError: the arguments do not fit the task's signature (as Celery).
        BrokerUnavailable: Redis did not take the job (after the publish retry policy).
    """
    return send_job(task, args, kwargs, task_id, options).result


@dataclass(frozen=True)
class Sent:
    """What one publish did."""

    #: The call's AsyncResult, as Celery's ``apply_async`` returns it.
    result: Any
    #: The record it wrote; None for what has no record (Celery's own ``celery.*`` tasks).
    record: Record | None
    #: When it was published (Unix time).
    at: float
    #: The job's status before ('' when it had no record; else the record may not be this
    #: publish's: a publish sent again finds its job waiting and changes nothing).
    before: str


def send_job(
    task: Any, args: Any, kwargs: Any, task_id: str | None, options: dict[str, Any]
) -> Sent:
    """:func:`send`, telling what the publish did.

    Raises:
        ValueError: the task's soft time limit is over its hard one (as Celery).
        TypeError: the arguments do not fit the task's signature (as Celery).
        BrokerUnavailable: Redis did not take the job (after the publish retry policy).
    """
    app = task.app
    conf = app.conf
    name = task.name
    # celery.app.task.Task.apply_async
    if task.soft_time_limit and task.time_limit and task.soft_time_limit > task.time_limit:
        raise ValueError("soft_time_limit must be less than or equal to time_limit")
    if task.typing:
        check = getattr(task, "__header__", None)
        if check is not None:
            check(*(args or ()), **(kwargs or {}))
    shadow = options.pop("shadow", None) or task.shadow_name(args, kwargs, options)
    options = dict(task._get_exec_options(), **options)
    if task._dump_pydantic_arguments is not None:
        args, kwargs = task._dump_pydantic_arguments(args, kwargs)
    options.setdefault("ignore_result", task.ignore_result)
    # celery.app.base.Celery.send_task
    new_id = task_id is None
    task_id = task_id or uuid()
    countdown = options.pop("countdown", None)
    eta = options.pop("eta", None)
    time_limit = options.pop("time_limit", None)
    soft_time_limit = options.pop("soft_time_limit", None)
    expires = options.pop("expires", None)
    ignore_result = options.pop("ignore_result", None)
    link, link_error = options.pop("link", None), options.pop("link_error", None)
    add_to_parent = options.pop("add_to_parent", True)
    root_id, parent_id = options.pop("root_id", None), options.pop("parent_id", None)
    route_name = options.pop("route_name", None)
    amqp = app.amqp
    options = amqp.router.route(options, route_name or name, args, kwargs, task)
    if expires is not None:
        options["expiration"] = _expires_in(app, task_id, expires)
    parent, looked = None, False
    if not root_id or not parent_id:
        parent, looked = app.current_worker_task, True
        if parent:
            root_id = root_id or parent.request.root_id or parent.request.id
            parent_id = parent_id or parent.request.id
            if conf.task_inherit_parent_priority:
                options.setdefault("priority", parent.request.delivery_info.get("priority"))
    headers, properties, body, _ = amqp.create_task_message(
        task_id,
        name,
        args,
        kwargs,
        countdown,
        eta,
        options.pop("group_id", None),
        options.pop("group_index", None),
        expires,
        options.pop("retries", 0),
        options.pop("chord", None),
        maybe_list(link),
        maybe_list(link_error),
        options.pop("reply_to", None) or app.thread_oid,
        time_limit,
        soft_time_limit,
        False,  # no task-sent event (served() leaves it to Celery)
        root_id,
        parent_id,
        shadow,
        options.pop("chain", None),
        ignore_result=ignore_result,
        replaced_task_nesting=options.pop("replaced_task_nesting", 0),
        **options,
    )
    record, now, before = _deliver(task, headers, properties, body, options, new_id=new_id)
    result = task.AsyncResult(task_id)
    result.ignored = ignore_result
    if add_to_parent:
        if not looked:
            parent = app.current_worker_task
        if parent:
            parent.add_trail(result)
    return Sent(result, record, now, before)


def _json(value: Any) -> str:
    """kombu's JSON of ``value``: the standard library's C encoder gives the same text for
    plain data; kombu's encoder serves the rest (dates, UUIDs, decimals)."""
    try:
        return json.dumps(value)
    except TypeError:
        return json_dumps(value)


def _aware(when: datetime) -> datetime:
    """``when`` with a time zone: naive means UTC (as Celery reads it)."""
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _expires_in(app: Any, task_id: str, expires: Any) -> float:
    """Seconds until ``expires`` (a datetime, ISO text or seconds), 0 when past (as Celery)."""
    if isinstance(expires, datetime | str):
        when = isoparse(expires) if isinstance(expires, str) else expires
        seconds = (_aware(when) - _aware(app.now())).total_seconds()
    else:
        seconds = float(expires)
    if seconds < 0:
        logger.warning("%s has an expiration date in the past (%ss ago)", task_id, -seconds)
        return 0.0
    return float(seconds)


def _deliver(
    task: Any,
    headers: dict[str, Any],
    properties: dict[str, Any],
    body: Any,
    options: dict[str, Any],
    *,
    new_id: bool,
) -> tuple[Record | None, float, str]:
    """celery.app.amqp's ``send_task_message`` and kombu's ``Producer.publish`` for a job
    queue on Redis: the signals, then one publish call with the record."""
    app = task.app
    conf = app.conf
    name = task.name
    extra = options.pop("headers", None)
    if extra:
        headers.update(extra)
    queue = options.pop("queue", None)
    qname = queue.name if isinstance(queue, Queue) else str(queue or app.amqp.default_queue.name)
    declare = options.pop("declare", None)
    retry = options.pop("retry", None)
    retry = conf.task_publish_retry if retry is None else retry
    policy = dict(conf.task_publish_retry_policy, **(options.pop("retry_policy", None) or {}))
    for consumed in _PARAMETERS:
        options.pop(consumed, None)
    properties.update(options)  # what is left is message properties, as Celery passes them
    before_task_publish.send(
        sender=name,
        body=body,
        exchange="",
        routing_key=qname,
        declare=declare if declare is not None else [queue],
        headers=headers,
        properties=properties,
        retry_policy=policy,
    )
    # kombu's Producer.publish: priority and expiration are its parameters, not properties.
    properties = dict(properties)
    priority = properties.pop("priority", None)
    expiration = properties.pop("expiration", None)
    mode = getattr(getattr(queue, "exchange", None), "delivery_mode", None)
    mode = mode or conf.task_default_delivery_mode
    properties["delivery_mode"] = 1 if mode in (1, "transient") else 2
    if expiration is not None:
        properties["expiration"] = str(int(expiration * 1000))
    data = _json(body)
    # kombu's reading of the policy: max_retries None retries without end.
    most = policy.get("max_retries")
    attempts = (int(most) + 1 if most is not None else sys.maxsize) if retry else 1
    what = f"{name}[{headers.get('id')}]"
    record: Record | None = None
    now, before = time.time(), ""
    for attempt in range(attempts):
        now = time.time()
        if headers.get("task"):
            headers[keys.PUBLISHED_AT] = now  # the message carries it: queue age, wait time
        message = envelope.wrap(data, headers, dict(properties), qname, priority)
        record = record_of(headers, body[0], body[1], qname, new_id=new_id)
        try:
            before = publish(
                get_redis(),
                envelope.list_key(qname, priority or 0),
                _json(message),
                due=due_at(headers),
                record=record,
                now=now,
            )
            break
        except _RETRIED as exc:
            if attempt + 1 == attempts:
                raise BrokerUnavailable(
                    f"could not publish {what}: Redis unreachable ({exc})"
                ) from exc
            start, step = (
                float(policy.get("interval_start", 0)),
                float(policy.get("interval_step", 0.2)),
            )
            time.sleep(min(float(policy.get("interval_max", 1)), start + step * attempt))
        except RedisError as exc:
            raise BrokerUnavailable(f"could not publish {what}: {exc}") from exc
    after_task_publish.send(sender=name, body=body, headers=headers, exchange="", routing_key=qname)
    return record, now, before
