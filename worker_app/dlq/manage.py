"""The operator's side of the dead-letter queue: inspect, requeue (replay), delete and purge.

Every action leaves an audit record (:func:`history`). A requeue validates the payload when this
process has the task. When it does not (a task of another deployment, or an ``unknown_task``
entry from a worker that lacked it), the original message is published unchanged for a worker
that has the task, and the audit record says it was not validated.
"""

from __future__ import annotations

import getpass
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kombu.exceptions import OperationalError
from redis import RedisError

from worker_app import keys
from worker_app.broker.queues import check_queue
from worker_app.celery import app, get_task
from worker_app.config import get_settings
from worker_app.dlq.entries import Entry, Filter, Page, store
from worker_app.errors import BrokerUnavailable, UnknownTask, WorkerAppError
from worker_app.jobs.payload import validate_payload
from worker_app.redis_client import get_redis

logger = logging.getLogger(__name__)


#: Headers a replay keeps from the original message: its trace continues.
TRACE_HEADERS = ("traceparent", "tracestate")
#: What ends a bulk requeue early (Redis refusing, an invalid payload); anything else is a bug.
STOPS = (WorkerAppError, OperationalError, RedisError)


class RequeueRefused(WorkerAppError):
    """The entry cannot be replayed as asked (an undecodable message, or a replacement payload
    for a task this process does not have)."""


@dataclass(frozen=True)
class Requeued:
    """One entry put back on its queue."""

    task_id: str
    task_name: str
    #: False when this process does not have the task: the message went out unchanged.
    validated: bool

    @property
    def note(self) -> str:
        """What an operator should know about how it was published ("" when nothing)."""
        if self.validated:
            return ""
        return (
            f"published unchanged: task {self.task_name!r} is not registered in this process, "
            "payload not validated"
        )


