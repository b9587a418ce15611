"""Loaded into a worker with ``--include`` beside the test tasks: its lease renewer fails.

``RENEWER_FAULT=always``: every round raises. ``RENEWER_FAULT=on-request``: one round raises each
time a test sets the key ``RENEWER_FAULT_KEY`` in the suite's Redis (the round takes the key and
skips its renewal), so a test picks the moment. The error is a ``RuntimeError``, not a Redis
error: a bug, as the renewer would meet one.
"""

from __future__ import annotations

import os
from functools import cache

import redis

from worker_app.worker.steps import LeaseRenewer

_renew_tick = LeaseRenewer.tick
_failed = 0


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def _failing_tick(self: LeaseRenewer) -> int:
    global _failed
    mode = os.environ.get("RENEWER_FAULT", "")
    if mode == "always" or (
        mode == "on-request" and _redis().getdel(os.environ["RENEWER_FAULT_KEY"]) is not None
    ):
        _failed += 1
        raise RuntimeError(f"injected lease renewer failure #{_failed}")
    return _renew_tick(self)


LeaseRenewer.tick = _failing_tick  # type: ignore[method-assign]
