"""The worker's periodic stats line, after a known mix of outcomes."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import redis

from tests.helpers import e2e_tasks
from tests.helpers.env import child_env, wait_until
from tests.helpers.processes import Worker
from worker_app import app, enqueue
from worker_app.dlq import manage


def test_the_stats_line_counts_what_the_worker_did(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    worker = Worker(tmp_path / "worker.log", child_env(ASYNQ_STATS_INTERVAL="1s")).start()
    try:
        key = f"stats:{uuid.uuid4()}"
        enqueue("e2e.record", {"key": key, "value": 1})
        enqueue("e2e.record", {"key": key, "value": 2})
        permanent = e2e_tasks.permanent.delay(key).id
        e2e_tasks.flaky.delay(f"{key}:flaky", 2)  # two retries, then success
        unknown = app.send_task("nope.unknown", queue="default").id
        wait_until(lambda: manage.get(permanent) and manage.get(unknown), 30, "the failures")
        wait_until(
            lambda: redis_client.llen(f"{key}:flaky") == 3 and redis_client.llen(key) >= 2,
            30,
            "the jobs",
        )
        expected = (
            "stats: processed=6 succeeded=3 failed=1 retried=2 cancelled=0 dead_lettered=2 "
            "active=0 queues=critical:0,default:0,low:0"
        )
        wait_until(
            lambda: worker.lines(re.escape(expected)), 15, "a stats line with the final counts"
        )
    finally:
        worker.stop()
