"""Plain ``@app.task`` functions the conformance tests run in real workers.

Workers load them with ``--include tests.helpers.conformance_tasks``. Each task records its
execution (RPUSH of its task id) on the ledger list of its worker in the suite's private Redis,
so a test can tell which jobs ran, and how many times.
"""

from __future__ import annotations

import os
import time
from functools import cache
from typing import Any

import redis

from worker_app.celery import app

#: Environment variable naming a worker's ledger list; each test worker gets a fresh one.
LEDGER_ENV = "CONFORMANCE_LEDGER"
DEFAULT_LEDGER = "conformance:ledger"
#: ``conformance.sleep`` ends early once ``WAKE + <its task id>`` exists.
WAKE = "conformance:wake:"


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)


def ledger_key() -> str:
    return os.environ.get(LEDGER_ENV, DEFAULT_LEDGER)


def _ran(task_id: str | None) -> None:
    _redis().rpush(ledger_key(), str(task_id))


@app.task(name="conformance.add", bind=True)
def add(self: Any, x: int, y: int) -> int:
    _ran(self.request.id)
    return x + y


@app.task(name="conformance.mul", bind=True)
def mul(self: Any, x: int, y: int) -> int:
    _ran(self.request.id)
    return x * y


@app.task(name="conformance.xsum", bind=True)
def xsum(self: Any, numbers: list[int]) -> int:
    _ran(self.request.id)
    return sum(numbers)


# Its own time limits: the suite's ASYNQ_TASK_TIMEOUT (4 s) would retry a long sleep.
@app.task(name="conformance.sleep", bind=True, soft_time_limit=55, time_limit=60)
def sleep(self: Any, seconds: float) -> float:
    """Sleep ``seconds``, or until a test sets ``WAKE + <task id>``; records its start."""
    _ran(self.request.id)
    wake = WAKE + str(self.request.id)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not _redis().exists(wake):
        time.sleep(0.05)
    return seconds
