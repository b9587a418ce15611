"""Where the suite runs and with which settings; the environment every child process gets.

:func:`isolate` runs before anything of worker_app is configured (``tests/conftest.py`` calls
it first): the machine's shared Redis and any ``ASYNQ_*`` of the caller's shell never reach a test.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# Settings every process of the suite runs with: short delays so retries are quick to observe.
TEST_ENV = {
    "APP_ENV": "test",
    "LOG_FORMAT": "text",
    "LOG_LEVEL": "info",
    "ASYNQ_CONCURRENCY": "2",
    "ASYNQ_MAX_RETRY": "3",
    "ASYNQ_RETRY_BACKOFF": "200ms",
    "ASYNQ_RETRY_BACKOFF_MAX": "1s",
    "ASYNQ_TASK_TIMEOUT": "4s",
    "ASYNQ_SHUTDOWN_TIMEOUT": "5s",
}


def isolate() -> None:
    """Point this process at nothing until the private server is up; drop foreign settings."""
    os.environ.update(TEST_ENV, REDIS_URL="redis://127.0.0.1:1/0")
    for name in [n for n in os.environ if n.startswith("ASYNQ_") and n not in TEST_ENV]:
        del os.environ[name]


def child_env(**overrides: str) -> dict[str, str]:
    """The environment of a child process: the suite's settings plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNQ_")}
    env.update(TEST_ENV)
    env["PYTHONPATH"] = str(ROOT)
    env.update(overrides)
    return env


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
