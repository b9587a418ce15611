"""The job HTTP API: ``uvicorn worker_app.api:app``.

- :mod:`.factory`: the FastAPI app, its auth, error answers, ``/health``, ``/ready`` and
  ``/metrics`` (:mod:`.metrics`, the Prometheus collector);
- :mod:`.routes`: ``/api/jobs``, ``/api/dlq``, ``/api/queues``; :mod:`.schemas`: their bodies;
- :mod:`.console`: the operator console at ``/ui``.

It may import anything of the package but the CLI.
"""

from worker_app.api.factory import create_app

app = create_app()

__all__ = ["app", "create_app"]
