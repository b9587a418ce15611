"""A web handler's view of a failover: publish ``e2e.ledger`` jobs by ``.delay()`` at a steady
rate, as a child process on ``REDIS_URL`` (a Sentinel URL), until ``count`` were acknowledged.

    python -m tests.helpers.steady_producer RUN COUNT RATE STOP_FILE

A publish that raises is tried again after 50 ms (as a handler's caller would retry a 503). It
stops early when ``STOP_FILE`` exists. Prints one JSON line: the acknowledged job ids, the errors
by type, and the longest time between two acknowledged publishes (seconds without service).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path

from tests.helpers import e2e_tasks


def main(run: str, count: int, rate: float, stop_file: Path) -> None:
    acknowledged: list[str] = []
    errors: Counter[str] = Counter()
    last = time.monotonic()
    longest = 0.0
    interval = 1.0 / rate
    while len(acknowledged) < count and not stop_file.exists():
        started = time.monotonic()
        try:
            job_id = e2e_tasks.ledger.delay(run).id
        except Exception as exc:  # noqa: BLE001 - counted, then tried again
            errors[type(exc).__name__] += 1
            time.sleep(0.05)
            continue
        now = time.monotonic()
        longest = max(longest, now - last)
        last = now
        acknowledged.append(str(job_id))
        time.sleep(max(0.0, interval - (now - started)))
    print(json.dumps({"ids": acknowledged, "errors": dict(errors), "longest_gap": longest}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), Path(sys.argv[4]))
