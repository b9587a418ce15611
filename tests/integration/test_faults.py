"""Fault injection with a ledger: every execution is counted in a second private Redis that is
never killed, so each test can report lost and duplicated jobs."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.env import BIN, ROOT, child_env, wait_until
from tests.helpers.processes import Worker, own_server
from worker_app.cli.devredis import RedisServer

pytestmark = pytest.mark.fault


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[RedisServer]:
    yield from own_server(tmp_path / "ledger")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[RedisServer]:
    """The broker with AOF on: a restart keeps what it held."""
    yield from own_server(tmp_path / "broker", appendonly=True)


def enqueue_many(env: dict[str, str], run: str, count: int) -> None:
    script = (
        "import sys\n"
        "from tests.helpers import e2e_tasks\n"
        "from worker_app import app\n"
        "with app.producer_or_acquire() as producer:\n"
        f"    for _ in range({count}):\n"
        f"        e2e_tasks.ledger.apply_async(({run!r},), producer=producer)\n"
    )
    subprocess.run([str(BIN / "python"), "-c", script], cwd=ROOT, env=env, check=True, timeout=120)


def counts(ledger: RedisServer, run: str) -> dict[str, int]:
    import redis

    client = redis.Redis.from_url(ledger.url, decode_responses=True)
    try:
        return {str(k): int(v) for k, v in client.hgetall(f"ledger:{run}").items()}
    finally:
        client.close()


def test_redis_killed_and_restarted_with_aof_keeps_every_queued_job(
    tmp_path: Path, broker: RedisServer, ledger: RedisServer
) -> None:
    env = child_env(REDIS_URL=broker.url, LEDGER_URL=ledger.url)
    run = uuid.uuid4().hex
    enqueue_many(env, run, 1000)
    time.sleep(1.5)  # appendfsync everysec: give the AOF its second
    assert broker.process is not None
    broker.process.send_signal(signal.SIGKILL)
    broker.process.wait()
    broker.start()  # same port, same directory: the AOF is replayed

    worker = Worker(tmp_path / "worker.log", env).start()
    try:
        wait_until(lambda: len(counts(ledger, run)) >= 1000, 120, "1000 executions")
        time.sleep(1)
    finally:
        worker.stop()
    done = counts(ledger, run)
    lost, duplicated = 1000 - len(done), sum(n - 1 for n in done.values())
    print(f"redis SIGKILL + AOF restart: 1000 queued, lost={lost}, duplicated={duplicated}")
    assert (lost, duplicated) == (0, 0)


def test_a_redis_outage_is_survived_and_enqueue_fails_fast_meanwhile(
    tmp_path: Path, broker: RedisServer, ledger: RedisServer
) -> None:
    env = child_env(REDIS_URL=broker.url, LEDGER_URL=ledger.url)
    run = uuid.uuid4().hex
    worker = Worker(tmp_path / "worker.log", env).start()
    try:
        enqueue_many(env, run, 50)
        wait_until(lambda: len(counts(ledger, run)) == 50, 60, "the first 50")
        broker.stop()
        down_at = time.monotonic()

        started = time.monotonic()
        failed = subprocess.run(
            [
                str(BIN / "worker-app"),
                "enqueue",
                "alerts.send",
                "--payload",
                '{"user_id": 1, "message": "x"}',
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert failed.returncode == 1
        assert len(failed.stderr.strip().splitlines()) == 1 and "unreachable" in failed.stderr
        # A hang would last the socket timeouts (a minute); a refusal takes the CLI's start-up
        # and the publish retries, a few seconds on a loaded machine.
        assert time.monotonic() - started < 20, "enqueue hung while Redis was down"

        time.sleep(max(0.0, 5 - (time.monotonic() - down_at)))
        broker.start()
        back_at = time.monotonic()
        enqueue_many(env, run, 50)
        wait_until(lambda: len(counts(ledger, run)) == 100, 90, "the 50 after the outage")
        resumed = time.monotonic() - back_at
        assert worker.process is not None and worker.process.poll() is None
    finally:
        worker.stop()
    done = counts(ledger, run)
    print(
        f"redis down 5s: worker alive, resumed {resumed:.1f}s after Redis returned, "
        f"lost={100 - len(done)}, duplicated={sum(n - 1 for n in done.values())}"
    )
    assert len(done) == 100 and all(n == 1 for n in done.values())


@pytest.mark.timeout(400)
def test_long_faults_side_by_side(tmp_path: Path, ledger: RedisServer) -> None:
    """Two slow rows of the table at once, on brokers of their own: a 3-minute task with the
    default 60 s visibility timeout (and an idle second worker) runs exactly once, while another
    worker lives through a 60 s Redis outage and resumes."""
    import redis

    long_broker = RedisServer(tmp_path / "long", appendonly=True)
    down_broker = RedisServer(tmp_path / "down", appendonly=True)
    long_broker.start()
    down_broker.start()
    long_env = child_env(REDIS_URL=long_broker.url, LEDGER_URL=ledger.url)
    down_env = child_env(REDIS_URL=down_broker.url, LEDGER_URL=ledger.url)
    del long_env["ASYNQ_TASK_TIMEOUT"]  # production limits: 5 min per attempt
    workers = [
        Worker(tmp_path / "long1.log", long_env).start(),
        Worker(tmp_path / "long2.log", long_env).start(),
        Worker(tmp_path / "down.log", down_env).start(),
    ]
    try:
        script = (
            "from tests.helpers import e2e_tasks\n"
            "print(e2e_tasks.sleepy.apply_async(('three-minutes', 180)).id)\n"
        )
        subprocess.run([str(BIN / "python"), "-c", script], cwd=ROOT, env=long_env, check=True)
        started = time.monotonic()

        run = uuid.uuid4().hex
        enqueue_many(down_env, run, 20)
        wait_until(lambda: len(counts(ledger, run)) == 20, 60, "the jobs before the outage")
        down_broker.stop()
        time.sleep(60)
        down_broker.start()
        back_at = time.monotonic()
        enqueue_many(down_env, run, 20)
        wait_until(lambda: len(counts(ledger, run)) == 40, 120, "the jobs after the outage")
        resumed = time.monotonic() - back_at
        assert workers[2].process is not None and workers[2].process.poll() is None

        client = redis.Redis.from_url(long_broker.url, decode_responses=True)
        wait_until(
            lambda: (
                client.get("done:three-minutes") is not None or time.monotonic() - started > 200
            ),
            240,
            "the 3-minute task",
        )
        time.sleep(max(0.0, 190 - (time.monotonic() - started)))
        runs = client.llen("three-minutes")
        client.close()
    finally:
        for worker in workers:
            worker.stop()
        long_broker.stop()
        down_broker.stop()
    recovered = [line for w in workers[:2] for line in w.lines("recovered")]
    print(
        f"3-minute task, 60 s visibility timeout: ran {runs} time(s); "
        f"redis down 60s: resumed {resumed:.1f}s after Redis returned"
    )
    assert runs == 1 and not recovered
    done = counts(ledger, run)
    assert len(done) == 40 and all(n == 1 for n in done.values())
