"""``worker-app health`` against a real worker's heartbeat."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.conftest import BIN, ROOT, Worker, child_env, wait_until
from worker_app import keys
from worker_app.worker.health import check

INTERVAL = 1.0


def health(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "worker-app"), "health", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=child_env(ASYNQ_HEALTH_CHECK_INTERVAL=f"{INTERVAL}s"),
        timeout=30,
    )


def test_health_follows_the_heartbeat_and_fails_within_three_intervals_of_a_kill(
    tmp_path: Path,
) -> None:
    worker = Worker(
        tmp_path / "worker.log", child_env(ASYNQ_HEALTH_CHECK_INTERVAL=f"{INTERVAL}s")
    ).start()
    try:
        ok = health("--node", worker.node)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith(f"ok: {worker.node} beat ")
        time.sleep(2.5 * INTERVAL)  # it keeps beating
        assert health("--node", worker.node).returncode == 0
        assert health("--any").returncode == 0

        assert worker.process is not None
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait()
        killed = time.monotonic()
        # When the first failing probe was started (its own start-up is not the heartbeat's).
        failing: list[float] = []

        def fails() -> bool:
            started = time.monotonic()
            if health("--node", worker.node).returncode == 1:
                failing.append(started)
            return bool(failing)

        wait_until(fails, 10, "health to fail")
        assert failing[0] - killed <= 3 * INTERVAL
        failed = health("--node", worker.node)
        assert len(failed.stderr.strip().splitlines()) == 1
        assert "unhealthy:" in failed.stderr
    finally:
        worker.stop()


def test_health_without_a_worker_or_redis_is_one_line_and_exit_1() -> None:
    absent = health("--node", "celery@nowhere")
    assert absent.returncode == 1
    assert absent.stderr.strip() == (
        "unhealthy: no heartbeat from celery@nowhere (not running, or never reached Redis)"
    )
    down = subprocess.run(
        [str(BIN / "worker-app"), "health"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=child_env(REDIS_URL="redis://127.0.0.1:1/0"),
        timeout=30,
    )
    assert down.returncode == 1 and down.stderr.startswith("unhealthy: Redis is unreachable")


def test_a_heartbeat_in_the_earlier_plain_time_format_still_counts(
    redis_client: redis.Redis,
) -> None:
    node = "celery@earlier-version"
    redis_client.set(keys.HEARTBEAT + node, f"{time.time():.3f}", ex=30)
    try:
        ok, message = check(node)
        assert ok, message
        assert message.startswith(f"ok: {node} beat ") and "leases" not in message
    finally:
        redis_client.delete(keys.HEARTBEAT + node)


def test_a_fresh_heartbeat_with_lapsed_leases_is_unhealthy_and_any_prefers_a_healthy_worker(
    redis_client: redis.Redis,
) -> None:
    now = time.time()
    stuck, fine = "celery@stuck-renewer", "celery@fine"
    redis_client.set(
        keys.HEARTBEAT + stuck,
        f'{{"at":{now},"leases_renewed_at":{now - 73},"visibility_timeout":60}}',
        ex=30,
    )
    try:
        ok, message = check(stuck)
        assert not ok
        assert message == (
            f"unhealthy: {stuck}: leases not renewed for 73s (visibility timeout 60s)"
        )
        redis_client.set(
            keys.HEARTBEAT + fine,
            f'{{"at":{now - 1},"leases_renewed_at":{now - 20},"visibility_timeout":60}}',
            ex=30,
        )
        ok, message = check(None)
        assert ok and message.startswith(f"ok: {fine} beat 1.0s ago, leases renewed 20.0s ago")
    finally:
        redis_client.delete(keys.HEARTBEAT + stuck, keys.HEARTBEAT + fine)
