"""worker_app: a hardened Celery application on Redis.

``celery -A worker_app worker`` finds :data:`app` here. The names load on first use, so light
entry points (``worker-app health``) never build the Celery app.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker_app.celery import app
    from worker_app.config import Settings, get_settings
    from worker_app.outbox import enqueue_tx
    from worker_app.producer.client import (
        enqueue,
        enqueue_critical,
        enqueue_default,
        enqueue_low,
        enqueue_many,
    )

__all__ = [
    "app",
    "enqueue",
    "enqueue_critical",
    "enqueue_default",
    "enqueue_low",
    "enqueue_many",
    "enqueue_tx",
    "Settings",
    "get_settings",
]

_HOMES = {
    "app": "worker_app.celery",
    "enqueue": "worker_app.producer.client",
    "enqueue_critical": "worker_app.producer.client",
    "enqueue_default": "worker_app.producer.client",
    "enqueue_low": "worker_app.producer.client",
    "enqueue_many": "worker_app.producer.client",
    "enqueue_tx": "worker_app.outbox",
    "Settings": "worker_app.config",
    "get_settings": "worker_app.config",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'worker_app' has no attribute {name!r}")
    if name == "app":
        import_module("worker_app.tasks")  # producers see every task, as workers do
    return getattr(import_module(home), name)
