"""The app's tasks, one module per domain; importing this package registers them all."""

from worker_app.tasks import alerts, briefing, maintenance

__all__ = ["alerts", "briefing", "maintenance"]
