"""Dramatiq with its defaults on the benchmark's Redis: the peer the comparison aims at.

dramatiq bench.dramatiq_app
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.body import body

broker = RedisBroker(url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:1/0"))  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_work")
def work(sent_at: float = 0.0) -> None:
    body(sent_at)
