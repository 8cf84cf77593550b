"""The egress policy on notification channels (SPEC 7): refused at save (API) and at connect (delivery),
and no redirect followed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import Tenant, User
from rules import services
from rules.models import Delivery, DeliveryStatus, Event, NotificationChannel
from rules.tests.sinks import http_sink

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]
# pytest-django's `settings` fixture (its wrapper class is not public).
Settings = Any

REFUSED_TARGETS = [
    ("http://127.0.0.1:9000/hook", "127.0.0.1"),
    ("http://2130706433/hook", "127.0.0.1"),
    ("http://0177.0.0.1/hook", "127.0.0.1"),
    ("http://0x7f.1/hook", "127.0.0.1"),
    ("http://127.1/hook", "127.0.0.1"),
    ("http://[::1]:9000/hook", "::1"),
    ("http://[::ffff:127.0.0.1]/hook", "::ffff:127.0.0.1"),
    ("http://[64:ff9b::7f00:1]/hook", "64:ff9b::7f00:1"),
    ("http://localhost./hook", "127.0.0.1"),
    ("https://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ("https://172.16.0.10/hook", "172.16.0.10"),
    ("https://[fe80::1]/hook", "fe80::1"),
]


@pytest.fixture
def production_policy(settings: Settings) -> Settings:
    settings.EGRESS_ALLOW_LOOPBACK = False
    settings.EGRESS_ALLOWED_NETWORKS = []
    return settings


@pytest.mark.parametrize("kind", ["webhook", "slack", "discord"])
@pytest.mark.parametrize(("target", "address"), REFUSED_TARGETS)
def test_a_channel_to_a_refused_address_is_a_400_naming_it(
    api: Api, alice: User, production_policy: Settings, kind: str, target: str, address: str
) -> None:
    response = api(alice).post("/api/v1/channels", {"kind": kind, "name": "c", "target": target}, format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "egress_denied"
    assert address in error["message"] and "EGRESS_ALLOWED_NETWORKS" in error["message"]
    assert not NotificationChannel.objects.exists()


def test_changing_a_channels_target_is_checked_too(api: Api, alice: User, production_policy: Settings) -> None:
    created = api(alice).post(
        "/api/v1/channels", {"kind": "webhook", "name": "c", "target": "https://93.184.215.14/hook"}, format="json"
    )
    assert created.status_code == 201, created.content

    changed = api(alice).patch(
        f"/api/v1/channels/{created.json()['id']}", {"target": "http://[::1]:8000/"}, format="json"
    )

    assert (changed.status_code, changed.json()["error"]["code"]) == (400, "egress_denied")
    assert NotificationChannel.objects.get().target == "https://93.184.215.14/hook"


def test_an_allowed_network_lets_a_channel_in(api: Api, alice: User, production_policy: Settings) -> None:
    production_policy.EGRESS_ALLOWED_NETWORKS = ["172.16.0.0/12"]

    allowed = api(alice).post(
        "/api/v1/channels", {"kind": "webhook", "name": "c", "target": "https://172.16.0.10/hook"}, format="json"
    )
    outside = api(alice).post(
        "/api/v1/channels", {"kind": "webhook", "name": "d", "target": "https://10.0.0.1/hook"}, format="json"
    )

    assert allowed.status_code == 201, allowed.content
    assert (outside.status_code, outside.json()["error"]["code"]) == (400, "egress_denied")


def queue_delivery(tenant: Tenant, target: str) -> Delivery:
    """A channel saved while the policy allowed its target, a rule and a matching event: one delivery."""
    services.channel_create(tenant=tenant, kind="webhook", name="orders", target=target)
    services.rule_create(tenant=tenant, name="all", dsl='when event.type == "order" then notify("webhook:orders")')
    event = Event.objects.create(tenant=tenant, type="order", payload={"type": "order"})
    services.events_evaluate(event_ids=[event.pk])
    return Delivery.objects.get()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_delivery_to_loopback_is_refused_at_connect_and_dead_at_once(
    tenant_a: Tenant, settings: Settings, host: str
) -> None:
    with http_sink() as sink:
        delivery = queue_delivery(tenant_a, sink.url.replace("127.0.0.1", host) + "/hook")
        settings.EGRESS_ALLOW_LOOPBACK = False  # the process that sends is in production policy

        attempt = services.delivery_attempt(delivery_id=delivery.pk)

        assert attempt is not None and attempt.status == DeliveryStatus.DEAD
        assert attempt.attempts == 1
        assert "127.0.0.1" in attempt.last_error and "loopback" in attempt.last_error
        assert sink.count() == 0


class Redirector:
    """An HTTP receiver that answers every POST with a 302 to `location`, counting what it gets."""

    def __init__(self, location: str) -> None:
        redirector = self
        self.received = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                redirector.received += 1
                self.send_response(302)
                self.send_header("location", location)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def forbidden_sink() -> Iterator[tuple[str, list[str]]]:
    """A receiver on 127.0.0.2, an address the test's policy refuses; yields its URL and what it got."""
    got: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(self.path)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        do_GET = do_POST

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.2:{server.server_address[1]}/internal", got
    server.shutdown()
    server.server_close()


def test_a_receiver_redirecting_to_a_refused_address_is_not_followed(
    tenant_a: Tenant, settings: Settings, forbidden_sink: tuple[str, list[str]]
) -> None:
    # A guard rather than a fix: the notifier client did not follow redirects before either (and
    # core's test shows its transport would refuse the hop if it did).
    forbidden_url, forbidden_got = forbidden_sink
    # Only the receiver's own address is allowed: 127.0.0.2 is loopback the policy refuses.
    settings.EGRESS_ALLOW_LOOPBACK = False
    settings.EGRESS_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    redirector = Redirector(forbidden_url)
    try:
        delivery = queue_delivery(tenant_a, redirector.url)

        attempt = services.delivery_attempt(delivery_id=delivery.pk)
    finally:
        redirector.server.shutdown()
        redirector.server.server_close()

    assert redirector.received == 1
    assert forbidden_got == []
    assert attempt is not None and attempt.status != DeliveryStatus.SENT
    assert "302" in attempt.last_error
