"""The new user's first hour (`make run`): the demo seeds make the rules engine do something out
of the box, and the ready banner repeats the URLs and the one-time credentials.

Real processes: the mock upstream (whose /sink is the demo webhook's receiver), a web process, a
Celery worker and `manage.py await_ready`, as `make run` starts them.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from accounts.models import User
from gateway.models import Route
from gateway.services import route_update
from observability.management.commands.await_ready import Command
from rules.models import Delivery, DeliveryStatus, NotificationChannel, Rule
from rules.services import channel_update
from tests.support.net import free_port, http_request
from tests.support.processes import MockUpstreams, celery_worker, child_env, python_command, web_process
from tests.support.redis_keys import key_prefix
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def upstream_port(mock_upstream: MockUpstreams) -> int:
    return mock_upstream("demo").port


@pytest.fixture
def seeded(tmp_path: Path, settings: Any, upstream_port: int) -> dict[str, str]:
    """`make seed` against this test's database, with DOWNSTREAM_URL pointing at the mock."""
    settings.VAR_DIR = tmp_path
    settings.SENTINEL_GATEWAY = {**settings.SENTINEL_GATEWAY, "DOWNSTREAM_URL": f"http://127.0.0.1:{upstream_port}"}
    for command in ("seed_demo", "seed_demo_routes", "seed_demo_rules"):
        call_command(command, stdout=io.StringIO())
    lines = (tmp_path / "first-run.txt").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def sink_entries(port: int) -> list[dict[str, Any]]:
    status, _, body = http_request(port, "GET", "/sink")
    assert status == 200, body
    return list(json.loads(body)["received"])


def test_the_seeded_rule_notifies_the_seeded_sink_of_a_big_order(
    seeded: dict[str, str], upstream_port: int, tmp_path: Path
) -> None:
    env = {
        "SENTINEL_VAR_DIR": str(tmp_path),
        "CACHE_KEY_PREFIX": key_prefix("first-run"),
        "CELERY_POLL_INTERVAL": "0.05",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    events = [
        {"type": "order", "id": "o-1", "amount": 900, "currency": "EUR"},
        {"type": "order", "id": "o-2", "amount": 20, "currency": "EUR"},
    ]
    with web_process(**env) as port, celery_worker(name="first-run", **env):
        status, _, body = http_request(
            port,
            "POST",
            "/events",
            body=json.dumps(events).encode(),
            headers={"X-API-Key": seeded["demo_api_key"], "Content-Type": "application/json"},
        )
        assert status == 202, body
        wait_until(lambda: sink_entries(upstream_port), timeout=60, what="the demo webhook at the mock's /sink")
        wait_until(
            lambda: Delivery.objects.filter(status=DeliveryStatus.SENT).exists(), timeout=20, what="a sent delivery"
        )

    received = sink_entries(upstream_port)
    assert len(received) == 1  # the order of 20 notifies nobody
    assert received[0]["body"]["message"] == "Big order o-1: 900 EUR"
    assert received[0]["headers"]["x-sentinel-signature"].startswith("sha256=")


def test_the_ready_banner_repeats_the_urls_and_the_one_time_credentials(
    seeded: dict[str, str], upstream_port: int, tmp_path: Path
) -> None:
    with web_process(SENTINEL_VAR_DIR=str(tmp_path), PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "m")) as port:
        banner = subprocess.run(
            python_command("manage.py", "await_ready", "--port", str(port), "--upstream-port", str(upstream_port)),
            env=child_env(SENTINEL_VAR_DIR=str(tmp_path)),
            capture_output=True,
            timeout=120,
            check=True,
        ).stdout.decode()
        # A second `make run` while this one serves: stopped before anything starts, naming the port.
        second = subprocess.run(
            python_command("manage.py", "await_ready", "--ports-free", "--port", str(port), "--upstream-port", "1"),
            env=child_env(SENTINEL_VAR_DIR=str(tmp_path)),
            capture_output=True,
            timeout=60,
        )
        # And a banner whose honcho has ended prints nothing, although /health answers (another's).
        ended = subprocess.Popen(["true"])
        ended.wait()
        orphan = subprocess.run(
            python_command("manage.py", "await_ready", "--port", str(port), "--while-pid", str(ended.pid)),
            env=child_env(SENTINEL_VAR_DIR=str(tmp_path)),
            capture_output=True,
            timeout=60,
        )

    assert second.returncode != 0
    assert f"port {port} (web) is already in use" in second.stderr.decode()
    assert (orphan.returncode, orphan.stdout) == (0, b"")
    assert "Sentinel is ready." in banner
    assert f"http://127.0.0.1:{port}/admin/" in banner
    assert f"http://127.0.0.1:{port}/dashboard/" in banner
    assert f"{seeded['admin_username']} / {seeded['admin_password']}" in banner
    assert seeded["demo_api_key"] in banner
    assert f"http://127.0.0.1:{upstream_port}/sink" in banner