def default_actor() -> str:
    """Who is acting, for the audit history, when the caller does not say."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def get(task_id: str) -> Entry | None:
    return store().get(task_id)


def list_entries(flt: Filter | None = None, cursor: str | None = None, limit: int = 50) -> Page:
    """Entries newest first, filtered, one page at a time."""
    return store().page(flt, cursor, limit)


def _record(actor: str, action: str, **details: Any) -> None:
    record = json.dumps({"at": time.time(), "actor": actor, "action": action, **details})
    pipe = get_redis().pipeline(transaction=True)
    pipe.lpush(keys.DLQ_HISTORY, record)
    pipe.ltrim(keys.DLQ_HISTORY, 0, keys.DLQ_HISTORY_MAX - 1)
    pipe.execute()


def history(limit: int = 50, task_id: str | None = None) -> list[dict[str, Any]]:
    """Audit records, newest first; with ``task_id`` only those that touched it."""
    raws = get_redis().lrange(keys.DLQ_HISTORY, 0, keys.DLQ_HISTORY_MAX)
    out = []
    for raw in raws:
        record = json.loads(raw)
        if task_id is None or task_id in record.get("task_ids", []):
            out.append(record)
            if len(out) == limit:
                break
    return out


def _publish(entry: Entry, payload: Mapping[str, Any] | None) -> bool:
    """Publish ``entry`` again under its task id with attempts reset, on its original queue.

    Returns:
        Whether the payload was validated: False when this process does not have the task
        and the original message went out unchanged.

    Raises:
        RequeueRefused: an undecodable message, or a replacement ``payload`` for a task this
            process does not have (it could not be validated).
        InvalidPayload: the payload does not match the task's model.
        BrokerUnavailable: Redis refused the publish.
    """
    if not entry.task_name or entry.reason == "undecodable":
        raise RequeueRefused(
            f"{entry.task_id}: an undecodable message cannot be replayed; delete it"
        )
    headers = {k: v for k, v in entry.headers.items() if k in TRACE_HEADERS}
    try:
        task = get_task(entry.task_name)
    except UnknownTask:
        if payload is not None:
            raise RequeueRefused(
                f"{entry.task_id}: a replacement payload cannot be validated: task "
                f"{entry.task_name!r} is not registered in this process; requeue it unchanged, "
                "or from a process that has the task"
            ) from None
        _publish_unchanged(entry, headers)
        return False
    args, kwargs = entry.args, entry.kwargs
    if payload is not None:
        args, kwargs = [], dict(payload)
        validate_payload_for(task, args, kwargs)
    # The old FAILURE result would answer for the replay: the job starts over.
    task.backend.forget(entry.task_id)
    # Through the task, so a replaced payload is validated like any enqueue; same id, attempt 1.
    options: dict[str, Any] = {"headers": headers}
    if entry.queue:
        options["queue"] = entry.queue
    task.apply_async(tuple(args), kwargs, task_id=entry.task_id, **options)
    return True


def _publish_unchanged(entry: Entry, headers: dict[str, Any]) -> None:
    """Publish the original message by task name, for a worker that has the task: same id,
    arguments and queue, attempt 1. Nothing here can check the payload; that worker will."""
    queue = check_queue(entry.queue or get_settings().default_queue)
    headers[keys.FIRST_ENQUEUED_AT] = time.time()
    app.backend.forget(entry.task_id)
    try:
        app.send_task(
            entry.task_name,
            list(entry.args),
            dict(entry.kwargs),
            task_id=entry.task_id,
            queue=queue,
            headers=headers,
        )
    except OperationalError as exc:
        raise BrokerUnavailable(
            f"could not publish {entry.task_name}: Redis unreachable ({exc})"
        ) from exc


def validate_payload_for(task: Any, args: Any, kwargs: Any) -> None:
    """Check a replacement payload before anything is changed.

    Raises:
        InvalidPayload: it does not match the task's model.
    """
    if getattr(task, "payload_model", None) is not None:
        validate_payload(task.payload_model, args, kwargs)


def requeue(
    task_id: str, *, actor: str | None = None, payload: Mapping[str, Any] | None = None
) -> Requeued | None:
    """Publish the entry back on its original queue (same task id, attempts reset), then
    remove it. Returns None when there is no such entry.

    When this process does not have the task, the original message is published unchanged
    (``Requeued.validated`` is False, and the audit record says so).

    Raises:
        RequeueRefused: the entry cannot be replayed as asked.
        InvalidPayload: ``payload`` (or the original one) does not match the task's model.
        BrokerUnavailable: Redis refused the publish; the entry is kept.
    """
    entry = store().get(task_id)
    if entry is None:
        return None
    validated = _publish(entry, payload)
    store().remove(entry)
    _record(
        actor or default_actor(),
        "requeue",
        task_ids=[task_id],
        payload_replaced=payload is not None,
        validated=validated,
    )
    return Requeued(task_id, entry.task_name, validated)


@dataclass(frozen=True)
class BulkResult:
    """What a bulk operation did."""

    done: int
    refused: int
    #: How many entries matched when it started.
    total: int = 0
    #: Why it ended before the last entry (None when it went through them all).
    stopped: str | None = None
    #: How many went out unchanged because this process does not have their task.
    unvalidated: int = 0


def requeue_many(
    flt: Filter,
    *,
    actor: str | None = None,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> BulkResult:
    """Requeue every entry matching ``flt``, at most ``rate`` per second.

    An entry that cannot be replayed (undecodable) is counted as refused and skipped. An error
    that stops it half-way (Redis refusing, an invalid payload) ends it: the result says how many
    of how many were requeued and why it stopped, and the rest stay in the dead-letter queue.
    Either way the audit record names what was requeued.
    """
    entries = list(store().iter(flt))
    done = refused = unvalidated = 0
    ids: list[str] = []
    stopped: str | None = None
    interval = 1.0 / rate if rate else 0.0
    next_at = time.monotonic()
    try:
        for entry in entries:
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at = max(next_at, time.monotonic() - interval) + interval
            try:
                validated = _publish(entry, None)
            except RequeueRefused as exc:
                logger.warning("not requeued: %s", exc)
                refused += 1
                continue
            except STOPS as exc:
                stopped = f"{entry.task_id}: {exc}"
                break
            # Published: it counts as requeued even if removing the entry fails below.
            done += 1
            unvalidated += not validated
            ids.append(entry.task_id)
            try:
                store().remove(entry)
            except STOPS as exc:
                stopped = f"{entry.task_id} was requeued but its entry could not be removed: {exc}"
                break
            if progress is not None:
                progress(done)
    finally:
        # Also when something unforeseen propagates: what was published is on record.
        _record_safely(
            actor or default_actor(),
            "requeue",
            filter=_describe(flt),
            count=done,
            total=len(entries),
            refused=refused,
            unvalidated=unvalidated,
            stopped=stopped,
            task_ids=ids[:1000],
        )
    return BulkResult(done, refused, len(entries), stopped, unvalidated)


def _record_safely(actor: str, action: str, **details: Any) -> None:
    """Write an audit record; when Redis refuses it, log the record instead of losing it."""
    try:
        _record(actor, action, **details)
    except (OperationalError, RedisError) as exc:
        logger.error(
            "could not write the dead-letter audit record (%s); it was: %s",
            exc,
            json.dumps({"actor": actor, "action": action, **details}),
        )


def delete(task_id: str, *, actor: str | None = None) -> bool:
    """Remove one entry for good. Returns False when there is no such entry."""
    entry = store().get(task_id)
    if entry is None or not store().remove(entry, only_if_unchanged=False):
        return False
    _record(actor or default_actor(), "delete", task_ids=[task_id])
    return True


def purge(
    flt: Filter | None = None,
    *,
    actor: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Remove every entry matching ``flt``; returns how many."""
    flt = flt or Filter()
    removed = 0
    ids: list[str] = []
    for entry in list(store().iter(flt)):
        if store().remove(entry, only_if_unchanged=False):
            removed += 1
            ids.append(entry.task_id)
            if progress is not None and removed % 100 == 0:
                progress(removed)
    _record(
        actor or default_actor(), "purge", filter=_describe(flt), count=removed, task_ids=ids[:1000]
    )
    return removed


def stats() -> dict[str, Any]:
    """Counts by reason, task, queue and fingerprint (with one example per fingerprint)."""
    st = store()
    out: dict[str, Any] = {"total": st.count(), "trimmed_total": st.trimmed_total()}
    for name in ("reason", "task", "queue"):
        counts = {value: st.count(_filter_on(name, value)) for value in st.values(name)}
        out[f"by_{name}"] = {k: v for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if v}
    groups = []
    for value in st.values("fingerprint"):
        count = st.count(Filter(fingerprint=value))
        if count:
            example = next(iter(st.page(Filter(fingerprint=value), limit=1).entries), None)
            groups.append(
                {
                    "fingerprint": value,
                    "count": count,
                    "task": example.task_name if example else "",
                    "error": f"{example.exc_type}: {example.exc_message}" if example else "",
                }
            )
    out["by_fingerprint"] = sorted(groups, key=lambda g: -int(g["count"]))
    return out


def _filter_on(dimension: str, value: str) -> Filter:
    fields: dict[str, Any] = {dimension: value}
    return Filter(**fields)


def _describe(flt: Filter) -> dict[str, Any]:
    return {k: v for k, v in vars(flt).items() if v is not None}
