"""``worker-app dlq`` as an operator runs it."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import redis
from celery.result import AsyncResult

from tests.helpers.env import BIN, ROOT, child_env, wait_until
from tests.helpers.processes import ReplayWorker, Worker
from worker_app import app
from worker_app.dlq import entries, manage
from worker_app.dlq.entries import Entry

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "worker-app"), "dlq", *args],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
    )


def seed(task: str, reason: str, message: str, **kwargs: object) -> str:
    task_id = str(uuid.uuid4())
    entries.store().add(
        Entry(
            task_id=task_id,
            task_name=task,
            reason=reason,
            queue="low",
            kwargs=dict(kwargs),
            exc_type="RuntimeError",
            exc_message=message,
        )
    )
    return task_id


def test_list_show_stats_and_history() -> None:
    manage.purge(actor="test")
    first = seed("e2e.record", "permanent_error", "order 17 rejected")
    second = seed("e2e.record", "permanent_error", "order 18 rejected")
    other = seed("e2e.flaky", "retries_exhausted", "timeout after 900ms")

    listed = json.loads(cli("list", "--json", "--reason", "permanent_error").stdout)
    assert [e["task_id"] for e in listed["entries"]] == [second, first]  # newest first
    page = json.loads(cli("list", "--json", "--limit", "1").stdout)
    assert page["entries"][0]["task_id"] == other and page["next_cursor"]
    rest = json.loads(cli("list", "--json", "--limit", "5", "--cursor", page["next_cursor"]).stdout)
    assert len(rest["entries"]) == 2 and other not in {e["task_id"] for e in rest["entries"]}

    shown = json.loads(cli("show", first, "--json").stdout)
    assert (shown["task_id"], shown["exc_message"]) == (first, "order 17 rejected")

    stats = json.loads(cli("stats", "--json").stdout)
    assert stats["total"] == 3 and len(stats["by_fingerprint"]) == 2
    assert "3 entries, 2 distinct failure(s)" in cli("stats").stdout

    assert cli("delete", other).returncode == 0
    assert manage.get(other) is None
    assert json.loads(cli("history", "--json").stdout)[0]["action"] == "delete"


def test_purge_asks_first_and_mistakes_are_one_line() -> None:
    seed("e2e.record", "permanent_error", "x")
    declined = cli("purge", stdin="n\n")
    assert declined.returncode == 1 and entries.store().count() > 0
    assert cli("purge", "--yes").returncode == 0
    assert entries.store().count() == 0
    for args, message in [
        (["show", "nope"], "no dead-letter entry 'nope'"),
        (["list", "--reason", "bogus"], "--reason 'bogus' is not one of"),
        (["requeue"], "name a TASK_ID"),
        (["requeue", "--all", "--rate", "fast"], "--rate 'fast'"),
    ]:
        done = cli(*args)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], done.stderr


def test_requeue_by_filter_publishes_to_the_original_queue(redis_client: redis.Redis) -> None:
    manage.purge(actor="test")
    redis_client.delete("low")
    task_id = seed("maintenance.cleanup", "permanent_error", "boom", older_than_days=5)
    unknown = seed("gone.task", "unknown_task", "not registered")
    done = cli("requeue", "--reason", "permanent_error", "--rate", "10/s")
    assert done.returncode == 0, done.stderr
    assert "requeued 1 of 1, refused 0" in done.stdout
    assert manage.get(task_id) is None and manage.get(unknown) is not None
    assert redis_client.llen("low") == 1  # back on its original queue
    assert json.loads(cli("history", "--json").stdout)[0]["filter"] == {"reason": "permanent_error"}
    # A new payload cannot be validated without the task: refused, nothing changes.
    refused = cli("requeue", unknown, "--payload", '{"older_than_days": 9}')
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1, refused.stderr
    assert "task 'gone.task' is not registered in this process" in lines[0]
    assert manage.get(unknown) is not None and redis_client.llen("low") == 1
    redis_client.delete("low")


def test_an_unknown_task_is_replayed_unchanged_from_a_cli_without_it(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    key = f"replay:{uuid.uuid4()}"
    lacking = Worker(tmp_path / "lacking.log", child_env()).start()
    try:
        task_id = app.send_task(
            "replay.note",
            [key, 7],
            {"tag": "as sent"},
            queue="low",
            headers={"traceparent": TRACEPARENT},
        ).id
        wait_until(lambda: manage.get(task_id) is not None, 30, "the unknown task's dead letter")
    finally:
        lacking.stop()
    entry = manage.get(task_id)
    assert entry is not None and (entry.reason, entry.queue) == ("unknown_task", "low")

    done = cli("requeue", task_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"requeued {task_id}, published unchanged: task 'replay.note' is not registered in "
        "this process, payload not validated"
    ]
    assert manage.get(task_id) is None
    assert manage.history(task_id=task_id)[0]["validated"] is False

    having = ReplayWorker(tmp_path / "having.log", child_env()).start()
    try:
        wait_until(
            lambda: AsyncResult(task_id, app=app).state == "SUCCESS", 30, "the replay to run"
        )
    finally:
        having.stop()
    assert [json.loads(run) for run in redis_client.lrange(key, 0, -1)] == [
        {
            "id": task_id,
            "args": [key, 7],
            "kwargs": {"tag": "as sent"},
            "queue": "low",
            "retries": 0,
            "traceparent": TRACEPARENT,
        }
    ]


def test_a_bulk_requeue_that_stops_half_way_says_how_far_it_got(
    redis_client: redis.Redis,
) -> None:
    manage.purge(actor="test")
    redis_client.delete("low")
    # Newest first: 8, 7 and 6 go out, then the invalid 0 stops it; 5 is never reached.
    ids = [
        seed("maintenance.cleanup", "permanent_error", "boom", older_than_days=days)
        for days in (5, 0, 6, 7, 8)
    ]

    done = cli("requeue", "--task", "maintenance.cleanup")

    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: requeued 3 of 5, stopped: {ids[1]}: "), lines[0]
    assert "older_than_days" in lines[0]
    assert [manage.get(i) is not None for i in ids] == [True, True, False, False, False]
    assert redis_client.llen("low") == 3
    record = manage.history(limit=1)[0]
    assert (record["count"], record["total"], record["task_ids"]) == (3, 5, ids[:1:-1])
    assert record["stopped"] == lines[0].split("stopped: ", 1)[1]
    assert "stopped after 3 of 5" in cli("history").stdout
    redis_client.delete("low")
