"""The worker's periodic threads (lease renewal, sweeps, releases) outlive a failing tick."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.helpers.env import wait_until
from worker_app.worker.steps import PeriodicThread


class Flaky(PeriodicThread):
    period = 0.01
    doing = "flaky work"

    def __init__(self, worker: Any) -> None:
        super().__init__(worker)
        self.calls = 0
        self.lock = threading.Lock()

    def tick(self) -> int:
        with self.lock:
            self.calls += 1
            if self.calls == 2:
                raise KeyError("a bug in one tick")
        return 1


def test_a_tick_that_raises_is_logged_and_the_thread_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    step = Flaky(object())
    step.start(object())
    try:
        wait_until(lambda: step.calls >= 5, 10, "the thread to keep ticking")
    finally:
        step.stop(object())
    assert step.failures == 1
    assert any("flaky work failed (1 times so far)" in r.getMessage() for r in caplog.records)
