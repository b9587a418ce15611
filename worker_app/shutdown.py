"""Bounded graceful shutdown on SIGTERM and SIGINT.

Celery's SIGTERM is a warm shutdown that waits for running tasks without limit, so an
orchestrator's kill leaves them parked until the visibility timeout. Here SIGTERM (and Ctrl-C)
take Celery's soft-then-cold path: stop fetching at once, let running tasks finish for
``ASYNQ_SHUTDOWN_TIMEOUT`` (``worker_soft_shutdown_timeout``), then put the unfinished ones back
on their queue and exit 0. A second signal during the wait stops the tasks at once, still
requeueing them.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def install(worker: Any) -> None:
    """Route SIGTERM and SIGINT of this worker's main process to the bounded shutdown."""
    # Celery 5.5+'s own handler for REMAP_SIGTERM=SIGQUIT, which cannot be switched on from an
    # app: billiard reads that variable when the celery command starts, before the app loads.
    from celery.apps.worker import (  # type: ignore[attr-defined]
        _shutdown_handler,
        on_cold_shutdown,
    )
    from celery.platforms import EX_OK

    for sig in ("SIGTERM", "SIGINT"):
        _shutdown_handler(worker, sig=sig, how="Cold", callback=on_cold_shutdown, exitcode=EX_OK)
    logger.debug(
        "SIGTERM and SIGINT stop the worker within %ss",
        worker.app.conf.worker_soft_shutdown_timeout,
    )
