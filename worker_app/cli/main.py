"""``worker-app``: the operator CLI (``python -m worker_app`` too).

User mistakes end in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import re
import sys
from importlib import import_module
from pathlib import Path
from typing import Any

import click

from worker_app.cli.common import fail
from worker_app.cli.dev import dev_command
from worker_app.config import ConfigError, get_settings
from worker_app.errors import WorkerAppError
from worker_app.redis_client import check_sentinel


class LazyGroup(click.Group):
    """The top-level group: the ``dlq`` and ``outbox`` groups load when they are named, so
    ``worker-app health`` (a probe runs it every few seconds) never builds the Celery app."""

    LAZY = {"dlq": "worker_app.cli.dlq:dlq_group", "outbox": "worker_app.cli.outbox:outbox_group"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.LAZY and cmd_name not in self.commands:
            module, _, name = self.LAZY[cmd_name].partition(":")
            self.add_command(getattr(import_module(module), name), cmd_name)
        return super().get_command(ctx, cmd_name)


#: Commands that need no Redis (``dev --sentinel`` starts its own), and ``health``: a probe
#: must answer within its timeout, and it says unhealthy by itself when Redis is unreachable.
NO_REDIS = frozenset({"config", "dev", "health"})


@click.group(cls=LazyGroup)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Operate worker_app: configuration, enqueueing, the development worker."""
    if ctx.invoked_subcommand is not None and ctx.invoked_subcommand not in NO_REDIS:
        # Sentinels that do not answer, or know no such master: one line, before any command.
        check_sentinel(get_settings())


cli.add_command(dev_command)


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def config_command(as_json: bool) -> None:
    """Show the effective settings, secrets masked."""
    shown = get_settings().public()
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    width = max(len(name) for name in shown)
    for name, value in shown.items():
        if isinstance(value, dict):
            value = ",".join(f"{queue}:{weight}" for queue, weight in value.items())
        click.echo(f"{name:<{width}}  {'' if value is None else value}")
    for warning in grace_warnings(Path("docker-compose.yml")):
        click.echo(f"warning: {warning}", err=True)


#: What a stopping worker needs beyond ASYNQ_SHUTDOWN_TIMEOUT before the orchestrator's kill.
GRACE_MARGIN = 5.0


def grace_warnings(compose_file: Path) -> list[str]:
    """A line for each service of ``compose_file`` running a worker whose ``stop_grace_period``
    is shorter than ``ASYNQ_SHUTDOWN_TIMEOUT`` + 5 s (compose's default is 10 s)."""
    # Imported when the command runs: a probe starts `worker-app health` every few seconds.
    import yaml

    try:
        services = (yaml.safe_load(compose_file.read_text()) or {}).get("services") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    timeout = get_settings().shutdown_timeout.total_seconds()
    out = []
    for name, service in services.items():
        command = service.get("command") if isinstance(service, dict) else None
        words = [str(w) for w in command] if isinstance(command, list) else str(command).split()
        if "celery" not in words or "worker" not in words:
            continue
        grace = parse_duration(str(service.get("stop_grace_period") or "10s"))
        if grace is not None and grace < timeout + GRACE_MARGIN:
            out.append(
                f"{compose_file}: service {name!r} has stop_grace_period {grace:g}s, shorter "
                f"than ASYNQ_SHUTDOWN_TIMEOUT ({timeout:g}s) + {GRACE_MARGIN:g}s: it can be "
                "killed before it has put its running jobs back"
            )
    return out


