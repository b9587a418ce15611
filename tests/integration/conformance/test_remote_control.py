"""Remote control is never treated as a job: ``inspect`` replies and Flower's polls are never
held like messages, so nothing is "recovered from a lost worker" a visibility timeout later."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from tests.helpers.conformance import (
    REPLY_TIMEOUT,
    ConformanceWorker,
    Flower,
    celery,
    shown,
    worker_env,
)

pytestmark = pytest.mark.conformance

VISIBILITY_TIMEOUT = 3.0
#: kombu's held set: a hash of delivery tag -> JSON [envelope, exchange, routing key].
UNACKED = "unacked"
REPLY_EXCHANGE = "reply.celery.pidbox"


def test_inspect_replies_and_flower_polls_are_never_held_or_recovered(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    env = worker_env(ASYNQ_VISIBILITY_TIMEOUT=f"{VISIBILITY_TIMEOUT:g}s")
    flower = Flower(tmp_path / "flower.log", env).launch()
    worker = ConformanceWorker(tmp_path / "worker.log", env)
    try:
        worker.start()
        flower.wait_up()
        pings = 0
        # Three visibility timeouts and a margin of one: every held reply would be swept.
        deadline = time.monotonic() + 4 * VISIBILITY_TIMEOUT
        while time.monotonic() < deadline or pings < 3:
            done = celery("inspect", "ping", "-d", worker.node, "-t", REPLY_TIMEOUT, env=env)
            assert done.returncode == 0 and worker.node in done.stdout, shown(done)
            assert "recovered" not in done.stdout + done.stderr, shown(done)
            answer = flower.get("/api/workers", refresh="1")
            assert answer.status_code == 200, answer.text
            pings += 1

        held = [
            json.loads(value)[1:]  # [exchange, routing key]
            for value in redis_client.hvals(UNACKED)
            if REPLY_EXCHANGE in str(value)
        ]
        by_worker, by_flower = worker.lines("recovered"), flower.lines("recovered")
        assert not held and not by_worker and not by_flower, (
            f"after {pings} inspect calls and Flower refreshes: {len(held)} replies held in "
            f"{UNACKED!r} (e.g. {held[:1]}); {len(by_worker)} recoveries logged by the worker, "
            f"{len(by_flower)} by Flower, e.g. {(by_worker + by_flower)[:1]}"
        )
    finally:
        flower.stop()
        worker.stop()
