"""End to end with a real worker process: success, retries, permanent errors, bad messages."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import redis
from celery.result import AsyncResult

from tests.helpers import e2e_tasks
from tests.helpers.env import wait_until
from tests.helpers.processes import Worker
from worker_app import app, enqueue
from worker_app.task import backoff_bound

RETRY_LINE = re.compile(r"retrying in ([\d.]+)s \(attempt (\d+) of (\d+), bound ([\d.]+)s\)")


def attempts(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    return [json.loads(item) for item in client.lrange(key, 0, -1)]


def finished(task_id: str) -> bool:
    return AsyncResult(task_id, app=app).state in ("SUCCESS", "FAILURE")


def dead_lettered(worker: Worker, task_id: str) -> bool:
    # Celery stores FAILURE before it calls on_failure: wait for the dead-letter line itself.
    return bool(worker.lines(rf"dead-lettered \S+\[{task_id}\]"))


def test_a_valid_job_runs_and_returns_its_result(worker: Worker) -> None:
    payload = {"user_id": 5, "date": "2026-01-02", "topics": ["rates"], "work_seconds": 0}
    task_id = enqueue("briefing.generate", payload)

    result: Any = AsyncResult(task_id, app=app).get(timeout=30)

    assert result == {"user_id": 5, "date": "2026-01-02", "sections": ["rates"]}
    # Lines written inside the task carry its context.
    assert worker.lines(
        rf"\[briefing.generate {task_id} queue=default attempt=1\] briefing for user 5"
    )


def test_transient_failures_retry_max_retry_times_within_jitter_bounds(
    worker: Worker, redis_client: redis.Redis
) -> None:
    key = f"flaky:{uuid.uuid4()}"
    task_id = e2e_tasks.flaky.delay(key, 99).id

    wait_until(lambda: dead_lettered(worker, task_id), 30, "the flaky job to fail for good")

    runs = attempts(redis_client, key)
    assert [run["attempt"] for run in runs] == [1, 2, 3, 4]  # first try + ASYNQ_MAX_RETRY=3
    retries = [RETRY_LINE.search(line) for line in worker.lines(rf"{task_id}.*retrying in")]
    assert len(retries) == 3
    for attempt, match in enumerate(retries):
        assert match is not None
        delay, bound = float(match.group(1)), float(match.group(4))
        assert bound == backoff_bound(attempt, 0.2, 1.0)  # 0.2, 0.4, 0.8: doubling under the cap
        assert 0.0 <= delay <= bound
        # The next attempt really waited for the drawn delay.
        assert runs[attempt + 1]["at"] - runs[attempt]["at"] >= delay - 0.05
    failures = worker.lines(
        rf"dead-lettered e2e.flaky\[{task_id}\] reason=retries_exhausted attempts=4"
    )
    assert len(failures) == 1


def test_a_flaky_job_succeeds_once_it_stops_failing(
    worker: Worker, redis_client: redis.Redis
) -> None:
    key = f"flaky:{uuid.uuid4()}"
    task_id = e2e_tasks.flaky.delay(key, 2).id

    assert AsyncResult(task_id, app=app).get(timeout=30) == "ok"
    assert [run["attempt"] for run in attempts(redis_client, key)] == [1, 2, 3]
    assert not worker.lines(rf"dead-lettered e2e.flaky\[{task_id}\]")


def test_self_retry_is_bounded_by_max_retry_and_ends_in_the_dead_letter_queue(
    worker: Worker, redis_client: redis.Redis
) -> None:
    """Celery reads max_retries=None as forever and waits 3 minutes between tries; the product
    bounds it by ASYNQ_MAX_RETRY (3 in the suite) with its own backoff."""
    key = f"self-retry:{uuid.uuid4()}"
    task_id = e2e_tasks.self_retry.delay(key).id

    wait_until(lambda: dead_lettered(worker, task_id), 30, "the retries to run out")

    assert [run["attempt"] for run in attempts(redis_client, key)] == [1, 2, 3, 4]
    assert worker.lines(rf"dead-lettered e2e.self_retry\[{task_id}\] reason=retries_exhausted")


def test_a_permanent_error_is_not_retried_and_reaches_the_failure_handler_once(
    worker: Worker, redis_client: redis.Redis
) -> None:
    key = f"permanent:{uuid.uuid4()}"
    task_id = e2e_tasks.permanent.delay(key).id

    wait_until(lambda: dead_lettered(worker, task_id), 30, "the permanent failure")

    assert len(attempts(redis_client, key)) == 1
    assert not worker.lines(rf"{task_id}.*retrying in")
    failures = worker.lines(rf"dead-lettered e2e.permanent\[{task_id}\] reason=permanent_error")
    assert len(failures) == 1
    assert "PermanentError: this input can never work" in failures[0]


def test_a_hand_published_invalid_payload_is_rejected_by_the_worker_without_retry(
    worker: Worker, redis_client: redis.Redis
) -> None:
    key = f"record:{uuid.uuid4()}"
    # send_task skips the producer-side check, as a foreign producer would.
    task_id = app.send_task("e2e.record", kwargs={"key": key, "value": -1}).id

    wait_until(lambda: dead_lettered(worker, task_id), 30, "the invalid job to be rejected")

    assert AsyncResult(task_id, app=app).state == "FAILURE"
    assert redis_client.llen(key) == 0
    assert not worker.lines(rf"{task_id}.*retrying in")
    failures = worker.lines(rf"dead-lettered e2e.record\[{task_id}\] reason=invalid_payload")
    assert len(failures) == 1
    assert "value: Input should be greater than or equal to 0" in failures[0]


def test_a_soft_time_limit_is_retried(worker: Worker, redis_client: redis.Redis) -> None:
    key = f"slow:{uuid.uuid4()}"
    # ASYNQ_TASK_TIMEOUT=4s: the soft limit fires at 3.6 s, well before the hard kill.
    task_id = e2e_tasks.slow.delay(key, 30).id

    assert AsyncResult(task_id, app=app).get(timeout=40) == 2
    assert worker.lines(rf"{task_id}.*retrying in .*SoftTimeLimitExceeded")
    assert [run["attempt"] for run in attempts(redis_client, key)] == [1, 2]


def test_a_pickle_message_is_refused_and_the_worker_keeps_going(
    worker: Worker, redis_client: redis.Redis
) -> None:
    key = f"record:{uuid.uuid4()}"
    app.send_task("e2e.record", kwargs={"key": key, "value": 1}, serializer="pickle")
    wait_until(lambda: worker.lines("untrusted content of type pickle"), 30, "the refusal")

    task_id = enqueue("e2e.record", {"key": key, "value": 2})
    assert AsyncResult(task_id, app=app).get(timeout=30) == 2
    assert redis_client.lrange(key, 0, -1) == ["2"]  # the pickled job never ran


def test_pool_processes_share_the_main_process_objects_frozen(worker: Worker) -> None:
    """The main process freezes its objects before it forks a pool process: its garbage
    collections then leave the pages it shares with them alone (copy-on-write)."""
    assert e2e_tasks.frozen.delay().get(timeout=30) > 10_000
