"""``worker-app dlq``: find, understand, replay and purge dead-lettered jobs."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import click
from kombu.exceptions import OperationalError
from redis import RedisError

from worker_app.cli.common import fail
from worker_app.dlq import entries, manage
from worker_app.errors import WorkerAppError


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _filter(
    task: str | None, reason: str | None, queue: str | None, fingerprint: str | None
) -> entries.Filter:
    if reason is not None and reason not in entries.REASONS:
        fail(f"--reason {reason!r} is not one of {', '.join(entries.REASONS)}")
    return entries.Filter(task=task, reason=reason, queue=queue, fingerprint=fingerprint)


def _filter_options(fn: Any) -> Any:
    for name in ("fingerprint", "queue", "reason", "task"):
        fn = click.option(f"--{name}", default=None, help=f"Only entries with this {name}.")(fn)
    return fn


def _rate(text: str | None) -> float | None:
    if text is None:
        return None
    number, _, unit = text.partition("/")
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if value <= 0 or unit not in ("s", "m", ""):
        fail(f"--rate {text!r}: expected N/s or N/m, e.g. 50/s")
    return value / 60.0 if unit == "m" else value


@click.group("dlq")
def dlq_group() -> None:
    """The dead-letter queue: list, show, requeue, delete, purge, stats, history."""


@dlq_group.command("list")
@_filter_options
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--cursor", default=None, help="The next-page cursor a previous page printed.")
@click.option("--json", "as_json", is_flag=True)
def list_command(
    task: str | None,
    reason: str | None,
    queue: str | None,
    fingerprint: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Entries, newest first."""
    page = _guard(
        lambda: manage.list_entries(_filter(task, reason, queue, fingerprint), cursor, limit)
    )
    if as_json:
        click.echo(
            json.dumps(
                {"entries": [e.to_dict() for e in page.entries], "next_cursor": page.next_cursor},
                indent=2,
                default=str,
            )
        )
        return
    for e in page.entries:
        click.echo(
            f"{_when(e.failed_at)}  {e.task_id}  {e.reason:<17} {e.task_name or '-':<24} "
            f"{e.exc_type}: {e.exc_message[:60]}"
        )
    if page.next_cursor:
        click.echo(f"next page: --cursor {page.next_cursor}")


@dlq_group.command("show")
@click.argument("task_id")
@click.option("--json", "as_json", is_flag=True)
def show_command(task_id: str, as_json: bool) -> None:
    """One entry with its traceback, arguments, headers and history."""
    entry = _guard(lambda: manage.get(task_id))
    if entry is None:
        fail(f"no dead-letter entry {task_id!r}")
    data = entry.to_dict()
    data["history"] = _guard(lambda: manage.history(task_id=task_id))
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for key, value in data.items():
        if key != "traceback":
            click.echo(f"{key:>17}: {value}")
    click.echo(entry.traceback)


@dlq_group.command("requeue")
@click.argument("task_id", required=False)
@_filter_options
@click.option("--payload", default=None, help="Replace the payload (JSON object; one entry only).")
@click.option("--rate", default=None, help="At most this many per second (N/s) or minute (N/m).")
@click.option("--all", "everything", is_flag=True, help="Requeue every entry matching the filters.")
def requeue_command(
    task_id: str | None,
    task: str | None,
    reason: str | None,
    queue: str | None,
    fingerprint: str | None,
    payload: str | None,
    rate: str | None,
    everything: bool,
) -> None:
    """Put one entry (TASK_ID) or every filtered entry back on its queue.

    An entry whose task this process does not have is published unchanged, for a worker that
    has it; --payload needs the task here, to validate the new payload.
    """
    if task_id:
        data = None
        if payload is not None:
            try:
                data = json.loads(payload)
            except json.JSONDecodeError as exc:
                fail(f"--payload is not valid JSON: {exc}")
        requeued = _guard(lambda: manage.requeue(task_id, payload=data))
        if requeued is None:
            fail(f"no dead-letter entry {task_id!r}")
        click.echo(f"requeued {task_id}" + (f", {requeued.note}" if requeued.note else ""))
        return
    flt = _filter(task, reason, queue, fingerprint)
    if not everything and not flt.given():
        fail("name a TASK_ID, or filters (--task/--reason/--queue/--fingerprint), or --all")
    per_second = _rate(rate)
    result = _guard(
        lambda: manage.requeue_many(
            flt,
            rate=per_second,
            progress=lambda n: click.echo(f"requeued {n}", err=True) if n % 100 == 0 else None,
        )
    )
    if result.stopped is not None:
        fail(f"requeued {result.done} of {result.total}, stopped: {result.stopped}")
    line = f"requeued {result.done} of {result.total}, refused {result.refused}"
    if result.unvalidated:
        line += (
            f"; {result.unvalidated} published unchanged: their task is not registered in this "
            "process, payload not validated"
        )
    click.echo(line)


