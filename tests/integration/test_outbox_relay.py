"""The outbox end to end: enqueue_tx in real PostgreSQL transactions, real ``worker-app outbox
relay`` processes, a real worker. A job runs exactly when its transaction committed, once, and
only after its business row is visible; relays killed or cut off from PostgreSQL lose nothing.

Every test prints what it measured (latencies, counts, duplicates recognised).
"""

from __future__ import annotations

import os
import signal
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tests.helpers import e2e_tasks
from tests.helpers.commands import start_dev
from tests.helpers.env import child_env, wait_until
from tests.helpers.outbox import RelayProcess, TcpProxy, private_database
from tests.helpers.processes import Worker
from worker_app.jobs.records import store
from worker_app.outbox import enqueue_tx

pytestmark = pytest.mark.timeout(300)

#: Commits per second in the latency test: below what one worker (4 processes) drains here.
COMMIT_RATE = 100.0

assert e2e_tasks.outbox_order  # registers the task in this process


@pytest.fixture(scope="module")
def db_url() -> Iterator[str]:
    with private_database() as url:
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY, run text NOT NULL)")
        from worker_app.outbox.sql import OutboxTable, connect, migrate

        with connect(url) as conn:
            migrate(conn, OutboxTable.parse("worker_app_outbox"))
        yield url


@pytest.fixture(scope="module")
def outbox_worker(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    log = tmp_path_factory.mktemp("outbox-worker") / "worker.log"
    proc = Worker(log, child_env(OUTBOX_DATABASE_URL=db_url), concurrency=4).start()
    yield proc
    proc.stop()


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url) as connection:
        yield connection


def relay(tmp_path: Path, db_url: str, name: str, *args: str) -> RelayProcess:
    env = child_env(OUTBOX_DATABASE_URL=db_url, LOG_LEVEL="debug")
    return RelayProcess(tmp_path / f"{name}.log", env, *args).start()


def order(conn: psycopg.Connection[Any], run: str) -> str:
    """One business row and its job, in the connection's open transaction."""
    row = conn.execute("INSERT INTO orders (run) VALUES (%s) RETURNING id", (run,)).fetchone()
    assert row is not None
    return enqueue_tx(conn, "e2e.outbox_order", {"run": run, "order_id": row[0]})


def commit_orders(
    conn: psycopg.Connection[Any], run: str, n: int, rate: float | None = None
) -> dict[str, float]:
    """``n`` committed transactions of one order each, at most ``rate`` per second; job id ->
    when its commit returned."""
    committed = {}
    began = time.monotonic()
    for i in range(n):
        if rate is not None:
            time.sleep(max(0.0, began + i / rate - time.monotonic()))
        job_id = order(conn, run)
        conn.commit()
        committed[job_id] = time.time()
    return committed


def percentile(sorted_values: list[float], share: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * share))]


def runs(client: redis.Redis, run: str) -> dict[str, int]:
    return {str(k): int(v) for k, v in client.hgetall(f"runs:{run}").items()}


def wait_all_ran(client: redis.Redis, run: str, ids: set[str], timeout: float) -> None:
    wait_until(lambda: set(runs(client, run)) >= ids, timeout, f"{len(ids)} jobs to run")


def check_exactly_once(client: redis.Redis, run: str, ids: set[str]) -> None:
    ran = runs(client, run)
    assert set(ran) == ids, f"{len(set(ran) - ids)} unexpected, {len(ids - set(ran))} missing"
    twice = {k: v for k, v in ran.items() if v != 1}
    assert not twice, f"{len(twice)} jobs ran more than once"
    assert client.llen(f"missing:{run}") == 0, "a job ran before its business row was visible"


def queues_drained(client: redis.Redis) -> bool:
    """No message waiting in a queue and none fetched but not yet acknowledged."""
    pipe = client.pipeline(transaction=False)
    for name in ("critical", "default", "low"):
        pipe.llen(name)
    pipe.hlen("unacked")
    return not any(pipe.execute())


def duplicates(worker: Worker) -> int:
    return len(worker.lines("duplicate delivery, not run"))


def test_rolled_back_jobs_never_run(
    tmp_path: Path,
    db_url: str,
    conn: psycopg.Connection[Any],
    outbox_worker: Worker,
    redis_client: redis.Redis,
) -> None:
    relay_proc = relay(tmp_path, db_url, "relay")
    run = f"rollback-{uuid.uuid4().hex[:8]}"
    try:
        rolled_back = set()
        for _ in range(100):
            rolled_back.add(order(conn, run))
            conn.rollback()
        # A committed job afterwards: once it has run, the relay has been past them all.
        sentinel = commit_orders(conn, run, 1)
        wait_all_ran(redis_client, run, set(sentinel), 30)
    finally:
        relay_proc.stop()
    assert set(runs(redis_client, run)) == set(sentinel)
    outbox = conn.execute(
        "SELECT count(*) FROM worker_app_outbox WHERE job_id = ANY(%s::uuid[])",
        (list(rolled_back),),
    ).fetchone()
    conn.rollback()
    assert outbox == (0,)
    print("100 rolled-back enqueue_tx: 0 jobs ran; the committed one ran once")


