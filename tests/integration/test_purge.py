"""Purging queues: waiting and parked jobs go, their records end cancelled, nothing else moves.

No worker runs in this module: what is enqueued stays where the publisher put it.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import redis

from tests.helpers import e2e_tasks
from tests.helpers.env import BIN, ROOT, child_env
from worker_app import keys
from worker_app.jobs import records
from worker_app.producer.client import enqueue


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=60
    )


def seed(key: str) -> tuple[list[str], list[str], str]:
    """Waiting jobs on ``default`` (one with a priority, on its own list), parked ones, and one
    waiting on ``low``."""
    waiting = [enqueue("e2e.record", {"key": key, "value": n}) for n in range(3)]
    waiting.append(e2e_tasks.record.apply_async(kwargs={"key": key, "value": 9}, priority=9).id)
    parked = [enqueue("e2e.record", {"key": key, "value": n}, countdown=300) for n in range(2)]
    other = enqueue("e2e.record", {"key": key, "value": 0}, queue="low")
    return waiting, parked, other


def status(job_id: str) -> str:
    job = records.store().get(job_id)
    assert job is not None
    return job.status


def test_worker_app_purge_removes_waiting_and_parked_jobs_and_cancels_them(
    redis_client: redis.Redis,
) -> None:
    key = f"purge:{uuid.uuid4()}"
    waiting, parked, other = seed(key)
    assert redis_client.llen("default\x06\x169") >= 1

    done = run(str(BIN / "worker-app"), "purge", "--queue", "default", "--yes", "--json")

    assert done.returncode == 0, done.stderr
    removed = json.loads(done.stdout)
    assert removed["default"]["waiting"] >= len(waiting)
    assert removed["default"]["parked"] >= len(parked)
    for job_id in waiting + parked:
        job = records.store().get(job_id)
        assert job is not None and job.status == "cancelled" and job.last_error == "purged"
    assert redis_client.llen("default") == redis_client.llen("default\x06\x169") == 0
    parked_now = [
        m for m in redis_client.zrange(keys.DELAYED, 0, -1) if str(m).startswith("default")
    ]
    assert parked_now == []
    assert status(other) == "pending"  # another queue is left alone
    assert redis_client.llen("low") >= 1


def test_celery_purge_also_removes_parked_jobs_and_cancels_them(redis_client: redis.Redis) -> None:
    key = f"purge:{uuid.uuid4()}"
    waiting, parked, other = seed(key)

    done = run(str(BIN / "celery"), "-A", "worker_app", "purge", "-f", "-Q", "default")

    assert done.returncode == 0, done.stderr
    assert all(status(job_id) == "cancelled" for job_id in waiting + parked)
    assert status(other) == "pending"


def test_purge_refuses_an_unknown_queue_with_one_line() -> None:
    done = run(str(BIN / "worker-app"), "purge", "--queue", "nope", "--yes")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "nope" in done.stderr
    assert "Traceback" not in done.stderr


def test_purge_asks_before_it_removes_anything(redis_client: redis.Redis) -> None:
    job_id = enqueue("e2e.record", {"key": "ask", "value": 1}, queue="low")
    done = subprocess.run(
        [str(BIN / "worker-app"), "purge", "--queue", "low"],
        cwd=ROOT,
        env=child_env(),
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert status(job_id) == "pending"
