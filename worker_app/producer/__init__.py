"""Enqueueing: the producer side of the product.

- :mod:`.client`: ``enqueue``, ``enqueue_many``, the per-queue helpers and unique jobs;
- :mod:`.send`: ``.delay()`` and ``.apply_async()`` (and ``enqueue``): Celery's message, one
  script call for the message and its record;
- :mod:`.publish`: ``enqueue`` on that path, and the batch path of ``enqueue_many``.

It may import the Celery app (:mod:`worker_app.celery`), :mod:`worker_app.jobs`, the broker,
:mod:`worker_app.observability` and the root modules; never the worker, the API or the CLI.
"""