def test_committed_jobs_each_run_exactly_once_soon_after_commit(
    tmp_path: Path,
    db_url: str,
    conn: psycopg.Connection[Any],
    outbox_worker: Worker,
    redis_client: redis.Redis,
) -> None:
    relay_proc = relay(tmp_path, db_url, "relay")
    run = f"commit-{uuid.uuid4().hex[:8]}"
    try:
        began = time.monotonic()
        # Paced below what the worker drains, so the figure is the outbox's latency and not
        # the time jobs wait behind each other in the queue.
        committed = commit_orders(conn, run, 1000, rate=COMMIT_RATE)
        commit_seconds = time.monotonic() - began
        wait_all_ran(redis_client, run, set(committed), 180)
        drained = time.monotonic() - began
    finally:
        relay_proc.stop()
    check_exactly_once(redis_client, run, set(committed))
    started = {k: float(v) for k, v in redis_client.hgetall(f"started:{run}").items()}
    records = store()
    published = {job: records.get(job) for job in committed}
    to_start = sorted(started[job] - at for job, at in committed.items())
    to_publish = sorted(
        job.created_at - committed[job_id] for job_id, job in published.items() if job
    )
    median = statistics.median(to_start)
    print(
        f"1000 committed enqueue_tx at ~{COMMIT_RATE:.0f}/s ({commit_seconds:.1f}s), all ran "
        f"once {drained:.1f}s after the first commit; commit-to-start median "
        f"{median * 1000:.0f} ms, p95 {percentile(to_start, 0.95) * 1000:.0f} ms, max "
        f"{to_start[-1] * 1000:.0f} ms; commit-to-publish median "
        f"{statistics.median(to_publish) * 1000:.0f} ms, p95 "
        f"{percentile(to_publish, 0.95) * 1000:.0f} ms"
    )
    assert median < 10, "generous functional bound: jobs start seconds after commit, not later"


def test_two_relays_at_once_run_each_job_once(
    tmp_path: Path,
    db_url: str,
    conn: psycopg.Connection[Any],
    outbox_worker: Worker,
    redis_client: redis.Redis,
) -> None:
    first = relay(tmp_path, db_url, "first", "--batch", "10")
    second = relay(tmp_path, db_url, "second", "--batch", "10")
    run = f"two-{uuid.uuid4().hex[:8]}"
    try:
        committed = commit_orders(conn, run, 500)
        wait_all_ran(redis_client, run, set(committed), 120)
    finally:
        first.stop()
        second.stop()
    check_exactly_once(redis_client, run, set(committed))
    shares = [p.lines("stopped after relaying")[-1].split()[-2] for p in (first, second)]
    print(f"two relays: 500 jobs, each ran once; relayed {' + '.join(shares)}")


