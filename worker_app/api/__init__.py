"""The job HTTP API: ``uvicorn worker_app.api:app``."""

from worker_app.api.factory import create_app

app = create_app()

__all__ = ["app", "create_app"]
