"""The admin reads well in a 1280 px window: no changelist or form cuts columns off (measured in a
real headless Chromium against a real web process), labels and plurals read as English, and every
page carries Sentinel's name and favicon.

The browser test is skipped when Chromium is not installed, in CI as well: it is a check of
layout, and the suite must not depend on a 400 MB browser (`apt-get install chromium` enables it).
Set SENTINEL_ADMIN_SCREENSHOTS=<folder> to also save a 1280x900 screenshot of every page.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib import admin
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts import services as accounts_services
from accounts.models import Membership, User
from accounts.tests.browser import CHROMIUM, staff_browser
from gateway import services as gateway_services
from observability.services import heartbeat_record
from rules import services as rules_services
from rules.models import Delivery, DeliveryStatus, Event, RuleMatch
from sentinel_site.testing import web_process

LONG_DSL = (
    'when event.type == "order" and amount > 500 and country not in ["FR", "DE", "IT"] '
    'then notify("slack:#big-orders", "order {event.id}: {amount} from {country}")'
)


def showcase() -> None:
    """A few rows of every model, with values as long as real ones get."""
    tenant = accounts_services.tenant_create(
        name="Wonderland Payments International", slug="wonderland-payments", tier="vital", base_rate_limit=1200
    )
    other = accounts_services.tenant_create(name="Evil Corp", slug="evil", tier="economy", burst_capacity=5)
    # Plain rows, as the fixtures make them: the layout is under test here, not the services.
    owner = User.objects.create_user(username="alice.liddell", email="alice.liddell@wonderland.example")
    Membership.objects.create(tenant=tenant, user=owner, role="admin")
    member = User.objects.create_user(username="bob", email="bob@evil.example")
    Membership.objects.create(tenant=other, user=member, role="member")
    accounts_services.api_key_create(
        tenant=tenant,
        name="checkout service (production)",
        scopes=["proxy", "events:write", "transactions:write", "api:read"],
        expires_at=timezone.now() + timedelta(days=90),
    )
    targets = [f"http://orders-backend-{n}.internal.example:8080" for n in range(1, 4)]
    gateway_services.route_create(
        tenant=tenant,
        name="Orders API (v2, public)",
        path_prefix="/wonderland-payments/orders/v2/",
        targets=targets,
        burst_capacity=40,
        refill_rate=12.5,
        window_ms=60000,
        base_rate_limit=1200,
        methods=["GET", "POST", "PUT", "DELETE"],
    )
    rule = rules_services.rule_create(tenant=tenant, name="Big orders outside the EU core", dsl=LONG_DSL)
    channel = rules_services.channel_create(
        tenant=tenant, kind="webhook", name="orders-alerts", target="https://hooks.wonderland.example/sentinel/orders"
    )
    event = Event.objects.create(tenant=tenant, type="order", payload={"type": "order", "amount": 900, "id": 7})
    match = RuleMatch.objects.create(
        tenant=tenant, rule=rule, event=event, group_key="country=US", problems=["no slack channel named '#big-orders'"]
    )
    Delivery.objects.create(
        tenant=tenant,
        match=match,
        channel=channel,
        message="order 7: 900 from US",
        status=DeliveryStatus.FAILED,
        attempts=3,
        last_error="HTTP 503 from https://hooks.wonderland.example/sentinel/orders: upstream connect error " * 3,
        next_attempt_at=timezone.now() + timedelta(minutes=5),
    )
    heartbeat_record(at=timezone.now())


def admin_pages() -> list[str]:
    """Every changelist, and the change form of one object of each model."""
    pages = []
    for model in admin.site._registry:
        info = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        pages.append(reverse(f"{info}_changelist"))
        first = model._default_manager.order_by("pk").first()
        if first is not None:
            pages.append(reverse(f"{info}_change", args=[first.pk]))
    return pages


@pytest.mark.django_db(transaction=True)
def test_no_admin_page_overflows_a_1280_px_window(staff: User) -> None:
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (apt-get install --no-install-recommends chromium)")
    showcase()
    client = Client()
    client.force_login(staff)
    pages = admin_pages()

    with web_process() as port, staff_browser(port, client.cookies["sessionid"].value) as browser:
        report = browser.overflow_report(pages)
        folder = os.environ.get("SENTINEL_ADMIN_SCREENSHOTS")
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            for page in pages:
                browser.screenshot(page, Path(folder) / (page.strip("/").replace("/", "_") + ".png"))

    assert len(report) == len(pages)
    assert all(entry["width"] > 1000 for entry in report), report  # the frames really were 1280 px wide
    overflowing = [f"{entry['url']}: {entry['over']} px in {entry['where']}" for entry in report if entry["over"] > 1]
    assert not overflowing, "\n".join(overflowing)


# --- labels and the favicon, without a browser -----------------------------------------------------


def test_model_names_read_as_english() -> None:
    names = {
        f"{model._meta.app_label}.{model.__name__}": (model._meta.verbose_name, model._meta.verbose_name_plural)
        for model in apps.get_models()
        if model._meta.app_label in ("accounts", "gateway", "rules", "observability")
    }

    assert names["rules.RuleMatch"] == ("rule match", "rule matches")
    assert names["rules.Delivery"] == ("delivery", "deliveries")
    assert names["accounts.ApiKey"] == ("API key", "API keys")
    assert names["rules.NotificationChannel"] == ("notification channel", "notification channels")
    for label, (singular, plural) in names.items():
        # English adds "es" after a hissing sound and turns a consonant's "y" into "ies".
        if singular.endswith(("ch", "sh", "s", "x", "z")) or (singular[-1] == "y" and singular[-2] not in "aeiou"):
            assert plural != singular + "s", (label, plural)
        assert plural != singular, label


@pytest.mark.django_db
def test_the_rule_form_says_dsl_in_capitals(staff: User) -> None:
    client = Client()
    client.force_login(staff)

    page = client.get(reverse("admin:rules_rule_add")).content.decode()

    assert ">DSL:</label>" in page
    assert ">Dsl" not in page


@pytest.mark.django_db
def test_every_admin_page_has_sentinels_header_and_favicon(staff: User) -> None:
    client = Client()
    client.force_login(staff)

    pages = [client.get(path) for path in ("/admin/", reverse("admin:accounts_tenant_changelist"))]
    pages.append(Client().get("/admin/login/"))  # as a visitor who is not signed in
    for response in pages:
        path = response.wsgi_request.path
        page = response.content.decode()
        assert '<link rel="icon" type="image/svg+xml" href="/static/sentinel/favicon.svg">' in page, path
        assert ">Sentinel</a>" in page, path

    favicon = client.get("/static/sentinel/favicon.svg")
    assert favicon.status_code == 200
    assert b"<svg" in b"".join(favicon.streaming_content)  # type: ignore[attr-defined]
