"""Fetch without loss: a worker frozen or killed at any moment, idle or busy, loses no job.

Every execution is counted in a ledger hash (``e2e.ledger``) in the session's Redis, which is
never killed here, so each test reports lost and duplicated jobs. Workers run in process groups
of their own (:class:`GroupWorker`): SIGSTOP and SIGKILL reach the pool processes too.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from tests.helpers import e2e_tasks
from tests.helpers.env import child_env
from tests.helpers.group_worker import GroupWorker
from worker_app.cli.devredis import RedisServer

pytestmark = pytest.mark.fault

LEASE = 4.0  # ASYNQ_VISIBILITY_TIMEOUT of these workers, seconds
SWEEP = 1.0  # one restore sweep, seconds (a sixth of the lease, at least a second)
SLACK = 3.0  # scheduling on a loaded two-core machine
QUEUES = ("critical", "default", "low")


def worker_env(redis_server: RedisServer) -> dict[str, str]:
    return child_env(ASYNQ_VISIBILITY_TIMEOUT=f"{LEASE:g}s", LEDGER_URL=redis_server.url)


def runs(client: redis.Redis, run: str) -> dict[str, int]:
    """Executions per job id of the ledger ``run``."""
    return {str(k): int(v) for k, v in client.hgetall(f"ledger:{run}").items()}


def whereabouts(client: redis.Redis, job_id: str) -> str:
    """Where a job that never ran is: its record's status and any key still holding it."""
    status = str(client.hget(f"worker_app:job:{job_id}", "status") or "missing")
    places = [q for q in QUEUES if any(job_id in str(m) for m in client.lrange(q, 0, -1))]
    if any(job_id in str(v) for v in client.hvals("unacked")):
        places.append("unacked")
    if any(job_id in str(m) for m in client.zrange("worker_app:delayed", 0, -1)):
        places.append("delayed")
    return f"{job_id}: record {status}, in {', '.join(places) or 'no key'}"


def blocked_clients(client: redis.Redis) -> list[str]:
    """Commands of the connections blocked in Redis right now (``flags`` has ``b``), whatever
    the blocking command (BRPOP, BLMOVE, BLMPOP, BZPOPMIN, ...)."""
    return [str(c.get("cmd")) for c in client.client_list() if "b" in str(c.get("flags", ""))]


def freeze_when_idle(worker: GroupWorker, client: redis.Redis, idle: float = 0.5) -> str:
    """Freeze an idle worker, while it waits in a blocking command if it uses one.

    After ``idle`` seconds with nothing to do, SIGSTOP the group as soon as one of its
    connections is blocked in Redis, and check that it still is once stopped: the command is
    then pending on the server, the moment a pop-before-hold fetch loses the next job (unless
    its timeout runs out in the few milliseconds before the enqueue). A worker that never
    blocks (one that polls) is frozen after the idle period. Returns how it was frozen.
    """
    time.sleep(idle)
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        if blocked_clients(client):
            worker.freeze()
            still = blocked_clients(client)
            if still:
                return f"frozen blocked in {'/'.join(sorted(set(still)))}"
            worker.thaw()  # the command returned just before the stop: try again
        time.sleep(0.005)
    worker.freeze()
    return "frozen idle (no blocking command seen)"


