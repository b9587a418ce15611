"""Giving held messages back (a lost worker's, a stopping worker's), and finding records that
no message stands behind any more.

A worker renews the lease (score in ``HELD_INDEX``) of every message it holds; a lease older
than the visibility timeout belongs to a lost worker. :func:`sweep` finds those, and
:func:`restore` puts each back on its list with kombu's ``redelivered`` flags set, in one
``restore.lua`` call that moves only what is still held exactly as read (two sweeping workers
never restore one message twice) and lets its job wait again.

:func:`orphans` finds unfinished records (pending, scheduled, retrying, active) unchanged for
longer than the visibility timeout whose message is on no queue list, in no parked set and not
held (an operator deleted a list, a plain Celery worker took it, Redis lost it);
:func:`end_orphan` ends such a record ``failed`` if it is still as seen, so no record waits
forever and no periodic schedule stays blocked by a run that cannot happen.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from kombu.utils.json import dumps as kombu_dumps

from worker_app import keys
from worker_app.broker import envelope
from worker_app.broker.registry import now_iso, script

logger = logging.getLogger(__name__)

#: Most messages one restore call moves.
RESTORE_BATCH = 200


@dataclass(frozen=True)
class Restored:
    """A message put back on its queue."""

    tag: str
    queue: str
    task: str
    job_id: str


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _plan(tag: str, seen: Any) -> tuple[list[Any], Restored] | None:
    """The ``restore.lua`` arguments of one held item, and what it is."""
    if tag.startswith(keys.RAW_TAG):
        list_key, _, item = seen.partition(b"\n")
        queue = envelope.queue_of(_text(list_key))
        return [tag, seen, list_key, item, ""], Restored(tag, queue, "", "")
    try:
        # Read as the fetch script holds it, byte for byte (text that is not UTF-8 included).
        message, _exchange, queue = json.loads(seen.decode("utf-8", "surrogateescape"))
        headers = message.get("headers") or {}
        list_key = envelope.list_key(str(queue), envelope.priority_of(message))
    except (ValueError, TypeError, AttributeError):
        logger.error("held %s is unreadable; left held: %r", tag, seen[:200])
        return None
    envelope.mark_redelivered(message)
    job_id = envelope.job_id(message)
    what = Restored(tag, str(queue), str(headers.get("task") or "?"), job_id)
    return [tag, seen, list_key, kombu_dumps(message), job_id], what


def restore(
    client: Any, tags: list[str], *, head: bool, ceiling: float | None = None, why: str = "back"
) -> list[Restored]:
    """Put the messages held under ``tags`` back on their lists: at the ``head`` (taken last)
    or at the tail (taken next); with ``ceiling``, only those whose lease is no later (a lease
    renewed meanwhile belongs to a live worker). ``why`` says whether a run died: 'lost' (the
    worker was lost: each message whose task had started counts a death of its job), 'died'
    (its pool process died running it) or 'back' (no death). Returns what went back."""
    done: list[Restored] = []
    for start in range(0, len(tags), RESTORE_BATCH):
        chunk = tags[start : start + RESTORE_BATCH]
        plain = [tag for tag in chunk if not tag.startswith(keys.RAW_TAG)]
        raw = [tag for tag in chunk if tag.startswith(keys.RAW_TAG)]
        values = (client.hmget(keys.HELD, plain) if plain else []) + (
            client.hmget(keys.HELD_RAW, raw) if raw else []
        )
        args: list[Any] = [time.time(), keys.WAKE_CAP, "head" if head else "tail"]
        args += ["" if ceiling is None else ceiling, why]
        planned: dict[str, Restored] = {}
        for tag, seen in zip(plain + raw, values, strict=True):
            plan = _plan(tag, seen) if seen is not None else None
            if plan is not None:
                args += plan[0]
                planned[tag] = plan[1]
            else:  # acked meanwhile, or unreadable: only its lease may be left
                args += [tag, "", "", "", ""]
        back = script("restore")(client, [], args)
        done += [planned[_text(tag)] for tag in back if _text(tag) in planned]
    return done


def server_time(client: Any) -> float:
    """Redis's clock (``TIME``), the one leases are scored by."""
    seconds, micros = client.time()
    return float(seconds) + float(micros) / 1_000_000


