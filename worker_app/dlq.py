"""The dead-letter queue: capture, inspect, replay and purge failed jobs.

Nothing that fails is dropped: the failure handler and the worker's guards for undecodable,
unknown and poison messages all write here. From Python::

    from worker_app import dlq
    page = dlq.list_entries(dlq.Filter(reason="retries_exhausted"))
    dlq.requeue("0b9f...", actor="ops")
"""

from __future__ import annotations

import getpass
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from worker_app import keys
from worker_app.config import get_settings
from worker_app.dlq_store import REASONS, Entry, Filter, Page, Store, fingerprint
from worker_app.errors import EnqueueError, WorkerAppError
from worker_app.redis_client import get_redis

__all__ = [
    "REASONS",
    "Entry",
    "Filter",
    "Page",
    "RequeueRefused",
    "add",
    "delete",
    "fingerprint",
    "get",
    "history",
    "list_entries",
    "purge",
    "requeue",
    "requeue_many",
    "stats",
]

logger = logging.getLogger(__name__)


class RequeueRefused(WorkerAppError):
    """The entry cannot be replayed as it is (no task name, or the task is not registered)."""


@lru_cache(maxsize=1)
def store() -> Store:
    """This process's dead-letter store."""
    settings = get_settings()
    return Store(
        get_redis(), settings.asynq_dlq_retention.total_seconds(), settings.asynq_dlq_max_size
    )


def default_actor() -> str:
    """Who is acting, for the audit history, when the caller does not say."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def add(entry: Entry) -> None:
    """Dead-letter ``entry``: one ERROR line, and trimming logged with its counts."""
    _logged(entry, *store().add(entry))


def add_held(entry: Entry, tag: str, job_id: str) -> bool:
    """Dead-letter ``entry``, end its job failed and release its message held under ``tag``, in
    one step (see :meth:`Store.add_held`). False when the message is no longer held.

    Raises:
        redis.RedisError: nothing was released; the message is still held.
    """
    retention = int(max(1, get_settings().asynq_retention.total_seconds()))
    trimmed = store().add_held(entry, tag, job_id, retention)
    if trimmed is None:
        logger.warning(
            "%s[%s] not dead-lettered: its message is no longer held (it went back on %s)",
            entry.task_name or "(undecodable)",
            entry.task_id,
            entry.queue or "its queue",
        )
        return False
    _logged(entry, *trimmed)
    return True


def _logged(entry: Entry, by_age: int, by_size: int) -> None:
    logger.error(
        "dead-lettered %s[%s] reason=%s attempts=%d queue=%s: %s: %s",
        entry.task_name or "(undecodable)",
        entry.task_id,
        entry.reason,
        entry.attempts,
        entry.queue,
        entry.exc_type,
        entry.exc_message,
    )
    if by_age or by_size:
        logger.warning(
            "dead-letter queue trimmed %d entr%s: %d older than ASYNQ_DLQ_RETENTION, "
            "%d beyond ASYNQ_DLQ_MAX_SIZE",
            by_age + by_size,
            "y" if by_age + by_size == 1 else "ies",
            by_age,
            by_size,
        )


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


def _publish(entry: Entry, payload: Mapping[str, Any] | None) -> None:
    from worker_app.client import get_task

    if not entry.task_name or entry.reason == "undecodable":
        raise RequeueRefused(
            f"{entry.task_id}: an undecodable message cannot be replayed; delete it"
        )
    try:
        task = get_task(entry.task_name)
    except EnqueueError as exc:
        raise RequeueRefused(f"{entry.task_id}: {exc}") from None
    args, kwargs = entry.args, entry.kwargs
    if payload is not None:
        args, kwargs = [], dict(payload)
    headers = {k: v for k, v in entry.headers.items() if k in ("traceparent", "tracestate")}
    if payload is not None:
        validate_payload_for(task, args, kwargs)
    # The old FAILURE result would answer for the replay: the job starts over.
    task.backend.forget(entry.task_id)
    # Through the task, so a replaced payload is validated like any enqueue; same id, attempt 1.
    options: dict[str, Any] = {"headers": headers}
    if entry.queue:
        options["queue"] = entry.queue
    task.apply_async(tuple(args), kwargs, task_id=entry.task_id, **options)


def validate_payload_for(task: Any, args: Any, kwargs: Any) -> None:
    """Check a replacement payload before anything is changed.

    Raises:
        InvalidPayload: it does not match the task's model.
    """
    from worker_app.base import validate_payload

    if getattr(task, "payload_model", None) is not None:
        validate_payload(task.payload_model, args, kwargs)


def requeue(
    task_id: str, *, actor: str | None = None, payload: Mapping[str, Any] | None = None
) -> bool:
    """Publish the entry back on its original queue (same task id, attempts reset), then
    remove it. Returns False when there is no such entry.

    Raises:
        RequeueRefused: the entry cannot be replayed.
        InvalidPayload: ``payload`` does not match the task's model.
        kombu.exceptions.OperationalError: Redis refused the publish; the entry is kept.
    """
    entry = store().get(task_id)
    if entry is None:
        return False
    _publish(entry, payload)
    store().remove(entry)
    _record(
        actor or default_actor(),
        "requeue",
        task_ids=[task_id],
        payload_replaced=payload is not None,
    )
    return True


@dataclass(frozen=True)
class BulkResult:
    """What a bulk operation did."""

    done: int
    refused: int


def requeue_many(
    flt: Filter,
    *,
    actor: str | None = None,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> BulkResult:
    """Requeue every entry matching ``flt``, at most ``rate`` per second."""
    done = refused = 0
    ids: list[str] = []
    interval = 1.0 / rate if rate else 0.0
    next_at = time.monotonic()
    for entry in list(store().iter(flt)):
        if interval:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at = max(next_at, time.monotonic() - interval) + interval
        try:
            _publish(entry, None)
        except RequeueRefused as exc:
            logger.warning("not requeued: %s", exc)
            refused += 1
            continue
        store().remove(entry)
        done += 1
        ids.append(entry.task_id)
        if progress is not None:
            progress(done)
    _record(
        actor or default_actor(), "requeue", filter=_describe(flt), count=done, task_ids=ids[:1000]
    )
    return BulkResult(done, refused)


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
