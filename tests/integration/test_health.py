"""``worker-app health`` against a real worker's heartbeat."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from tests.helpers.commands import HEALTH_INTERVAL, health
from tests.helpers.env import BIN, ROOT, child_env, wait_until
from tests.helpers.processes import Worker


def test_health_follows_the_heartbeat_and_fails_within_three_intervals_of_a_kill(
    tmp_path: Path,
) -> None:
    worker = Worker(
        tmp_path / "worker.log", child_env(ASYNQ_HEALTH_CHECK_INTERVAL=f"{HEALTH_INTERVAL}s")
    ).start()
    try:
        ok = health("--node", worker.node)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith(f"ok: {worker.node} beat ")
        time.sleep(2.5 * HEALTH_INTERVAL)  # it keeps beating
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
        assert failing[0] - killed <= 3 * HEALTH_INTERVAL
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
