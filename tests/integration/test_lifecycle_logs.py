"""Each lifecycle event of a job is logged exactly once."""

from __future__ import annotations

import uuid
from pathlib import Path

import redis

from tests.helpers import e2e_tasks
from tests.helpers.env import child_env, wait_until
from tests.helpers.processes import Worker
from worker_app.dlq import manage


def test_every_event_is_one_line(tmp_path: Path, redis_client: redis.Redis) -> None:
    worker = Worker(tmp_path / "worker.log", child_env()).start()
    try:
        key = f"life:{uuid.uuid4()}"
        ok = e2e_tasks.flaky.delay(key, 1).id  # fails once, then succeeds
        bad = e2e_tasks.permanent.delay(f"{key}:p").id
        wait_until(
            lambda: manage.get(bad) is not None and redis_client.llen(key) == 2, 30, "both jobs"
        )
        wait_until(lambda: worker.lines(rf"e2e.flaky\[{ok}\] succeeded in"), 10, "the success line")
    finally:
        worker.stop()

    def count(pattern: str) -> int:
        return len(worker.lines(pattern))

    # published is logged by the producer (this test process), the rest by the worker
    assert count(rf"{ok} queue=default attempt=1\] started") == 1
    assert count(rf"{ok} queue=default attempt=2\] started") == 1
    assert count(rf"published e2e.flaky\[{ok}\] queue=default attempt=2 eta=") == 1  # the retry
    assert count(rf"{ok}.*retrying in") == 1
    assert count(rf"{ok}.*retry:") == 0  # Celery's duplicate is dropped
    assert count(rf"e2e.flaky\[{ok}\] succeeded in [\d.]+s") == 1
    assert count(rf"dead-lettered e2e.permanent\[{bad}\] reason=permanent_error") == 1
    assert count(rf"e2e.permanent\[{bad}\] raised unexpected") == 0


def test_a_receiver_that_raises_is_logged_and_the_task_still_runs(tmp_path: Path) -> None:
    from celery.result import AsyncResult

    from worker_app import app, enqueue

    worker = Worker(tmp_path / "worker.log", child_env()).start()
    try:
        task_id = enqueue("e2e.record", {"key": f"receiver-raises-{uuid.uuid4()}", "value": 7})
        assert AsyncResult(task_id, app=app).get(timeout=30) == 7
    finally:
        worker.stop()
    assert worker.lines(
        r"Signal handler .*_a_broken_hook.* raised: RuntimeError\('a broken hook'\)"
    )
