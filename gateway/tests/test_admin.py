"""The gateway's admin actions against real upstreams."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from accounts.models import User
from gateway import services
from sentinel_site.testing import free_port, http_request, python_command, running_process, wait_until

pytestmark = pytest.mark.django_db


@pytest.fixture
def upstream() -> Iterator[str]:
    port = free_port()
    with running_process(
        python_command("-m", "gateway.mock_upstream", "--port", str(port)), env={"PATH": "/usr/bin:/bin"}, name="up"
    ):
        wait_until(lambda: http_request(port, "GET", "/health")[0] == 200, timeout=15, what="the mock upstream")
        yield f"http://127.0.0.1:{port}"


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
