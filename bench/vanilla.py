"""Vanilla Celery 5.7 with its defaults on the benchmark's Redis: the baseline of the comparison.

celery -A bench.vanilla worker
"""

from __future__ import annotations

import os

from celery import Celery

from bench.body import body

app = Celery("vanilla", broker=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:1/0"))


@app.task(name="bench.work")
def work(sent_at: float = 0.0) -> None:
    body(sent_at)
