"""``worker-app dev``: the job API, an embedded worker and the scheduler in one process, on a
private Redis when none is reachable. Everything heavy is imported when the command runs."""

from __future__ import annotations

import logging
import os
import threading
from datetime import date
from typing import Any

import click

from worker_app.cli.common import fail
from worker_app.config import get_settings
from worker_app.errors import WorkerAppError


@click.command("dev")
@click.option("--demo/--no-demo", default=False, help="Enqueue a small demo batch at start.")
@click.option(
    "--api-port", default=8000, show_default=True, help="Port of the job API (0: no API)."
)
@click.option(
    "--sentinel",
    is_flag=True,
    help="Run on a private Redis Sentinel set (1 master, 1 replica, 3 sentinels) to try failover.",
)
def dev_command(demo: bool, api_port: int, sentinel: bool) -> None:
    """The job API, an embedded worker on every queue and the scheduler of periodic jobs, in one
    process (starts a private Redis if needed)."""
    # Imported when it runs, not when the CLI starts (a probe runs it every few seconds).
    from worker_app.cli.devredis import ensure_redis
    from worker_app.cli.devsentinel import ensure_sentinel

    with ensure_sentinel() if sentinel else ensure_redis() as redis_url:
        if redis_url is not None:
            _use_redis(redis_url)
        # Imported when it runs, not when the CLI starts (a probe runs it every few seconds).
        from worker_app.celery import app

        settings = get_settings()
        api = _start_api(api_port) if api_port else None
        relay = _start_relay() if settings.outbox_database_url is not None else None
        if demo:
            _enqueue_demo()
        argv = [
            "worker",
            "--hostname",
            "dev@%h",
            "--queues",
            ",".join(settings.queue_names),
            "--concurrency",
            str(settings.concurrency),
            "--loglevel",
            (settings.log_level or "info").upper(),
            "--beat",  # periodic jobs too, with the same scheduler as `celery -A worker_app beat`
        ]
        try:
            app.worker_main(argv)
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise
        finally:
            if api is not None:
                # Stopped and joined before the interpreter exits: an event loop still running
                # in a daemon thread during finalization can crash the process.
                server, thread = api
                server.should_exit = True
                thread.join(API_STOP_TIMEOUT)
            if relay is not None:
                relay.set()


#: Seconds the embedded API gets to stop when the development worker exits.
API_STOP_TIMEOUT = 5.0


def _start_api(port: int) -> tuple[Any, threading.Thread]:
    """Serve the job API from a thread of this process; the worker keeps the main thread."""
    # Imported when it runs, not when the CLI starts (a probe runs it every few seconds).
    import uvicorn

    from worker_app.api import create_app

    config = uvicorn.Config(
        create_app(),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        loop="asyncio",  # in a thread of a process that forks its pool: the standard loop
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    click.echo(
        f"dev: job API at http://127.0.0.1:{port}/docs (jobs: /api/jobs, dead letters: /api/dlq); "
        "Flower: celery -A worker_app flower, then http://127.0.0.1:5555"
    )
    click.echo(f"dev: operator console at http://127.0.0.1:{port}/ui (queues, jobs, dead letters)")
    return server, thread


def _start_relay() -> Any:
    """Create the outbox table if missing and relay it from a thread; returns its stop flag."""
    # Imported when it runs, not when the CLI starts (a probe runs it every few seconds).
    from worker_app.outbox.relay import Relay
    from worker_app.outbox.sql import OutboxTable, connect, database_url, load_psycopg, migrate

    try:
        with connect(database_url()) as conn:
            migrate(conn, OutboxTable.from_settings())
        relay = Relay()
    except WorkerAppError as exc:
        fail(str(exc))
    except load_psycopg().Error as exc:
        fail(f"outbox: PostgreSQL: {(str(exc).strip().splitlines() or [''])[0]}")
    stop = threading.Event()

    def run() -> None:
        try:
            relay.run(stop)
        except Exception:  # the API and the worker go on; the reason is in the log
            logging.getLogger("worker_app.outbox").exception("outbox relay stopped")

    threading.Thread(target=run, name="outbox-relay", daemon=True).start()
    click.echo(f"dev: outbox relay publishing committed rows of {relay.table.qualified}")
    return stop


def _use_redis(url: str) -> None:
    """Point settings and the already-built app at ``url`` (nothing has connected yet)."""
    # Imported when it runs, not when the CLI starts (a probe runs it every few seconds).
    from worker_app.celery import app, reconfigure

    os.environ["REDIS_URL"] = url
    get_settings.cache_clear()
    reconfigure(app, get_settings())


def _enqueue_demo() -> None:
    # Imported when it runs, not when the CLI starts (a probe runs it every few seconds).
    from worker_app.producer.client import enqueue

    today = date.today().isoformat()
    ids = [
        enqueue("alerts.send", {"user_id": 7, "message": "disk almost full"}),
        enqueue(
            "briefing.generate", {"user_id": 1, "date": today, "topics": ["markets", "weather"]}
        ),
        enqueue(
            "briefing.generate",
            {"user_id": 2, "date": today, "topics": ["sports"], "fail_times": 2},
        ),
        enqueue("maintenance.cleanup", {"older_than_days": 90}),
    ]
    click.echo(
        f"demo: enqueued {len(ids)} jobs on critical, default and low; one fails twice first"
    )
