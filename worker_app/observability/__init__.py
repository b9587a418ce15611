"""Logs and traces: what a job's life looks like from the outside.

- :mod:`.logs`: text or JSON log lines, each with the job's context;
- :mod:`.lifecycle`: one line per lifecycle event of a job;
- :mod:`.tracing`: OpenTelemetry set-up and trace context carried in message headers;
- :mod:`.signals`: the receivers of Celery's signals that drive all of the above.

It may import :mod:`worker_app.jobs`, the broker and the root modules. Metrics live with the API
that serves them (:mod:`worker_app.api.metrics`).
"""
