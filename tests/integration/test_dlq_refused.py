"""A failed job is dead-lettered before its message is let go: while Redis refuses the writes to
the dead-letter keys (an ACL that denies the worker their prefix), the message stays held and
the write is tried again; once Redis takes them, the job is dead-lettered exactly once (own
module: own broker and worker).

(``maxmemory`` with ``noeviction`` does not refuse it: Redis lets a script that began with a
read go on writing.)"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import redis

from tests.helpers.env import BIN, ROOT, child_env, wait_until
from tests.helpers.processes import Worker
from worker_app import keys
from worker_app.cli.devredis import RedisServer

pytestmark = pytest.mark.fault

#: Key patterns that allow every key but those under ``worker_app:dlq``.
DENY_DLQ = ("~[^w]*", "~w[^o]*", "~worker_app:[^d]*", "~worker_app:d[^l]*", "~worker_app:dl[^q]*")


def test_a_dead_letter_write_refused_by_redis_keeps_the_message_until_it_is_stored(
    tmp_path: Path, broker: RedisServer, redis_server: RedisServer
) -> None:
    env = child_env(REDIS_URL=broker.url, LEDGER_URL=redis_server.url)
    run = f"oom-{uuid.uuid4().hex[:8]}"
    ledger = redis.Redis.from_url(redis_server.url, decode_responses=True)
    admin = redis.Redis.from_url(broker.url, decode_responses=True)
    admin.acl_setuser(
        "admin", enabled=True, passwords=["+admin"], keys=["*"], channels=["*"], commands=["+@all"]
    )
    client = redis.Redis.from_url(
        broker.url, decode_responses=True, username="admin", password="admin"
    )
    worker = Worker(tmp_path / "worker.log", env).start()
    try:
        script = (
            "from tests.helpers import e2e_tasks\n"
            f"print(e2e_tasks.gated_failure.delay({run!r}).id)\n"
        )
        job_id = subprocess.run(
            [str(BIN / "python"), "-c", script],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=60,
            capture_output=True,
            text=True,
        ).stdout.strip()
        wait_until(lambda: ledger.hget(f"ledger:{run}", "runs") == "1", 30, "the job to start")
        # The worker (the default user) may no longer touch worker_app:dlq*; the job fails.
        acl(client, "resetkeys", *DENY_DLQ)
        ledger.set(f"gate:{run}", 1)
        wait_until(lambda: "could not dead-letter" in worker.log(), 20, "the refused write")
        time.sleep(3.0)  # a few tries, all refused
        assert client.get(keys.DLQ_ENTRY + job_id) is None
        assert client.hexists(keys.HELD, _tag_of(client, job_id))  # held, not dropped
        acl(client, "allkeys")
        wait_until(lambda: client.get(keys.DLQ_ENTRY + job_id) is not None, 20, "the entry")
        time.sleep(2.0)  # nothing more happens to it
    finally:
        acl(client, "allkeys")
        worker.stop()
    entry = json.loads(client.get(keys.DLQ_ENTRY + job_id) or "{}")
    assert (entry["reason"], entry["exc_type"]) == ("permanent_error", "PermanentError")
    assert client.zcard(keys.DLQ_INDEX) == 1
    assert client.hlen(keys.HELD) == 0
    assert client.hget(keys.JOB + job_id, "status") == "failed"
    assert ledger.hget(f"ledger:{run}", "runs") == "1"  # never run again
    log = worker.log()
    assert log.count("dead-lettered e2e.gated_failure") == 1, log[-3000:]


def acl(client: redis.Redis, *rules: str) -> None:
    """Change what the default user (the worker's) may touch."""
    client.execute_command("ACL", "SETUSER", "default", *rules)  # type: ignore[no-untyped-call]


def _tag_of(client: redis.Redis, job_id: str) -> str:
    for tag, value in client.hscan_iter(keys.HELD):
        if job_id in value:
            return str(tag)
    raise AssertionError(f"{job_id} is not held")