def unsent(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as other:
        row = other.execute("SELECT count(*) FROM worker_app_outbox WHERE sent_at IS NULL")
        return int(row.fetchone()[0])  # type: ignore[index]


PUBLISHED = r"published e2e\.outbox_order"


def _in_transaction(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'worker-app outbox relay' AND state = 'idle in transaction'"
    ).fetchone()
    return bool(row and row[0])


def test_a_relay_killed_mid_batch_loses_nothing_and_runs_nothing_twice(
    tmp_path: Path,
    db_url: str,
    conn: psycopg.Connection[Any],
    outbox_worker: Worker,
    redis_client: redis.Redis,
) -> None:
    doomed = relay(tmp_path, db_url, "doomed", "--batch", "50")
    assert doomed.process is not None
    run = f"killed-{uuid.uuid4().hex[:8]}"
    before = duplicates(outbox_worker)
    doomed.process.send_signal(signal.SIGSTOP)  # a backlog of 600 rows waits for it
    committed = commit_orders(conn, run, 600)
    with psycopg.connect(db_url, autocommit=True) as watcher:
        # Let the relay run until it is caught holding a claimed batch of which it has
        # published some jobs already, then kill it there.
        deadline = time.monotonic() + 60
        while True:
            doomed.process.send_signal(signal.SIGCONT)
            time.sleep(0.005)
            doomed.process.send_signal(signal.SIGSTOP)
            if _in_transaction(watcher) and len(doomed.lines(PUBLISHED)) >= 3:
                break
            assert time.monotonic() < deadline, "never caught the relay inside a batch"
        doomed.kill()
    left = unsent(db_url)
    rescuer = relay(tmp_path, db_url, "rescuer", "--batch", "50")
    try:
        wait_all_ran(redis_client, run, set(committed), 120)
    finally:
        rescuer.stop()
    wait_until(lambda: unsent(db_url) == 0, 10, "every row to be marked sent")
    wait_until(lambda: queues_drained(redis_client), 30, "every delivery to be handled")
    check_exactly_once(redis_client, run, set(committed))
    published, repeats = len(doomed.lines(PUBLISHED)), duplicates(outbox_worker) - before
    print(
        f"relay SIGKILLed inside a batch with {left} rows unsent, after publishing {published} "
        f"of them: all 600 ran once; {repeats} re-published deliveries recognised, not run"
    )
    # Each publish is logged before it is sent, so all but the last logged ones went out.
    assert repeats >= published - 1


def test_postgresql_outage_one_line_each_way_then_catch_up(
    tmp_path: Path,
    db_url: str,
    conn: psycopg.Connection[Any],
    outbox_worker: Worker,
    redis_client: redis.Redis,
) -> None:
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    proxy = TcpProxy((str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432)))
    proxy.start()
    via_proxy = (
        f"postgresql://{info.get('user') or 'postgres'}@127.0.0.1:{proxy.port}/{info['dbname']}"
    )
    relay_proc = relay(tmp_path, via_proxy, "relay")
    run = f"outage-{uuid.uuid4().hex[:8]}"
    try:
        before = commit_orders(conn, run, 20)
        wait_all_ran(redis_client, run, set(before), 30)
        proxy.cut()
        during = commit_orders(conn, run, 50)  # straight to PostgreSQL, which is fine
        wait_until(lambda: relay_proc.lines("PostgreSQL unreachable"), 30, "the outage line")
        time.sleep(5)  # an outage of some seconds: several reconnection attempts fail
        assert len(relay_proc.lines("PostgreSQL unreachable")) == 1
        assert not set(runs(redis_client, run)) & set(during)
        proxy.restore()
        restored = time.monotonic()
        wait_all_ran(redis_client, run, set(before) | set(during), 60)
        caught_up = time.monotonic() - restored
        wait_until(lambda: relay_proc.lines("reachable again"), 10, "the recovery line")
        assert relay_proc.process is not None and relay_proc.process.poll() is None
    finally:
        relay_proc.stop()
        proxy.stop()
    check_exactly_once(redis_client, run, set(before) | set(during))
    assert len(relay_proc.lines("PostgreSQL unreachable")) == 1
    assert len(relay_proc.lines("reachable again")) == 1
    print(
        f"PostgreSQL cut off from the relay for ~5s: 50 jobs committed meanwhile ran once, "
        f"{caught_up:.1f}s after it came back; one log line each way"
    )


def test_dev_creates_the_table_and_relays_it(
    tmp_path: Path, db_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker_app.cli.devredis import free_port
    from worker_app.config import get_settings

    env = child_env(OUTBOX_DATABASE_URL=db_url, OUTBOX_TABLE="dev.outbox", APP_ENV="development")
    log_path = tmp_path / "dev.log"
    dev = start_dev(tmp_path, env, "--api-port", str(free_port()))
    try:
        wait_until(lambda: " ready." in log_path.read_text(), 60, "the dev worker")
        assert 'outbox relay publishing committed rows of "dev"."outbox"' in log_path.read_text()
        monkeypatch.setenv("OUTBOX_TABLE", "dev.outbox")
        get_settings.cache_clear()
        try:
            with psycopg.connect(db_url) as conn:
                job_id = enqueue_tx(conn, "maintenance.cleanup", {"older_than_days": 90})
        finally:
            monkeypatch.delenv("OUTBOX_TABLE")
            get_settings.cache_clear()
        wait_until(
            lambda: (job := store().get(job_id)) is not None and job.status == "succeeded",
            30,
            "the job to run",
        )
        # Published by the dev process's relay (run by whichever worker took it first).
        assert f"published maintenance.cleanup[{job_id}]" in log_path.read_text()
        os.killpg(dev.pid, signal.SIGINT)
        assert dev.wait(timeout=20) == 0
        assert "Traceback" not in log_path.read_text()
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()


def test_the_job_continues_the_trace_of_the_transaction_that_enqueued_it(
    tmp_path: Path,
    db_url: str,
    conn: psycopg.Connection[Any],
    outbox_worker: Worker,
    redis_client: redis.Redis,
) -> None:
    from opentelemetry import context, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    trace_id = uuid.uuid4().int
    handler_span = SpanContext(trace_id, 0x1234, is_remote=False, trace_flags=TraceFlags(1))
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(handler_span)))
    try:
        run = f"trace-{uuid.uuid4().hex[:8]}"
        committed = commit_orders(conn, run, 1)
    finally:
        context.detach(token)
    relay_proc = relay(tmp_path, db_url, "relay")
    try:
        wait_all_ran(redis_client, run, set(committed), 30)
    finally:
        relay_proc.stop()
    (job_id,) = committed
    assert outbox_worker.lines(rf"{job_id} .*trace={trace_id:032x}\] started")


