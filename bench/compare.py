"""worker_app against vanilla Celery 5.7 and Dramatiq, side by side in one run, same task body.

    python -m bench.compare [--quick] [--jobs N] [--reps N] [--json PATH]

One private ``redis-server`` is the broker of all three (flushed between systems) and a second
one counts executions, so the broker's ``INFO commandstats`` holds only what each system spends.
For each system and repetition: enqueue rate with ``.delay()`` (Dramatiq: ``.send()``), with
worker_app's ``enqueue()`` and with the batch call (each in a fresh producer process, so no
system's signal receivers see another's publishes), drain rate of a 2-process worker over a
pre-loaded queue; per job, Redis server CPU (``INFO cpu``), client round trips (``INFO stats``
read events) and commands (``INFO commandstats``), each for ``.delay()`` plus the worker's
share; peak PSS of the worker's process tree, enqueue-to-start latency (p50 / p99) of
jobs sent one at a time to an idle worker, and the idle worker's CPU. Systems are interleaved
within each repetition, so drift on a shared machine hits all of them.

Configurations: worker_app as shipped (acks_late, prefetch 1, weighted queue order, job records,
the DLQ failure handler, leases, the stats line, task events for Flower), ``-c 2``; vanilla
Celery with every default (prefork, one process per core: 2 here, no result backend); Dramatiq
with every default (RedisBroker, one process per core, 8 threads each).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SYSTEMS = ("worker_app", "celery", "dramatiq")

WORKERS = {
    "worker_app": [
        str(BIN / "celery"),
        "-A",
        "worker_app",
        "worker",
        "--include",
        "bench.tasks",
        "--concurrency",
        "2",
        "--loglevel",
        "WARNING",
    ],
    "celery": [str(BIN / "celery"), "-A", "bench.vanilla", "worker", "--loglevel", "WARNING"],
    "dramatiq": [str(BIN / "dramatiq"), "bench.dramatiq_app"],
}


# Producer side: runs in a child process of its own (``--produce``) ---------------------------


def _producer(system: str) -> tuple[Any, Any, Any]:
    """The ``.delay()`` call, the plain call and the batch call of ``system``.

    worker_app's plain call is ``enqueue()``; the other systems have one plain call (Celery's
    ``.delay()``, Dramatiq's ``.send()``), used for both."""
    if system == "worker_app":
        from bench.tasks import work
        from worker_app.producer.client import enqueue, enqueue_many

        def plain(sent_at: float = 0.0) -> None:
            enqueue(work, {"sent_at": sent_at})

        def batch(n: int) -> None:
            enqueue_many(work, [{"sent_at": 0.0}] * n)

        return (lambda sent_at=0.0: work.delay(sent_at=sent_at)), plain, batch
    if system == "celery":
        from bench.vanilla import app
        from bench.vanilla import work as vanilla_work

        def batch_celery(n: int) -> None:
            with app.producer_or_acquire() as producer:
                for _ in range(n):
                    vanilla_work.apply_async(kwargs={"sent_at": 0.0}, producer=producer)

        def delay(sent_at: float = 0.0) -> None:
            vanilla_work.delay(sent_at=sent_at)

        return delay, delay, batch_celery
    import dramatiq

    from bench.dramatiq_app import work as dramatiq_work

    def batch_dramatiq(n: int) -> None:
        dramatiq.group(dramatiq_work.message(0.0) for _ in range(n)).run()  # type: ignore[no-untyped-call]

    def send(sent_at: float = 0.0) -> None:
        dramatiq_work.send(sent_at)

    return send, send, batch_dramatiq


def _floor(broker: Any) -> Any:
    """One ``publish.lua`` call per job with a message and record built once (a new id each):
    what a ``.delay()`` that writes its record in the same call costs at the least."""
    import uuid

    from worker_app.broker.publish import Record, publish

    message = broker.lindex("default", 0).decode()

    def call() -> None:
        now = time.time()
        job_id = str(uuid.uuid4())
        job = Record(job_id, "bench.work", "default", "pending", now, 0, "{}", "new", "0")
        publish(broker, "default", message, record=job, now=now)

    return call


