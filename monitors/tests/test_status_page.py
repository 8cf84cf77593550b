"""The public status page `/status/<slug>/`, its JSON twin and the shields.io badges, through the
site's URLconf and middleware, as an anonymous visitor sees them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import Tenant
from monitors.models import MonitorState
from monitors.status import INCIDENTS_SHOWN, PAGE_SIZE, public_reason
from monitors.tests.status_support import day_rollup, forget_status_pages, hour_rollup, monitor, today
from tests.support.net import free_port

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture(autouse=True)
def _no_cached_status_pages() -> Iterator[None]:
    forget_status_pages()
    yield
    forget_status_pages()


@pytest.fixture
def visitor() -> Client:
    return Client()


def cells(html: str, monitor_id: int) -> list[tuple[str, str]]:
    """The bar of monitor `monitor_id` on the page: [(css class, title)], oldest day first."""
    article = re.search(rf'<article class="monitor" id="monitor-{monitor_id}">(.*?)</article>', html, re.S)
    assert article is not None, f"monitor {monitor_id} is not on the page"
    return re.findall(r'<i class="(\w+)" title="([^"]*)"></i>', article.group(1))


def test_the_page_shows_published_monitors_with_their_90_day_bar(visitor: Client, tenant_a: Tenant) -> None:
    api = monitor(tenant_a, "API", state=MonitorState.UP)
    monitor(tenant_a, "Secret backend", published=False, state=MonitorState.UP)
    day_rollup(api, 0, checks=100, failures=0)
    day_rollup(api, 1, checks=1000, failures=5)  # 99.5 %: minor
    day_rollup(api, 2, checks=40, failures=4)  # 90 %: bad
    day_rollup(api, 89, checks=10, failures=0)  # the oldest day of the bar
    day_rollup(api, 90, checks=10, failures=10)  # one day too old: not on the bar

    response = visitor.get("/status/wonderland/", HTTP_ACCEPT=BROWSER)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "All systems operational" in html
    assert "Secret backend" not in html
    bar = cells(html, api.pk)
    assert len(bar) == 90
    assert bar[-1] == ("ok", f"{today():%Y-%m-%d}: 100.00% up")
    assert bar[-2] == ("minor", f"{today() - timedelta(days=1):%Y-%m-%d}: 99.50% up")
    assert bar[-3] == ("bad", f"{today() - timedelta(days=2):%Y-%m-%d}: 90.00% up")
    assert bar[0] == ("ok", f"{today() - timedelta(days=89):%Y-%m-%d}: 100.00% up")
    assert bar[-4] == ("none", f"{today() - timedelta(days=3):%Y-%m-%d}: no data")
    # 90 days: (1160 - 9) / 1160 checks up.
    assert "99.22 %" in html


def test_an_incident_says_since_when_and_what_kind_of_failure_never_the_target(
    visitor: Client, tenant_a: Tenant
) -> None:
    since = timezone.now() - timedelta(minutes=42)
    down = monitor(
        tenant_a,
        "Payments",
        state=MonitorState.DOWN,
        state_changed_at=since,
        target="https://payments.internal.corp.example:8443/health?token=s3cr3t",
        headers={"Authorization": "Bearer top-secret-token"},
        last_reason="timeout after 10.0 s connecting to payments.internal.corp.example:8443",
    )
    monitor(tenant_a, "Search", state=MonitorState.DOWN, last_reason="status 503, expected 200-299")
    monitor(tenant_a, "Web", state=MonitorState.UP)

    html = visitor.get("/status/wonderland/", HTTP_ACCEPT=BROWSER).content.decode()

    assert "Partial outage: 2 of 3 down" in html
    incidents = html[html.index('class="incidents"') : html.index('class="monitors"')]
    assert "<strong>Payments</strong> is down since" in incidents
    assert f"{since:%Y-%m-%d %H:%M} UTC</time>: timed out." in incidents
    assert "<strong>Search</strong> is down since" in incidents and "answered HTTP 503" in incidents
    for secret in ("payments.internal", "8443", "s3cr3t", "top-secret-token", "Bearer", "corp.example"):
        assert secret not in html
    assert down.target not in html


def test_maintenance_is_said_and_counts_as_checked(visitor: Client, tenant_a: Tenant) -> None:
    monitor(tenant_a, "One", state=MonitorState.DOWN)
    monitor(tenant_a, "Two", state=MonitorState.DOWN)
    monitor(tenant_a, "Paused", state=MonitorState.PAUSED)
    monitor(tenant_a, "Maintained", state=MonitorState.MAINTENANCE)
    monitor(tenant_a, "Maintained too", state=MonitorState.MAINTENANCE)

    html = visitor.get("/status/wonderland/").content.decode()

    assert "Partial outage: 2 of 5 down · 2 under maintenance" in html


@pytest.mark.parametrize("slug", ["nobody", "evil", "inactive"])
def test_no_status_page_answers_404_as_json_or_as_a_page_for_a_browser(
    visitor: Client, tenant_a: Tenant, tenant_b: Tenant, slug: str
) -> None:
    monitor(tenant_b, "Unpublished", published=False)  # evil published nothing
    gone = Tenant.objects.create(name="Gone", slug="inactive", active=False)
    monitor(gone, "Published but the tenant is inactive")

    as_json = visitor.get(f"/status/{slug}/")
    as_page = visitor.get(f"/status/{slug}/", HTTP_ACCEPT=BROWSER)
    twin = visitor.get(f"/status/{slug}/status.json", HTTP_ACCEPT=BROWSER)

    assert as_json.status_code == 404
    assert as_json.json()["error"]["code"] == "not_found"
    assert as_page.status_code == 404 and as_page["Content-Type"].startswith("text/html")
    assert twin.status_code == 404 and twin.json()["error"]["code"] == "not_found"


def test_tenants_are_walls(visitor: Client, tenant_a: Tenant, tenant_b: Tenant) -> None:
    ours = monitor(tenant_a, "Ours", state=MonitorState.UP)
    theirs = monitor(tenant_b, "Theirs", state=MonitorState.DOWN)

    page = visitor.get("/status/wonderland/").content.decode()
    twin = visitor.get("/status/wonderland/status.json").json()
    badge_elsewhere = visitor.get(f"/status/wonderland/badge/{theirs.pk}.json")
    their_badge = visitor.get(f"/status/evil/badge/{theirs.pk}.json")
    our_badge_by_them = visitor.get(f"/status/evil/badge/{ours.pk}.json")

    assert "Ours" in page and "Theirs" not in page
    assert [m["name"] for m in twin["monitors"]] == ["Ours"]
    assert twin["status"] == "operational"
    assert badge_elsewhere.status_code == 404 and badge_elsewhere.json()["error"]["code"] == "not_found"
    assert their_badge.status_code == 200 and their_badge.json()["message"] == "down"
    assert our_badge_by_them.status_code == 404


def test_the_json_twin_gives_state_since_and_uptimes_from_the_roll_ups(visitor: Client, tenant_a: Tenant) -> None:
    since = (timezone.now() - timedelta(hours=3)).replace(microsecond=0)
    api = monitor(tenant_a, "API", state=MonitorState.UP, state_changed_at=since)
    quiet = monitor(tenant_a, "Quiet", state=MonitorState.UNKNOWN)
    monitor(tenant_a, "Hidden", published=False)
    hour_rollup(api, 0, checks=30, failures=0)
    hour_rollup(api, 23, checks=60, failures=6)  # the oldest hour of the 24
    hour_rollup(api, 24, checks=60, failures=60)  # too old for the 24 hours
    day_rollup(api, 0, checks=90, failures=6)
    day_rollup(api, 29, checks=910, failures=4)  # the oldest day of the 30
    day_rollup(api, 30, checks=500, failures=500)  # too old for the 30 days

    response = visitor.get("/status/wonderland/status.json")

    assert response.status_code == 200
    assert "max-age=30" in response["Cache-Control"] and "public" in response["Cache-Control"]
    body = response.json()
    assert body["tenant"] == "wonderland" and body["status"] == "operational"
    assert body["counts"]["up"] == 1 and body["counts"]["unknown"] == 1
    first, second = body["monitors"]
    assert first == {
        "id": api.pk,
        "name": "API",
        "state": "up",
        "since": since.isoformat().replace("+00:00", "Z"),
        "uptime_24h": round(100 * (1 - 6 / 90), 3),
        "uptime_30d": 99.0,
    }
    assert second["id"] == quiet.pk and second["uptime_24h"] is None and second["uptime_30d"] is None


def test_a_badge_is_a_shields_io_endpoint(visitor: Client, tenant_a: Tenant) -> None:
    api = monitor(tenant_a, "API", state=MonitorState.UP)
    hidden = monitor(tenant_a, "Hidden", published=False)

    badge = visitor.get(f"/status/wonderland/badge/{api.pk}.json")

    assert badge.status_code == 200
    assert badge.json() == {"schemaVersion": 1, "label": "API", "message": "up", "color": "brightgreen"}
    assert visitor.get(f"/status/wonderland/badge/{hidden.pk}.json").status_code == 404
    assert visitor.get("/status/wonderland/badge/99999999999999999999999.json").status_code == 404


def test_a_page_holds_100_monitors_and_a_page_past_the_last_is_404(visitor: Client, tenant_a: Tenant) -> None:
    for n in range(PAGE_SIZE + 1):
        monitor(tenant_a, f"m{n:03d}", state=MonitorState.UP)

    first = visitor.get("/status/wonderland/").content.decode()
    second = visitor.get("/status/wonderland/?page=2").content.decode()

    assert first.count('<article class="monitor"') == PAGE_SIZE and "page 1 of 2" in first
    assert second.count('<article class="monitor"') == 1 and ">m100<" in second
    for page in ("3", "0", "-1", "x", "9" * 40):
        assert visitor.get(f"/status/wonderland/?page={page}").status_code == 404


def test_the_page_costs_the_same_few_queries_for_5_or_60_monitors_then_none_while_cached(
    visitor: Client, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    def queries(slug: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert visitor.get(f"/status/{slug}/").status_code == 200
        return len(captured)

    for n in range(5):
        day_rollup(monitor(tenant_a, f"a{n}", state=MonitorState.DOWN), 0, 10, 1)
    for n in range(60):
        day_rollup(monitor(tenant_b, f"b{n}", state=MonitorState.DOWN), 1, 10, 1)

    few, many = queries("wonderland"), queries("evil")

    assert few == many <= 5
    assert queries("evil") == 0  # cached


def test_a_cached_page_shows_a_change_only_once_the_cache_lapses(
    visitor: Client, tenant_a: Tenant, settings: object
) -> None:
    api = monitor(tenant_a, "API", state=MonitorState.UP)
    assert "All systems operational" in visitor.get("/status/wonderland/").content.decode()
    assert visitor.get("/status/wonderland/status.json").json()["status"] == "operational"
    api.state = MonitorState.DOWN
    api.save(update_fields=["state"])

    assert "All systems operational" in visitor.get("/status/wonderland/").content.decode()
    settings.SENTINEL_MONITORS = {**settings.SENTINEL_MONITORS, "STATUS_CACHE_SECONDS": 0}
    assert "Major outage" in visitor.get("/status/wonderland/").content.decode()
    assert visitor.get("/status/wonderland/status.json").json()["status"] == "outage"


def test_the_page_is_read_only(visitor: Client, tenant_a: Tenant) -> None:
    monitor(tenant_a, "API")

    answer = visitor.post("/status/wonderland/", data=json.dumps({}), content_type="application/json")

    assert answer.status_code == 405


def test_a_monitor_name_is_text_never_markup(visitor: Client, tenant_a: Tenant) -> None:
    monitor(tenant_a, '<script>alert("x")</script>', state=MonitorState.DOWN, last_reason="refused")

    html = visitor.get("/status/wonderland/").content.decode()

    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


@pytest.mark.parametrize(
    ("reason", "shown"),
    [
        ("timeout: no answer within 10 s (while connecting)", "timed out"),
        ("DNS failure: db.internal.example does not resolve (Name or service not known)", "DNS failure"),
        ("connection refused by 10.1.2.3:8080", "connection refused"),
        ("cannot connect to db.internal.example:5432 (No route to host)", "connection failed"),
        ("TLS error: Hostname mismatch, certificate is not valid for 'db.internal.example'", "TLS error"),
        ("status 500, expected 200-299", "answered HTTP 500"),
        ('keyword "timeout status 500" not found in the body', "unexpected content"),
        ('condition failed: body.password ("hunter2") == "x"', "a health condition failed"),
        ("too slow: 812 ms, the limit is 300 ms", "too slow"),
        ("egress denied: Egress to '10.0.0.5:80' refused: it resolves to 10.0.0.5", "check failed"),
        ("", "check failed"),
    ],
)
def test_a_reason_is_shown_as_its_kind_only(reason: str, shown: str) -> None:
    assert public_reason(reason) == shown


def test_every_checked_monitor_down_is_an_outage(visitor: Client, tenant_a: Tenant) -> None:
    monitor(tenant_a, "One", state=MonitorState.DOWN)
    monitor(tenant_a, "Two", state=MonitorState.DOWN)
    monitor(tenant_a, "Paused", state=MonitorState.PAUSED)
    monitor(tenant_a, "New", state=MonitorState.UNKNOWN)

    html = visitor.get("/status/wonderland/").content.decode()

    assert "Major outage: every checked service is down" in html


def test_incidents_list_the_longest_running_and_count_them_all(visitor: Client, tenant_a: Tenant) -> None:
    now = timezone.now()
    for n in range(INCIDENTS_SHOWN + 1):
        monitor(tenant_a, f"down{n:02d}", state=MonitorState.DOWN, state_changed_at=now - timedelta(minutes=n))

    html = visitor.get("/status/wonderland/").content.decode()
    incidents = html[html.index('class="incidents"') : html.index('class="monitors"')]

    assert f"Current incidents ({INCIDENTS_SHOWN + 1})" in incidents
    assert incidents.count('<li class="incident">') == INCIDENTS_SHOWN
    assert f"<strong>down{INCIDENTS_SHOWN:02d}</strong>" in incidents  # down longest
    assert "<strong>down00</strong>" not in incidents  # down most recently
    assert f"Showing the {INCIDENTS_SHOWN} longest-running of {INCIDENTS_SHOWN + 1}." in incidents


def test_head_answers_like_get_without_a_body(visitor: Client, tenant_a: Tenant) -> None:
    monitor(tenant_a, "API")

    answer = visitor.head("/status/wonderland/")

    assert answer.status_code == 200 and answer.content == b""


def test_with_the_cache_down_the_page_still_answers(
    visitor: Client, tenant_a: Tenant, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    monitor(tenant_a, "API", state=MonitorState.UP)
    # A real Redis client to a port nothing listens on: every cache call fails to connect.
    settings.CACHES = {
        "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}
    }

    page = visitor.get("/status/wonderland/")
    twin = visitor.get("/status/wonderland/status.json")

    assert page.status_code == 200 and "All systems operational" in page.content.decode()
    assert twin.status_code == 200 and twin.json()["status"] == "operational"
    assert "status page cache unavailable; answering uncached" in caplog.text
