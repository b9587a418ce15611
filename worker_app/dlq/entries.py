"""The dead-letter entries in Redis: keyed by task id, indexed by failure time and by filter;
this process's store, and the writes that dead-letter a job (the worker side imports this, never
:mod:`worker_app.dlq.manage`).

Modelled on a registry: a sorted set scored by time plus one record per id. Every change that
touches more than one key runs as one Lua script, so the indexes never disagree with the entries.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from hashlib import sha1
from typing import Any, Literal, get_args

import redis

from worker_app import keys
from worker_app.broker.registry import now_iso, script
from worker_app.config import get_settings
from worker_app.redis_client import get_redis

logger = logging.getLogger(__name__)

Reason = Literal[
    "retries_exhausted",
    "permanent_error",
    "invalid_payload",
    "unknown_task",
    "undecodable",
    "poison_pill",
    "lost",
]
REASONS: tuple[str, ...] = get_args(Reason)
#: Filter name -> the entry field it indexes.
DIMENSIONS = {
    "task": "task_name",
    "reason": "reason",
    "queue": "queue",
    "fingerprint": "fingerprint",
}

# Ids, counts and durations vary between otherwise identical failures: any token with a digit
# in it (``42``, ``0x1f``, ``user42``, ``1500ms``, a UUID) is replaced by one marker.
_NORMALISE = [(re.compile(r"[\w.:-]*\d[\w.:-]*"), "<n>")]
_FRAME = re.compile(r'File "([^"]+)", line \d+, in (\S+)')


def fingerprint(exc_type: str, exc_message: str, traceback: str) -> str:
    """What makes two failures "the same": exception type, message with ids and numbers
    normalised, and the frame that raised; 12 hex characters."""
    message = exc_message
    for pattern, replacement in _NORMALISE:
        message = pattern.sub(replacement, message)
    frames = _FRAME.findall(traceback)
    frame = f"{frames[-1][0].rsplit('/', 1)[-1]}:{frames[-1][1]}" if frames else ""
    return sha1(f"{exc_type}|{message}|{frame}".encode()).hexdigest()[:12]


@dataclass
class Entry:
    """One dead-lettered job, with everything needed to understand and replay it."""

    task_id: str
    task_name: str
    reason: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str = ""
    headers: dict[str, Any] = field(default_factory=dict)
    exc_type: str = ""
    exc_message: str = ""
    traceback: str = ""
    attempts: int = 0
    first_enqueued_at: float | None = None
    failed_at: float = field(default_factory=time.time)
    hostname: str = ""
    #: Base64 of the message as received, when it could not be decoded.
    raw: str | None = None
    content_type: str | None = None
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.exc_type, self.exc_message, self.traceback)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Entry:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Filter:
    """Which entries an operation applies to; every field given must match."""

    task: str | None = None
    reason: str | None = None
    queue: str | None = None
    fingerprint: str | None = None
    #: Only entries that failed before this Unix time.
    before: float | None = None

    def given(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if k in DIMENSIONS and v is not None}

    def matches(self, entry: Entry) -> bool:
        if self.before is not None and entry.failed_at >= self.before:
            return False
        return all(getattr(entry, DIMENSIONS[k]) == v for k, v in self.given().items())


@dataclass(frozen=True)
class Page:
    """One page of a listing and the cursor of the next (None on the last page)."""

    entries: list[Entry]
    next_cursor: str | None


class Store:
    """Entries, indexes and trimming; no knowledge of Celery."""

    def __init__(self, client: redis.Redis, retention_seconds: float, max_size: int) -> None:
        self.client = client
        self.retention = retention_seconds
        self.max_size = max_size

    def _args(self, entry: Entry) -> list[Any]:
        """``dlq_add.lua``'s arguments for ``entry``."""
        dims = [getattr(entry, name) or "" for name in DIMENSIONS.values()]
        cutoff = time.time() - self.retention
        raw = json.dumps(entry.to_dict(), default=str)
        return [entry.task_id, raw, f"{entry.failed_at:.6f}", cutoff, self.max_size, *dims]

    def add(self, entry: Entry) -> tuple[int, int]:
        """Write ``entry`` (replacing one with the same task id); return what was trimmed
        as (by retention, by size)."""
        result = script("dlq_add")(self.client, [], self._args(entry))
        return int(result[0]), int(result[1])

    def add_held(
        self, entry: Entry, tag: str, job_id: str, record_retention: int
    ) -> tuple[int, int] | None:
        """Write ``entry``, end its job ``failed`` and release the message held under ``tag``,
        in one step. Returns what was trimmed, or None when ``tag`` is no longer held (its
        lease lapsed and it went back on its queue: nothing was written)."""
        now = time.time()
        error = f"{entry.exc_type}: {entry.exc_message}"[:2000]
        args = [tag, job_id, *self._args(entry), now, now_iso(now), record_retention, error]
        result = script("dead")(self.client, [], args)
        if not int(result[0]):
            return None
        return int(result[1]), int(result[2])

    def get(self, task_id: str) -> Entry | None:
        raw = self.client.get(keys.DLQ_ENTRY + task_id)
        return Entry.from_dict(json.loads(raw)) if raw else None

    def remove(self, entry: Entry, *, only_if_unchanged: bool = True) -> bool:
        """Remove ``entry``; with ``only_if_unchanged`` only if it has not failed again since."""
        expected = f"{entry.failed_at:.6f}" if only_if_unchanged else ""
        return bool(script("dlq_remove")(self.client, [], [entry.task_id, expected]))

    def count(self, flt: Filter | None = None) -> int:
        given = (flt or Filter()).given()
        if not given:
            return int(self.client.zcard(keys.DLQ_INDEX))
        name, value = next(iter(given.items()))
        return int(self.client.zcard(f"{keys.DLQ_BY}{name}:{value}"))

    def page(self, flt: Filter | None = None, cursor: str | None = None, limit: int = 50) -> Page:
        """Entries newest first. ``cursor`` is the ``next_cursor`` of the previous page."""
        flt = flt or Filter()
        out: list[Entry] = []
        last: tuple[float, str] | None = None
        for score, entry_id, entry in self._scan(flt, cursor):
            if len(out) == limit:
                return Page(out, f"{last[0]:.6f}:{last[1]}" if last else None)
            last = (score, entry_id)
            if entry is not None and flt.matches(entry):
                out.append(entry)
        return Page(out, None)

    def iter(self, flt: Filter | None = None) -> Iterator[Entry]:
        """Every entry matching ``flt``, newest first, read a batch at a time."""
        flt = flt or Filter()
        for _, _, entry in self._scan(flt, None):
            if entry is not None and flt.matches(entry):
                yield entry

    def _scan(
        self, flt: Filter, cursor: str | None, batch: int = 200
    ) -> Iterator[tuple[float, str, Entry | None]]:
        given = flt.given()
        index = (
            f"{keys.DLQ_BY}{next(iter(given.items()))[0]}:{next(iter(given.values()))}"
            if given
            else keys.DLQ_INDEX
        )
        top: float | str = flt.before if flt.before is not None else "+inf"
        after: str | None = None
        if cursor:
            score_text, _, after = cursor.partition(":")
            top = float(score_text)
        while True:
            rows = self._rows(index, top, batch)
            if after is not None:
                # Equal scores come in descending member order: skip up to the cursor's member.
                same = f"{float(top):.6f}"
                rows = [(m, sc) for m, sc in rows if not (f"{sc:.6f}" == same and m >= after)]
            if not rows:
                return
            raws = self.client.mget([keys.DLQ_ENTRY + member for member, _ in rows])
            for (member, score), raw in zip(rows, raws, strict=True):
                yield score, member, Entry.from_dict(json.loads(raw)) if raw else None
            after = rows[-1][0]
            top = rows[-1][1]

    def _rows(self, index: str, top: float | str, batch: int) -> list[tuple[str, float]]:
        found: Any = self.client.zrevrangebyscore(
            index, top, "-inf", start=0, num=batch, withscores=True
        )
        return [(m.decode() if isinstance(m, bytes) else str(m), float(sc)) for m, sc in found]

    def values(self, dimension: str) -> list[str]:
        members = self.client.smembers(f"{keys.DLQ_VALUES}{dimension}")
        return sorted(m.decode() if isinstance(m, bytes) else m for m in members)

    def trimmed_total(self) -> int:
        return int(self.client.get(keys.DLQ_TRIMMED) or 0)


# This process's store, and writing to it ------------------------------------------------


@lru_cache(maxsize=1)
def store() -> Store:
    """This process's dead-letter store."""
    settings = get_settings()
    return Store(get_redis(), settings.dlq_retention.total_seconds(), settings.dlq_max_size)


def add(entry: Entry) -> None:
    """Dead-letter ``entry``: one ERROR line, and trimming logged with its counts."""
    _logged(entry, *store().add(entry))


def add_held(entry: Entry, tag: str, job_id: str) -> bool:
    """Dead-letter ``entry``, end its job failed and release its message held under ``tag``, in
    one step (see :meth:`Store.add_held`). False when the message is no longer held.

    Raises:
        redis.RedisError: nothing was released; the message is still held.
    """
    retention = int(max(1, get_settings().retention.total_seconds()))
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
