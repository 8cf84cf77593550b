"""The dashboard in a real browser: Debian's chromium (`make browser`) driven by Playwright signs in
on `/login/`, opens `/dashboard/`, watches the request counters move while traffic flows through
the proxy, sees "Reconnecting" once the web process stops, and leaves screenshots under
`var/test-artifacts/`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from accounts.models import Tenant, User
from gateway import services
from observability.models import Incident, IncidentKind, Severity
from tests.support.cast import PASSWORD
from tests.support.net import http_request
from tests.support.processes import MockUpstreams, web_server
from tests.support.services import service_unavailable

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = Path("/usr/bin/chromium")
# Bounds of the background traffic: it stops by itself whatever happens to the test.
TRAFFIC_MAX_REQUESTS = 2_000
TRAFFIC_MAX_SECONDS = 60


@pytest.fixture
def artifacts() -> Path:
    folder = Path(settings.VAR_DIR) / "test-artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def scenery(mock_upstream: MockUpstreams, tenant_a: Tenant) -> None:
    """A route to a mock upstream and an open incident, made before the browser starts
    (Playwright's sync API runs an event loop in this thread, where Django refuses ORM calls)."""
    services.route_create(
        tenant=None, name="shop", path_prefix="/shop/", targets=[mock_upstream("shop").url], auth_mode="none"
    )
    now = timezone.now()
    Incident.objects.create(
        kind=IncidentKind.FLOOD_IP, subject="203.0.113.9", severity=Severity.WARNING, first_seen=now, last_seen=now,
        summary="Traffic from 203.0.113.9 is 14x its 1-hour baseline: 1,240 req/min; 97 % answered 429",
    )  # fmt: skip


@pytest.fixture
def browser_page(scenery: None, staff: User) -> Iterator[object]:
    """A Playwright page in Debian's chromium at 1280 x 860, closed after the test."""
    if not CHROMIUM.exists():
        service_unavailable(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium (as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 860})
        finally:
            browser.close()


class Traffic:
    """Requests to the proxy from a background thread until stopped (bounded in count and time)."""

    def __init__(self, port: int, path: str) -> None:
        self.port, self.path = port, path
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        deadline = time.monotonic() + TRAFFIC_MAX_SECONDS
        while not self._stop.is_set() and self.sent < TRAFFIC_MAX_REQUESTS and time.monotonic() < deadline:
            try:
                http_request(self.port, "GET", self.path)
            except OSError:
                return  # the server went away
            self.sent += 1
            self._stop.wait(0.02)  # ~40 requests a second: a chart that moves, not a load test


def counter(page: object) -> int:
    text = page.inner_text("#kpi-rpm")  # type: ignore[attr-defined]
    return int(text.replace(",", "")) if text.replace(",", "").isdigit() else -1


def test_a_signed_in_user_watches_the_counters_move_and_sees_reconnecting(
    staff: User, browser_page: object, artifacts: Path
) -> None:
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    with web_server(GATEWAY_FORCED_PRESSURE="0", BURST_CAPACITY="1000") as (port, process):
        # Given a signed-in staff user on the dashboard (sent through Django's login page)
        page.goto(f"http://127.0.0.1:{port}/dashboard/")
        expect(page).to_have_url(f"http://127.0.0.1:{port}/login/?next=/dashboard/")
        page.fill("#id_username", staff.username)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        expect(page).to_have_url(f"http://127.0.0.1:{port}/dashboard/")
        expect(page.locator("#connection")).to_have_text("Live", timeout=10_000)

        # When traffic flows through the proxy
        with Traffic(port, "/shop/items"):
            page.wait_for_function("document.querySelector('#kpi-rpm').textContent.replace(/,/g, '') > 0")
            first = counter(page)
            # Then the requests-per-minute counter keeps moving up, second by second
            page.wait_for_function(
                f"Number(document.querySelector('#kpi-rpm').textContent.replace(/,/g, '')) > {first + 20}",
                timeout=10_000,
            )
            expect(page.locator("#top-routes")).to_contain_text("/shop/")
            expect(page.locator("[data-tile=breakers]")).to_contain_text("127.0.0.1")
            expect(page.locator("[data-tile=insight]")).to_contain_text("14x its 1-hour baseline")
            page.wait_for_timeout(1500)  # one more frame, so the charts hold a few seconds of traffic
            page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
        assert counter(page) > first

        # When the web process stops, the page says it is reconnecting (and keeps trying)
        process.terminate()
        process.wait(timeout=20)
        expect(page.locator("#connection")).to_contain_text("Reconnecting", timeout=15_000)
        expect(page.locator("#banner")).to_be_visible()
        page.screenshot(path=str(artifacts / "dashboard-reconnecting.png"))
    assert (artifacts / "dashboard.png").stat().st_size > 10_000
