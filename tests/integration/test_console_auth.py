"""The console's login, sessions, CSRF checks and error pages, over HTTP against real APIs."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.helpers.env import child_env
from tests.helpers.processes import API_TOKEN, ApiServer
from worker_app.cli.devredis import RedisServer
from worker_app.dlq import entries, manage
from worker_app.dlq.entries import Entry

BEARER = {"Authorization": f"Bearer {API_TOKEN}"}
HTML = {"Accept": "text/html"}
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def server(tmp: Path, **env: str) -> ApiServer:
    settings = child_env(**env)
    if "API_TOKEN" not in env:
        settings.pop("API_TOKEN", None)
    return ApiServer(tmp / "api.log", settings).start()


@pytest.fixture(scope="module")
def open_api(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """The API with no API_TOKEN, as in development."""
    api = server(tmp_path_factory.mktemp("open-api"))
    yield api
    api.stop()


@contextmanager
def log_in(api: ApiServer) -> Iterator[httpx.Client]:
    """A client holding a console session."""
    with httpx.Client(base_url=api.url, headers=HTML, timeout=10) as client:
        answer = client.post("/ui/login", data={"token": API_TOKEN, "next": "/ui/dlq"})
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/dlq"
        yield client


def csrf_of(client: httpx.Client, path: str = "/ui/dlq") -> str:
    found = CSRF.search(client.get(path).text)
    assert found, "the page has no form token"
    return found.group(1)


def seed() -> str:
    task_id = f"console-auth-{uuid.uuid4()}"
    entries.store().add(Entry(task_id=task_id, task_name="console.check", reason="permanent_error"))
    return task_id


def test_without_credentials_html_goes_to_login_and_other_clients_get_401(api: ApiServer) -> None:
    for path in ("/ui/", "/ui/jobs?status=failed", "/ui/dlq", "/ui/fragments/queues"):
        page = httpx.get(api.url + path, headers=HTML)
        assert page.status_code == 303, path
        assert page.headers["location"] == f"/ui/login?next={quote(path, safe='')}"
        plain = httpx.get(api.url + path)
        assert plain.status_code == 401 and "log in" in plain.json()["error"], path
        wrong = httpx.get(api.url + path, headers={**HTML, "Authorization": "Bearer nope"})
        assert wrong.status_code == 401, path
        assert httpx.get(api.url + path, headers=BEARER).status_code == 200, path
    refused = httpx.post(f"{api.url}/ui/dlq/x/delete", data={"csrf": "x"})
    assert refused.status_code == 401


def test_a_session_starts_with_the_token_and_ends_with_logout(api: ApiServer) -> None:
    with httpx.Client(base_url=api.url, headers=HTML, timeout=10) as client:
        wrong = client.post("/ui/login", data={"token": "not-the-token-at-all"})
        assert wrong.status_code == 401 and "That is not the API token." in wrong.text
        done = client.post("/ui/login", data={"token": API_TOKEN, "next": "/ui/jobs"})
        assert done.status_code == 303 and done.headers["location"] == "/ui/jobs"
        cookie = done.headers["set-cookie"]
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/ui", "Max-Age=43200"):
            assert attribute in cookie
        assert API_TOKEN not in cookie
        assert client.get("/ui/jobs").status_code == 200

        value = client.cookies["worker_app_console"]
        tampered = value[:-1] + ("0" if value[-1] != "0" else "1")
        forged = httpx.get(f"{api.url}/ui/", headers=HTML, cookies={"worker_app_console": tampered})
        assert forged.status_code == 303

        out = client.post("/ui/logout", data={"csrf": csrf_of(client)})
        assert out.status_code == 303 and out.headers["location"] == "/ui/login?done=logged_out"
        assert client.get("/ui/jobs").status_code == 303
    log = api.log_path.read_text()
    assert API_TOKEN not in log and "not-the-token-at-all" not in log
    assert "console login refused: wrong token" in log


def test_actions_need_this_sessions_form_token(api: ApiServer) -> None:
    task_id = seed()
    with log_in(api) as client, log_in(api) as other:
        path = f"/ui/dlq/{task_id}/delete"
        assert client.post(path, data={}).status_code == 403
        assert client.post(path, data={"csrf": csrf_of(other)}).status_code == 403
        assert manage.get(task_id) is not None
        done = client.post(path, data={"csrf": csrf_of(client)})
        assert done.status_code == 303 and done.headers["location"] == "/ui/dlq?done=deleted&n=1"
    assert manage.get(task_id) is None
    # A bearer caller is no browser a page could forge a form for: no form token needed.
    task_id = seed()
    answer = httpx.post(f"{api.url}/ui/dlq/{task_id}/delete", headers=BEARER)
    assert answer.status_code == 303 and manage.get(task_id) is None


def test_login_sends_people_only_to_console_pages(api: ApiServer) -> None:
    for target in ("https://evil.example/", "//evil.example/ui/", "/ui/\\evil", "/api/jobs"):
        answer = httpx.post(f"{api.url}/ui/login", data={"token": API_TOKEN, "next": target})
        assert answer.headers["location"] == "/ui/", target


@pytest.mark.parametrize(
    ("method", "path", "status", "says"),
    [
        ("GET", "/ui/jobs?status=lost", 422, "status must be one of pending"),
        ("GET", "/ui/jobs?limit=7", 422, "limit must be one of 25, 50, 100, 200"),
        ("GET", "/ui/jobs?cursor=somewhere", 422, "start from the first page"),
        ("GET", "/ui/dlq?reason=bad_luck", 422, "reason must be one of retries_exhausted"),
        ("GET", f"/ui/jobs?type={'x' * 201}", 422, "type is longer than 200 characters"),
        ("GET", "/ui/jobs/no-such-job", 404, "No job &#39;no-such-job&#39;"),
        ("GET", "/ui/dlq/no-such-entry", 404, "No dead-letter entry &#39;no-such-entry&#39;"),
        ("GET", "/ui/nowhere", 404, "No such page."),
        ("POST", "/ui/dlq/no-such-entry/requeue", 404, "it was already handled"),
        ("POST", "/ui/dlq/requeue", 409, "Choose a filter first"),
        ("POST", "/ui/dlq/purge", 409, "Choose a filter first"),
    ],
)
def test_bad_input_gets_an_error_page(
    api: ApiServer, method: str, path: str, status: int, says: str
) -> None:
    with log_in(api) as client:
        data = {"csrf": csrf_of(client)} if method == "POST" else None
        answer = client.request(method, path, data=data)
    assert answer.status_code == status
    assert answer.headers["content-type"].startswith("text/html")
    assert says in answer.text and "Traceback" not in answer.text


def test_a_form_that_is_not_a_form_is_refused_with_a_page(api: ApiServer) -> None:
    with log_in(api) as client:
        answer = client.post("/ui/dlq/purge", json={"all": "1"})
        assert answer.status_code == 422 and "expected a form" in answer.text
        big = client.post("/ui/dlq/purge", data={"csrf": "x" * 20_000})
        assert big.status_code == 422 and "larger than" in big.text


def test_without_a_token_the_console_is_open_and_forms_still_need_their_token(
    open_api: ApiServer,
) -> None:
    with httpx.Client(base_url=open_api.url, headers=HTML, timeout=10) as client:
        first = client.get("/ui/")
        assert first.status_code == 200 and "HttpOnly" in first.headers["set-cookie"]
        assert client.get("/ui/login").status_code == 303
        task_id = seed()
        assert client.post(f"/ui/dlq/{task_id}/delete", data={}).status_code == 403
        done = client.post(f"/ui/dlq/{task_id}/delete", data={"csrf": csrf_of(client)})
        assert done.status_code == 303 and manage.get(task_id) is None


def test_pages_say_so_when_redis_is_down(tmp_path: Path) -> None:
    api = server(tmp_path, REDIS_URL="redis://127.0.0.1:1/0", API_TOKEN=API_TOKEN)
    try:
        for path in ("/ui/", "/ui/jobs", "/ui/dlq"):
            answer = httpx.get(api.url + path, headers={**BEARER, **HTML}, timeout=30)
            assert answer.status_code == 503, path
            assert "Redis is unreachable; try again shortly." in answer.text
        assert httpx.get(f"{api.url}/ui/login").status_code == 200
    finally:
        api.stop()


def test_pages_carry_a_content_security_policy(api: ApiServer) -> None:
    answer = httpx.get(f"{api.url}/ui/", headers=BEARER)
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    for asset in ("console.js", "console.css"):
        assert httpx.get(f"{api.url}/ui/static/{asset}").status_code == 200
