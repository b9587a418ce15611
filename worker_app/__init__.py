"""worker_app: a hardened Celery application on Redis.

``celery -A worker_app worker`` finds :data:`app` here.
"""

from worker_app import tasks  # noqa: F401,I001  - registers the tasks for producers too
from worker_app.celery import app
from worker_app.client import enqueue, enqueue_critical, enqueue_default, enqueue_low
from worker_app.config import Settings, get_settings

__all__ = [
    "app",
    "enqueue",
    "enqueue_critical",
    "enqueue_default",
    "enqueue_low",
    "Settings",
    "get_settings",
]
