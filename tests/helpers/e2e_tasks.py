"""Tasks the end-to-end tests run in real workers (``--include tests.helpers.e2e_tasks``).

Each records its attempts in the suite's private Redis, so tests can see what really ran.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import time
from functools import cache
from typing import Any

import redis
from celery.signals import task_prerun
from pydantic import BaseModel, Field

from worker_app.celery import app
from worker_app.errors import PermanentError


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)


def _record(key: str, attempt: int) -> None:
    _redis().rpush(key, json.dumps({"attempt": attempt, "at": time.time()}))


class RecordPayload(BaseModel):
    key: str = Field(min_length=1)
    value: int = Field(ge=0)


@app.task(name="e2e.record", payload_model=RecordPayload)
def record(payload: RecordPayload) -> int:
    _redis().rpush(payload.key, payload.value)
    return payload.value


@app.task(name="e2e.flaky", bind=True)
def flaky(self: Any, key: str, fail_times: int) -> str:
    attempt = self.request.retries + 1
    _record(key, attempt)
    if attempt <= fail_times:
        raise RuntimeError(f"transient failure {attempt}")
    return "ok"


@app.task(name="e2e.self_retry", bind=True)
def self_retry(self: Any, key: str) -> None:
    """Asks for a retry on every run, as tasks written for plain Celery do."""
    _record(key, self.request.retries + 1)
    raise self.retry(exc=RuntimeError("not yet"))


@app.task(name="e2e.permanent", bind=True)
def permanent(self: Any, key: str) -> None:
    _record(key, self.request.retries + 1)
    raise PermanentError("this input can never work")


@app.task(name="e2e.first_run_fails")
def first_run_fails(key: str, note: str = "") -> str:
    """Fails permanently on its first run only (runs counted in Redis): a dead letter that a
    requeue fixes. ``note`` is repeated in the error message and the result."""
    if _redis().incr(f"runs:{key}") == 1:
        raise PermanentError(f"first run failed: {note}")
    return f"second run: {note}"


@app.task(name="e2e.slow", bind=True)
def slow(self: Any, key: str, first_seconds: float) -> int:
    attempt = self.request.retries + 1
    _record(key, attempt)
    if attempt == 1:
        time.sleep(first_seconds)
    return int(attempt)


@app.task(name="e2e.mark", bind=True)
def mark(self: Any, key: str) -> None:
    """Append the queue this job came from to ``key``: the execution order, as it happened."""
    _redis().rpush(key, self.request.delivery_info["routing_key"])


@app.task(name="e2e.stamp")
def stamp(key: str) -> None:
    """Append the time this job started to ``key``."""
    _redis().rpush(key, time.time())


@app.task(name="e2e.crash", bind=True)
def crash(self: Any, key: str) -> None:
    """Kill the pool process running it: a poison pill."""
    _record(key, self.request.retries + 1)
    os._exit(1)


@app.task(name="e2e.hang", bind=True)
def hang(self: Any, key: str, seconds: float) -> int:
    """Ignore the soft time limit and sleep on, so the hard limit has to kill the attempt.

    The pool signals the soft limit with SIGUSR1; ignored here (a caught exception could still
    escape between two statements), the pool process is killed at the hard limit and restarted.
    """
    attempt = self.request.retries + 1
    previous = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        _record(key, attempt)
        time.sleep(seconds)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    return int(attempt)


@app.task(name="e2e.switch", bind=True)
def switch(self: Any, key: str) -> str:
    """Fails while ``broken:<key>`` exists: a cause an operator can fix."""
    _record(key, self.request.retries + 1)
    if _redis().exists(f"broken:{key}"):
        raise RuntimeError("downstream is broken")
    return "fixed"


@app.task(name="e2e.fail_kind")
def fail_kind(kind: str, n: int) -> None:
    """Fails permanently with one of three kinds of message, each with varying ids in it."""
    messages = {
        "missing": f"user {n} not found",
        "rejected": f"order {n:08x}-{n:04x}-4{n % 1000:03d}-8000-{n:012x} rejected by the bank",
        "timeout": f"upstream timed out after {1000 + n}ms",
    }
    raise PermanentError(messages[kind])


@app.task(name="e2e.sleepy", bind=True)
def sleepy(self: Any, key: str, seconds: float, cooperative: bool = False) -> str:
    """Run for ``seconds``; with ``cooperative`` stop as soon as the job is cancelled."""
    from worker_app.jobs.records import check_cancelled

    _record(key, self.request.retries + 1)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cooperative:
            check_cancelled()
        time.sleep(0.1)
    _redis().set(f"done:{key}", 1)
    return "done"


@app.task(name="e2e.chatty")
def chatty(key: str, lines: int) -> None:
    """Log through a plain module logger, slowly, so two of these interleave in the log."""
    log = logging.getLogger(__name__)
    for n in range(lines):
        log.info("chatty %s line %d", key, n)
        time.sleep(0.02)


@task_prerun.connect
def _a_broken_hook(kwargs: dict[str, Any] | None = None, **_: Any) -> None:
    """A receiver that raises for one key: the task must still run."""
    if str((kwargs or {}).get("key", "")).startswith("receiver-raises"):
        raise RuntimeError("a broken hook")


@cache
def _ledger() -> redis.Redis:
    return redis.Redis.from_url(os.environ["LEDGER_URL"], decode_responses=True)


@app.task(name="e2e.ledger", bind=True)
def ledger(self: Any, run: str, seconds: float = 0.0) -> None:
    """Count this execution in the ledger (a Redis the fault tests never touch), after working
    for ``seconds``."""
    time.sleep(seconds)
    _ledger().hincrby(f"ledger:{run}", str(self.request.id), 1)


@app.task(name="e2e.limited", bind=True, global_rate_limit="20/s")
def limited(self: Any, key: str) -> None:
    """At most 20 per second across every worker; records when it ran and its retry count."""
    _redis().rpush(key, json.dumps({"at": time.time(), "retries": self.request.retries}))


@app.task(name="e2e.per_org", bind=True, concurrency_key="org", concurrency_limit=5)
def per_org(self: Any, key: str, org: str) -> None:
    """At most 5 per org at once across all workers; records when each run started and ended."""
    started = time.time()
    time.sleep(0.1)
    _redis().rpush(
        key, json.dumps({"id": self.request.id, "org": org, "start": started, "end": time.time()})
    )


@app.task(name="e2e.tick", bind=True)
def tick(self: Any, key: str, seconds: float = 0.0) -> None:
    """A periodic job: records its job id and when it started and ended."""
    started = time.time()
    time.sleep(seconds)
    _redis().rpush(key, json.dumps({"id": self.request.id, "start": started, "end": time.time()}))


class OrderPayload(BaseModel):
    run: str = Field(min_length=1)
    order_id: int = Field(ge=0)


@cache
def _orders() -> Any:
    import psycopg

    return psycopg.connect(os.environ["OUTBOX_DATABASE_URL"], autocommit=True)


@app.task(name="e2e.outbox_order", payload_model=OrderPayload, bind=True)
def outbox_order(self: Any, payload: OrderPayload) -> None:
    """Count this run and record when it started; note it when its order row is not there."""
    started = time.time()
    row = _orders().execute("SELECT 1 FROM orders WHERE id = %s", (payload.order_id,)).fetchone()
    pipe = _redis().pipeline()
    pipe.hincrby(f"runs:{payload.run}", str(self.request.id), 1)
    pipe.hset(f"started:{payload.run}", str(self.request.id), started)
    if row is None:
        pipe.rpush(f"missing:{payload.run}", payload.order_id)
    pipe.execute()


@app.task(name="e2e.slow_until", bind=True)
def slow_until(self: Any, key: str, quick_after: int) -> str:
    """Count this run under ``key``; the first ``quick_after`` runs work for a minute (long
    enough to be interrupted), later ones end at once."""
    runs = _redis().rpush(key, json.dumps({"attempt": self.request.retries + 1, "at": time.time()}))
    if runs <= quick_after:
        time.sleep(60)
    return "done"


@app.task(name="e2e.gated_failure")
def gated_failure(run: str) -> None:
    """Count this run in the ledger, wait until ``gate:<run>`` is set there, then fail for good."""
    ledger = _ledger()
    ledger.hincrby(f"ledger:{run}", "runs", 1)
    deadline = time.monotonic() + 60
    while not ledger.exists(f"gate:{run}") and time.monotonic() < deadline:
        time.sleep(0.05)
    raise PermanentError("failed on purpose, after the gate opened")


@app.task(name="e2e.frozen")
def frozen() -> int:
    """Objects a pool process inherited frozen from the worker's main process."""
    return gc.get_freeze_count()


@app.task(name="e2e.spot", bind=True)
def spot(self: Any, run: str, seconds: float = 0.0) -> None:
    """Note where and when this run starts and ends, in the file ``SPOT_FILE`` (a file: a host
    cut off from the network still writes it)."""

    def note(what: str) -> None:
        line = f"{what} {run} {self.request.id} {self.request.hostname} {time.time():.3f}\n"
        fd = os.open(os.environ["SPOT_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    note("start")
    time.sleep(seconds)
    note("end")
