"""``worker-app``: the operator CLI (``python -m worker_app`` too), one module per command group.

- :mod:`.main`: the entry point and the top-level commands (config, enqueue, health, queues,
  purge, schedules);
- :mod:`.dev`: ``worker-app dev`` and the private Redis it starts (:mod:`.devredis`);
- :mod:`.dlq`: ``worker-app dlq``; :mod:`.outbox`: ``worker-app outbox``.

Nothing else imports the CLI. Heavy imports wait until a command runs: a probe runs
``worker-app health`` every few seconds.
"""