def parse_duration(text: str) -> float | None:
    """Seconds in a compose duration (``30s``, ``1m30s``, ``500ms``); None if unreadable."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        return None
    return sum(float(n) * units[u] for n, u in parts)


@cli.command("enqueue")
@click.argument("task")
@click.option("--payload", default="{}", show_default=True, help="The payload as a JSON object.")
@click.option("--queue", default=None, help="Override the task's queue.")
@click.option(
    "--countdown", type=float, default=None, help="Run no earlier than this many seconds from now."
)
@click.option(
    "--unique-for",
    type=float,
    default=None,
    help="Seconds in which an equal job is not enqueued again (prints the existing id).",
)
def enqueue_command(
    task: str, payload: str, queue: str | None, countdown: float | None, unique_for: float | None
) -> None:
    """Validate and enqueue TASK; print the job id."""
    # Imported when the command runs: a probe starts `worker-app health` every few seconds.
    from kombu.exceptions import OperationalError

    from worker_app.producer.client import enqueue

    try:
        data = json.loads(payload)
    except json.JSONDecodeError as exc:
        fail(f"--payload is not valid JSON: {exc}")
    if not isinstance(data, dict):
        fail("--payload must be a JSON object")
    try:
        click.echo(enqueue(task, data, queue=queue, countdown=countdown, unique_for=unique_for))
    except WorkerAppError as exc:
        fail(str(exc))
    except OperationalError as exc:
        fail(f"Redis is unreachable: {exc}")


@cli.command("health")
@click.option("--node", default=None, help="Worker node name (default: celery@<this host>).")
@click.option("--any", "any_worker", is_flag=True, help="Healthy if any worker beats.")
@click.option(
    "--scheduler", is_flag=True, help="Healthy while a beat process holds the scheduler lock."
)
def health_command(node: str | None, any_worker: bool, scheduler: bool) -> None:
    """Exit 0 while the worker's heartbeat is fresh and its leases renewed within one visibility
    timeout, 1 with the reason otherwise."""
    # Imported when the command runs: a probe starts `worker-app health` every few seconds.
    from worker_app.worker.health import check, check_scheduler, default_node

    if scheduler:
        ok, message = check_scheduler()
    else:
        ok, message = check(None if any_worker else (node or default_node()))
    click.echo(message, err=not ok)
    sys.exit(0 if ok else 1)


@cli.command("queues")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def queues_command(as_json: bool) -> None:
    """Each queue's weight, expected share, ready depth, scheduled and unacked counts."""
    # Imported when the command runs: a probe starts `worker-app health` every few seconds.
    import redis

    from worker_app.broker.queues import queue_stats
    from worker_app.redis_client import get_redis

    try:
        stats = queue_stats(get_redis())
    except redis.RedisError as exc:
        fail(f"Redis is unreachable: {exc}")
    if as_json:
        click.echo(json.dumps([queue.as_dict() for queue in stats], indent=2))
        return
    click.echo(
        f"{'QUEUE':<16} {'WEIGHT':>6} {'SHARE':>6} {'READY':>8} {'SCHEDULED':>9} {'UNACKED':>8} "
        f"{'OLDEST':>9}"
    )
    for q in stats:
        share, oldest = f"{q.share:.1f}%", f"{q.oldest_age:.1f}s"
        click.echo(
            f"{q.name:<16} {q.weight:>6} {share:>6} {q.ready:>8} {q.scheduled:>9} {q.unacked:>8} "
            f"{oldest:>9}"
        )
    if get_settings().strict_priority:
        click.echo(
            "strict priority: a queue is served only when every higher-weight queue is empty"
        )


@cli.command("purge")
@click.option(
    "--queue", "queues", multiple=True, help="A queue to purge (repeatable; default: all)."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def purge_command(queues: tuple[str, ...], yes: bool, as_json: bool) -> None:
    """Remove the waiting and parked jobs of queues; their jobs end cancelled ("purged")."""
    # Imported when the command runs: a probe starts `worker-app health` every few seconds.
    import redis

    from worker_app.broker.queues import check_queue
    from worker_app.broker.transport import purge
    from worker_app.errors import UnknownQueue
    from worker_app.redis_client import get_redis

    try:
        names = [check_queue(name) for name in queues] or get_settings().queue_names
    except UnknownQueue as exc:
        fail(str(exc))
    if not yes and not click.confirm(
        f"Remove every waiting and parked job of {', '.join(names)}?", err=True
    ):
        fail("nothing purged")
    removed: dict[str, dict[str, int]] = {}
    try:
        for name in names:
            waiting, parked = purge(get_redis(), name)
            removed[name] = {"waiting": waiting, "parked": parked}
    except redis.RedisError as exc:
        fail(f"Redis is unreachable: {exc}")
    if as_json:
        click.echo(json.dumps(removed, indent=2))
        return
    click.echo(f"{'QUEUE':<16} {'WAITING':>8} {'PARKED':>8}")
    for name, counts in removed.items():
        click.echo(f"{name:<16} {counts['waiting']:>8} {counts['parked']:>8}")


@cli.command("schedules")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def schedules_command(as_json: bool) -> None:
    """The periodic jobs declared in code, with their last and next run."""
    # Imported when the command runs: a probe starts `worker-app health` every few seconds.
    import redis

    from worker_app.celery import app
    from worker_app.flow.schedules import states

    app.loader.import_default_modules()  # declarations live beside their tasks
    try:
        rows = states()
    except redis.RedisError as exc:
        fail(f"Redis is unreachable: {exc}")
    if as_json:
        click.echo(json.dumps([row.as_dict() for row in rows], indent=2))
        return
    if not rows:
        click.echo("no periodic jobs are declared")
        return
    click.echo(
        f"{'NAME':<32} {'SCHEDULE':<20} {'TASK':<24} {'LAST RUN':<20} {'STATUS':<10} "
        f"{'NEXT RUN':<20} {'SKIPPED':>7}"
    )
    for row in rows:
        data = row.as_dict()
        click.echo(
            f"{row.name:<32} {row.timing:<20} {row.task:<24} {data['last_run_at'] or '-':<20.19} "
            f"{row.last_status or '-':<10} {data['next_run_at'] or '-':<20.19} {row.skipped:>7}"
        )


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``worker-app`` console script."""
    try:
        get_settings()  # a bad value stops here, before anything connects
        return cli.main(args=argv, prog_name="worker-app")
    except ConfigError as exc:
        for line in exc.lines:
            click.echo(f"configuration error: {line}", err=True)
        sys.exit(1)
