"""Flow control: when and how often jobs run.

- :mod:`.ratelimit`: per-task rate limits (a job over the limit is deferred, not failed);
- :mod:`.concurrency`: per-key concurrency limits;
- :mod:`.schedules`: periodic jobs declared in code, one run per schedule slot;
- :mod:`.beat`: the scheduler process (celery-redbeat) fed from those schedules.

It may import the producer (a periodic run is an enqueue), the Celery app,
:mod:`worker_app.jobs`, the broker and the root modules; never the worker, the API or the CLI.
"""
