"""SIGTERM mid-task: the worker stops within ASYNQ_SHUTDOWN_TIMEOUT, exits 0, and the
unfinished job is back on its queue for another worker (its own module: no other worker)."""

from __future__ import annotations

import json
import signal
import subprocess
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
from worker_app.jobs import records

pytestmark = pytest.mark.fault

SHUTDOWN = 3.0


def test_sigterm_during_a_long_task_requeues_it_and_exits_0_in_time(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    env = child_env(ASYNQ_SHUTDOWN_TIMEOUT=f"{SHUTDOWN}s")
    first = Worker(tmp_path / "first.log", env).start()
    key = f"long:{uuid.uuid4()}"
    # 10 s of work: longer than the shutdown window, shorter than the task's own limit.
    task_id = e2e_tasks.sleepy.apply_async((key, 10), time_limit=60, soft_time_limit=55).id
    wait_until(lambda: redis_client.llen(key) == 1, 30, "the task to start")
    assert first.process is not None
    started = time.monotonic()
    first.process.send_signal(signal.SIGTERM)
    code = first.process.wait(timeout=30)
    took = time.monotonic() - started
    assert code == 0, first.log()[-3000:]
    assert took < SHUTDOWN + 5, f"took {took:.1f}s"

    second = Worker(tmp_path / "second.log", env).start()
    try:
        wait_until(lambda: redis_client.llen(key) == 2, 15, "another worker to start it again")
        assert AsyncResult(task_id, app=app).get(timeout=40) == "done"
    finally:
        second.stop()
    runs = [json.loads(r)["attempt"] for r in redis_client.lrange(key, 0, -1)]
    print(
        f"SIGTERM mid-task: exit {code} after {took:.1f}s (window {SHUTDOWN}s); "
        f"restarted by the next worker, lost=0, runs={len(runs)}"
    )
    assert runs == [1, 1]


def test_a_sigterm_releases_every_ack_so_no_finished_job_runs_again(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """Acks ride on the worker's next fetch; a stopping worker fetches no more, so it must
    release them itself. Jobs finishing during the shutdown window and right before it are all
    gone from the unacked set when the worker exits, and the next worker runs only the rest."""
    env = child_env(ASYNQ_SHUTDOWN_TIMEOUT=f"{SHUTDOWN}s")
    first = Worker(tmp_path / "first.log", env).start()
    keys = [f"acked:{uuid.uuid4()}" for _ in range(8)]
    for key in keys[:4]:  # quick ones, done before the signal
        e2e_tasks.sleepy.delay(key, 0.05)
    wait_until(lambda: all(redis_client.get(f"done:{k}") for k in keys[:4]), 20, "quick jobs")
    for key in keys[4:6]:  # both run (1 s, inside the window); nothing else is held
        e2e_tasks.sleepy.delay(key, 1.0)
    wait_until(lambda: all(redis_client.llen(k) for k in keys[4:6]), 20, "two to start")
    assert first.process is not None
    first.process.send_signal(signal.SIGTERM)
    assert first.process.wait(timeout=30) == 0, first.log()[-3000:]
    finished = [k for k in keys if redis_client.get(f"done:{k}")]
    assert len(finished) == 6, first.log()[-3000:]
    assert redis_client.hlen("unacked") == 0
    assert redis_client.zcard("unacked_index") == 0

    for key in keys[6:]:
        e2e_tasks.sleepy.delay(key, 0.05)
    second = Worker(tmp_path / "second.log", env).start()
    try:
        wait_until(lambda: all(redis_client.get(f"done:{k}") for k in keys), 30, "the rest")
        time.sleep(1.0)
    finally:
        second.stop()
    assert [redis_client.llen(k) for k in keys] == [1] * 8


def test_sigterm_gives_back_held_jobs_at_once_and_exits_inside_a_30s_grace(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    """The orchestrator's case with the default ASYNQ_SHUTDOWN_TIMEOUT (25 s): SIGTERM with a
    60 s task running and two short jobs held but not started; SIGKILL at 30 s (Kubernetes'
    default grace). The worker exits 0 before the kill; the two short jobs start on another
    worker within 2 s of the SIGTERM, the long one within 2 s of the exit (it runs twice)."""
    long_key, short_keys = f"long:{uuid.uuid4()}", [f"short:{uuid.uuid4()}" for _ in range(2)]
    long_id = e2e_tasks.sleepy.apply_async(
        (long_key, 60, True), time_limit=120, soft_time_limit=110
    ).id
    for key in short_keys:
        e2e_tasks.sleepy.delay(key, 0.5)
    # One process: its first fetch holds all three, the long one runs, the short ones wait.
    env = child_env(ASYNQ_SHUTDOWN_TIMEOUT="25s")  # the default (the suite's is shorter)
    first = Worker(tmp_path / "first.log", env, concurrency=1).start()
    wait_until(lambda: redis_client.llen(long_key) == 1, 30, "the long task to start")

    def both_held() -> bool:
        values = redis_client.hvals("unacked")
        return sum(any(k in v for k in short_keys) for v in values) == 2

    wait_until(both_held, 10, "the short jobs to be held")
    assert not any(redis_client.llen(key) for key in short_keys)
    second = Worker(tmp_path / "second.log", child_env(), concurrency=2).start()
    try:
        assert first.process is not None
        signalled = time.time()
        first.process.send_signal(signal.SIGTERM)
        try:
            code = first.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            first.process.kill()
            raise AssertionError("still shutting down at 30 s:\n" + first.log()[-3000:]) from None
        exited = time.time()
        assert code == 0, first.log()[-3000:]
        wait_until(lambda: redis_client.llen(long_key) == 2, 10, "the long task to start again")
        starts = {
            key: [json.loads(r)["at"] for r in redis_client.lrange(key, 0, -1)]
            for key in [long_key, *short_keys]
        }
    finally:
        records.store().cancel(long_id)  # the second run stops at once (it checks)
        second.stop()
    short_after = [starts[key][0] - signalled for key in short_keys]
    long_after = starts[long_key][1] - exited
    print(
        f"SIGTERM with a 60 s task and 2 held: exit {code} after {exited - signalled:.1f}s; "
        f"short jobs started {', '.join(f'{s:.2f}s' for s in short_after)} after the signal; "
        f"the long task again {long_after:.2f}s after the exit"
    )
    assert all(len(starts[key]) == 1 for key in short_keys)  # given back unrun, run once
    assert all(0 <= s < 2.0 for s in short_after), short_after
    assert long_after < 2.0, long_after
    assert exited - signalled < 25.0 + 1.0
