"""How long jobs waited to start, per queue: counted in the worker's main process as it takes
each job, written to Redis once a second (a pipeline per flush, nothing per job).

The histogram is ``worker_app:wait:<queue>``: one field per bucket (``keys.WAIT_BUCKETS`` and
``+Inf``, counts not cumulative) and ``sum``; the API's ``/metrics`` reads it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

from worker_app import keys

#: How often a worker writes what it counted.
FLUSH_INTERVAL = 1.0


def as_float(value: object) -> float | None:
    """A header's number, or None when it is missing or not a number."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def waited(headers: dict[str, Any], now: float | None = None) -> float | None:
    """Seconds from when a job was due (published, or its ETA) to ``now``; None if unknown."""
    due = as_float(headers.get(keys.PUBLISHED_AT))
    eta = headers.get("eta")
    if eta:
        try:
            due = datetime.fromisoformat(str(eta)).timestamp()
        except ValueError:
            pass
    if due is None:
        return None
    return max(0.0, (time.time() if now is None else now) - due)


def bucket(seconds: float) -> str:
    """The histogram bucket of a wait (its upper bound)."""
    return next((str(b) for b in keys.WAIT_BUCKETS if seconds <= b), "+Inf")


class Waits:
    """Counts not yet written, per queue and bucket."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: defaultdict[str, defaultdict[str, float]] = defaultdict(
            lambda: defaultdict(float)
        )

    def observe(self, queue: str, headers: dict[str, Any]) -> None:
        seconds = waited(headers)
        if seconds is None:
            return
        with self._lock:
            counts = self._counts[queue or "unknown"]
            counts[bucket(seconds)] += 1
            counts["sum"] += seconds

    def flush(self, client: Any) -> None:
        """Write what was counted; on an error the counts are kept for the next flush."""
        with self._lock:
            counts, self._counts = self._counts, defaultdict(lambda: defaultdict(float))
        if not counts:
            return
        pipe = client.pipeline(transaction=False)
        for queue, fields in counts.items():
            for field, value in fields.items():
                if field == "sum":
                    pipe.hincrbyfloat(keys.WAIT + queue, field, value)
                else:
                    pipe.hincrby(keys.WAIT + queue, field, int(value))
        try:
            pipe.execute()
        except Exception:
            with self._lock:
                for queue, fields in counts.items():
                    for field, value in fields.items():
                        self._counts[queue][field] += value
            raise


WAITS = Waits()
