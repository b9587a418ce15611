"""The dead-letter queue: nothing that fails is dropped.

- :mod:`.entries`: the entries themselves, stored, listed, trimmed (imported by the worker);
- :mod:`.capture`: turning a failure into an entry, written before the message is acked;
- :mod:`.poison`: entries for messages that are not jobs (undecodable, unknown, poison pills);
- :mod:`.manage`: the operator's side: inspect, requeue (replay), delete, purge, with an audit
  record of each action. From Python::

      from worker_app.dlq import entries, manage

      page = manage.list_entries(entries.Filter(reason="retries_exhausted"))
      manage.requeue(page.entries[0].task_id, actor="ops")

The worker side (entries, capture, poison) imports :mod:`worker_app.jobs`, the broker and the
root modules; only :mod:`.manage` publishes, through the Celery app.
"""
