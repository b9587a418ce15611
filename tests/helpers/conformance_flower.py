"""The app as Flower serves it in these tests: worker_app's, with the conformance tasks
registered, so ``/api/task/async-apply/conformance.add`` finds the task it publishes."""

from tests.helpers import conformance_tasks  # noqa: F401  - registers the conformance tasks
from worker_app.celery import app

__all__ = ["app"]
