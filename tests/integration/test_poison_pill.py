"""Poison pills: a job whose runs die three times in a row (its pool process killed, or its
whole worker lost while running it) is dead-lettered instead of run again; requeues by graceful
restarts are no deaths (its own module, so no other worker competes for the messages)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from celery.result import AsyncResult

from tests.helpers import e2e_tasks
from tests.helpers.dlq import entry_of, good_batch_succeeds, runs
from tests.helpers.env import child_env, wait_until
from tests.helpers.group_worker import GroupWorker
from tests.helpers.processes import Worker
from worker_app import app, keys
from worker_app.dlq import manage

pytestmark = [pytest.mark.fault, pytest.mark.usefixtures("empty_product_data")]


def test_a_poison_pill_runs_three_times_then_is_dead_lettered(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    own = Worker(tmp_path / "worker.log", child_env()).start()
    try:
        key = f"crash:{uuid.uuid4()}"
        # A production-like time limit (the producer stamps it on the message): the pool
        # reports each lost process, within its 5 s maintenance period at worst, long before
        # the limit could kill the attempt instead.
        task_id = e2e_tasks.crash.apply_async((key,), time_limit=60, soft_time_limit=55).id
        entry = entry_of(task_id, timeout=90)
        assert (entry.reason, entry.exc_type) == ("poison_pill", "PoisonPill")
        assert runs(redis_client, key) == 3
        good_batch_succeeds()
        assert runs(redis_client, key) == 3  # nothing ran it a fourth time
        assert own.process is not None and own.process.poll() is None
    finally:
        own.stop()


def test_requeues_by_three_graceful_restarts_are_no_deaths(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    """Three deploys interrupt a long task (SIGTERM: it goes back on its queue unfinished); the
    fourth worker runs it to the end. Not a poison pill: no run died."""
    key = f"deploys:{uuid.uuid4()}"
    env = child_env(ASYNQ_SHUTDOWN_TIMEOUT="2s")
    task_id = e2e_tasks.slow_until.apply_async((key, 3), time_limit=120, soft_time_limit=110).id
    for restart in range(1, 4):
        worker = Worker(tmp_path / f"worker{restart}.log", env).start()
        wait_until(lambda n=restart: runs(redis_client, key) == n, 30, f"run {restart}")  # type: ignore[misc]
        assert worker.stop() == 0
        assert not redis_client.exists(keys.DEATHS + task_id)
    last = Worker(tmp_path / "last.log", env).start()
    try:
        assert AsyncResult(task_id, app=app).get(timeout=30) == "done"
    finally:
        last.stop()
    assert runs(redis_client, key) == 4
    assert manage.get(task_id) is None


def test_a_worker_lost_three_times_while_running_the_job_makes_it_a_poison_pill(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    """The whole worker vanishes (SIGKILL to its process group, as an OOM kill of a container)
    while running the job, three times: each lease recovered for the started task is a death;
    the next fetch dead-letters it instead of running it a fourth time."""
    key = f"vanish:{uuid.uuid4()}"
    env = child_env(ASYNQ_VISIBILITY_TIMEOUT="3s")
    task_id = e2e_tasks.slow_until.apply_async((key, 99), time_limit=120, soft_time_limit=110).id
    for death in range(1, 4):
        worker = GroupWorker(tmp_path / f"worker{death}.log", env).start()
        try:
            wait_until(lambda n=death: runs(redis_client, key) == n, 30, f"run {death}")  # type: ignore[misc]
            wait_until(lambda: redis_client.scard(keys.RUNNING) == 1, 10, "the start marked")
        finally:
            worker.kill()
    last = Worker(tmp_path / "last.log", env).start()
    try:
        entry = entry_of(task_id, timeout=30)
    finally:
        last.stop()
    assert (entry.reason, entry.exc_type) == ("poison_pill", "PoisonPill")
    assert runs(redis_client, key) == 3
    assert redis_client.hget(keys.JOB + task_id, "status") == "failed"