def produce(system: str, mode: str, jobs: int) -> None:
    """Child process: send ``jobs`` jobs by ``mode``; print the rate, the commands, the round
    trips and the Redis CPU per job as JSON."""
    import redis

    broker = redis.Redis.from_url(os.environ["BENCH_BROKER_URL"])
    delay, plain, batch = _producer(system)
    delay()  # connections, scripts and imports warmed up before the clock starts
    plain()
    floor = _floor(broker) if mode == "floor" else None  # reads the warm-up's message
    before = Server.snapshot(broker)
    started = time.perf_counter()
    if mode == "delay":
        for _ in range(jobs):
            delay()
    elif mode == "plain":
        for _ in range(jobs):
            plain()
    elif mode == "batch":
        batch(jobs)
    elif floor is not None:
        for _ in range(jobs):
            floor()
    else:  # latency: one job at a time by .delay(), each carrying the time it was sent
        for _ in range(jobs):
            delay(time.time())
            time.sleep(0.01)
    elapsed = time.perf_counter() - started
    spent = Server.snapshot(broker).since(before, jobs)
    print(json.dumps({"rate": jobs / elapsed, **spent}))


# Measuring side ---------------------------------------------------------------------------


class Server:
    """What the broker's Redis has spent so far, from one ``INFO`` call: commands by name
    (``commandstats``, scripts' inner calls included), client round trips (``stats``
    ``total_reads_processed``: one read event per request or pipeline a client sends) and
    CPU (``cpu`` user + system seconds)."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.mix = {k[8:]: int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_")}
        self.reads = int(info["total_reads_processed"])
        self.cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    @classmethod
    def snapshot(cls, client: Any) -> Server:
        return cls(client.info("stats", "commandstats", "cpu"))

    def since(self, before: Server, jobs: int) -> dict[str, Any]:
        """Per job between ``before`` and this snapshot, the snapshots' own INFO left out."""
        mix = mix_per_job(before.mix, self.mix, jobs)
        mix.pop("info", None)
        return {
            "commands": sum(mix.values()),
            "mix": mix,
            "round_trips": (self.reads - before.reads - 1) / jobs,
            "redis_cpu_us": 1e6 * (self.cpu - before.cpu) / jobs,
        }


def mix_per_job(before: dict[str, int], after: dict[str, int], jobs: int) -> dict[str, float]:
    """Commands per job by name between two ``command_mix`` snapshots, largest first."""
    spent = {name: (calls - before.get(name, 0)) / jobs for name, calls in after.items()}
    return dict(
        sorted(((k, round(v, 2)) for k, v in spent.items() if v >= 0.01), key=lambda kv: -kv[1])
    )


