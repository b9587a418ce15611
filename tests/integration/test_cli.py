"""The operator CLI and process start-up, run as a user runs them: as subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from celery.result import AsyncResult

from tests.helpers.commands import run, start_dev
from tests.helpers.env import BIN, child_env, wait_until
from tests.helpers.processes import Worker
from worker_app import app
from worker_app.cli.devredis import RedisServer, free_port

QUEUES = ("critical", "default", "low")


BAD_QUEUES_LINE = (
    "configuration error: ASYNQ_QUEUES='critical:x': expected name:weight[,name:weight...]"
)


def depths(client: redis.Redis) -> dict[str, int]:
    return {queue: int(client.llen(queue)) for queue in QUEUES}


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port that records whether anything connected to it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        yield sock


def connected(sock: socket.socket) -> bool:
    try:
        sock.accept()[0].close()
    except BlockingIOError:
        return False
    return True


@pytest.mark.parametrize(
    "argv",
    [
        [str(BIN / "worker-app"), "config"],
        [str(BIN / "python"), "-m", "worker_app", "config"],
        [str(BIN / "celery"), "-A", "worker_app", "worker", "-Q", "critical"],
    ],
    ids=["worker-app", "python -m worker_app", "celery worker"],
)
def test_a_bad_value_stops_every_entry_point_with_one_line_before_connecting(
    argv: list[str], listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    env = child_env(ASYNQ_QUEUES="critical:x", REDIS_URL=f"redis://127.0.0.1:{port}/0")

    done = run(*argv, env=env)

    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(BAD_QUEUES_LINE)
    assert "Traceback" not in done.stdout + done.stderr
    assert not connected(listener)


def test_production_without_its_secrets_refuses_to_start_with_one_line_each() -> None:
    env = child_env(APP_ENV="production")
    del env["REDIS_URL"]
    for argv in (
        [str(BIN / "worker-app"), "config"],
        [str(BIN / "celery"), "-A", "worker_app", "worker"],
    ):
        done = run(*argv, env=env)
        assert done.returncode != 0
        assert done.stderr.strip().splitlines() == [
            f"configuration error: {name} is required when APP_ENV=production{suffix}"
            for name, suffix in (
                ("REDIS_URL", " (no default broker)"),
                ("API_TOKEN", ""),
                ("FLOWER_BASIC_AUTH", ""),
            )
        ]


def test_the_redis_password_appears_in_no_output(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=False, password="s3cret")
    server.start()
    try:
        env = child_env(REDIS_URL=server.url, LOG_LEVEL="debug", API_TOKEN="tok-s3cret-token-123")
        for argv in (["config"], ["config", "--json"]):
            shown = run(str(BIN / "worker-app"), *argv, env=env)
            assert shown.returncode == 0
            assert "s3cret" not in shown.stdout + shown.stderr
            assert "***" in shown.stdout
        worker = Worker(tmp_path / "worker.log", env).start()
        try:
            sent = run(
                str(BIN / "worker-app"),
                "enqueue",
                "alerts.send",
                "--payload",
                '{"user_id": 1, "message": "hi"}',
                env=env,
            )
            task_id = sent.stdout.strip()
            wait_until(lambda: worker.lines(rf"alerts.send\[{task_id}\] succeeded"), 30, "the job")
        finally:
            worker.stop()
        assert "transport:" in worker.log()  # the banner was printed
        assert "s3cret" not in worker.log() + sent.stdout + sent.stderr
    finally:
        server.stop()


def test_enqueue_prints_the_id_and_publishes_to_the_tasks_queue(redis_client: redis.Redis) -> None:
    before = depths(redis_client)
    done = run(
        str(BIN / "worker-app"),
        "enqueue",
        "maintenance.cleanup",
        "--payload",
        '{"older_than_days": 7}',
    )
    assert done.returncode == 0, done.stderr
    task_id = done.stdout.strip()
    assert uuid.UUID(task_id)
    assert depths(redis_client)["low"] == before["low"] + 1
    redis_client.delete("low")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["briefing.generate", "--payload", '{"user_id": 0}'], "invalid BriefingPayload: user_id"),
        (["briefing.generate", "--payload", "{not json"], "--payload is not valid JSON"),
        (["briefing.generate", "--payload", "[1]"], "--payload must be a JSON object"),
        (["nope.missing"], "unknown task 'nope.missing'; registered tasks: alerts.send"),
        (["maintenance.cleanup", "--queue", "urgent"], "queue 'urgent' is not configured"),
    ],
    ids=["invalid payload", "bad json", "not an object", "unknown task", "unknown queue"],
)
def test_enqueue_mistakes_get_one_line_and_publish_nothing(
    redis_client: redis.Redis, args: list[str], message: str
) -> None:
    before = depths(redis_client)
    done = run(str(BIN / "worker-app"), "enqueue", *args)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert depths(redis_client) == before


def test_dev_runs_the_demo_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    log_path = tmp_path / "dev.log"
    api_port = free_port()
    env = child_env(REDIS_URL=redis_server.url, APP_ENV="development", LOG_LEVEL="info")
    dev = start_dev(tmp_path, env, "--demo", "--api-port", str(api_port))
    try:

        def text() -> str:
            return log_path.read_text(errors="replace")

        wait_until(
            lambda: len(re.findall(r"\] succeeded in", text())) >= 4, 60, "4 demo jobs to succeed"
        )
        output = text()
        assert len(re.findall(r"retrying in [\d.]+s", output)) == 2
        ids = re.findall(r"Task (\S+)\[([0-9a-f-]+)\] succeeded", output)
        assert {name for name, _ in ids} == {
            "alerts.send",
            "briefing.generate",
            "maintenance.cleanup",
        }
        assert all(AsyncResult(task_id, app=app).state == "SUCCESS" for _, task_id in ids)
        # The same process serves the job API, which tracked the demo jobs.
        assert f"job API at http://127.0.0.1:{api_port}/docs" in output
        # ...and runs the scheduler of periodic jobs.
        wait_until(lambda: "beat: Acquired lock" in text(), 30, "the embedded scheduler")
        assert "maintenance.cleanup-nightly (cron 0 3 * * *)" in text()
        assert f"operator console at http://127.0.0.1:{api_port}/ui " in output
        console = httpx.get(f"http://127.0.0.1:{api_port}/ui/jobs", timeout=10)
        assert console.status_code == 200 and "alerts.send" in console.text
        for _, task_id in ids:
            job = httpx.get(f"http://127.0.0.1:{api_port}/api/jobs/{task_id}", timeout=10).json()
            assert job["status"] == "succeeded"

        started = time.monotonic()
        os.killpg(dev.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert dev.wait(timeout=15) == 0
        assert time.monotonic() - started < 5  # ASYNQ_SHUTDOWN_TIMEOUT of the suite
        assert "Traceback" not in text()
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()


def test_config_json_lists_every_variable() -> None:
    done = run(str(BIN / "worker-app"), "config", "--json")
    shown = json.loads(done.stdout)
    assert shown["ASYNQ_QUEUES"] == {"critical": 6, "default": 3, "low": 1}
    assert shown["ASYNQ_RETRY_BACKOFF"] == "200ms"
