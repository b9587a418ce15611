"""The app a test's beat processes run (``celery -A tests.helpers.e2e_beat beat``): worker_app plus
the schedules of ``E2E_SCHEDULES``, a JSON list of ``periodic()`` keyword arguments."""

from __future__ import annotations

import faulthandler
import json
import os
import signal

from tests.helpers import e2e_tasks  # noqa: F401  - the scheduled tasks must be known to beat
from worker_app.celery import app
from worker_app.flow.schedules import periodic

for declaration in json.loads(os.environ.get("E2E_SCHEDULES", "[]")):
    periodic(**declaration)

# A test that finds this scheduler silent asks it for every thread's stack (into its log).
faulthandler.register(signal.SIGUSR1, all_threads=True)

__all__ = ["app"]