def test_a_row_that_can_never_be_published_is_dead_lettered_not_retried_forever(
    tmp_path: Path,
    db_url: str,
    conn: psycopg.Connection[Any],
    outbox_worker: Worker,
    redis_client: redis.Redis,
) -> None:
    from worker_app.dlq import manage

    stranded = str(uuid.uuid4())  # its queue was removed from ASYNQ_QUEUES after it committed
    conn.execute(
        "INSERT INTO worker_app_outbox (job_id, task, queue, payload) "
        "VALUES (%s, 'e2e.outbox_order', 'retired', '{}')",
        (stranded,),
    )
    conn.commit()
    run = f"stranded-{uuid.uuid4().hex[:8]}"
    relay_proc = relay(tmp_path, db_url, "relay")
    try:
        wait_until(lambda: manage.get(stranded) is not None, 30, "the row to be dead-lettered")
        after = commit_orders(conn, run, 5)  # the relay goes on with the next rows
        wait_all_ran(redis_client, run, set(after), 30)
    finally:
        relay_proc.stop()
    entry = manage.get(stranded)
    assert entry is not None and entry.reason == "permanent_error" and entry.queue == "retired"
    assert relay_proc.lines(rf"outbox row {stranded} .*cannot be published")
    assert unsent(db_url) == 0


def test_sent_rows_are_deleted_after_the_retention(
    tmp_path: Path, db_url: str, conn: psycopg.Connection[Any], outbox_worker: Worker
) -> None:
    old, recent = str(uuid.uuid4()), str(uuid.uuid4())
    for job_id, sent in ((old, "now() - interval '25 hours'"), (recent, "now()")):
        conn.execute(
            "INSERT INTO worker_app_outbox (job_id, task, queue, payload, sent_at) "
            f"VALUES (%s, 'e2e.outbox_order', 'default', '{{}}', {sent})",
            (job_id,),
        )
    conn.commit()

    def kept() -> set[str]:
        with psycopg.connect(db_url, autocommit=True) as other:
            rows = other.execute("SELECT job_id::text FROM worker_app_outbox").fetchall()
        return {row[0] for row in rows} & {old, recent}

    relay_proc = relay(tmp_path, db_url, "relay")  # ASYNQ_RETENTION: 24h by default
    try:
        wait_until(lambda: kept() == {recent}, 30, "the row sent 25 hours ago to be deleted")
    finally:
        relay_proc.stop()


@pytest.mark.fault
def test_a_redis_outage_holds_the_rows_until_redis_returns(
    tmp_path: Path, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    from worker_app.cli.devredis import RedisServer

    private = RedisServer(tmp_path / "redis", appendonly=True)
    private.start()
    env = child_env(OUTBOX_DATABASE_URL=db_url, REDIS_URL=private.url)
    worker = Worker(tmp_path / "worker.log", env).start()
    relay_proc = RelayProcess(tmp_path / "relay.log", {**env, "LOG_LEVEL": "debug"}).start()
    client = redis.Redis.from_url(private.url, decode_responses=True)
    run = f"redis-outage-{uuid.uuid4().hex[:8]}"
    try:
        private.stop()
        during = commit_orders(conn, run, 30)
        wait_until(lambda: relay_proc.lines("Redis unreachable"), 30, "the outage line")
        time.sleep(4)  # an outage of some seconds: several attempts fail, one line is logged
        assert len(relay_proc.lines("Redis unreachable")) == 1
        assert unsent(db_url) >= 30  # nothing marked sent that was not published
        private.start()  # same port, same data
        wait_all_ran(client, run, set(during), 90)
        wait_until(lambda: relay_proc.lines("Redis reachable again"), 10, "the recovery line")
        check_exactly_once(client, run, set(during))
    finally:
        relay_proc.stop()
        worker.stop()
        client.close()
        private.stop()
    assert len(relay_proc.lines("Redis unreachable")) == 1
    print("Redis down while 30 jobs committed: the relay held them and published each once after")