@pytest.mark.timeout(360)
def test_a_worker_frozen_while_idle_and_killed_loses_no_job(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Idle-pop: SIGSTOP an idle worker, enqueue a job, SIGKILL it 0.5 s later, start another
    worker: the job runs exactly once within one visibility timeout plus a sweep. 10 rounds."""
    env = worker_env(redis_server)
    run = uuid.uuid4().hex
    rounds = 10
    worker = GroupWorker(tmp_path / "worker-0.log", env).start()
    workers = [worker]
    outcomes: list[str] = []
    job_ids: list[str] = []
    late: list[str] = []  # not run within the deadline of its round
    try:
        for n in range(1, rounds + 1):
            how = freeze_when_idle(worker, redis_client)
            job_id = e2e_tasks.ledger.delay(run).id
            job_ids.append(job_id)
            time.sleep(0.5)
            worker.kill()
            worker = GroupWorker(tmp_path / f"worker-{n}.log", env).start()
            workers.append(worker)
            ready = time.monotonic()
            deadline = ready + LEASE + SWEEP + SLACK
            while job_id not in runs(redis_client, run) and time.monotonic() < deadline:
                time.sleep(0.05)
            if job_id in runs(redis_client, run):
                outcome = f"ran {time.monotonic() - ready:.1f}s after the next worker was ready"
            else:
                late.append(job_id)
                where = whereabouts(redis_client, job_id)
                outcome = f"NOT RUN {deadline - ready:.0f}s after the next one was ready: {where}"
            outcomes.append(f"round {n}: {how}; {outcome}")
            print(outcomes[-1], flush=True)
        time.sleep(LEASE + SWEEP)  # a late second run would show up by now
    finally:
        for each in workers:
            each.stop()
    done = runs(redis_client, run)
    lost = [job_id for job_id in job_ids if job_id not in done]
    duplicated = {job_id: done[job_id] for job_id in job_ids if done.get(job_id, 0) > 1}
    once = [job_id for job_id in job_ids if done.get(job_id) == 1 and job_id not in late]
    print(
        f"idle-pop: {rounds} rounds, ran exactly once in time {len(once)}, late {len(late)} "
        f"(of which never ran {len(lost)}), duplicated {len(duplicated)} {duplicated or ''}"
    )
    assert len(once) == rounds, "\n".join(outcomes)


KILLS = 20
CONCURRENCY = 2  # ASYNQ_CONCURRENCY of the suite
#: A job can run twice only if it was running, or held beyond the pool's slots, at a kill.
MAX_DUPLICATES = KILLS * CONCURRENCY * 2


@pytest.mark.timeout(300)
def test_a_kill_storm_loses_no_job(
    tmp_path: Path, redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Jobs enqueued one at a time at random 0-50 ms intervals while the worker is SIGKILLed
    at random moments 20 times and restarted at once: none is lost, duplicates are counted."""
    env = worker_env(redis_server)
    run = uuid.uuid4().hex
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    ids: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def produce() -> None:
        pace = random.Random(seed + 1)
        while not stop.is_set():
            try:
                ids.append(e2e_tasks.ledger.delay(run).id)
            except Exception as exc:  # noqa: BLE001 - reported below, never in the thread
                errors.append(repr(exc))
            time.sleep(pace.uniform(0.0, 0.05))

    producer = threading.Thread(target=produce, name="producer", daemon=True)
    workers: list[GroupWorker] = []
    started = time.monotonic()
    startups: list[float] = []
    try:
        producer.start()
        for n in range(KILLS):
            begin = time.monotonic()
            worker = GroupWorker(tmp_path / f"worker-{n}.log", env).start()
            startups.append(time.monotonic() - begin)
            workers.append(worker)
            time.sleep(rng.uniform(0.0, 2.5))
            worker.kill()
        stop.set()
        producer.join(timeout=10)
        storm = time.monotonic() - started
        final = GroupWorker(tmp_path / "final.log", env).start()
        workers.append(final)
        deadline = time.monotonic() + 2 * (LEASE + SWEEP) + 20
        while time.monotonic() < deadline and len(runs(redis_client, run)) < len(ids):
            time.sleep(0.2)
        time.sleep(LEASE + SWEEP)  # late second runs of restored jobs show up by now
    finally:
        stop.set()
        for each in workers:
            each.stop()
    assert not errors, f"enqueue failed: {errors[:5]}"
    done = runs(redis_client, run)
    lost = [job_id for job_id in ids if job_id not in done]
    duplicates = sum(n - 1 for n in done.values())
    twice = {job_id: n for job_id, n in done.items() if n > 1}
    print(
        f"kill storm (seed {seed}): {len(ids)} jobs over {storm:.0f}s, {KILLS} kills "
        f"(worker start {min(startups):.1f}-{max(startups):.1f}s): lost {len(lost)}, "
        f"duplicates {duplicates} ({len(twice)} jobs ran more than once)"
    )
    for job_id in lost:
        print(f"  lost {whereabouts(redis_client, job_id)}")
    assert not lost, f"{len(lost)} of {len(ids)} jobs never ran"
    assert duplicates <= MAX_DUPLICATES, f"{duplicates} duplicates for {KILLS} kills"
