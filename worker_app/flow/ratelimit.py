"""Global rate limits per task: one token bucket in Redis shared by every worker.

``@app.task(..., global_rate_limit="100/m")``. Celery's own ``rate_limit`` is per worker; this
one holds across all of them. The bucket is a GCRA (one timestamp per task, one script call per
run) holding a single token, so a window never sees more than one token above the rate. A job
over the limit is deferred until its token is due, without using a retry.
"""

from __future__ import annotations

import re
import time

from worker_app import keys
from worker_app.broker.registry import script
from worker_app.redis_client import get_redis

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h)\s*$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(text: str) -> float:
    """Seconds per token of a rate such as ``20/s``, ``100/m`` or ``500/h``.

    Raises:
        ValueError: the text is not of that form.
    """
    match = _RATE.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"rate {text!r}: expected N/s, N/m or N/h with N > 0")
    return _PER[match.group(2)] / float(match.group(1))


def wait_for_token(task_name: str, rate: str) -> float:
    """Take a token for ``task_name``; return 0.0, or the seconds until one is due."""
    bucket = [keys.RATE + task_name]
    return float(script("ratelimit")(get_redis(), bucket, [time.time(), parse_rate(rate)]))
