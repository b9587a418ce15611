"""``worker-app outbox``: the transactional outbox's schema, its relay, and how far behind it is."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import click

from worker_app.cli.common import fail
from worker_app.config import get_settings
from worker_app.errors import OutboxUnavailable
from worker_app.outbox.relay import BATCH, POLL

T = TypeVar("T")


def _guard(action: Callable[[], T]) -> T:
    """Run ``action``; a missing extra, setting or table, or an unreachable database is one
    line on stderr and exit 1."""
    # Imported when it runs: psycopg and the outbox load only for the outbox commands.
    from worker_app.outbox.sql import OutboxTable, load_psycopg

    try:
        psycopg = load_psycopg()
        try:
            return action()
        except psycopg.errors.UndefinedTable:
            table = OutboxTable.from_settings().qualified
            fail(f"the outbox table {table} does not exist; run: worker-app outbox migrate")
        except psycopg.Error as exc:
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            fail(f"PostgreSQL: {detail}")
    except OutboxUnavailable as exc:
        fail(str(exc))
    raise AssertionError("unreachable")  # fail exits


@click.group("outbox")
def outbox_group() -> None:
    """The transactional outbox (enqueue_tx): schema, relay, status."""


@outbox_group.command("sql")
def sql_command() -> None:
    """Print the outbox schema as plain SQL, for your own migrations."""
    # Imported when it runs: psycopg and the outbox load only for the outbox commands.
    from worker_app.outbox.sql import OutboxTable

    click.echo(OutboxTable.from_settings().ddl(), nl=False)


@outbox_group.command("migrate")
def migrate_command() -> None:
    """Create the outbox table, its indexes and trigger in OUTBOX_DATABASE_URL (idempotent)."""
    # Imported when it runs: psycopg and the outbox load only for the outbox commands.
    from worker_app.outbox.sql import OutboxTable, connect, database_url, migrate

    def run() -> str:
        table = OutboxTable.from_settings()
        with connect(database_url()) as conn:
            migrate(conn, table)
        return table.qualified

    click.echo(f"outbox table {_guard(run)} is ready")


@outbox_group.command("relay")
@click.option("--batch", default=BATCH, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--poll",
    default=POLL,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between claims when no notification wakes the relay.",
)
def relay_command(batch: int, poll: float) -> None:
    """Publish committed outbox rows to Redis until SIGTERM or Ctrl-C (run one or more)."""
    # Imported when it runs: psycopg and the outbox load only for the outbox commands.
    from worker_app.observability import tracing
    from worker_app.observability.logs import configure_logging
    from worker_app.outbox.relay import Relay

    configure_logging(get_settings())
    tracing.setup()  # publishes continue the trace of the transaction that enqueued the job
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    relay = _guard(lambda: Relay(batch=batch, poll=poll))
    _guard(lambda: relay.run(stop))


@outbox_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of lines.")
def status_command(as_json: bool) -> None:
    """Unsent rows and the age of the oldest; sent rows still kept."""
    # Imported when it runs: psycopg and the outbox load only for the outbox commands.
    from worker_app.outbox.status import read_status

    status = _guard(read_status)
    if as_json:
        click.echo(json.dumps(status.as_dict(), indent=2))
        return
    click.echo(f"table    {status.table}")
    click.echo(f"pending  {status.pending}")
    click.echo(f"oldest   {status.oldest_pending_age:.1f}s")
    click.echo(f"sent     {status.sent} (kept for ASYNQ_RETENTION)")
