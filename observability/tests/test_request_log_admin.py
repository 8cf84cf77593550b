"""The request log's admin: read-only, and no query that grows with the table (no COUNT, no
`SELECT DISTINCT` over it) on any page an operator opens during an incident."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import Tenant, User
from observability.models import Decision, RequestLog
from observability.tests.request_log_rows import log_row, log_rows, minutes_ago

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:observability_requestlog_changelist")


@pytest.fixture
def browser(staff: User) -> Client:
    client = Client()
    client.force_login(staff)
    return client


def page(client: Client, query: dict[str, Any] | None = None) -> tuple[str, list[str]]:
    """The changelist's HTML and the SQL it ran."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(CHANGELIST, query or {})
    assert response.status_code == 200, response.content[:500]
    return response.content.decode(), [query["sql"] for query in queries.captured_queries]


def assert_nothing_grows_with_the_table(sql: list[str]) -> None:
    dear = [statement for statement in sql if "COUNT(" in statement.upper() or "DISTINCT" in statement.upper()]
    assert not dear, dear


def listed_paths(html: str, rows: list[RequestLog]) -> list[str]:
    """The paths of ``rows`` the page lists, in the page's order."""
    shown = [row.path for row in rows if f">{row.path}<" in html]
    return sorted(shown, key=lambda path: html.index(f">{path}<"))


def test_the_changelist_shows_rows_without_counting(browser: Client, tenant_a: Tenant) -> None:
    limited = {"status": 429, "decision": Decision.LIMITED, "reason": "tenant_rate"}
    rows = log_rows([
        log_row(time=minutes_ago(2), tenant_uuid=tenant_a.uuid, **limited),
        log_row(time=minutes_ago(1), path="/login", status=401, decision=Decision.AUTH_FAILED, client_ip="203.0.113.9"),
    ])  # fmt: skip

    html, sql = page(browser)

    assert_nothing_grows_with_the_table(sql)
    assert listed_paths(html, rows) == ["/login", rows[0].path]  # newest first
    assert "limited (tenant_rate)" in html
    assert ">auth_failed<" in html
    assert ">wonderland<" in html  # the tenant by its slug
    assert ">anonymous<" in html
    assert "203.0.113.9" in html
    assert "not counted" in html
    assert "Show all" not in html


def test_pages_run_on_without_a_total(browser: Client, tenant_a: Tenant) -> None:
    rows = log_rows([log_row(time=minutes_ago(n), tenant_uuid=tenant_a.uuid) for n in range(230)])

    first, sql = page(browser)
    third, third_sql = page(browser, {"p": "3"})

    assert_nothing_grows_with_the_table(sql + third_sql)
    assert len(listed_paths(first, rows)) == 100
    assert listed_paths(first, rows) == [row.path for row in rows[:100]]
    assert "older rows follow" in first
    assert listed_paths(third, rows) == [row.path for row in rows[200:]]
    assert "no older rows" in third
    # Session, user, the date hierarchy's bounds and a probe per day shown, the page: none per row.
    assert len(sql) <= 10, sql


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"decision__exact": "shed"}, ["/shed"]),
        ({"status_class": "5"}, ["/shed", "/broken"]),
        ({"status_class": "4"}, ["/vital-limited"]),
        ({"tier": "vital"}, ["/vital-limited"]),
        ({"recent": "1h"}, ["/shed", "/broken", "/vital-limited"]),
        ({"q": "203.0.113.77"}, ["/broken"]),
        ({"q": "/vital"}, ["/vital-limited"]),
        ({"q": "the-correlation-id"}, ["/yesterday"]),
        ({"q": "/vit%"}, []),
    ],
)
def test_filters_and_search_pick_their_rows(browser: Client, query: dict[str, str], expected: list[str]) -> None:
    rows = log_rows([
        log_row(time=minutes_ago(1), path="/shed", status=503, decision=Decision.SHED),
        log_row(time=minutes_ago(2), path="/broken", status=502, decision="upstream_error", client_ip="203.0.113.77"),
        log_row(time=minutes_ago(3), path="/vital-limited", status=429, decision=Decision.LIMITED, tier="vital"),
        log_row(time=minutes_ago(60 * 26), path="/yesterday", correlation_id="the-correlation-id"),
    ])  # fmt: skip

    html, sql = page(browser, query)

    assert_nothing_grows_with_the_table(sql)
    assert listed_paths(html, rows) == expected


def _at(year: int, month: int, day: int, hour: int = 12) -> datetime:
    return timezone.make_aware(datetime(year, month, day, hour))


def test_the_date_hierarchy_probes_instead_of_scanning(browser: Client) -> None:
    rows = log_rows([
        log_row(time=_at(2025, 12, 31), path="/new-year-eve"),
        log_row(time=_at(2026, 1, 3), path="/january-3"),
        log_row(time=_at(2026, 1, 3, 18), path="/january-3-evening"),
        log_row(time=_at(2026, 2, 14), path="/february-14"),
    ])  # fmt: skip

    top, top_sql = page(browser)
    year, year_sql = page(browser, {"time__year": "2026"})
    month, month_sql = page(browser, {"time__year": "2026", "time__month": "1"})
    day, day_sql = page(browser, {"time__year": "2026", "time__month": "1", "time__day": "3"})

    assert_nothing_grows_with_the_table(top_sql + year_sql + month_sql + day_sql)
    assert "time__year=2025" in top and "time__year=2026" in top
    assert "time__month=1" in year and "time__month=2" in year and "time__month=3" not in year
    assert "time__day=3" in month and "time__day=4" not in month
    assert listed_paths(day, rows) == ["/january-3-evening", "/january-3"]


def test_it_is_read_only(browser: Client, tenant_a: Tenant) -> None:
    row = log_rows([log_row(tenant_uuid=tenant_a.uuid, client_ip="2001:db8::5", latency_ms=3.25)])[0]
    change = reverse("admin:observability_requestlog_change", args=[row.pk])

    assert browser.get(reverse("admin:observability_requestlog_add")).status_code == 403
    assert browser.get(reverse("admin:observability_requestlog_delete", args=[row.pk])).status_code == 403
    view = browser.get(change)
    assert view.status_code == 200
    html = view.content.decode()
    to_the_ms = timezone.localtime(row.time).isoformat(sep=" ", timespec="milliseconds")
    for text in ("Correlation ID:", "Client IP:", "Latency (ms):", row.correlation_id, "2001:db8::5", "3.2", to_the_ms):
        assert text in html, text
    assert 'type="submit"' not in html.split('id="content-main"')[1]  # nothing to save
    browser.post(change, {"status": 500})
    assert RequestLog.objects.get(pk=row.pk).status == 200


def test_a_tenant_admin_without_staff_cannot_open_it(alice: User) -> None:
    client = Client()
    client.force_login(alice)

    response = client.get(CHANGELIST)

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_an_old_row_shows_its_day_in_the_time_column(browser: Client) -> None:
    row = log_rows([log_row(time=timezone.now() - timedelta(days=3))])[0]

    html, _sql = page(browser)

    assert timezone.localtime(row.time).strftime("%d %b %H:%M:%S") in html
