"""How fast the console's pages load with 10,000 job records and 10,000 dead letters.

The data is written through the real stores into database 1 of the private Redis, which only
this module uses (and empties afterwards), so the rest of the suite never sees it. Medians are
printed and written to ``artifacts/console/load-times.txt``; the only assertion is a generous
bound that catches a page gone quadratic, not a benchmark.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from functools import partial

import httpx
import pytest
import redis
from playwright.sync_api import Browser, Page, expect

from tests.helpers.browser import ARTIFACTS, chromium, screenshot_path
from tests.helpers.env import child_env
from tests.helpers.processes import API_TOKEN, ApiServer
from worker_app import keys
from worker_app.cli.devredis import RedisServer
from worker_app.dlq.entries import REASONS, Entry, Store
from worker_app.jobs.records import JobStore

JOBS = 10_000
DEAD_LETTERS = 10_000
TYPES = ("seed.report", "seed.email", "seed.invoice", "seed.sync", "seed.export")
QUEUES = ("critical", "default", "low")
BROWSER_LOADS = 5
HTTP_LOADS = 7
#: Seconds a median may take before the test fails: ten times the one-second goal, so only a
#: page that has stopped scaling fails, never a busy machine.
BOUND = 10.0
TRACEBACK = "".join(
    f'  File "/srv/app/seed/step{n}.py", line {10 + n}, in step{n}\n    step{n + 1}(payload)\n'
    for n in range(12)
)


def seed_jobs(client: redis.Redis) -> None:
    store = JobStore(client, retention_seconds=86_400)
    for n in range(JOBS):
        job_id = f"seed-job-{n:05d}"
        payload = {"args": [n], "kwargs": {"account": f"acct-{n % 97}", "note": "x" * 80}}
        store.published(
            job_id, TYPES[n % 5], QUEUES[n % 3], "pending", time.time(), 0, payload, reset=True
        )
        if n % 10 == 0:
            continue  # still waiting
        store.started(job_id, 1, f"worker-{n % 4}@seed", QUEUES[n % 3], 0.01)
        if n % 10 == 1:
            continue  # still running
        if n % 10 == 2:
            store.finished(job_id, "failed", last_error=f"UpstreamError: status {500 + n % 4}")
        else:
            store.finished(job_id, "succeeded", result=f'{{"rows": {n}}}')


def seed_dead_letters(client: redis.Redis) -> None:
    store = Store(client, retention_seconds=90 * 86_400, max_size=DEAD_LETTERS)
    start = time.time() - DEAD_LETTERS
    for n in range(DEAD_LETTERS):
        store.add(
            Entry(
                task_id=f"seed-dead-{n:05d}",
                task_name=TYPES[n % 5],
                reason=REASONS[n % 3],
                args=[n, {"account": f"acct-{n % 97}"}],
                queue=QUEUES[n % 3],
                headers={"x-published-at": start + n},
                exc_type="UpstreamError",
                exc_message=f"upstream answered {500 + n % 4} for account acct-{n % 97}",
                traceback=f"Traceback (most recent call last):\n{TRACEBACK}UpstreamError: ...",
                attempts=4,
                failed_at=start + n,
                hostname=f"worker-{n % 4}@seed",
            )
        )


@pytest.fixture(scope="module")
def loaded_api(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    url = redis_server.url.rsplit("/", 1)[0] + "/1"
    client = redis.Redis.from_url(url)
    assert client.dbsize() == 0, "database 1 of the private Redis is meant for this module only"
    seed_jobs(client)
    seed_dead_letters(client)
    assert client.zcard(keys.JOBS_INDEX) == JOBS and client.zcard(keys.DLQ_INDEX) == DEAD_LETTERS
    env = child_env(API_TOKEN=API_TOKEN, REDIS_URL=url)
    api = ApiServer(tmp_path_factory.mktemp("loaded-api") / "api.log", env).start()
    yield api
    api.stop()
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def median_seconds(load: Callable[[], object], times: int) -> float:
    samples = []
    for _ in range(times):
        began = time.perf_counter()
        load()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def pages(page: Page) -> list[tuple[str, str]]:
    """The pages measured: every view, filtered and deep, with the data seeded."""
    page.goto("/ui/jobs")
    second = page.locator("a[rel=next]").get_attribute("href")
    assert second, "10,000 jobs make more than one page"
    return [
        ("queues", "/ui/"),
        ("jobs", "/ui/jobs"),
        ("jobs, page 2", second),
        ("jobs, 200 a page", "/ui/jobs?limit=200"),
        ("jobs, failed seed.invoice", "/ui/jobs?status=failed&type=seed.invoice"),
        # No failed job is a seed.report: the listing reads all 1,000 failed records to say so.
        ("jobs, filter matching none", "/ui/jobs?status=failed&type=seed.report"),
        ("job", "/ui/jobs/seed-job-04242"),
        ("dead letters", "/ui/dlq"),
        ("dead letters, 200 a page", "/ui/dlq?limit=200"),
        ("dead letters, queue", "/ui/dlq?queue=low"),
        ("dead letters, reason + task", "/ui/dlq?reason=permanent_error&task=seed.email"),
        ("dead letter", "/ui/dlq/seed-dead-04242"),
    ]


@pytest.mark.timeout(300)  # seeding 20,000 records takes a while on a busy machine
def test_pages_load_fast_with_10k_jobs_and_10k_dead_letters(
    loaded_api: ApiServer, browser: Browser, capsys: pytest.CaptureFixture[str]
) -> None:
    context = browser.new_context(base_url=loaded_api.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto("/ui/login")
    page.fill("input[name=token]", API_TOKEN)
    page.click("form.login button[type=submit]")
    expect(page.locator("form.logout")).to_be_visible()

    rows = []
    with httpx.Client(
        base_url=loaded_api.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30
    ) as http:
        for name, path in pages(page):
            assert http.get(path).status_code == 200, path
            server = median_seconds(partial(http.get, path), HTTP_LOADS)
            loaded = median_seconds(partial(page.goto, path, wait_until="load"), BROWSER_LOADS)
            rows.append((name, path, server, loaded))
    page.goto("/ui/jobs")
    expect(page.locator("#jobs tbody tr")).to_have_count(50)
    page.screenshot(path=screenshot_path("jobs-10k"), full_page=True)
    page.goto("/ui/dlq")
    expect(page.locator("#entries tbody tr")).to_have_count(50)
    page.screenshot(path=screenshot_path("dlq-10k"), full_page=True)
    context.close()

    report = [
        f"Console page loads with {JOBS:,} jobs and {DEAD_LETTERS:,} dead letters "
        f"(median of {HTTP_LOADS} HTTP GETs / {BROWSER_LOADS} browser loads)",
        f"{'page':<30} {'server':>9} {'browser':>9}  path",
    ]
    report += [f"{n:<30} {s * 1000:>7.0f}ms {b * 1000:>7.0f}ms  {p}" for n, p, s, b in rows]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "load-times.txt").write_text("\n".join(report) + "\n")
    with capsys.disabled():
        print("\n" + "\n".join(report))
    slow = [(name, loaded) for name, _, _, loaded in rows if loaded > BOUND]
    assert not slow, f"pages slower than {BOUND}s: {slow}"
