"""A real beat process running given schedules."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.helpers import e2e_tasks  # noqa: F401  - the scheduled task must be registered here too
from tests.helpers.env import BIN, ROOT, child_env


class Beat:
    """A ``celery -A tests.helpers.e2e_beat beat`` process running the given schedules."""

    def __init__(self, log_path: Path, schedules: list[dict[str, Any]], **env: str) -> None:
        self.log_path = log_path
        self.env = child_env(E2E_SCHEDULES=json.dumps(schedules), **env)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Beat:
        argv = [str(BIN / "celery"), "-A", "tests.helpers.e2e_beat", "beat", "--loglevel", "INFO"]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stacks(self) -> str:
        """Every thread's stack, written by the process into its log, and the log's tail."""
        if self.process is None or self.process.poll() is not None:
            return self.log()[-4000:]
        self.process.send_signal(signal.SIGUSR1)
        time.sleep(1)
        return self.log()[-12000:]

    @property
    def active(self) -> bool:
        return "Acquired lock" in self.log()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
