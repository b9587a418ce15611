"""Queue-order benchmark: drain rate with one queue vs three weighted (and strict) queues,
idle CPU of a waiting worker, and pick-up latency of a new job; side by side in one run.

    python -m bench.queue_order [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Settings must point at the private server before worker_app is imported.
os.environ.update(REDIS_URL="redis://127.0.0.1:1/0", APP_ENV="test", LOG_LEVEL="warning")

from bench import tasks  # noqa: E402
from bench.compare import WORKERS  # noqa: E402
from worker_app.celery import app, reconfigure  # noqa: E402
from worker_app.cli.devredis import RedisServer  # noqa: E402
from worker_app.config import get_settings  # noqa: E402

MODES: dict[str, dict[str, str]] = {
    "single queue": {"ASYNQ_QUEUES": "default:1"},
    "weighted 6:3:1": {"ASYNQ_QUEUES": "critical:6,default:3,low:1"},
    "strict 6:3:1": {"ASYNQ_QUEUES": "critical:6,default:3,low:1", "ASYNQ_STRICT_PRIORITY": "true"},
}


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    argv = WORKERS["worker_app"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc


def wait(condition: Any, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("benchmark timed out")
        time.sleep(0.01)


def total_commands(client: Any) -> int:
    """Commands Redis has run, from ``INFO commandstats`` (scripts' inner calls included)."""
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_"))


def drain_rate(
    server: RedisServer, mode: dict[str, str], jobs: int, workdir: Path
) -> tuple[float, float, float]:
    """Jobs per second a 2-slot worker drains from pre-loaded queues, and the Redis commands
    per job spent enqueueing and working."""
    client = tasks._redis()
    client.flushdb()
    queues = [item.split(":")[0] for item in mode["ASYNQ_QUEUES"].split(",")]
    before = total_commands(client)
    with app.producer_or_acquire() as producer:
        for i in range(jobs):
            tasks.noop.apply_async(queue=queues[i % len(queues)], producer=producer)
    enqueued = total_commands(client)
    env = {**os.environ, **mode, "PYTHONPATH": str(ROOT), "REDIS_URL": server.url}
    proc = start_worker(env, workdir / "worker.log")
    try:
        wait(lambda: int(client.get("bench:done") or 0) >= 1)
        started, first = time.perf_counter(), int(client.get("bench:done") or 0)
        wait(lambda: int(client.get("bench:done") or 0) >= jobs)
        rate = (jobs - first) / (time.perf_counter() - started)
        # The task body's own INCR/GET polling is the benchmark's, not the product's.
        worked = total_commands(client)
    finally:
        proc.terminate()
        proc.wait()
    return rate, (enqueued - before) / jobs, (worked - enqueued) / jobs


def tree_cpu_seconds(pid: int) -> float:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for each in [pid, *map(int, children)]:
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def idle_and_pickup(
    server: RedisServer, workdir: Path, idle_seconds: float, samples: int
) -> dict[str, float]:
    client = tasks._redis()
    client.flushdb()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": server.url}
    proc = start_worker(env, workdir / "idle.log")
    try:
        tasks.stamp.apply_async(("warmup",), queue="low")
        wait(lambda: client.llen("warmup") > 0)
        cpu, wall = tree_cpu_seconds(proc.pid), time.monotonic()
        time.sleep(idle_seconds)
        idle = 100.0 * (tree_cpu_seconds(proc.pid) - cpu) / (time.monotonic() - wall)
        latencies = []
        for i in range(samples):
            published = time.time()
            tasks.stamp.apply_async((f"pickup:{i}",), queue="low")
            wait(lambda i=i: client.llen(f"pickup:{i}") > 0)
            started = float(client.lindex(f"pickup:{i}", 0) or 0)
            latencies.append(1000.0 * (started - published))
            time.sleep(0.2)
        return {
            "idle_cpu_percent": idle,
            "pickup_ms_p50": statistics.median(latencies),
            "pickup_ms_max": max(latencies),
        }
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer jobs and repetitions")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    jobs, reps = (1500, 1) if args.quick else (6000, 3)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis", appendonly=False)
        server.start()
        os.environ["REDIS_URL"] = server.url
        get_settings.cache_clear()
        reconfigure(app, get_settings())
        try:
            rates: dict[str, list[float]] = {name: [] for name in MODES}
            commands: dict[str, tuple[float, float]] = {}
            for _ in range(reps):  # interleaved, so drift on a shared machine hits every mode
                for name, mode in MODES.items():
                    rate, enqueue_cmds, work_cmds = drain_rate(server, mode, jobs, workdir)
                    rates[name].append(rate)
                    commands[name] = (enqueue_cmds, work_cmds)
            latency = idle_and_pickup(
                server, workdir, 5 if args.quick else 20, 10 if args.quick else 30
            )
        finally:
            server.stop()
    base = statistics.median(rates["single queue"])
    result: dict[str, Any] = {"jobs": jobs, "repetitions": reps, "drain": {}, **latency}
    print(
        f"{'mode':<16} {'jobs/s (median)':>16} {'spread':>14} {'vs single':>10} "
        f"{'cmds/job enqueue':>17} {'cmds/job worker':>16}"
    )
    for name, values in rates.items():
        median = statistics.median(values)
        result["drain"][name] = {
            "median": median,
            "min": min(values),
            "max": max(values),
            "ratio_to_single": median / base,
        }
        spread = f"{min(values):.0f}-{max(values):.0f}"
        enq, work = commands[name]
        result["drain"][name]["commands_per_job"] = {"enqueue": enq, "worker": work}
        print(
            f"{name:<16} {median:>16.0f} {spread:>14} {median / base:>9.2f}x "
            f"{enq:>17.1f} {work:>16.1f}"
        )
    print(
        f"idle worker CPU: {latency['idle_cpu_percent']:.2f}% of a core; pick-up of a new low job: "
        f"p50 {latency['pickup_ms_p50']:.1f} ms, max {latency['pickup_ms_max']:.1f} ms"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
