"""``worker-app dlq`` as an operator runs it."""

from __future__ import annotations

import json
import subprocess
import uuid

import redis

from tests.conftest import BIN, ROOT, child_env
from worker_app import dlq
from worker_app.dlq_store import Entry


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
    dlq.store().add(
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
    dlq.purge(actor="test")
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
    assert dlq.get(other) is None
    assert json.loads(cli("history", "--json").stdout)[0]["action"] == "delete"


def test_purge_asks_first_and_mistakes_are_one_line() -> None:
    seed("e2e.record", "permanent_error", "x")
    declined = cli("purge", stdin="n\n")
    assert declined.returncode == 1 and dlq.store().count() > 0
    assert cli("purge", "--yes").returncode == 0
    assert dlq.store().count() == 0
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
    dlq.purge(actor="test")
    redis_client.delete("low")
    task_id = seed("maintenance.cleanup", "permanent_error", "boom", older_than_days=5)
    unknown = seed("gone.task", "unknown_task", "not registered")
    done = cli("requeue", "--reason", "permanent_error", "--rate", "10/s")
    assert done.returncode == 0, done.stderr
    assert "requeued 1, refused 0" in done.stdout
    assert dlq.get(task_id) is None and dlq.get(unknown) is not None
    assert redis_client.llen("low") == 1  # back on its original queue
    assert json.loads(cli("history", "--json").stdout)[0]["filter"] == {"reason": "permanent_error"}
    refused = cli("requeue", unknown)
    assert refused.returncode == 1 and "unknown task 'gone.task'" in refused.stderr
    assert dlq.get(unknown) is not None
    redis_client.delete("low")
