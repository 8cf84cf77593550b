"""The insight engine end to end (issue 10's acceptance): real Celery workers with beat run the
analysis every second, incidents reach a rule's webhook as `incident` events through the rules
engine's real delivery, to a recording local HTTP server.

The flood is real traffic: a web process (`manage.py serve`) proxies it to a local upstream and
its request-log writer writes the rows the engine reads. The proxy takes the client address from
the socket peer (it does not read X-Forwarded-For), as a deployment without a load balancer in
front would see it: the flood comes from a loopback address of its own, 127.0.0.9, so it is one
client among the others on 127.0.0.1. The anonymous client's bucket (the tenant limit of a caller
without credentials, keyed by its address) is small, so most of the flood is answered 429.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from accounts.models import User
from gateway import services as gateway_services
from observability.insight.detectors import percent
from observability.models import Decision, Incident, IncidentStatus, InsightState, RequestLog
from rules import services as rules_services
from rules.models import Event
from rules.tests.sinks import HttpSink, http_sink
from tests.support.net import http_request
from tests.support.processes import MockUpstreams, celery_worker, web_process
from tests.support.redis_keys import key_prefix
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
FLOOD_IP = "127.0.0.9"
FLOOD_REQUESTS = 600
# The limit of an anonymous caller's bucket in the web process: five at once, then one a second.
THROTTLED = {"BURST_CAPACITY": "5", "REFILL_RATE": "1"}
PAGE_CRITICAL = 'when event.type == "incident" and severity == "critical" then notify("webhook:oncall")'


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The processes' environment: their own broker queue (a key prefix on Redis, a folder in
    embedded mode), an analysis every second over a 3-second window, resolution after two quiet
    periods, fleet-wide incidents to tenant A (`wonderland`)."""
    yield {
        "SENTINEL_VAR_DIR": str(tmp_path),
        "CACHE_KEY_PREFIX": key_prefix("insight"),
        "CELERY_POLL_INTERVAL": "0.05",
        "DELIVERY_BACKOFF_SECONDS": "0.5",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "INSIGHT_PERIOD_SECONDS": "1",
        "INSIGHT_WINDOW_SECONDS": "3",
        "INSIGHT_RESOLVE_AFTER_PERIODS": "2",
        "INSIGHT_EVENTS_TENANT": "wonderland",
    }


@pytest.fixture
def flood_route(mock_upstream: MockUpstreams) -> None:
    """`/flood/` to a local upstream, open to anyone (no credentials: the caller's bucket is its address's)."""
    upstream = mock_upstream("flooded").url
    gateway_services.route_create(
        tenant=None, name="flood", path_prefix="/flood/", targets=[upstream], auth_mode="none"
    )


def flood(port: int, count: int = FLOOD_REQUESTS) -> Counter[int]:
    """`count` GETs to `/flood/` from FLOOD_IP, 50 at a time over keep-alive connections; the
    statuses the client saw, counted. Returns once every row is in the request log."""

    async def send() -> list[int]:
        connector = aiohttp.TCPConnector(limit=50, local_addr=(FLOOD_IP, 0))
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(n: int) -> int:
                async with session.get(f"http://127.0.0.1:{port}/flood/{n}") as response:
                    await response.read()
                    return response.status

            return await asyncio.gather(*(one(n) for n in range(count)))

    statuses = Counter(asyncio.run(send()))
    logged = RequestLog.objects.filter(client_ip=FLOOD_IP)
    wait_until(lambda: logged.count() >= count, timeout=30, what="the flood's rows in the request log")
    return statuses


def pages(sink: HttpSink) -> list[dict[str, Any]]:
    """The `incident` events the webhook received (the rules engine's webhook body carries the event)."""
    return [json.loads(request.body)["event"]["payload"] for request in sink.received]


def analyses_run(worker: subprocess.Popen[bytes]) -> int:
    """How many analyses this worker process finished, from its own log (its stdout)."""
    log = Path(f"/proc/{worker.pid}/fd/1").read_text(errors="replace")
    return len(re.findall(r"Task observability\.tasks\.insight_analyse\[[0-9a-f-]+\] succeeded", log))


def oncall(alice: User, sink: HttpSink, dsl: str = PAGE_CRITICAL) -> None:
    tenant = alice.tenant
    assert tenant is not None
    rules_services.channel_create(tenant=tenant, kind="webhook", name="oncall", target=sink.url)
    # Cooldown 0: every event is already one change of one incident (docs/insight.md).
    rules_services.rule_create(tenant=tenant, name="page on-call", dsl=dsl, cooldown_seconds=0)