@dlq_group.command("delete")
@click.argument("task_id")
def delete_command(task_id: str) -> None:
    """Remove one entry for good."""
    if not _guard(lambda: manage.delete(task_id)):
        fail(f"no dead-letter entry {task_id!r}")
    click.echo(f"deleted {task_id}")


@dlq_group.command("purge")
@_filter_options
@click.option(
    "--older-than", "older_than", type=float, default=None, help="Only entries older than N hours."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge_command(
    task: str | None,
    reason: str | None,
    queue: str | None,
    fingerprint: str | None,
    older_than: float | None,
    yes: bool,
) -> None:
    """Remove every entry matching the filters (all of them without filters)."""

    flt = _filter(task, reason, queue, fingerprint)
    if older_than is not None:
        flt = entries.Filter(
            task, reason, queue, fingerprint, before=time.time() - older_than * 3600
        )
    count = _guard(lambda: sum(1 for _ in entries.store().iter(flt)))
    if not yes and not click.confirm(
        f"purge {count} dead-letter entr{'y' if count == 1 else 'ies'}?"
    ):
        fail("nothing purged")
    removed = _guard(
        lambda: manage.purge(flt, progress=lambda n: click.echo(f"purged {n}", err=True))
    )
    click.echo(f"purged {removed}")


@dlq_group.command("stats")
@click.option("--json", "as_json", is_flag=True)
def stats_command(as_json: bool) -> None:
    """Counts by reason, task and queue, and the distinct failures by fingerprint."""
    stats = _guard(manage.stats)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    groups = stats["by_fingerprint"]
    click.echo(
        f"{stats['total']} entries, {len(groups)} distinct failure(s); "
        f"{stats['trimmed_total']} trimmed so far"
    )
    for name in ("reason", "task", "queue"):
        click.echo(f"by {name}: " + ", ".join(f"{k} {v}" for k, v in stats[f"by_{name}"].items()))
    for group in groups:
        click.echo(
            f"  {group['fingerprint']}  {group['count']:>6}  {group['task']}  {group['error'][:70]}"
        )


@dlq_group.command("history")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True)
def history_command(limit: int, as_json: bool) -> None:
    """Who requeued, deleted or purged what, and when."""
    records = _guard(lambda: manage.history(limit))
    if as_json:
        click.echo(json.dumps(records, indent=2))
        return
    for r in records:
        what = r.get("filter") or ", ".join(r.get("task_ids", [])[:3])
        if r.get("stopped"):
            what = f"{what}  stopped after {r['count']} of {r['total']}: {r['stopped']}"
        click.echo(
            f"{_when(r['at'])}  {r['actor']:<16} {r['action']:<8} {r.get('count', 1):>6}  {what}"
        )


def _guard(call: Any) -> Any:
    try:
        return call()
    except (WorkerAppError, OperationalError, RedisError) as exc:
        fail(str(exc))
