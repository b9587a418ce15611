"""A publish-once job whose worker was lost comes back and runs: its record says active, but
the delivery is the lost worker's message put back (own module: no other worker competes)."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from pathlib import Path

import pytest
import redis

from tests.helpers import e2e_tasks
from tests.helpers.env import child_env, wait_until
from tests.helpers.processes import Worker
from tests.helpers.publish_once import attempts, duplicates, publish_once, status

pytestmark = pytest.mark.fault


def test_a_lost_workers_publish_once_job_comes_back_and_runs(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """Its record says active, but this delivery is the lost worker's message put back."""
    lease = 3.0
    env = child_env(ASYNQ_VISIBILITY_TIMEOUT=f"{lease}s")
    doomed = Worker(tmp_path / "doomed.log", env, concurrency=1).start()
    key, job_id = f"once-lost:{uuid.uuid4()}", str(uuid.uuid4())
    publish_once(e2e_tasks.sleepy, (key, 2 * lease), job_id, time_limit=60, soft_time_limit=55)
    wait_until(lambda: len(attempts(redis_client, key)) == 1, 30, "the job to start")
    assert doomed.process is not None
    pid = doomed.process.pid
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(child), signal.SIGKILL)
    doomed.process.kill()
    doomed.process.wait()
    rescuer = Worker(tmp_path / "rescuer.log", env).start()
    try:
        wait_until(lambda: status(job_id) == "succeeded", 60, "the job to run again and end")
    finally:
        rescuer.stop()
    assert attempts(redis_client, key) == [1, 1]
    assert not duplicates(rescuer, job_id)
