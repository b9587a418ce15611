"""The app a test's beat processes run (``celery -A tests.helpers.e2e_beat beat``): worker_app plus
the schedules of ``E2E_SCHEDULES``, a JSON list of ``periodic()`` keyword arguments."""

from __future__ import annotations

import json
import os

from tests.helpers import e2e_tasks  # noqa: F401  - the scheduled tasks must be known to beat
from worker_app.celery import app
from worker_app.flow.schedules import periodic

for declaration in json.loads(os.environ.get("E2E_SCHEDULES", "[]")):
    periodic(**declaration)

__all__ = ["app"]
