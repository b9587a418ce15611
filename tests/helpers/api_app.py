"""The API as the tests serve it: the product's app, with the test tasks registered."""

from tests.helpers import e2e_tasks  # noqa: F401  - registers the tasks tests enqueue over HTTP
from worker_app.api import app

__all__ = ["app"]
