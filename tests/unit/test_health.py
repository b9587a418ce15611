"""``worker-app health`` judged from heartbeats written by the test: formats and lapsed leases."""

from __future__ import annotations

import time

import redis

from worker_app import keys
from worker_app.worker.health import check


def test_a_heartbeat_in_the_earlier_plain_time_format_still_counts(
    redis_client: redis.Redis,
) -> None:
    node = "celery@earlier-version"
    redis_client.set(keys.HEARTBEAT + node, f"{time.time():.3f}", ex=30)
    try:
        ok, message = check(node)
        assert ok, message
        assert message.startswith(f"ok: {node} beat ") and "leases" not in message
    finally:
        redis_client.delete(keys.HEARTBEAT + node)


def test_a_fresh_heartbeat_with_lapsed_leases_is_unhealthy_and_any_prefers_a_healthy_worker(
    redis_client: redis.Redis,
) -> None:
    now = time.time()
    stuck, fine = "celery@stuck-renewer", "celery@fine"
    redis_client.set(
        keys.HEARTBEAT + stuck,
        f'{{"at":{now},"leases_renewed_at":{now - 73},"visibility_timeout":60}}',
        ex=30,
    )
    try:
        ok, message = check(stuck)
        assert not ok
        assert message == (
            f"unhealthy: {stuck}: leases not renewed for 73s (visibility timeout 60s)"
        )
        redis_client.set(
            keys.HEARTBEAT + fine,
            f'{{"at":{now - 1},"leases_renewed_at":{now - 20},"visibility_timeout":60}}',
            ex=30,
        )
        ok, message = check(None)
        assert ok and message.startswith(f"ok: {fine} beat 1.0s ago, leases renewed 20.0s ago")
    finally:
        redis_client.delete(keys.HEARTBEAT + stuck, keys.HEARTBEAT + fine)
