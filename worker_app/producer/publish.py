"""The publish paths behind ``enqueue`` and ``enqueue_many``.

``enqueue`` (one job) validates the payload and then takes ``.apply_async()``'s own path
(:mod:`.send`): Celery's message, Celery's publish signals (the ``published`` log line, the
OpenTelemetry producer span), record and message in one script call.

``enqueue_many`` skips per-message signals: one log line per batch, the caller's trace context
copied into each message, no Flower ``task-sent`` event. It builds the first message with
Celery's builder and the others from it (only the id, arguments, times and delivery tag
differ), and sends each chunk of jobs with its records as one script call.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kombu.exceptions import OperationalError
from kombu.serialization import dumps
from kombu.utils.json import dumps as json_dumps
from redis.exceptions import NoScriptError, RedisError, ResponseError

from worker_app import keys
from worker_app.broker.amqp import REPR_MAX, short_repr
from worker_app.broker.envelope import list_key
from worker_app.broker.publish import (
    batch_args,
    check_size,
    due_at,
    placement,
    replicas_for,
    settle_unconfirmed,
)
from worker_app.broker.queues import check_queue
from worker_app.broker.registry import load_all, pack_command, script
from worker_app.celery import app, get_task
from worker_app.config import get_settings, replicas_to_wait
from worker_app.errors import BrokerUnavailable
from worker_app.jobs import records
from worker_app.jobs.payload import Payload, kwargs_of
from worker_app.observability import tracing
from worker_app.producer import send

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: its id and keyword arguments."""

    id: str
    kwargs: dict[str, Any]


class _Publisher:
    """Builds the messages of one task for one queue, ready for one script call each."""

    def __init__(self, channel: Any, target: Any, queue: str) -> None:
        conf = app.conf
        self.channel, self.target, self.queue = channel, target, queue
        self.list_key = list_key(queue)
        self.limits = (
            target.time_limit or conf.task_time_limit,
            target.soft_time_limit or conf.task_soft_time_limit,
        )

    def message(
        self, job: Outgoing, countdown: float | None, eta: datetime | None
    ) -> tuple[dict[str, Any], Any, dict[str, Any]]:
        """Celery's headers, body and properties of ``job``."""
        headers, properties, body, _ = app.amqp.create_task_message(
            job.id,
            self.target.name,
            (),
            job.kwargs,
            countdown=countdown,
            eta=eta,
            time_limit=self.limits[0],
            soft_time_limit=self.limits[1],
            ignore_result=self.target.ignore_result,
            # What logs and Flower show of the arguments; Celery's safe repr costs more than
            # building the rest of the message, and the payload is plain JSON data here.
            argsrepr="()",
            kwargsrepr=short_repr(job.kwargs),
        )
        headers[keys.FIRST_ENQUEUED_AT] = time.time()
        return headers, body, properties

    def placement(
        self, headers: dict[str, Any], body: Any, properties: dict[str, Any]
    ) -> tuple[str, str, float | None]:
        """Where the envelope goes: (its list, its JSON text, when it is due)."""
        envelope = self.envelope(headers, body, properties)
        return self.list_key, json_dumps(envelope), due_at(headers)

    def envelope(
        self, headers: dict[str, Any], body: Any, properties: dict[str, Any]
    ) -> dict[str, Any]:
        """kombu's envelope of a message, as its Redis channel would put it on the queue."""
        content_type, encoding, data = dumps(body, serializer="json")
        envelope: dict[str, Any] = self.channel.prepare_message(
            data, 0, content_type, encoding, headers, {**properties, "delivery_mode": 2}
        )
        self.channel._inplace_augment_message(envelope, "", self.queue)
        return envelope


#: Jobs per script call of ``enqueue_many`` (each call's arguments stay well under Lua's limit).
BATCH_CHUNK = 500

# Stand-ins for what differs between the messages of one batch, in the JSON of the first.
_ID, _BODY, _KWREPR, _TIME, _TAG = (
    f"__worker_app_{name}__" for name in ("id", "body", "kwrepr", "time", "tag")
)
_SLOT = re.compile('"(' + "|".join((_ID, _BODY, _KWREPR, _TIME, _TAG)) + ')"')