def process_tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        each = todo.pop()
        found.append(each)
        try:
            children = Path(f"/proc/{each}/task/{each}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(child) for child in children)
    return found


def tree_pss_mb(pid: int) -> float:
    """Proportional set size of the process tree: shared pages counted once in all."""
    total = 0
    for each in process_tree(pid):
        try:
            for line in Path(f"/proc/{each}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def tree_cpu_seconds(pid: int) -> float:
    total = 0
    for each in process_tree(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"benchmark timed out waiting for {what}")
        time.sleep(0.005)


class Run:
    """One repetition of one system against the shared servers."""

    def __init__(self, system: str, env: dict[str, str], broker: Any, counter: Any, workdir: Path):
        self.system = system
        self.env = env
        self.broker = broker
        self.counter = counter
        self.workdir = workdir

    def child(self, mode: str, jobs: int) -> dict[str, Any]:
        argv = [sys.executable, "-m", "bench.compare", "--produce", self.system, mode, str(jobs)]
        done = subprocess.run(
            argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=900, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"{self.system} producer ({mode}) failed:\n{done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    def done(self) -> int:
        return int(self.counter.get("done") or 0)

    def measure(self, jobs: int, latency_jobs: int, idle_seconds: float) -> dict[str, Any]:
        self.broker.flushall()
        self.counter.flushall()
        delay = self.child("delay", jobs)
        self.broker.flushall()
        plain = self.child("plain", jobs) if self.system == "worker_app" else delay
        self.broker.flushall()
        floor = self.child("floor", jobs) if self.system == "worker_app" else None
        self.broker.flushall()
        batch = self.child("batch", jobs)
        log = open(self.workdir / f"{self.system}.log", "ab")  # noqa: SIM115 - closed below
        worker = subprocess.Popen(
            WORKERS[self.system], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        peak = [0.0]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak[0] = max(peak[0], tree_pss_mb(worker.pid))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            wait(lambda: self.done() >= 1, 120, f"{self.system} to start working")
            first, before = self.done(), Server.snapshot(self.broker)
            started = time.perf_counter()
            wait(lambda: self.done() >= jobs, 900, f"{self.system} to drain {jobs} jobs")
            drain = (jobs - first) / (time.perf_counter() - started)
            drained = Server.snapshot(self.broker).since(before, jobs - first)
            sampling.set()
            time.sleep(1.0)  # let the worker settle into idling
            cpu, wall = tree_cpu_seconds(worker.pid), time.monotonic()
            time.sleep(idle_seconds)
            idle = 100.0 * (tree_cpu_seconds(worker.pid) - cpu) / (time.monotonic() - wall)
            self.counter.delete("latency")
            ran = self.done()
            self.child("latency", latency_jobs)
            wait(lambda: self.done() >= ran + latency_jobs, 120, "the latency jobs")
            waits = sorted(1000.0 * float(x) for x in self.counter.lrange("latency", 0, -1))
        finally:
            sampling.set()
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            log.close()
        return {
            "enqueue_delay_per_s": delay["rate"],
            "enqueue_per_s": plain["rate"],
            # worker_app: the publish script alone, no message building (see _floor).
            "enqueue_floor_per_s": floor["rate"] if floor else 0.0,
            "enqueue_batch_per_s": batch["rate"],
            "drain_per_s": drain,
            "latency_ms_p50": statistics.median(waits),
            "latency_ms_p99": waits[min(len(waits) - 1, int(len(waits) * 0.99))],
            # Enqueue by .delay() (Dramatiq: .send()) plus the worker's share, per job.
            "redis_cpu_us_per_job": delay["redis_cpu_us"] + drained["redis_cpu_us"],
            "round_trips_per_job": delay["round_trips"] + drained["round_trips"],
            "round_trips_enqueue": delay["round_trips"],
            "round_trips_worker": drained["round_trips"],
            "commands_per_job": delay["commands"] + drained["commands"],
            "commands_enqueue": delay["commands"],
            "commands_worker": drained["commands"],
            "mix_enqueue": delay["mix"],
            "mix_worker": drained["mix"],
            "peak_pss_mb": peak[0],
            "idle_cpu_percent": idle,
        }


FIGURES = (
    # name, unit, True when higher is better
    ("enqueue_delay_per_s", "jobs/s", True),
    ("enqueue_per_s", "jobs/s", True),
    ("enqueue_batch_per_s", "jobs/s", True),
    ("drain_per_s", "jobs/s", True),
    ("latency_ms_p50", "ms", False),
    ("latency_ms_p99", "ms", False),
    ("redis_cpu_us_per_job", "us", False),
    ("round_trips_per_job", "trips", False),
    ("commands_per_job", "cmds", False),
    ("peak_pss_mb", "MiB", False),
    ("idle_cpu_percent", "% core", False),
)


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for system, runs in results.items():
        summary[system] = {
            # Per repetition (systems run side by side within one), and the last one's mixes.
            "drain_per_s_by_rep": [run["drain_per_s"] for run in runs],
            "mix_enqueue": runs[-1]["mix_enqueue"],
            "mix_worker": runs[-1]["mix_worker"],
        }
        extra = (
            "commands_enqueue",
            "commands_worker",
            "round_trips_enqueue",
            "round_trips_worker",
            "enqueue_floor_per_s",
        )
        for name in (*(figure[0] for figure in FIGURES), *extra):
            values = [run[name] for run in runs]
            summary[system][name] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
    return summary


def table(summary: dict[str, Any]) -> str:
    def cell(system: str, name: str) -> float:
        return float(summary[system][name]["median"])

    lines = [
        f"{'figure':<31} {'worker_app':>12} {'spread':>15} {'celery':>10} {'dramatiq':>10} "
        f"{'vs celery':>10} {'vs dramatiq':>12}"
    ]
    for name, unit, _ in FIGURES:
        ours, base, peer = (cell(s, name) for s in SYSTEMS)
        low, high = summary["worker_app"][name]["min"], summary["worker_app"][name]["max"]
        lines.append(
            f"{name + ' (' + unit + ')':<31} {ours:>12.1f} {f'{low:.1f}-{high:.1f}':>15} "
            f"{base:>10.1f} {peer:>10.1f} {ours / base if base else 0:>9.2f}x "
            f"{ours / peer if peer else 0:>11.2f}x"
        )
    enq, work = cell("worker_app", "commands_enqueue"), cell("worker_app", "commands_worker")
    lines.append(f"worker_app commands per job: {enq:.1f} enqueue + {work:.1f} worker")
    for system in SYSTEMS:
        trips = (cell(system, "round_trips_enqueue"), cell(system, "round_trips_worker"))
        lines.append(
            f"{system} round trips per job: {trips[0]:.2f} enqueue + {trips[1]:.2f} worker"
        )
    for side in ("enqueue", "worker"):
        mix = summary["worker_app"][f"mix_{side}"]
        lines.append(f"  {side}: " + ", ".join(f"{k} {v:g}" for k, v in mix.items()))
    ratios = [
        ours / base
        for ours, base in zip(
            summary["worker_app"]["drain_per_s_by_rep"],
            summary["celery"]["drain_per_s_by_rep"],
            strict=True,
        )
    ]
    lines.append(
        "drain vs vanilla Celery, each repetition: "
        + ", ".join(f"{r:.2f}x" for r in ratios)
        + f" (median {statistics.median(ratios):.2f}x)"
    )
    lines.append(
        ".delay() vs vanilla .delay(): "
        f"{cell('worker_app', 'enqueue_delay_per_s') / cell('celery', 'enqueue_delay_per_s'):.2f}x"
    )
    floor = cell("worker_app", "enqueue_floor_per_s")
    lines.append(
        f"publish script alone (a message and record built once): {floor:.0f} jobs/s, "
        f"{floor / cell('celery', 'enqueue_delay_per_s'):.2f}x vanilla .delay(); worker_app's "
        f".delay() reaches {cell('worker_app', 'enqueue_delay_per_s') / floor:.0%} of it"
    )
    lines.append(
        "enqueue_many vs vanilla .delay() loop: "
        f"{cell('worker_app', 'enqueue_batch_per_s') / cell('celery', 'enqueue_per_s'):.1f}x"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer jobs, one rep")
    parser.add_argument("--jobs", type=int, help="jobs per drain (default 20000, quick 3000)")
    parser.add_argument("--reps", type=int, help="repetitions (default 3, quick 1)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--produce", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        system, mode, jobs = args.produce
        produce(system, mode, int(jobs))
        return
    jobs = args.jobs or (3000 if args.quick else 20000)
    reps = args.reps or (1 if args.quick else 3)
    latency_jobs, idle_seconds = (100, 3.0) if args.quick else (300, 10.0)

    import redis

    from worker_app.cli.devredis import RedisServer

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        broker_server = RedisServer(workdir / "broker", appendonly=False)
        counter_server = RedisServer(workdir / "counter", appendonly=False)
        broker_server.start()
        counter_server.start()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ASYNQ_")},
            "PYTHONPATH": str(ROOT),
            "APP_ENV": "test",
            "LOG_LEVEL": "warning",
            "REDIS_URL": broker_server.url,
            "BENCH_BROKER_URL": broker_server.url,
            "BENCH_COUNTER_URL": counter_server.url,
        }
        broker = redis.Redis.from_url(broker_server.url)
        counter = redis.Redis.from_url(counter_server.url)
        results: dict[str, list[dict[str, Any]]] = {system: [] for system in SYSTEMS}
        try:
            for rep in range(reps):
                for system in SYSTEMS:
                    figures = Run(system, env, broker, counter, workdir).measure(
                        jobs, latency_jobs, idle_seconds
                    )
                    results[system].append(figures)
                    print(
                        f"rep {rep + 1}/{reps} {system}: "
                        + ", ".join(
                            f"{k} {v:.1f}" for k, v in figures.items() if isinstance(v, float | int)
                        ),
                        flush=True,
                    )
        finally:
            broker_server.stop()
            counter_server.stop()
    summary = summarize(results)
    print(f"\n{jobs} jobs per drain, {reps} repetition(s), medians; spread is worker_app's range")
    print(table(summary))
    if args.json:
        args.json.write_text(
            json.dumps({"jobs": jobs, "repetitions": reps, "summary": summary}, indent=2)
        )


if __name__ == "__main__":
    main()
