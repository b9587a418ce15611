"""The one publisher: every way a job is sent ends in :func:`publish` or :func:`publish_batch`.

``enqueue`` and ``enqueue_many`` call them directly; ``.delay()``, ``.apply_async()``, retries,
deferrals, dead-letter requeues, operator retries, periodic slots and the outbox relay reach
them through the transport's ``_put`` (Celery's producer). One script call writes the job's
record and pushes the message onto its list, or parks it until due, and leaves a wake-up token
for idle workers (``publish.lua``): a message never exists without its record.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from worker_app import keys
from worker_app.broker import envelope
from worker_app.broker.registry import drop_held, held_on_master, script, serves_master
from worker_app.config import get_settings, replicas_to_wait
from worker_app.errors import PayloadTooLarge

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Record:
    """The job record a publish writes (see ``publish_record`` in ``records.lua``)."""

    id: str
    task: str
    queue: str
    status: str
    run_at: float
    attempt: int
    payload: str
    #: '1' a fresh run (clears what a previous run left), '0' a retry or deferral (keeps the
    #: record's history), 'new' an id generated for this publish (no record can exist yet).
    reset: str
    #: '1' a publish-once repeat leaves an existing record as it is.
    once: str

    def args(self, now: float) -> list[Any]:
        return [
            self.id,
            self.task,
            self.queue,
            self.status,
            now,
            self.run_at,
            self.attempt,
            self.payload,
            self.reset,
            self.once,
        ]


def due_at(headers: dict[str, Any] | None) -> float | None:
    """When a message is due (its ``eta`` header), as Unix time; None for at once."""
    eta = (headers or {}).get("eta")
    if not eta:
        return None
    try:
        return datetime.fromisoformat(str(eta)).timestamp()
    except ValueError:
        return None


def publish_once(headers: dict[str, Any] | None, retries: int) -> bool:
    """Whether a message is a publish-once first attempt (:data:`keys.PUBLISH_ONCE`).

    Retries and deferrals copy the first message's headers, the marker included; they re-run
    the job on purpose, so the marker counts only on an attempt-1 message that is no deferral.
    """
    headers = headers or {}
    return bool(headers.get(keys.PUBLISH_ONCE)) and retries == 0 and not headers.get(keys.DEFERRED)


def record_of(
    headers: dict[str, Any], args: Any, kwargs: Any, queue: str, *, new_id: bool = False
) -> Record | None:
    """The record a task message's publish writes; None for what has no record (Celery's own
    ``celery.*`` tasks, messages that are no task)."""
    name = str(headers.get("task") or "")
    job_id = headers.get("id")
    if not name or not job_id or name.startswith("celery."):
        return None
    retries = int(headers.get("retries") or 0)
    due = due_at(headers)
    status = "retrying" if retries else ("scheduled" if due else "pending")
    fresh = retries == 0 and not headers.get(keys.DEFERRED)  # a deferral keeps the record
    reset = ("new" if new_id else "1") if fresh else "0"
    try:
        payload = json.dumps({"args": args, "kwargs": kwargs})
    except TypeError:  # dates and the like: kept as their text
        payload = json.dumps({"args": args, "kwargs": kwargs}, default=str)
    return Record(
        id=str(job_id),
        task=name,
        queue=queue,
        status=status,
        run_at=due or time.time(),
        attempt=retries,
        payload=payload,
        reset=reset,
        once="1" if publish_once(headers, retries) else "0",
    )


def record_of_envelope(message: dict[str, Any], queue: str) -> Record | None:
    """:func:`record_of` for a kombu envelope (its body base64-encoded JSON, protocol 2)."""
    headers = message.get("headers")
    if not isinstance(headers, dict) or not headers.get("task"):
        return None
    args: Any = []
    kwargs: Any = {}
    try:
        body: Any = message.get("body")
        properties = message.get("properties") or {}
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded = json.loads(body)
        if isinstance(decoded, list) and len(decoded) >= 2:
            args, kwargs = decoded[0], decoded[1]
    except (TypeError, ValueError):
        pass  # the record keeps an empty payload; the worker judges the message itself
    return record_of(headers, args, kwargs, queue)


def check_size(message: str, what: str = "the job") -> None:
    """Refuse a message larger than ``ASYNQ_MAX_PAYLOAD``, before anything is written.

    Raises:
        PayloadTooLarge: with one line that says how large it is and the limit.
    """
    limit = int(get_settings().max_payload)
    size = len(message)  # kombu's JSON is ASCII: characters are bytes
    if size > limit:
        raise PayloadTooLarge(
            f"{what}: its message is {size:,} bytes, over ASYNQ_MAX_PAYLOAD ({limit:,} bytes); "
            "keep large data elsewhere and pass a reference"
        )


def placement(due: float | None, now: float) -> str:
    """'park' for a message due later than ``PARK_AHEAD`` seconds from now, else 'list'."""
    return "park" if due is not None and due - now > keys.PARK_AHEAD else "list"


def publish(
    client: Any,
    list_key: str,
    message: str,
    *,
    due: float | None = None,
    record: Record | None = None,
    now: float | None = None,
) -> str:
    """Write ``record`` (if any) and push ``message`` onto ``list_key``, or park it until
    ``due``, in one call; returns the record's status before ('' if none).

    Raises:
        PayloadTooLarge: the message is over ``ASYNQ_MAX_PAYLOAD``; nothing was written.
    """
    check_size(message, f"{record.task}[{record.id}]" if record else "the message")
    now = time.time() if now is None else now
    args: list[Any] = [placement(due, now), due or 0, message, keys.WAKE_CAP]
    if record is not None:
        args += record.args(now)
    replicas = replicas_to_wait(get_settings())
    if replicas:  # only then is the server asked how many it has
        replicas = replicas_for(client, replicas)
    if replicas:
        reply, confirmed, role, address = script("publish").replicated(
            client, [list_key], args, replicas, keys.REPLICA_WAIT_MS
        )
        settle_unconfirmed(replicas, confirmed, role, client, address)
    else:
        reply = script("publish")(client, [list_key], args, held=True)
    return reply.decode() if isinstance(reply, bytes) else str(reply or "")


#: Seconds a count of the master's connected replicas is used before it is asked again.
ROLE_EVERY = 1.0
#: Seconds between two warnings that replicas did not confirm a publish.
UNCONFIRMED_EVERY = 60.0


#: The count used when the server will not tell (``ROLE`` refused): any number asked for.
ALL = 1 << 30


class _Replicas:
    """The master's connected replicas as last seen (``ROLE``), and when."""

    count = 0
    refused = False
    seen_at = -ROLE_EVERY
    warned_at = -UNCONFIRMED_EVERY


