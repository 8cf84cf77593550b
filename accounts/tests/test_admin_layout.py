"""The admin reads well in a 1280 px window: no changelist or form cuts columns off (measured in a
real headless Chromium against a real web process), labels and plurals read as English, and every
page carries Sentinel's name and favicon.

The browser test is skipped when Chromium is not installed, in CI as well: it is a check of
layout, and the suite must not depend on a 400 MB browser (`apt-get install chromium` enables it).
Set SENTINEL_ADMIN_SCREENSHOTS=<folder> to also save a 1280x900 screenshot of every page.
"""

from __future__ import annotations

import html
import os
import re
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
from gateway.admin import breaker_text
from observability.models import Incident, RequestLog
from observability.services import heartbeat_record
from rules import services as rules_services
from rules.models import Delivery, DeliveryStatus, Event, RuleMatch
from tests.support.processes import web_process

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
    RequestLog.objects.create(
        time=timezone.now(),
        correlation_id="3f9c2b7e8d1a4c6f9e0b2d4a6c8e0f13",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        tenant_uuid=tenant.uuid,
        tenant_key=str(tenant.uuid),
        tier="vital",
        principal="snl_3f9c2b7e",
        route_id=1,
        route="/wonderland-payments/orders/v2/",
        method="DELETE",
        path="/wonderland-payments/orders/v2/customers/4711/invoices/2026-11/lines?expand=taxes,discounts",
        status=503,
        decision="breaker_open",
        reason="breaker_open",
        latency_ms=1234.5,
        upstream=targets[0],
        upstream_latency_ms=1201.25,
        client_ip="2001:db8:85a3::8a2e:370:7334",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        bytes_in=10240,
        bytes_out=512,
        breaker_transition="open",
    )
    accounts_services.login_failure_log(
        username="alice.liddell@wonderland.example",
        ip="2001:db8:85a3::8a2e:370:7334",
        reason="locked_out",
        door="admin",
    )
    now = timezone.now()
    Incident.objects.create(
        kind="error_spike",
        subject="/wonderland-payments/orders/v2/",
        tenant_uuid=tenant.uuid,
        severity="critical",
        summary="Route /wonderland-payments/orders/v2/ answers 5xx to 37 % of requests (412 of 1,113 in 1 minute) "
        "against a 1-hour baseline of 0.4 %.",
        evidence={"error_share": 0.37, "requests": 1113},
        first_seen=now - timedelta(minutes=42),
        last_seen=now,
    )


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


# Every label a user reads on an admin page of these apps: column headers, form labels, filter titles.
OUR_APPS = ("accounts", "gateway", "rules", "observability")
# An acronym spelled as a word, the way Django capitalises a field name
# ("url" -> "Url", "event_id" -> "Event id"): any case but all capitals is a raw one.
ACRONYM = re.compile(r"\b(urls?|uuid|ips?|jwt|dsl|api|id|https?|json|ttl|slo|cidr|sql)\b", re.IGNORECASE)
# A unit left as a field name's suffix ("window ms", "max body bytes") instead of "(ms)", "(bytes)".
RAW_UNIT = re.compile(r"\b(ms|s|bytes|seconds)\s*:?$", re.IGNORECASE)
# Numbers that count things (requests, tokens, attempts, versions): the count is the unit.
COUNTS = {"Burst capacity", "Base rate limit", "Attempts", "Version"}


def raw_acronym(label: str) -> bool:
    return any(not word.isupper() for word in ACRONYM.findall(label))


def _text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", fragment)).split())


def page_labels(page: str) -> dict[str, list[str]]:
    """What the page says where a label goes: headers, form labels, filter titles."""
    return {
        "header": [_text(h) for h in re.findall(r'<th scope="col"[^>]*>(.*?)</th>', page, re.S)],
        "label": [_text(label) for label in re.findall(r"<label[^>]*>(.*?)</label>", page, re.S)],
        "filter": [_text(title) for title in re.findall(r"<summary>\s*By (.*?)\s*</summary>", page, re.S)],
    }


def number_labels(page: str) -> list[str]:
    """The labels of the page's number inputs."""
    ids = re.findall(r'<input type="number"[^>]*\bid="([^"]+)"', page)
    return [_text(match) for id_ in ids for match in re.findall(rf'<label[^>]*for="{id_}"[^>]*>(.*?)</label>', page)]


def our_admin_pages() -> list[str]:
    """Changelist, a change form and the add form of every model of our apps."""
    pages = [page for page in admin_pages() if page.split("/")[2] in OUR_APPS]
    for model in admin.site._registry:
        if model._meta.app_label in OUR_APPS:
            pages.append(reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_add"))
    return pages


@pytest.mark.django_db
def test_no_admin_label_is_a_raw_field_name(staff: User) -> None:
    showcase()
    client = Client()
    client.force_login(staff)

    raw = []
    for path in our_admin_pages():
        response = client.get(path)
        if response.status_code == 403:  # read-only models have no add form
            continue
        page = response.content.decode()
        for kind, labels in page_labels(page).items():
            raw += [f"{path} {kind} {label!r}" for label in labels if raw_acronym(label) or RAW_UNIT.search(label)]
        for label in number_labels(page):
            if "(" not in label and label.rstrip(":") not in COUNTS:
                raw.append(f"{path} number without a unit {label!r}")

    assert not raw, "\n".join(raw)


@pytest.mark.django_db
def test_the_route_form_names_its_limits_as_the_tenant_form_does(staff: User) -> None:
    client = Client()
    client.force_login(staff)

    route = page_labels(client.get(reverse("admin:gateway_route_add")).content.decode())["label"]
    tenant = page_labels(client.get(reverse("admin:accounts_tenant_add")).content.decode())["label"]

    limits = ["Burst capacity:", "Refill rate (tokens/s):", "Window (ms):", "Base rate limit:"]
    assert [label for label in route if label in limits] == limits
    assert [label for label in tenant if label in limits] == limits
    assert "Timeout (ms):" in route
    assert "Max body size (bytes):" in route


@pytest.mark.django_db
def test_the_upstreams_list_says_url_and_reads_its_breakers_as_words(staff: User) -> None:
    showcase()
    client = Client()
    client.force_login(staff)

    page = client.get(reverse("admin:gateway_upstream_changelist")).content.decode()

    assert page_labels(page)["header"][1:3] == ["URL", "Breaker"]
    assert "closed, no calls yet" in page  # a fresh upstream's breaker
    assert "failed)" not in page


@pytest.mark.parametrize(
    ("state", "failures", "total", "text"),
    [
        ("closed", 0, 0, "closed, no calls yet"),
        ("closed", 1, 20, "closed, 1 of 20 calls failed"),
        ("open", 12, 20, "open, 12 of 20 calls failed"),
        ("half_open", 0, 0, "half-open, no calls yet"),
        ("half_open", 1, 3, "half-open, 1 of 3 calls failed"),
    ],
)
def test_a_breaker_reads_as_words(state: str, failures: int, total: int, text: str) -> None:
    assert breaker_text(state, failures=failures, total=total) == text
