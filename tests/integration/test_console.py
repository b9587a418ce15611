"""The operator console in a real browser: a real API, a real worker and the private Redis.

Screenshots of every page land in ``artifacts/console/``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from markupsafe import escape
from playwright.sync_api import Browser, Dialog, Page, expect

from tests.helpers import e2e_tasks
from tests.helpers.browser import chromium, screenshot_path
from tests.helpers.env import wait_until
from tests.helpers.processes import API_TOKEN, ApiServer, Worker
from worker_app.dlq import manage
from worker_app.jobs import records

TASK = "e2e.first_run_fails"
# Both would set window.__xss if the page ever treated them as markup.
MARKUP = '<script>window.__xss = "script"</script><img src="x" onerror="window.__xss = \'img\'">'


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, api: ApiServer) -> Iterator[Page]:
    context = browser.new_context(base_url=api.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def dead_letter(note: str) -> str:
    """Enqueue a job that fails permanently on its first run; return its id once dead-lettered."""
    job_id = str(e2e_tasks.first_run_fails.delay(f"console:{uuid.uuid4()}", note).id)
    wait_until(lambda: manage.get(job_id) is not None, 30, f"job {job_id} to be dead-lettered")
    return job_id


def status_of(job_id: str) -> str:
    job = records.store().get(job_id)
    return job.status if job else "unknown"


def log_in(page: Page, then: str = "/ui") -> None:
    page.goto(then)
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.fill("input[name=token]", API_TOKEN)
    page.click("form.login button[type=submit]")
    expect(page.locator("form.logout")).to_be_visible()


def test_a_dead_letter_found_and_requeued_in_the_console_then_succeeds(
    worker: Worker, page: Page
) -> None:
    job_id = dead_letter("acceptance")

    page.goto("/ui")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=%2Fui%2F$"))
    page.screenshot(path=screenshot_path("login"), full_page=True)
    page.fill("input[name=token]", API_TOKEN)
    page.click("form.login button[type=submit]")

    expect(page.locator("h1")).to_have_text("Queues")
    expect(page.locator("#queues tbody tr")).to_have_count(3)
    expect(page.locator("#workers-online")).not_to_have_text("0")
    page.screenshot(path=screenshot_path("queues"), full_page=True)

    page.click("header nav >> text=Dead letters")
    page.select_option("select[name=task]", TASK)
    page.select_option("select[name=reason]", "permanent_error")
    page.click("form.filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"reason=permanent_error"))
    row = page.locator(f"tr[data-task-id='{job_id}']")
    expect(row).to_contain_text("first run failed: acceptance")
    page.screenshot(path=screenshot_path("dlq"), full_page=True)

    row.locator("a").click()
    expect(page.locator("h1")).to_contain_text(job_id)
    expect(page.locator("#entry-traceback")).to_contain_text(
        "PermanentError: first run failed: acceptance"
    )
    expect(page.locator("#entry-args")).to_contain_text("acceptance")
    expect(page.locator("#entry-headers")).to_be_visible()
    page.screenshot(path=screenshot_path("dlq-entry"), full_page=True)

    asked: list[str] = []

    def accept(dialog: Dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("#requeue")
    expect(page.locator(".notice")).to_have_text("Requeued 1 job.")
    assert asked == [f"Requeue job {job_id} on queue default?"]
    # The job's page reloads itself until the job is final.
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=30_000)
    expect(page.locator("#job-result")).to_have_text('"second run: acceptance"')
    page.screenshot(path=screenshot_path("job"), full_page=True)

    page.click("header nav >> text=Jobs")
    page.fill("input[name=type]", TASK)
    page.click("form.filters button[type=submit]")
    expect(page.locator(f"tr[data-job-id='{job_id}'] .badge")).to_have_text("succeeded")
    page.screenshot(path=screenshot_path("jobs"), full_page=True)
    assert manage.get(job_id) is None


def test_bulk_requeue_delete_and_purge_ask_first_and_act_on_the_filtered_set(
    worker: Worker, page: Page
) -> None:
    batch = [dead_letter(f"bulk {n}") for n in range(3)]
    log_in(page, f"/ui/dlq?task={TASK}")
    for job_id in batch:
        expect(page.locator(f"tr[data-task-id='{job_id}']")).to_be_visible()

    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#requeue-filtered")
    assert all(manage.get(job_id) is not None for job_id in batch), "a dismissed confirm acted"

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#requeue-filtered")
    expect(page.locator(".notice")).to_have_text("Requeued 3 jobs.")
    expect(page.locator("#entries")).to_have_count(0)
    wait_until(
        lambda: all(status_of(job_id) == "succeeded" for job_id in batch),
        30,
        "the requeued jobs to succeed",
    )

    doomed, kept = dead_letter("delete me"), dead_letter("purge me")
    page.goto(f"/ui/dlq/{doomed}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete")
    expect(page.locator(".notice")).to_have_text("Deleted 1 dead-letter entry.")
    assert manage.get(doomed) is None and manage.get(kept) is not None

    page.goto(f"/ui/dlq?task={TASK}")
    expect(page.locator("#matching")).to_have_text("1")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#purge-filtered")
    expect(page.locator(".notice")).to_have_text("Purged 1 dead-letter entry.")
    assert manage.get(kept) is None


def test_the_queues_page_refreshes_itself(worker: Worker, page: Page) -> None:
    log_in(page)
    total = page.locator("#dead-letters-total")
    before = int(total.inner_text())
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    job_id = dead_letter("live")
    expect(total).to_have_text(str(before + 1), timeout=10_000)
    assert navigations == [], "the page reloaded instead of refreshing its numbers"
    manage.delete(job_id)


def test_markup_in_arguments_and_errors_is_shown_as_text(worker: Worker, page: Page) -> None:
    job_id = dead_letter(MARKUP)
    log_in(page)
    pages = [
        f"/ui/dlq/{job_id}",
        f"/ui/dlq?task={TASK}",
        f"/ui/jobs/{job_id}",
        f"/ui/jobs?type={TASK}",
    ]
    for path in pages:
        page.goto(path)
        expect(page.locator("h1")).to_be_visible()
        assert page.evaluate("typeof window.__xss") == "undefined", path
        # Only the console's own script, no element the payload would have made.
        assert page.locator("script").count() == 1, path
        assert page.locator("img").count() == 0, path

    page.goto(f"/ui/dlq/{job_id}")
    expect(page.locator("#entry-error")).to_have_text(f"PermanentError: first run failed: {MARKUP}")
    expect(page.locator("#entry-args")).to_contain_text(json.dumps(MARKUP, ensure_ascii=False))
    expect(page.locator("#entry-traceback")).to_contain_text(MARKUP)
    page.screenshot(path=screenshot_path("escaping"), full_page=True)

    bearer = {"Authorization": f"Bearer {API_TOKEN}"}
    for path in pages:
        html = httpx.get(page.url.split("/ui")[0] + path, headers=bearer, timeout=10).text
        assert "<script>window" not in html and "<img" not in html, path
        assert str(escape(f"first run failed: {MARKUP}")[:60]) in html, path
    manage.delete(job_id)