_replicas = _Replicas()


def connected_replicas(client: Any) -> int:
    """The replicas connected to ``client``'s server, asked at most once per ``ROLE_EVERY``.

    A publish waits only for replicas that exist: with none connected, no failover can
    promote one that lacks the job (a replica that connects later copies the master whole).
    A server that refuses ``ROLE`` (an ACL without it) is taken to have as many as asked for.
    """
    now = time.monotonic()
    if now - _replicas.seen_at >= ROLE_EVERY:
        _replicas.seen_at = now
        try:
            role = client.execute_command("ROLE")
        except ResponseError as exc:
            if not _replicas.refused:
                _replicas.refused = True
                logger.warning(
                    "ROLE refused (%s): publishes wait for ASYNQ_PUBLISH_REPLICAS replicas "
                    "whether connected or not; allow the command to the user (+role)",
                    exc,
                )
            _replicas.count = ALL
            return ALL
        except RedisError:
            return _replicas.count  # the publish itself will meet the same trouble
        _replicas.count = len(role[2]) if _text(role[0]) == "master" else 0
    return _replicas.count


def replicas_for(client: Any, wanted: int, address: tuple[str, int] | None = None) -> int:
    """The replicas a publish on ``client`` waits for: ``wanted``, or as many as its server has.

    A server without any replica is the master of a degraded deployment, or an old master a
    failover is leaving behind (still up, taking writes it drops when Sentinel makes it a
    replica): the sentinels are asked which, on each such publish (and on each publish no
    replica confirmed).

    Raises:
        RedisConnectionError: the sentinels name another master; the caller's retry publishes
            there.
    """
    replicas = min(wanted, connected_replicas(client))
    if replicas == 0 and not _publish_on_master(client, address):
        raise RedisConnectionError("the publish's server is no longer the Sentinel master")
    return replicas


def settle_unconfirmed(
    replicas: int,
    confirmed: int,
    role: str,
    client: Any = None,
    address: tuple[str, int] | None = None,
) -> None:
    """After a publish and its ``WAIT`` and ``ROLE`` on the same connection: refused when the
    server is no longer the master (a failover demoted it, and what it took is discarded when
    it follows the new one) or could not tell; kept, with a warning at most once a minute,
    when fewer than ``replicas`` replicas confirmed.

    Raises:
        RedisConnectionError: the server was demoted (or unreachable after the publish); the
            caller's retry publishes again on the master (through Sentinel), and the publish
            script's check by job id keeps a job from being pushed twice.
    """
    if confirmed >= replicas:
        return
    _replicas.seen_at = -ROLE_EVERY  # ask again on the next publish
    if role not in ("master", "unknown"):
        raise RedisConnectionError(f"the publish's server is {role}, no longer the master")
    if client is not None and address is not None and not _publish_on_master(client, address):
        # Still a master, but a failover elected another (it lost its replica to it).
        raise RedisConnectionError("the publish's server is no longer the Sentinel master")
    if time.monotonic() - _replicas.warned_at < UNCONFIRMED_EVERY:
        return
    _replicas.warned_at = time.monotonic()
    logger.warning(
        "published, but %d of %d replica(s) confirmed it within %d ms: a failover now could "
        "lose jobs published since (ASYNQ_PUBLISH_REPLICAS)",
        confirmed,
        replicas,
        keys.REPLICA_WAIT_MS,
    )


def _publish_on_master(client: Any, address: tuple[str, int] | None) -> bool:
    """Whether the server a publish went to (``address``), or, before a publish, this thread's
    held connection, is the master the sentinels name now; a held connection that is not is
    disconnected (the retry reconnects to the new master)."""
    if address is None:
        return held_on_master(client)
    if serves_master(client.connection_pool, address):
        return True
    drop_held(client, address)
    return False


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def batch_args(
    list_key: str, task: str, queue: str, status: str, mode: str, jobs: list[list[Any]]
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of one ``publish_batch`` call; ``jobs``: per job its id, created,
    run_at, payload JSON, message and due time."""
    args: list[Any] = [task, queue, status, mode, keys.WAKE_CAP, len(jobs)]
    for job in jobs:
        args += job
    return [list_key], args


def publish_batch(client: Any, own_keys: list[str], args: list[Any]) -> int:
    """Publish a batch of new jobs built by :func:`batch_args` in one call."""
    return int(script("publish_batch")(client, own_keys, args))


def parked_message(member: str) -> tuple[str, str]:
    """The list and message of a member of the delayed set."""
    list_key, _, message = member.partition("\n")
    return list_key, message


def parked_queue(member: str) -> str:
    """The queue a member of the delayed set is bound for."""
    return envelope.queue_of(parked_message(member)[0])
