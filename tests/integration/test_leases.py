"""Leases: a short visibility timeout never hands a live worker's long task to another worker,
and a SIGKILLed worker's task comes back about one timeout later (own module: own workers)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import redis
from celery.result import AsyncResult

from tests.helpers import e2e_tasks
from tests.helpers.env import child_env, wait_until
from tests.helpers.processes import Worker
from worker_app import app

pytestmark = pytest.mark.fault

LEASE = 3.0  # seconds; production default is 60


def attempts(client: redis.Redis, key: str) -> int:
    return len([json.loads(r) for r in client.lrange(key, 0, -1)])


def test_a_task_longer_than_the_visibility_timeout_runs_exactly_once(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    env = child_env(ASYNQ_VISIBILITY_TIMEOUT=f"{LEASE}s")
    one = Worker(tmp_path / "one.log", env).start()
    two = Worker(tmp_path / "two.log", env).start()  # idle, sweeping, ready to steal
    try:
        key = f"long:{uuid.uuid4()}"
        task_id = e2e_tasks.sleepy.apply_async(
            (key, 4 * LEASE), time_limit=60, soft_time_limit=55
        ).id
        assert AsyncResult(task_id, app=app).get(timeout=60) == "done"
        time.sleep(LEASE)
        assert attempts(redis_client, key) == 1
        assert not one.lines("recovered") and not two.lines("recovered")
    finally:
        one.stop()
        two.stop()


def test_a_killed_workers_task_comes_back_within_about_one_timeout(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    env = child_env(ASYNQ_VISIBILITY_TIMEOUT=f"{LEASE}s")
    doomed = Worker(tmp_path / "doomed.log", env, concurrency=1).start()
    key = f"killed:{uuid.uuid4()}"
    task_id = e2e_tasks.sleepy.apply_async((key, 2 * LEASE), time_limit=60, soft_time_limit=55).id
    wait_until(lambda: attempts(redis_client, key) == 1, 30, "the task to start")
    assert doomed.process is not None
    # Kill the pool process with its parent, as an OOM kill of the container would.
    children = Path(f"/proc/{doomed.process.pid}/task/{doomed.process.pid}/children").read_text()
    for child in children.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)
    doomed.process.send_signal(signal.SIGKILL)
    doomed.process.wait()
    killed = time.monotonic()

    rescuer = Worker(tmp_path / "rescuer.log", env).start()
    try:
        wait_until(lambda: attempts(redis_client, key) == 2, 60, "the task to run again")
        back_after = time.monotonic() - killed
        assert AsyncResult(task_id, app=app).get(timeout=60) == "done"
    finally:
        rescuer.stop()
    print(f"recovered {back_after:.1f}s after the kill (visibility timeout {LEASE}s)")
    assert back_after < 3 * LEASE + 5
    assert rescuer.lines(rf"recovered e2e.sleepy\[{task_id}\] from a lost worker")
