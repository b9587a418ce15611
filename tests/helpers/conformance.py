"""Processes of the conformance suite: a worker that loads the conformance tasks, Celery's own
CLI, and Flower; and the ledger that tells which jobs ran."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.helpers.conformance_tasks import LEDGER_ENV
from tests.helpers.env import BIN, ROOT, child_env, wait_until
from tests.helpers.processes import Worker
from worker_app.cli.devredis import free_port

TASKS_MODULE = "tests.helpers.conformance_tasks"
QUEUES = ("critical", "default", "low")
#: Seconds a ``celery inspect|control`` call waits for replies (Celery's default is 1 s, short
#: on a busy two-core machine); calls with ``-d`` return as soon as the node has answered.
REPLY_TIMEOUT = "10"
FLOWER_AUTH = ("ops", "conformance-secret-1")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def worker_env(**overrides: str) -> dict[str, str]:
    """A child environment with a ledger list of its own."""
    return child_env(**{LEDGER_ENV: f"conformance:ledger:{uuid.uuid4().hex}", **overrides})


class ConformanceWorker(Worker):
    """``celery -A worker_app worker`` as a user starts it, loading the conformance tasks."""

    @property
    def ledger(self) -> str:
        return self.env[LEDGER_ENV]

    include = TASKS_MODULE


def executions(client: redis.Redis, worker: ConformanceWorker) -> Counter[str]:
    """How many times each task id ran in ``worker`` (and any worker sharing its ledger)."""
    return Counter(str(task_id) for task_id in client.lrange(worker.ledger, 0, -1))


def poll(condition: Callable[[], object], timeout: float) -> bool:
    """Like ``wait_until``, but answers whether ``condition`` came true instead of failing."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def celery(
    *argv: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``celery -A worker_app ARGV`` as an operator does; its output without colours."""
    done = subprocess.run(
        [str(BIN / "celery"), "-A", "worker_app", *argv],
        cwd=ROOT,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, ANSI.sub("", done.stdout), ANSI.sub("", done.stderr)
    )


def shown(done: subprocess.CompletedProcess[str]) -> str:
    """A finished command as a failure message shows it."""
    return f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


class Flower:
    """``celery -A APP flower`` on a free port, behind basic auth."""

    def __init__(self, log_path: Path, env: dict[str, str], app: str = "worker_app") -> None:
        self.port = free_port()
        self.log_path = log_path
        self.env = {**env, "FLOWER_BASIC_AUTH": ":".join(FLOWER_AUTH)}
        self.app = app
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> Flower:
        """Start the process without waiting for it to answer."""
        argv = [
            str(BIN / "celery"),
            "-A",
            self.app,
            "flower",
            f"--port={self.port}",
            "--address=127.0.0.1",
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def wait_up(self, timeout: float = 60) -> Flower:
        process = self.process
        assert process is not None

        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/healthcheck", timeout=1).status_code == 200
            except httpx.HTTPError:
                assert process.poll() is None, f"Flower exited:\n{self.log()}"
                return False

        wait_until(up, timeout, "Flower to answer")
        return self

    def get(self, path: str, **params: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", params=params, auth=FLOWER_AUTH, timeout=15)

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, auth=FLOWER_AUTH, timeout=15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self, pattern: str) -> list[str]:
        return [line for line in self.log().splitlines() if re.search(pattern, line)]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