def test_await_ready_says_so_when_nothing_answers(tmp_path: Path) -> None:
    result = subprocess.run(
        python_command("manage.py", "await_ready", "--port", str(free_port()), "--timeout", "1"),
        env=child_env(SENTINEL_VAR_DIR=str(tmp_path)),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert b"did not answer" in result.stderr


def test_under_the_production_egress_policy_the_demo_rule_is_skipped_with_its_channel(
    tmp_path: Path, settings: Any
) -> None:
    settings.VAR_DIR = tmp_path
    settings.EGRESS_ALLOW_LOOPBACK = False  # production mode's default
    call_command("seed_demo", stdout=io.StringIO())
    errors = io.StringIO()

    call_command("seed_demo_rules", stdout=io.StringIO(), stderr=errors)

    assert "not created" in errors.getvalue() and "loopback" in errors.getvalue()
    assert not NotificationChannel.objects.exists()
    assert not Rule.objects.exists()  # a demo that cannot deliver would only confuse
    lines = Command._credentials("http://127.0.0.1:8000")
    assert any("demo channel was not created" in line for line in lines)
    assert not any("curl" in line for line in lines)


def test_the_banner_says_so_when_the_first_run_file_belongs_to_another_database(tmp_path: Path, settings: Any) -> None:
    settings.VAR_DIR = tmp_path
    call_command("seed_demo", stdout=io.StringIO())
    admin = User.objects.get(username="admin")  # as if another database's admin
    admin.set_password("changed-since-the-first-run")
    admin.save(update_fields=["password"])

    lines = Command._credentials("http://127.0.0.1:8000")

    assert "another database" in lines[0]
    assert not any("demo_api_key" in line or "snl_" in line for line in lines)


def test_a_run_on_other_ports_moves_the_demo_route_and_channel_but_not_what_someone_set(
    seeded: dict[str, str], settings: Any
) -> None:
    """`make run UPSTREAM_PORT=8180` after a run on 8080: the demo route and channel follow the
    mock upstream (the trial found them left on the old port: 502, and webhooks to nowhere)."""
    moved = "http://127.0.0.1:8180"
    settings.SENTINEL_GATEWAY = {**settings.SENTINEL_GATEWAY, "DOWNSTREAM_URL": moved}
    call_command("seed_demo_routes", "--follow-downstream", stdout=(out := io.StringIO()))
    call_command("seed_demo_rules", "--follow-downstream", stdout=out)

    assert Route.objects.get(path_prefix="/proxy/").targets == [moved]
    assert NotificationChannel.objects.get(name="demo-sink").target == f"{moved}/sink"
    assert "re-pointed" in out.getvalue()

    # Targets someone chose stay, as does everything without the flag.
    route = Route.objects.get(path_prefix="/proxy/")
    route_update(route=route, targets=["http://localhost:9000"])
    channel = NotificationChannel.objects.get(name="demo-sink")
    channel_update(channel=channel, target="http://127.0.0.1:8180/hooks/sentinel")
    settings.SENTINEL_GATEWAY = {**settings.SENTINEL_GATEWAY, "DOWNSTREAM_URL": "http://127.0.0.1:8280"}
    call_command("seed_demo_routes", "--follow-downstream", stdout=io.StringIO(), stderr=io.StringIO())
    call_command("seed_demo_rules", "--follow-downstream", stdout=io.StringIO())

    assert Route.objects.get(path_prefix="/proxy/").targets == ["http://localhost:9000"]
    assert NotificationChannel.objects.get(name="demo-sink").target == "http://127.0.0.1:8180/hooks/sentinel"
