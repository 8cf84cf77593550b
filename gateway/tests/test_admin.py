"""The gateway's admin actions against real upstreams."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from accounts.models import User
from accounts.tests.htmlforms import form_data
from gateway import services
from gateway.models import Route, Upstream
from tests.support.net import free_port
from tests.support.processes import MockUpstreams

pytestmark = pytest.mark.django_db


@pytest.fixture
def upstream(mock_upstream: MockUpstreams) -> str:
    return mock_upstream("upstream").url


def test_the_live_route_test_reports_each_target(staff: User, upstream: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    route = services.route_create(tenant=None, name="t", path_prefix="/t/", targets=[upstream, dead])
    client = Client()
    client.force_login(staff)

    response = client.post(
        "/admin/gateway/route/", {"action": "test_live", "_selected_action": [route.pk]}, follow=True
    )

    texts = [str(message) for message in get_messages(response.wsgi_request)]
    assert response.status_code == 200
    assert any(text.startswith(f"/t/ → {upstream}: HTTP 200 in") for text in texts), texts
    assert any(text.startswith(f"/t/ → {dead}: ConnectError") for text in texts), texts


def test_a_route_made_in_the_admin_form_is_made_by_the_service(staff_client: Client) -> None:
    url = "/admin/gateway/route/add/"
    data = form_data(staff_client.get(url).content.decode(), "route_form")
    data.update(
        {
            "name": ["orders"],
            "path_prefix": ["/orders"],
            "targets": ["http://127.0.0.1:9001/\r\nhttp://127.0.0.1:9002"],
            "base_rate_limit": ["30"],
            "methods": ["POST", "GET"],
        }
    )

    response = staff_client.post(url, data)

    assert response.status_code == 302, response.content.decode()[:3000]
    route = Route.objects.get(name="orders")
    assert route.path_prefix == "/orders/"
    assert route.targets == ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
    assert route.base_rate_limit == 30
    assert route.methods == ["GET", "POST"]
    page = staff_client.get(f"/admin/gateway/route/{route.pk}/change/").content.decode()
    assert "http://127.0.0.1:9001\nhttp://127.0.0.1:9002" in page


def test_route_targets_are_edited_in_the_form_and_bad_ones_refused(staff_client: Client) -> None:
    route = services.route_create(tenant=None, name="r", path_prefix="/r/", targets=["http://127.0.0.1:9001"])
    url = f"/admin/gateway/route/{route.pk}/change/"
    data = form_data(staff_client.get(url).content.decode(), "route_form")

    refused = staff_client.post(url, {**data, "targets": ["ftp://files.example"]})
    data["targets"] = ["http://127.0.0.1:9003"]
    saved = staff_client.post(url, data)

    assert refused.status_code == 200
    assert "is not an http(s) URL" in refused.content.decode()
    assert saved.status_code == 302
    assert Route.objects.get(pk=route.pk).targets == ["http://127.0.0.1:9003"]


def test_upstreams_are_read_only_and_one_in_use_is_not_deleted(staff_client: Client) -> None:
    route = services.route_create(tenant=None, name="r", path_prefix="/r/", targets=["http://127.0.0.1:9001"])
    services.route_update(route=route, targets=["http://127.0.0.1:9002"])
    used, unused = Upstream.objects.get(url="http://127.0.0.1:9002"), Upstream.objects.get(url="http://127.0.0.1:9001")

    add = staff_client.get("/admin/gateway/upstream/add/")
    both = [str(used.pk), str(unused.pk)]
    bulk = staff_client.post(
        "/admin/gateway/upstream/",
        {"action": "delete_selected", "_selected_action": both, "post": "yes"},
        follow=True,
    )
    one = staff_client.post(f"/admin/gateway/upstream/{unused.pk}/delete/", {"post": "yes"})

    assert add.status_code == 403
    assert bulk.status_code == 200
    assert Upstream.objects.filter(pk=used.pk).exists()  # protected: a route forwards to it
    assert one.status_code == 302
    assert not Upstream.objects.filter(pk=unused.pk).exists()
