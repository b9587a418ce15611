"""Enqueueing: the producer side of the product.

- :mod:`.client`: ``enqueue``, ``enqueue_many``, the per-queue helpers and unique jobs;
- :mod:`.publish`: the fast publish path behind them (Celery's own message format, one script
  call for the message and its record).

It may import the Celery app (:mod:`worker_app.celery`), :mod:`worker_app.jobs`, the broker,
:mod:`worker_app.observability` and the root modules; never the worker, the API or the CLI.
"""
