"""A real Flower process next to a real worker: auth, the worker list, task metrics."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from tests.helpers.env import BIN, ROOT, child_env, wait_until
from tests.helpers.processes import Worker
from worker_app import enqueue
from worker_app.cli.devredis import free_port


def test_flower_requires_credentials_lists_the_worker_and_counts_tasks(tmp_path: Path) -> None:
    port = free_port()
    env = child_env(FLOWER_BASIC_AUTH="ops:flower-secret-1", FLOWER_PORT=str(port))
    worker = Worker(tmp_path / "worker.log", env).start()
    log = open(tmp_path / "flower.log", "wb")  # noqa: SIM115 - closed in finally
    flower = subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            "worker_app",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthcheck", timeout=1).status_code == 200
            except httpx.HTTPError:
                assert flower.poll() is None, (tmp_path / "flower.log").read_text()
                return False

        wait_until(up, 60, "Flower to answer")
        assert httpx.get(f"{url}/", timeout=10).status_code == 401
        assert httpx.get(f"{url}/", auth=("ops", "wrong"), timeout=10).status_code == 401
        auth = ("ops", "flower-secret-1")
        assert httpx.get(f"{url}/", auth=auth, timeout=10).status_code == 200

        def lists_worker() -> bool:
            workers = httpx.get(
                f"{url}/api/workers", params={"refresh": "1"}, auth=auth, timeout=10
            )
            return workers.status_code == 200 and worker.node in workers.json()

        wait_until(lists_worker, 30, "Flower to list the test worker")

        # Workers send task events only once a Flower has asked for them (it broadcasts
        # enable_events every 5 s), so jobs keep coming until one is counted.
        def counted() -> bool:
            enqueue("alerts.send", {"user_id": 1, "message": "seen by flower"})
            time.sleep(0.5)
            text = httpx.get(f"{url}/metrics", timeout=10).text
            return 'flower_events_total{task="alerts.send",type="task-succeeded"' in text

        wait_until(counted, 30, "Flower's task counters")
        assert "Events of group {task} enabled by remote" in worker.log()
    finally:
        flower.terminate()
        flower.wait(timeout=20)
        log.close()
        worker.stop()