def test_a_flood_opens_one_incident_that_pages_and_resolves_after_it_stops(
    alice: User, isolated: dict[str, str], flood_route: None
) -> None:
    with http_sink() as sink:
        oncall(alice, sink)
        with (
            web_process(**isolated, **THROTTLED) as port,
            celery_worker(name="insight", beat=True, **isolated) as worker,
        ):
            wait_until(lambda: analyses_run(worker) >= 1, timeout=60, what="the first analysis")
            statuses = flood(port)
            before = analyses_run(worker)
            wait_until(lambda: Incident.objects.filter(kind="flood_ip").exists(), timeout=60, what="the incident")
            # Opened at the latest by the first analysis after the last rows were written, or the
            # one after it if an analysis was already counting when they arrived (its log line
            # may still lag); usually already while the flood went on.
            assert analyses_run(worker) - before <= 2
            wait_until(lambda: sink.count() >= 1, timeout=60, what="the flood's page")
            wait_until(lambda: sink.count() >= 2, timeout=60, what="the resolution's page")
    # Most of the flood was throttled, some of it reached the upstream, and the log says the same
    assert statuses[429] > 0.9 * FLOOD_REQUESTS and statuses[200] >= 1, statuses
    logged = Counter(RequestLog.objects.filter(client_ip=FLOOD_IP).values_list("decision", flat=True))
    assert (logged[Decision.LIMITED], logged[Decision.FORWARDED]) == (statuses[429], statuses[200])
    [incident] = Incident.objects.filter(kind="flood_ip")
    assert (incident.subject, incident.severity, incident.status) == (FLOOD_IP, "critical", IncidentStatus.RESOLVED)
    opened, resolved = pages(sink)
    assert (opened["type"], opened["kind"], opened["subject"], opened["status"]) == (
        "incident",
        "flood_ip",
        FLOOD_IP,
        "open",
    )
    # The page tells the share the limiter held off, from the rows of its window
    evidence = opened["evidence"]
    share = evidence["limited"] / evidence["requests"]
    assert opened["incident_id"] == incident.pk and share > 0.9, evidence
    assert f"{percent(share)} answered 429" in opened["summary"]
    assert (resolved["incident_id"], resolved["status"]) == (incident.pk, "resolved")


def test_twenty_failed_logins_open_a_brute_force_incident_that_pages(alice: User, isolated: dict[str, str]) -> None:
    with http_sink() as sink:
        oncall(
            alice, sink, 'when event.type == "incident" and kind startswith "brute_force" then notify("webhook:oncall")'
        )
        with web_process(**isolated) as port, celery_worker(name="insight", beat=True, **isolated):
            for n in range(20):
                body = json.dumps({"username": "alice", "password": f"guess-{n}"}).encode()
                status, _, _ = http_request(
                    port, "POST", "/auth/token", body=body, headers={"Content-Type": "application/json"}
                )
                assert status in (401, 429)
            wait_until(lambda: sink.count() >= 2, timeout=60, what="the brute-force pages")
            # The page carries the count of the analysis that opened the incident, which may
            # have run while the logins were still being sent; later analyses update the incident.
            wait_until(
                lambda: Incident.objects.get(kind="brute_force_ip").evidence["login_failures"] == 20,
                timeout=60,
                what="the incident counting all 20 failed logins",
            )
    by_kind = {page["kind"]: page for page in pages(sink)}
    assert set(by_kind) == {"brute_force_ip", "brute_force_user"}
    assert by_kind["brute_force_ip"]["subject"] == "127.0.0.1"
    assert 10 <= by_kind["brute_force_ip"]["evidence"]["login_failures"] <= 20  # opened at the threshold, 10
    assert by_kind["brute_force_user"]["subject"] == "alice"
    assert Incident.objects.filter(kind__startswith="brute_force").count() == 2


def test_two_workers_analysing_at_once_open_one_incident(
    alice: User, isolated: dict[str, str], flood_route: None
) -> None:
    # Two beats (a deployment mistake, or a task retried) send the analysis twice a period, to
    # two workers: one claims each period, and the constraint backs the claim up.
    with http_sink() as sink:
        oncall(alice, sink)
        with (
            web_process(**isolated, **THROTTLED) as port,
            celery_worker(name="a", beat=True, **isolated) as a,
            celery_worker(name="b", beat=True, **isolated) as b,
        ):
            flood(port)
            wait_until(lambda: sink.count() >= 1, timeout=60, what="the flood's page")
            opened = Incident.objects.get(kind="flood_ip").first_seen
            wait_until(
                lambda: (
                    InsightState.objects.filter(analysed_at__gt=opened).exists()
                    and analyses_run(a) >= 2
                    and analyses_run(b) >= 2
                ),
                timeout=60,
                what="more analyses by both workers",
            )
    assert Incident.objects.filter(kind="flood_ip", subject=FLOOD_IP).count() == 1
    assert Event.objects.filter(type="incident", payload__change="opened").count() == 1
    assert [page["kind"] for page in pages(sink) if page["status"] == "open"] == ["flood_ip"]
