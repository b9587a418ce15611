"""Per-key concurrency across two workers, and slots that free themselves when a worker dies
(own module: own workers)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import redis

from tests.helpers import e2e_tasks
from tests.helpers.env import child_env, wait_until
from tests.helpers.processes import Worker


def most_at_once(runs: list[dict[str, Any]]) -> int:
    edges = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    current = peak = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def test_at_most_five_per_org_even_when_a_worker_dies(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    env = child_env(ASYNQ_VISIBILITY_TIMEOUT="3s")
    workers = [Worker(tmp_path / f"w{n}.log", env, concurrency=4).start() for n in range(2)]
    key = f"orgs:{uuid.uuid4()}"
    try:
        # acme's jobs first: 8 free slots, so only the limit can hold acme to 5
        for org in ("acme", "globex"):
            for _ in range(100):
                e2e_tasks.per_org.delay(key, org)
        wait_until(lambda: redis_client.llen(key) >= 60, 60, "a third of the jobs")
        doomed = workers[0].process
        assert doomed is not None
        children = Path(f"/proc/{doomed.pid}/task/{doomed.pid}/children").read_text().split()
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()

        def finished() -> set[str]:
            return {json.loads(r)["id"] for r in redis_client.lrange(key, 0, -1)}

        wait_until(lambda: len(finished()) >= 200, 120, "all 200 jobs, the killed ones too")
    finally:
        for worker in workers:
            worker.stop()
    runs = [json.loads(r) for r in redis_client.lrange(key, 0, -1)]
    peaks = {org: most_at_once([r for r in runs if r["org"] == org]) for org in ("acme", "globex")}
    print(
        f"per-key limit 5, 2 workers x 4 slots, one SIGKILLed: peaks {peaks}, "
        f"{len({r['id'] for r in runs})} of 200 done"
    )
    assert peaks["acme"] == 5  # held at the limit while 8 slots were free
    assert peaks["globex"] <= 5
