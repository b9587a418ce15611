"""Periodic jobs: real beat processes (celery-redbeat) and real workers on the private Redis."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers import e2e_tasks  # noqa: F401  - the scheduled task must be registered here too
from tests.helpers.beat import Beat
from tests.helpers.env import child_env, wait_until
from tests.helpers.processes import Worker
from worker_app import keys
from worker_app.cli.devredis import RedisServer
from worker_app.worker.health import check_scheduler


def runs(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    return [json.loads(item) for item in client.lrange(key, 0, -1)]


def slot_time(job_id: str) -> datetime:
    return datetime.strptime(job_id.rsplit(":", 1)[1], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


@pytest.mark.fault
@pytest.mark.timeout(300)
def test_two_schedulers_enqueue_each_slot_once_and_a_standby_takes_over(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    tag = uuid.uuid4().hex[:8]
    every10, every1 = f"ten-{tag}", f"one-{tag}"
    schedules = [
        {"name": every10, "task": "e2e.tick", "every": "10s", "payload": {"key": every10}},
        {"name": every1, "task": "e2e.tick", "every": "1s", "payload": {"key": every1}},
    ]
    worker = Worker(tmp_path / "worker.log", child_env()).start()
    beats = [Beat(tmp_path / f"beat{n}.log", schedules).start() for n in range(2)]
    try:
        assert not check_scheduler()[0]
        wait_until(lambda: any(b.active for b in beats), 60, "one scheduler to take the lock")
        assert check_scheduler()[0]
        time.sleep(1)
        assert sum(b.active for b in beats) == 1, "both schedulers hold the lock"
        active = next(b for b in beats if b.active)
        standby = next(b for b in beats if not b.active)
        wait_until(lambda: redis_client.llen(every10) >= 4, 90, "four runs of the 10 s schedule")
        assert active.process is not None
        active.process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        active.process.wait()
        wait_until(lambda: standby.active, 60, "the standby to take the lock")
        takeover = time.monotonic() - killed_at
        assert check_scheduler()[0]
        before = redis_client.llen(every10)
        wait_until(
            lambda: redis_client.llen(every10) >= before + 4, 90, "four more runs after takeover"
        )
        for beat in beats:
            beat.stop()
        wait_until(lambda: not redis_client.llen("default"), 30, "the queue to drain")
    finally:
        for beat in beats:
            beat.stop()
        worker.stop()

    enqueued = Counter(
        line.rsplit(" ", 1)[1]
        for beat in beats
        for line in beat.log().splitlines()
        if ": enqueued periodic:" in line
    )
    for name in (every10, every1):
        done = runs(redis_client, name)
        ids = Counter(run["id"] for run in done)
        assert ids and max(ids.values()) == 1, f"{name}: a slot ran twice: {ids.most_common(3)}"
        ours = {job for job in enqueued if job.startswith(f"periodic:{name}:")}
        assert max(enqueued[job] for job in ours) == 1, f"{name}: a slot was enqueued twice"
        assert set(ids) == ours, f"{name}: enqueued and executed slots differ"
    slots = sorted(slot_time(run["id"]) for run in runs(redis_client, every10))
    gaps = [(b - a).total_seconds() for a, b in zip(slots, slots[1:], strict=False)]
    assert min(gaps) >= 10, f"10 s slots closer than 10 s: {gaps}"
    print(
        f"two schedulers: {len(slots)} ten-second and {redis_client.llen(every1)} one-second "
        f"slots, each enqueued and run once; standby took over {takeover:.1f}s after SIGKILL; "
        f"largest gap between ten-second slots {max(gaps):.0f}s"
    )
    assert takeover < 60


def test_a_run_longer_than_its_interval_never_overlaps(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    name = f"long-{uuid.uuid4().hex[:8]}"
    schedule = {
        "name": name,
        "task": "e2e.tick",
        "every": "1s",
        "payload": {"key": name, "seconds": 3.5},
    }
    worker = Worker(tmp_path / "worker.log", child_env(), concurrency=4).start()
    beat = Beat(tmp_path / "beat.log", [schedule]).start()
    try:
        wait_until(lambda: redis_client.llen(name) >= 3, 60, "three runs of the long job")
    finally:
        beat.stop()
        worker.stop()
    done = sorted(runs(redis_client, name), key=lambda run: run["start"])
    for earlier, later in zip(done, done[1:], strict=False):
        assert later["start"] >= earlier["end"], f"runs overlapped: {earlier} and {later}"
    skipped = int(redis_client.hget(keys.PERIODIC_SKIPPED, name) or 0)
    logged = beat.log().count(f"schedule {name}: slot")
    print(f"a 3.5 s job every 1 s: {len(done)} runs, none overlapping; {skipped} slots skipped")
    assert skipped >= 2 and logged >= skipped


def test_beat_refuses_a_schedule_of_an_unknown_task_or_a_bad_payload(tmp_path: Path) -> None:
    schedules: list[dict[str, Any]] = [
        {"name": "ghost", "task": "e2e.nope", "every": "1m"},
        {"name": "bad", "task": "alerts.send", "every": "1m", "payload": {"user_id": -1}},
    ]
    beat = Beat(tmp_path / "beat.log", schedules).start()
    assert beat.process is not None
    assert beat.process.wait(timeout=60) != 0
    errors = [line for line in beat.log().splitlines() if line.startswith("configuration error")]
    assert len(errors) == 2, beat.log()
    assert "schedule 'ghost': unknown task 'e2e.nope'" in errors[0]
    assert "schedule 'bad': invalid AlertPayload: user_id" in errors[1]
    assert "Traceback" not in beat.log()


@pytest.mark.fault
def test_beat_waits_out_redis_at_start_and_through_a_restart(
    tmp_path: Path, broker: RedisServer
) -> None:
    """Beat started while Redis is down waits for it, then schedules, and goes on after Redis
    restarts (redbeat's own retries on a plain URL, beat's on a Sentinel one: the failover tests
    kill the master under a running beat)."""
    name = f"patient-{uuid.uuid4().hex[:8]}"
    schedule = {"name": name, "task": "e2e.tick", "every": "1s", "payload": {"key": name}}
    broker.stop()
    beat = Beat(tmp_path / "beat.log", [schedule], REDIS_URL=broker.url).start()
    worker: Worker | None = None
    try:
        wait_until(
            lambda: "beat: Redis unreachable" in beat.log() or "Retrying Redis" in beat.log(),
            60,
            "beat to wait for Redis",
        )
        time.sleep(2)
        assert beat.process is not None and beat.process.poll() is None, beat.log()
        broker.start()
        worker = Worker(tmp_path / "worker.log", child_env(REDIS_URL=broker.url)).start()

        def sent() -> int:
            return beat.log().count(f"schedule {name}: enqueued")

        wait_until(lambda: sent() >= 2, 60, "beat to schedule once Redis is up")
        broker.stop()
        time.sleep(3)
        assert beat.process.poll() is None, beat.log()
        broker.start()
        before = sent()
        wait_until(lambda: sent() >= before + 2, 60, "beat to schedule after the restart")
        assert "Traceback" not in beat.log()
    finally:
        beat.stop()
        if worker is not None:
            worker.stop()


def test_beat_writes_its_schedule_again_when_the_master_lost_it(
    tmp_path: Path, broker: RedisServer
) -> None:
    """A failover drops what the old master acknowledged but had not replicated, the schedule
    beat wrote at start among them, and no error need reach beat (its next connection reaches
    the new master). Beat finds its entries missing and writes them again; it would otherwise
    find nothing due, ever. Here the entries vanish under a running beat; its lock stays."""
    name = f"kept-{uuid.uuid4().hex[:8]}"
    schedule = {"name": name, "task": "e2e.tick", "every": "1s", "payload": {"key": name}}
    beat = Beat(tmp_path / "beat.log", [schedule], REDIS_URL=broker.url).start()
    client = redis.Redis.from_url(broker.url, decode_responses=True)
    try:

        def due() -> int:
            return beat.log().count(f"Sending due task {name}")

        wait_until(lambda: due() >= 1, 60, "beat to find the slot due")
        lost = [key for key in client.scan_iter(f"{keys.BEAT}*") if key != keys.BEAT_LOCK]
        assert f"{keys.BEAT}:schedule" in lost
        client.delete(*lost)
        before = due()
        wait_until(lambda: due() >= before + 2, 30, "beat to find slots due again")
        assert f"the master lacks schedule(s) {name}" in beat.log()
        assert client.exists(keys.BEAT_LOCK)
    finally:
        beat.stop()