class _Template:
    """The envelope of one batch's messages as JSON text with slots for what differs per job:
    the same bytes Celery's builder and kombu would produce for each, at a fraction of the
    cost."""

    def __init__(
        self,
        publisher: _Publisher,
        countdown: float | None,
        eta: datetime | None,
        trace: dict[str, Any],
    ) -> None:
        headers, body, properties = publisher.message(Outgoing(_ID, {}), countdown, eta)
        headers.update(trace)
        headers.update(
            {"kwargsrepr": _KWREPR, keys.FIRST_ENQUEUED_AT: _TIME, keys.PUBLISHED_AT: _TIME}
        )
        self.key, _, due = publisher.placement(headers, body, properties)
        self.mode = placement(due, time.time())
        self.due = due
        envelope = publisher.envelope(headers, body, properties)
        envelope["body"] = _BODY
        envelope["properties"]["delivery_tag"] = _TAG
        self.embed = json_dumps(body[2])
        self.list_key = publisher.list_key
        # Even positions are literal text, odd ones the names of the slots between them.
        self.parts = _SLOT.split(json_dumps(envelope))

    def encode(self, job: Outgoing) -> tuple[str, str]:
        """The JSON of ``job``'s arguments as its message carries them, and its record's
        payload."""
        try:
            # Plain JSON data (always, for a task with a payload model) encodes the same with
            # the standard library as with kombu's encoder, and serves the record as well.
            arguments = json.dumps(job.kwargs)
            return arguments, f'{{"args": [], "kwargs": {arguments}}}'
        except TypeError:  # dates and the like: kombu's typed encoding, as Celery would send
            arguments = json_dumps(job.kwargs)
            return arguments, json.dumps({"args": [], "kwargs": job.kwargs}, default=str)

    def size_bound(self, arguments: str) -> int:
        """An upper bound of the length of a message whose arguments encode to ``arguments``."""
        literal = sum(len(part) for part in self.parts[::2])
        body = len(arguments) + len(self.embed) + 8
        # id and tag (quoted uuids), two times, the base64 body, the capped repr escaped.
        return literal + 2 * 38 + 2 * 32 + 4 * (body // 3 + 1) + 2 + 6 * REPR_MAX + 2

    def message(self, job: Outgoing, now: float, arguments: str) -> str:
        """The envelope of ``job`` (its arguments encoded by :meth:`encode`), as JSON text."""
        body = f"[[], {arguments}, {self.embed}]"
        values = {
            _ID: f'"{job.id}"',  # a uuid4: nothing to escape
            _BODY: '"' + base64.b64encode(body.encode()).decode() + '"',
            _KWREPR: json.dumps(short_repr(job.kwargs)),
            _TIME: repr(now),
            _TAG: '"' + str(uuid.uuid4()) + '"',
        }
        parts = self.parts
        return "".join(part if n % 2 == 0 else values[part] for n, part in enumerate(parts))


class _Sender:
    """Commands written to one connection of ``client``'s pool as they come, their replies
    read at the end (an error reply is returned, not raised)."""

    def __init__(self, client: Any) -> None:
        self.pool = client.connection_pool
        self.connection: Any = None
        self.sent = 0

    def __enter__(self) -> _Sender:
        self.connection = self.pool.get_connection()
        return self

    def send(self, command: bytes) -> None:
        self.connection.send_packed_command([command], check_health=False)
        self.sent += 1

    def replies(self) -> list[Any]:
        out: list[Any] = []
        for _ in range(self.sent):
            try:
                out.append(self.connection.read_response())
            except ResponseError as exc:
                out.append(exc)
        self.sent = 0
        return out

    def __exit__(self, *exc_info: Any) -> None:
        if self.sent:  # replies left unread: the connection cannot be reused
            self.connection.disconnect()
        self.pool.release(self.connection)


@contextmanager
def _channel(what: str) -> Iterator[Any]:
    """A kombu channel of the app's pool; connection failures become one error."""
    try:
        pool: Any = app.pool  # kombu connections, shared with Celery's producers
        with pool.acquire(block=True) as connection:
            yield connection.default_channel
    except (RedisError, OperationalError, OSError) as exc:
        raise BrokerUnavailable(f"could not publish {what}: Redis unreachable ({exc})") from exc


def _queue_of(target: Any, queue: str | None) -> str:
    return check_queue(queue or getattr(target, "queue_name", None) or get_settings().default_queue)


def publish_one(
    target: Any,
    payload: Any,
    *,
    queue: str | None = None,
    countdown: float | None = None,
    eta: datetime | None = None,
    task_id: str | None = None,
) -> records.Job:
    """Validate and publish one job with its record in one script call; return the record as
    written.

    It is ``.apply_async()``'s own path (:mod:`.send`) with the payload validated first: the
    same message, Celery's publish signals, the publish retry policy.

    Raises:
        UnknownQueue: the queue is not configured.
        InvalidPayload: the payload is invalid; nothing was published.
        PayloadTooLarge: the message is over ``ASYNQ_MAX_PAYLOAD``; nothing was published.
        BrokerUnavailable: Redis did not take the job (after the publish retry policy).
    """
    queue_name = _queue_of(target, queue)
    kwargs = kwargs_of(target, payload)
    options: dict[str, Any] = {
        "queue": queue_name,
        "countdown": countdown,
        "eta": eta,
        "declare": [],
        "headers": {keys.FIRST_ENQUEUED_AT: time.time()},
    }
    sent = send.send_job(target, (), kwargs, task_id, options)
    job_id, record = str(sent.result.id), sent.record
    if record is None or sent.before:  # no record, or not this publish's: as stored
        stored = records.store().get(job_id)
        if stored is not None:
            return stored
        return records.Job(job_id, target.name, queue_name, "", sent.at, sent.at)
    return records.Job(
        id=job_id,
        type=record.task,
        queue=record.queue,
        status=record.status,
        created_at=sent.at,
        updated_at=sent.at,
        attempts=record.attempt,
        run_at=record.run_at,
        payload={"args": [], "kwargs": kwargs},
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _settle(
    client: Any, sender: _Sender, calls: list[tuple[list[str], list[Any]]], name: str
) -> None:
    """Read the replies of the batch calls ``sender`` sent, run again the calls refused for want
    of the script (they did nothing), then wait for ``ASYNQ_PUBLISH_REPLICAS`` replicas.

    Raises:
        BrokerUnavailable: Redis refused a call.
    """
    again = []
    for call, result in zip(calls, sender.replies(), strict=True):
        if isinstance(result, NoScriptError):
            again.append(call)
        elif isinstance(result, Exception):
            raise BrokerUnavailable(f"could not publish {name} jobs: {result}")
    if again:
        load_all(client)
        for call in again:
            sender.send(script("publish_batch").command(*call))
        for result in sender.replies():
            if isinstance(result, Exception):
                raise BrokerUnavailable(f"could not publish {name} jobs: {result}")
    # WAIT counts this connection's writes: it goes on the same one.
    replicas = replicas_to_wait(get_settings())
    if replicas:  # only then is the server asked how many it has
        replicas = replicas_for(client, replicas, (sender.connection.host, sender.connection.port))
    if replicas:
        sender.send(pack_command("WAIT", replicas, keys.REPLICA_WAIT_MS))
        sender.send(pack_command("ROLE"))
        confirmed, role = sender.replies()
        first = role[0] if isinstance(role, list) and role else role
        settle_unconfirmed(
            replicas,
            0 if isinstance(confirmed, Exception) else int(confirmed),
            "unknown" if isinstance(role, Exception) else _text(first),
            client,
            (sender.connection.host, sender.connection.port),
        )


def enqueue_many(
    task: Any,
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
        PayloadTooLarge: a message is over ``ASYNQ_MAX_PAYLOAD`` (the message says which);
            nothing was published.
        BrokerUnavailable: Redis did not take the batch.
    """
    target = get_task(task) if isinstance(task, str) else task
    queue_name = _queue_of(target, queue)
    batch = [Outgoing(str(uuid.uuid4()), kwargs_of(target, p, n)) for n, p in enumerate(payloads)]
    if not batch:
        return []
    trace: dict[str, Any] = {}
    if tracing.enabled():
        from opentelemetry.propagate import inject  # only when tracing is on

        inject(trace)
    calls: list[tuple[list[str], list[Any]]] = []
    with _channel(f"{len(batch)} {target.name} job(s)") as channel:
        template = _Template(_Publisher(channel, target, queue_name), countdown, eta, trace)
        status = "scheduled" if template.mode == "park" or template.due else "pending"
        # Every message is measured before any is sent (a batch is all or nothing): by a bound
        # from its encoded arguments, and exactly where the bound is over the limit.
        limit = int(get_settings().max_payload)
        encoded = [template.encode(job) for job in batch]
        for n, (job, (arguments, _)) in enumerate(zip(batch, encoded, strict=True)):
            if template.size_bound(arguments) > limit:
                check_size(template.message(job, time.time(), arguments), f"payload #{n}")
        try:
            with channel.conn_or_acquire() as client, _Sender(client) as sender:
                # Each chunk is sent as soon as it is built: Redis runs one while the next is
                # being built, and the replies are read at the end.
                for start in range(0, len(batch), BATCH_CHUNK):
                    rows: list[list[Any]] = []
                    for job, (arguments, payload) in zip(
                        batch[start : start + BATCH_CHUNK],
                        encoded[start : start + BATCH_CHUNK],
                        strict=True,
                    ):
                        now = time.time()
                        message = template.message(job, now, arguments)
                        due = template.due
                        rows.append([job.id, now, due or now, payload, message, due or 0])
                    call = batch_args(
                        template.key, target.name, queue_name, status, template.mode, rows
                    )
                    calls.append(call)
                    sender.send(script("publish_batch").command(*call))
                _settle(client, sender, calls, target.name)
        except (RedisError, OSError) as exc:
            raise BrokerUnavailable(
                f"could not publish {len(batch)} {target.name} job(s): Redis unreachable ({exc})"
            ) from exc
    logger.info("published %d %s job(s) queue=%s", len(batch), target.name, queue_name)
    return [job.id for job in batch]
