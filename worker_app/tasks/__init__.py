"""The demo application's tasks, one module per domain; importing this package registers them.

Workers and producers load it (the app's ``imports``). Tasks may import the app, the errors and
:mod:`worker_app.flow` (periodic declarations); see the README's "Adding your tasks".
"""

from worker_app.tasks import alerts, briefing, maintenance

__all__ = ["alerts", "briefing", "maintenance"]
