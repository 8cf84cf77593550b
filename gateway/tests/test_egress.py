"""The egress policy on routes (SPEC 7): tenant targets refused at save (API, admin) and at connect
(a real gateway process); platform routes exempt."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import Client
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from accounts.models import Tenant, User
from accounts.tests.htmlforms import form_data
from gateway import services
from gateway.models import Route
from tests.support.net import http_request
from tests.support.processes import web_process

pytestmark = pytest.mark.django_db(transaction=True)

Api = Callable[..., APIClient]
# pytest-django's `settings` fixture (its wrapper class is not public).
SettingsWrapper = Any

# Spellings of refused addresses a tenant admin could type as a route target: (target, address named).
REFUSED_TARGETS = [
    ("http://127.0.0.1:8080", "127.0.0.1"),
    ("http://2130706433:8080", "127.0.0.1"),
    ("http://0177.0.0.1", "127.0.0.1"),
    ("http://0x7f.1", "127.0.0.1"),
    ("http://127.1", "127.0.0.1"),
    ("http://[::1]:8080", "::1"),
    ("http://[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
    ("http://[::ffff:7f00:1]", "::ffff:127.0.0.1"),
    ("http://[64:ff9b::7f00:1]", "64:ff9b::7f00:1"),
    ("http://[2002:7f00:1::]", "2002:7f00:1::"),
    ("http://localhost:8080", "127.0.0.1"),
    ("http://localhost.:8080", "127.0.0.1"),
    ("http://169.254.169.254", "169.254.169.254"),
    ("http://10.0.0.5:9000", "10.0.0.5"),
    ("http://192.168.1.10", "192.168.1.10"),
    ("http://100.64.1.1", "100.64.1.1"),
    ("http://[fd00::1]", "fd00::1"),
    ("http://0.0.0.0:8000", "0.0.0.0"),
]


@pytest.fixture
def production_policy(settings: SettingsWrapper) -> SettingsWrapper:
    """The policy of production mode: loopback refused, no network allowed."""
    settings.EGRESS_ALLOW_LOOPBACK = False
    settings.EGRESS_ALLOWED_NETWORKS = []
    return settings


def route_body(target: str, **overrides: object) -> dict[str, object]:
    return {"name": "echo", "path_prefix": "/wonderland/echo", "targets": [target], **overrides}


@pytest.mark.parametrize(("target", "address"), REFUSED_TARGETS)
def test_a_tenant_route_to_a_refused_address_is_a_400_naming_it(
    api: Api, alice: User, production_policy: SettingsWrapper, target: str, address: str
) -> None:
    response = api(alice).post("/api/v1/routes", route_body(target), format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] == "egress_denied"
    assert address in error["message"] and "EGRESS_ALLOWED_NETWORKS" in error["message"]
    assert error["details"]["address"] == address
    assert not Route.objects.exists()


def test_staff_are_held_to_the_policy_on_a_tenants_route_but_not_on_a_platform_route(
    api: Api, staff: User, tenant_a: Tenant, production_policy: SettingsWrapper
) -> None:
    for_tenant = api(staff).post(
        "/api/v1/routes", route_body("http://127.0.0.1:8080", tenant=tenant_a.pk), format="json"
    )
    platform = api(staff).post(
        "/api/v1/routes", route_body("http://127.0.0.1:8080", path_prefix="/internal/"), format="json"
    )

    assert (for_tenant.status_code, for_tenant.json()["error"]["code"]) == (400, "egress_denied")
    assert platform.status_code == 201, platform.content
    assert platform.json()["tenant"] is None


def test_changing_a_tenant_routes_targets_is_checked_too(
    api: Api, alice: User, production_policy: SettingsWrapper
) -> None:
    created = api(alice).post("/api/v1/routes", route_body("http://93.184.215.14"), format="json")
    assert created.status_code == 201, created.content

    changed = api(alice).patch(
        f"/api/v1/routes/{created.json()['id']}", {"targets": ["http://[::ffff:169.254.169.254]"]}, format="json"
    )

    assert (changed.status_code, changed.json()["error"]["code"]) == (400, "egress_denied")
    assert "cloud metadata" in changed.json()["error"]["message"]
    assert Route.objects.get().targets == ["http://93.184.215.14"]


def test_an_allowed_network_lets_a_tenant_route_in(api: Api, alice: User, production_policy: SettingsWrapper) -> None:
    production_policy.EGRESS_ALLOWED_NETWORKS = ["10.0.0.0/8"]

    allowed = api(alice).post("/api/v1/routes", route_body("http://10.1.2.3:8080"), format="json")
    still_refused = api(alice).post(
        "/api/v1/routes", route_body("http://192.168.0.1", path_prefix="/wonderland/b/"), format="json"
    )

    assert allowed.status_code == 201, allowed.content
    assert still_refused.status_code == 400


def test_the_admin_refuses_a_tenant_route_to_a_refused_target(
    staff: User, tenant_a: Tenant, production_policy: SettingsWrapper
) -> None:
    client = Client()
    client.force_login(staff)
    url = "/admin/gateway/route/add/"
    form = form_data(client.get(url).content.decode(), "route_form")
    form.update(
        {
            "name": ["meta"],
            "tenant": [str(tenant_a.pk)],
            "path_prefix": ["/wonderland/meta/"],
            "auth_mode": ["none"],
            "targets": ["http://169.254.169.254"],
        }
    )

    refused = client.post(url, form)
    platform = client.post(url, {**form, "tenant": [""], "path_prefix": ["/meta/"]})

    assert refused.status_code == 200  # the form again, with the error
    assert "169.254.169.254" in refused.content.decode() and "cloud metadata" in refused.content.decode()
    assert platform.status_code == 302, platform.content.decode()[-3000:]
    assert list(Route.objects.values_list("path_prefix", flat=True)) == ["/meta/"]


class RecordingUpstream:
    """An HTTP server on 127.0.0.1 that counts the connections it accepts and the requests it gets."""

    def __init__(self) -> None:
        upstream = self
        self.connections = 0
        self.paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                upstream.connections += 1
                super().setup()

            def do_GET(self) -> None:
                upstream.paths.append(self.path)
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    recorder = RecordingUpstream()
    yield recorder
    recorder.server.shutdown()
    recorder.server.server_close()


def test_a_production_gateway_refuses_to_connect_a_tenant_route_to_loopback(
    tenant_a: Tenant, upstream: RecordingUpstream
) -> None:
    # Saved while loopback was allowed (the tests' default, like embedded mode), then served by a
    # process in production policy: the connect-time check is what stops it. One route names the
    # address, one a host name that resolves to it, one an IPv4-mapped IPv6 spelling of it.
    for name, target in (
        ("echo", upstream.url),
        ("byname", f"http://localhost:{upstream.port}"),
        ("mapped", f"http://[::ffff:127.0.0.1]:{upstream.port}"),
    ):
        services.route_create(
            tenant=tenant_a, name=name, path_prefix=f"/wonderland/{name}/", targets=[target], auth_mode="none"
        )
    services.route_create(
        tenant=None, name="platform", path_prefix="/platform/", targets=[upstream.url], auth_mode="none"
    )

    with web_process(EGRESS_ALLOW_LOOPBACK="false") as port:
        refused = [http_request(port, "GET", f"/wonderland/{name}/secret") for name in ("echo", "byname", "mapped")]
        platform = http_request(port, "GET", "/platform/hello")
        metrics = http_request(port, "GET", "/metrics")[2].decode()

    for status, _, body in refused:
        assert status == 502
        assert json.loads(body)["error"]["code"] == "egress_denied"
    assert platform[0] == 200 and platform[2] == b"ok"
    # The upstream saw the platform route's request and nothing of the tenant's: not even a connection.
    assert upstream.paths == ["/hello"]
    assert upstream.connections == 1
    assert 'sentinel_egress_refusals_total{kind="route",stage="connect"} 3.0' in metrics


def test_a_refusal_at_save_is_logged_as_one_line_and_counted(
    api: Api, alice: User, tenant_a: Tenant, production_policy: SettingsWrapper, caplog: pytest.LogCaptureFixture
) -> None:
    before = REGISTRY.get_sample_value("sentinel_egress_refusals_total", {"kind": "route", "stage": "save"}) or 0.0

    with caplog.at_level(logging.WARNING, logger="sentinel.egress"):
        api(alice).post("/api/v1/routes", route_body("http://0x7f.1:8080"), format="json")

    [line] = [record for record in caplog.records if record.name == "sentinel.egress"]
    logged = {key: getattr(line, key) for key in ("tenant", "kind", "stage", "target", "address", "reason")}
    assert logged == {
        "tenant": str(tenant_a.uuid),
        "kind": "route",
        "stage": "save",
        "target": "http://0x7f.1:8080",
        "address": "127.0.0.1",
        "reason": "loopback (RFC 1122)",
    }
    after = REGISTRY.get_sample_value("sentinel_egress_refusals_total", {"kind": "route", "stage": "save"})
    assert after == before + 1