def sweep(client: Any, visibility_timeout: float, limit: int = 1000) -> list[Restored]:
    """Restore every message whose lease expired (its worker was lost); log each."""
    ceiling = server_time(client) - visibility_timeout  # leases are scored by its clock
    tags = [_text(t) for t in client.zrangebyscore(keys.HELD_INDEX, "-inf", ceiling, 0, limit)]
    if not tags:
        return []
    done = restore(client, tags, head=False, ceiling=ceiling, why="lost")
    for item in done:
        logger.warning(
            "recovered %s[%s] from a lost worker (its lease expired): back on %s",
            item.task or "(not a message)",
            item.job_id or item.tag,
            item.queue,
        )
    return done


#: Statuses of a job whose message should exist somewhere.
UNFINISHED = ("pending", "scheduled", "retrying", "active")
#: Items searched per call of ``presence.lua`` (each call blocks Redis while it runs).
SEARCH_BATCH = 1000


@dataclass(frozen=True)
class Orphan:
    """An unfinished record whose message exists nowhere."""

    job_id: str
    status: str
    updated_at: str


def orphans(
    client: Any,
    queues: list[str],
    older_than: float,
    cursors: dict[str, float],
    limit: int = 1000,
) -> list[Orphan]:
    """Records unfinished and unchanged for ``older_than`` seconds, of ``queues``, whose
    message is on no list of theirs, not parked and not held.

    Each call looks at up to ``limit`` records per status, from ``cursors`` (a creation time per
    status, advanced here and wrapped around at the end) so that every record gets its turn.
    A record is an orphan only if two searches in a row miss its message: one that moves
    between structures while a search runs (parked to waiting, held to waiting) is found by the
    other.
    """
    candidates = _candidates(client, set(queues), older_than, cursors, limit)
    for _ in range(2):
        if candidates:
            candidates = _missing(client, queues, candidates)
    return list(candidates.values())


def _candidates(
    client: Any, queues: set[str], older_than: float, cursors: dict[str, float], limit: int
) -> dict[str, Orphan]:
    cutoff = time.time() - older_than
    ids: list[tuple[str, str]] = []
    for status in UNFINISHED:
        start = cursors.get(status, float("-inf"))
        found = client.zrangebyscore(
            keys.JOBS_BY_STATUS + status, start, cutoff, 0, limit, withscores=True
        )
        cursors[status] = float(found[-1][1]) if len(found) == limit else float("-inf")
        ids += [(_text(job_id), status) for job_id, _ in found]
    if not ids:
        return {}
    pipe = client.pipeline(transaction=False)
    for job_id, _ in ids:
        pipe.hmget(keys.JOB + job_id, "status", "updated_at", "queue")
    seen: dict[str, Orphan] = {}
    for (job_id, indexed), values in zip(ids, pipe.execute(), strict=True):
        status, updated, queue = ("" if v is None else _text(v) for v in values)
        if status != indexed or not updated or queue not in queues:
            continue  # moved on, or a queue this worker does not know (another deployment's)
        if float(updated) < cutoff:
            seen[job_id] = Orphan(job_id, status, updated)
    return seen


def _missing(client: Any, queues: list[str], candidates: dict[str, Orphan]) -> dict[str, Orphan]:
    """The candidates whose message is on no list of ``queues``, not parked and not held."""
    missing = dict(candidates)
    places = [("list", name) for queue in queues for name in envelope.lists_of(queue)]
    for mode, name in [*places, ("delayed", ""), ("held", "")]:
        position = 0
        while missing and position >= 0:
            args = [mode, position, SEARCH_BATCH, *missing]
            position, found = script("presence")(client, [name] if name else [], args)
            for job_id in found:
                missing.pop(_text(job_id), None)
    return missing


def end_orphan(client: Any, orphan: Orphan, retention: int, error: str) -> bool:
    """End ``orphan``'s record failed with ``error``, if it is still as seen; True if ended."""
    now = time.time()
    iso = now_iso(now)
    args = [orphan.job_id, orphan.status, orphan.updated_at, now, iso, retention, error]
    return bool(script("orphan")(client, [], args))
