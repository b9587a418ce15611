"""A producer from another service: plain Celery, standard kombu Redis transport, defaults.

Run as a script (``python foreign_producer.py --redis-url URL --budget SECONDS``); it never
imports worker_app. It sends ``conformance.add(n, n)`` 100 times with each of the priorities
None (no priority given), 0, 3, 5 and 9 to each of ``critical``, ``default`` and ``low`` (1,500
jobs, the priorities interleaved), then waits for every result with ``AsyncResult.get`` within
one overall budget, and prints a JSON summary, ``{"jobs": [...]}``, one object per job with its
``id``, ``n``, ``queue``, ``priority``, ``result`` and ``error`` (why there is no result).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as ResultTimeout
from celery.result import AsyncResult

QUEUES = ("critical", "default", "low")
PRIORITIES = (None, 0, 3, 5, 9)
#: Jobs per queue and priority.
EACH = 100


def collect(result: AsyncResult[Any], deadline: float) -> tuple[Any, str | None]:
    """The job's result, or why there is none, waiting at most until ``deadline``."""
    try:
        remaining = deadline - time.monotonic()
        if remaining > 0:
            return result.get(timeout=remaining), None
        if result.ready():  # the budget is spent: take only what is already there
            return result.get(timeout=5), None
        return None, f"no result within the budget (state {result.state})"
    except ResultTimeout:
        return None, "no result within the budget"
    except Exception as exc:  # noqa: BLE001 - reported in the summary, per job
        return None, f"{type(exc).__name__}: {exc}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--budget", type=float, default=60.0)
    options = parser.parse_args()

    app = Celery("foreign", broker=options.redis_url, backend=options.redis_url)
    sent: list[tuple[int, str, int | None, AsyncResult[Any]]] = []
    for queue in QUEUES:
        for k in range(EACH * len(PRIORITIES)):
            n = len(sent)
            priority = PRIORITIES[k % len(PRIORITIES)]
            extra: dict[str, Any] = {} if priority is None else {"priority": priority}
            result = app.send_task("conformance.add", args=(n, n), queue=queue, **extra)
            sent.append((n, queue, priority, result))

    deadline = time.monotonic() + options.budget
    jobs = []
    for n, queue, priority, result in sent:
        value, error = collect(result, deadline)
        jobs.append(
            {
                "id": result.id,
                "n": n,
                "queue": queue,
                "priority": priority,
                "result": value,
                "error": error,
            }
        )

    # The point of this producer: nothing of worker_app was needed to talk to its workers.
    loaded = sorted(name for name in sys.modules if name.split(".")[0] == "worker_app")
    assert "worker_app" not in sys.modules and not loaded, f"worker_app was imported: {loaded}"
    print(json.dumps({"jobs": jobs}))


if __name__ == "__main__":
    main()
