"""Dead-letter queue benchmark: a page of ``dlq list`` (Python and CLI) with 10,000 entries.

python -m bench.dlq [--entries N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
os.environ.update(REDIS_URL="redis://127.0.0.1:1/0", APP_ENV="test", LOG_LEVEL="warning")

from worker_app.cli.devredis import RedisServer  # noqa: E402
from worker_app.config import get_settings  # noqa: E402
from worker_app.dlq import entries, manage  # noqa: E402
from worker_app.dlq.entries import Entry  # noqa: E402
from worker_app.redis_client import get_redis  # noqa: E402


def timed(call: object, repeat: int = 20) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        samples.append(1000 * (time.perf_counter() - started))
    return statistics.median(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False)
        server.start()
        os.environ["REDIS_URL"] = server.url
        get_settings.cache_clear()
        try:
            kinds = ("billing.send_invoice", "briefing.generate", "alerts.send")
            reasons = ("retries_exhausted", "permanent_error", "invalid_payload")
            started = time.perf_counter()
            for i in range(args.entries):
                entries.store().add(
                    Entry(
                        task_id=f"bench-{i}",
                        task_name=kinds[i % 3],
                        reason=reasons[i % 3],
                        queue="default",
                        kwargs={"n": i},
                        exc_type="RuntimeError",
                        exc_message=f"order {i} failed",
                        traceback="x" * 2000,
                    )
                )
            write_ms = 1000 * (time.perf_counter() - started) / args.entries
            first, first_max = timed(lambda: manage.list_entries(limit=50))
            filtered, filtered_max = timed(
                lambda: manage.list_entries(entries.Filter(task=kinds[1]), limit=50)
            )
            two, two_max = timed(
                lambda: manage.list_entries(
                    entries.Filter(task=kinds[1], reason=reasons[1]), limit=50
                )
            )
            deep = manage.list_entries(limit=50)
            for _ in range(50):
                deep = manage.list_entries(cursor=deep.next_cursor, limit=50)
            paged, paged_max = timed(lambda: manage.list_entries(cursor=deep.next_cursor, limit=50))
            stats, stats_max = timed(manage.stats, repeat=5)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            cli_samples = []
            for _ in range(5):
                t = time.perf_counter()
                subprocess.run(
                    [str(BIN / "worker-app"), "dlq", "list", "--limit", "50"],
                    env=env,
                    check=True,
                    capture_output=True,
                )
                cli_samples.append(1000 * (time.perf_counter() - t))
            memory = get_redis().info("memory")["used_memory_human"]
        finally:
            server.stop()
    print(
        f"dead-letter queue with {args.entries} entries ({memory} in Redis), "
        f"write {write_ms:.2f} ms/entry"
    )
    print(f"{'operation':<40} {'p50 ms':>8} {'max ms':>8}")
    for name, p50, worst in [
        ("list, first page of 50", first, first_max),
        ("list, filtered by task", filtered, filtered_max),
        ("list, filtered by task and reason", two, two_max),
        ("list, page 52 (cursor)", paged, paged_max),
        ("stats (counts and fingerprints)", stats, stats_max),
        ("`worker-app dlq list` (whole process)", statistics.median(cli_samples), max(cli_samples)),
    ]:
        print(f"{name:<40} {p50:>8.1f} {worst:>8.1f}")


if __name__ == "__main__":
    main()
