"""Acks survive a Redis that refuses the fetch carrying them: a Lua script busy past
``busy-reply-threshold`` makes Redis answer every other command with ``BUSY`` while a worker
drains short jobs; each job still runs exactly once (own module: own broker and worker)."""

from __future__ import annotations

import itertools
import re
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis

from tests.helpers.env import BIN, ROOT, child_env, wait_until
from tests.helpers.processes import Worker
from worker_app import keys
from worker_app.cli.devredis import RedisServer

pytestmark = pytest.mark.fault

#: Seconds; short, so an ack that was dropped shows as a second run within the test. Longer
#: than a job is held here (a few tens of ms of work, one busy spell, one back-off).
LEASE = 6.0
#: Milliseconds a script may run before Redis answers other clients BUSY (default 5000).
BUSY_THRESHOLD_MS = 50
#: Busy spells and the pauses between them, in seconds: uneven, so no periodic work of the
#: worker falls into every spell.
SPELLS = (1.2, 1.0, 1.5, 1.1, 1.4, 1.0, 1.3)
PAUSES = (0.7, 1.1, 0.5, 0.9, 0.6, 1.2)
JOBS = 400
JOB_SECONDS = 0.03

BUSY_LOOP = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local stop = now() + tonumber(ARGV[1])
while now() < stop do end
return 1
"""


def enqueue(env: dict[str, str], run: str, count: int, seconds: float = JOB_SECONDS) -> None:
    script = (
        "from tests.helpers import e2e_tasks\n"
        "from worker_app import app\n"
        "with app.producer_or_acquire() as producer:\n"
        f"    for _ in range({count}):\n"
        f"        e2e_tasks.ledger.apply_async(({run!r}, {seconds}), producer=producer)\n"
    )
    subprocess.run([str(BIN / "python"), "-c", script], cwd=ROOT, env=env, check=True, timeout=120)


def test_acks_carried_by_a_fetch_refused_with_busy_are_released_later_never_dropped(
    tmp_path: Path, broker: RedisServer, redis_server: RedisServer
) -> None:
    # The ledger is the suite's Redis: never busy, so each job counts its run whatever happens.
    env = child_env(
        REDIS_URL=broker.url, LEDGER_URL=redis_server.url, ASYNQ_VISIBILITY_TIMEOUT=f"{LEASE:g}s"
    )
    run = f"busy-{uuid.uuid4().hex[:8]}"
    ledger = redis.Redis.from_url(redis_server.url, decode_responses=True)
    busy = redis.Redis.from_url(broker.url, socket_timeout=30)
    busy.config_set("busy-reply-threshold", BUSY_THRESHOLD_MS)
    enqueue(env, run, JOBS)
    worker = Worker(tmp_path / "worker.log", env)
    spells: list[float] = []
    draining = threading.Event()

    def make_redis_busy() -> None:
        # Busy spells while the worker drains (at least four, even if it finishes early).
        for spell, pause in zip(SPELLS, itertools.chain(PAUSES, [0.0]), strict=True):
            if len(spells) >= 4 and not draining.is_set():
                return
            busy.eval(BUSY_LOOP, 0, int(spell * 1_000_000))
            spells.append(spell)
            time.sleep(pause)

    try:
        worker.start()
        draining.set()
        spoiler = threading.Thread(target=make_redis_busy, daemon=True)
        spoiler.start()
        wait_until(lambda: ledger.hlen(f"ledger:{run}") >= JOBS, 90, f"{JOBS} jobs to run")
        draining.clear()
        spoiler.join(timeout=30)
        # Past the lease and a sweep: a message whose ack was lost is back and has run again
        # by then (nothing to poll for: the run that must not happen).
        time.sleep(1.5 * LEASE + 1)
        counts = {k: int(v) for k, v in ledger.hgetall(f"ledger:{run}").items()}
        still_held = busy.zcard(keys.HELD_INDEX)
    finally:
        worker.stop()
        ledger.delete(f"ledger:{run}")
        ledger.close()
        busy.close()
    refused = worker.lines(r"fetch refused by Redis \(BUSY")
    print(f"{len(spells)} busy spells, {len(refused)} fetches refused")
    assert len(spells) >= 4 and refused
    assert len(counts) == JOBS
    twice = {job: n for job, n in counts.items() if n != 1}
    assert not twice, f"{len(twice)} jobs ran more than once: {twice}"
    assert still_held == 0  # every ack released in the end


def test_a_connection_lost_while_jobs_run_reruns_none_of_them(
    tmp_path: Path, broker: RedisServer, redis_server: RedisServer
) -> None:
    """The consumer's connections cut while two 3 s jobs run (as a failover or a proxy restart
    would): the worker reconnects, the running jobs finish and are acked once; none runs again,
    not even after their lease would have lapsed."""
    env = child_env(
        REDIS_URL=broker.url, LEDGER_URL=redis_server.url, ASYNQ_VISIBILITY_TIMEOUT=f"{LEASE:g}s"
    )
    run = f"cut-{uuid.uuid4().hex[:8]}"
    ledger = redis.Redis.from_url(redis_server.url, decode_responses=True)
    admin = redis.Redis.from_url(broker.url)
    worker = Worker(tmp_path / "worker.log", env, concurrency=2).start()
    try:
        enqueue(env, run, 4, seconds=3.0)
        wait_until(lambda: len(worker.lines(r"e2e\.ledger.*started")) >= 2, 30, "two jobs running")
        killed = admin.client_kill_filter(_type="pubsub") + admin.client_kill_filter(
            _type="normal", skipme=True
        )
        assert killed
        wait_until(lambda: worker.lines("Connection to broker lost"), 30, "the worker to notice")
        wait_until(lambda: ledger.hlen(f"ledger:{run}") >= 4, 60, "four jobs to run")
        time.sleep(1.5 * LEASE + 1)  # past a lease and a sweep: a rerun would have happened
        finished = {k: int(v) for k, v in ledger.hgetall(f"ledger:{run}").items()}
        still_held = admin.zcard(keys.HELD_INDEX)
    finally:
        worker.stop()
        ledger.delete(f"ledger:{run}")
        ledger.close()
        admin.close()
    # A run stopped at the cut never reaches the ledger: count the starts in the worker's log.
    starts = Counter(
        re.search(r"e2e\.ledger ([0-9a-f-]+) ", line).group(1)  # type: ignore[union-attr]
        for line in worker.lines(r"e2e\.ledger [0-9a-f-]+ .*\] started")
    )
    print(f"connections cut: {killed}; starts per job: {sorted(starts.values())}")
    assert len(finished) == 4 and all(n == 1 for n in finished.values()), finished
    assert len(starts) == 4 and all(n == 1 for n in starts.values()), starts
    assert still_held == 0
