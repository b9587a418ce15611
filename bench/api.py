"""Job API benchmark: ``POST /api/jobs`` from concurrent clients against one uvicorn process.

    python -m bench.api [--clients 20] [--seconds 20] [--json PATH]

One private ``redis-server``, one ``uvicorn worker_app.api:app`` process (no worker: the jobs
are only enqueued), and a load generator in a process of its own: ``--clients`` keep-alive
connections, each sending its next request as soon as the last answer arrived. Prints requests
per second, the latency percentiles, and, measured in the same run for comparison, ``enqueue()``
of the same job in one process (jobs/s).
"""

from __future__ import annotations

import argparse
import asyncio
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
TOKEN = "bench-token-0123456789abcdef"
TASK = "alerts.send"
PAYLOAD = {"user_id": 7, "message": "disk almost full"}


async def _client(port: int, deadline: float, latencies: list[float], errors: list[int]) -> None:
    body = json.dumps({"type": TASK, "payload": PAYLOAD}).encode()
    request = (
        b"POST /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            status = int(status_line.split()[1])
            if status != 202:
                errors.append(status)
    finally:
        writer.close()


def load(port: int, clients: int, seconds: float) -> dict[str, Any]:
    """Child process: ``clients`` connections for ``seconds``; the figures as a dict."""

    async def run() -> tuple[list[float], list[int], float]:
        latencies: list[float] = []
        errors: list[int] = []
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(_client(port, deadline, latencies, errors) for _ in range(clients)))
        return latencies, errors, time.perf_counter() - started

    latencies, errors, elapsed = asyncio.run(run())
    latencies.sort()
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "requests": len(latencies),
        "errors": len(errors),
    }


def enqueue_rate(jobs: int) -> float:
    """Child process: ``enqueue()`` of the same job, one at a time, in jobs/s."""
    from worker_app.producer.client import enqueue

    enqueue(TASK, PAYLOAD)
    started = time.perf_counter()
    for _ in range(jobs):
        enqueue(TASK, PAYLOAD)
    return jobs / (time.perf_counter() - started)


def _wait_up(port: int, api: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise SystemExit(f"the API exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit("the API did not answer within 60 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[0] == "load":
            figures = load(int(args.child[1]), int(args.child[2]), float(args.child[3]))
        else:
            figures = {"enqueue_per_s": enqueue_rate(int(args.child[1]))}
        print(json.dumps(figures))
        return

    from worker_app.cli.devredis import RedisServer, free_port

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False)
        server.start()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ASYNQ_")},
            "PYTHONPATH": str(ROOT),
            "APP_ENV": "test",
            "LOG_LEVEL": "warning",
            "REDIS_URL": server.url,
            "API_TOKEN": TOKEN,
        }
        port = free_port()
        log = Path(tmp) / "api.log"
        with open(log, "wb") as out:
            api = subprocess.Popen(
                [
                    str(BIN / "uvicorn"),
                    "worker_app.api:app",
                    "--port",
                    str(port),
                    "--no-access-log",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_up(port, api, log)

            def child(*argv: str) -> dict[str, Any]:
                done = subprocess.run(
                    [sys.executable, "-m", "bench.api", "--child", *argv],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                    check=False,
                )
                if done.returncode != 0:
                    raise SystemExit(f"bench.api {argv[0]} failed:\n{done.stderr[-2000:]}")
                result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
                return result

            child("load", str(port), str(args.clients), "2")  # warm-up
            figures = child("load", str(port), str(args.clients), str(args.seconds))
            figures.update(child("enqueue", "3000"))
        finally:
            api.terminate()
            api.wait(timeout=30)
            server.stop()
    print(
        f"POST /api/jobs, {args.clients} clients, one uvicorn process, {args.seconds:g} s: "
        f"{figures['requests_per_s']:.0f} req/s, p50 {figures['p50_ms']:.1f} ms, "
        f"p99 {figures['p99_ms']:.1f} ms, {figures['errors']} non-202 answers; "
        f"enqueue() in one process: {figures['enqueue_per_s']:.0f} jobs/s "
        f"({figures['enqueue_per_s'] / figures['requests_per_s']:.1f}x the API)"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
