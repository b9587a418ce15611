"""Jobs as their users see them: records, results, payloads and waits.

- :mod:`.records`: the job record of every job (status, attempts, result, error), listed by
  status, task and queue, and cancel checks for a running job;
- :mod:`.results`: Celery's result API (``AsyncResult.get`` and ``.state``) read from the records;
- :mod:`.payload`: what a payload may be, and validating it against a task's model;
- :mod:`.waits`: how long jobs waited between enqueue and start, counted in memory.

It may import the broker (:mod:`worker_app.broker`) and the root modules (config, errors, keys,
redis_client); nothing that builds the Celery app.
"""
