"""Rules end to end: events posted to a real web process, evaluated and delivered by real Celery
workers, received by real local servers (an HTTP sink, an SMTP sink)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from accounts.api.serializers import TokenSerializer
from accounts.models import User
from rules import services
from rules.models import Delivery, DeliveryStatus, Event, RuleMatch
from rules.tests.sinks import http_sink, smtp_sink
from tests.support.net import http_request
from tests.support.processes import celery_worker, web_process
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ORDER_RULE = 'when event.type == "order" and amount > 500 then notify("webhook:orders")'


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for the web and worker processes of one test: their own broker queue (a key
    prefix on Redis, a folder in embedded mode), so no other worker on this machine takes the
    tasks, and fast retries."""
    env = {
        "SENTINEL_VAR_DIR": str(tmp_path),
        "CACHE_KEY_PREFIX": key_prefix("delivery"),
        "CELERY_POLL_INTERVAL": "0.05",
        "DELIVERY_BACKOFF_SECONDS": "0.5",
        "DELIVERY_MAX_ATTEMPTS": "3",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    yield env


def post_events(port: int, user: User, events: object) -> list[int]:
    token = TokenSerializer.get_token(user).access_token
    status, _, body = http_request(
        port,
        "POST",
        "/events",
        body=json.dumps(events).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert status == 202, body
    return list(json.loads(body)["ids"])


def all_evaluated(ids: list[int]) -> bool:
    return Event.objects.filter(pk__in=ids, evaluated_at__isnull=False).count() == len(ids)


def tasks_run(worker: subprocess.Popen[bytes]) -> list[str]:
    """The ids of the rules tasks this worker process has finished, from its own log (its stdout,
    a file that Linux's /proc reaches by the process id)."""
    log = Path(f"/proc/{worker.pid}/fd/1").read_text(errors="replace")
    return re.findall(r"Task rules\.tasks\.\w+\[([0-9a-f-]+)\] succeeded", log)


def test_an_order_over_500_sends_one_signed_webhook_and_400_sends_none(alice: User, isolated: dict[str, str]) -> None:
    tenant = alice.membership.tenant
    with http_sink() as sink:
        services.channel_create(tenant=tenant, kind="webhook", name="orders", target=sink.url, secret="s3cret")
        rule = services.rule_create(tenant=tenant, name="big orders", dsl=ORDER_RULE)
        with web_process(**isolated) as port, celery_worker(name="e2e", **isolated):
            ids = post_events(port, alice, [{"type": "order", "amount": 750}, {"type": "order", "amount": 400}])
            wait_until(lambda: all_evaluated(ids), timeout=30, what="both events to be evaluated")
            wait_until(lambda: sink.count() == 1, timeout=30, what="the webhook")
            wait_until(
                lambda: Delivery.objects.filter(status=DeliveryStatus.SENT).count() == 1, timeout=10, what="sent"
            )
            metrics = http_request(port, "GET", "/metrics")[2].decode()

    received = sink.received[0]
    body = json.loads(received.body)
    expected = "sha256=" + hmac.new(b"s3cret", received.body, hashlib.sha256).hexdigest()
    assert sink.count() == 1
    assert received.headers["x-sentinel-signature"] == expected
    assert body["rule"] == {"id": rule.pk, "name": "big orders"}
    assert body["event"]["id"] == ids[0]
    assert body["event"]["payload"] == {"type": "order", "amount": 750}
    assert RuleMatch.objects.get().event_id == ids[0]
    # The web process's /metrics sums its own samples and the worker's.
    assert "events_ingested_total 2.0" in metrics
    assert "rules_triggered_total 1.0" in metrics
    assert 'notifications_sent_total{channel="webhook",outcome="sent"} 1.0' in metrics


def test_a_failing_sink_is_retried_with_growing_delays_then_served(alice: User, isolated: dict[str, str]) -> None:
    tenant = alice.membership.tenant
    with http_sink(statuses=[500, 500, 200]) as sink:
        services.channel_create(tenant=tenant, kind="webhook", name="orders", target=sink.url)
        services.rule_create(tenant=tenant, name="big orders", dsl=ORDER_RULE)
        with web_process(**isolated) as port, celery_worker(name="retry", **isolated):
            post_events(port, alice, {"type": "order", "amount": 900})
            wait_until(
                lambda: Delivery.objects.filter(status=DeliveryStatus.SENT).exists(), timeout=30, what="delivery"
            )

    delivery = Delivery.objects.get()
    times = [request.at for request in sink.received]
    assert (sink.count(), delivery.attempts) == (3, 3)
    first_wait, second_wait = times[1] - times[0], times[2] - times[1]
    # Backoff 0.5 s then 1 s, each with jitter over its upper half: [0.25, 0.5] then [0.5, 1].
    assert first_wait >= 0.2 and second_wait >= 0.45
    assert second_wait > first_wait
    assert len({request.headers["x-sentinel-idempotency-key"] for request in sink.received}) == 1


def test_a_sink_that_always_fails_leaves_a_dead_delivery_with_the_last_error(
    alice: User, isolated: dict[str, str]
) -> None:
    tenant = alice.membership.tenant
    with http_sink(statuses=[503]) as sink:
        services.channel_create(tenant=tenant, kind="webhook", name="orders", target=sink.url)
        services.rule_create(tenant=tenant, name="big orders", dsl=ORDER_RULE)
        with web_process(**isolated) as port, celery_worker(name="dead", **isolated):
            post_events(port, alice, {"type": "order", "amount": 900})
            wait_until(
                lambda: Delivery.objects.filter(status=DeliveryStatus.DEAD).exists(), timeout=30, what="dead letter"
            )

    delivery = Delivery.objects.get()
    assert (delivery.attempts, sink.count()) == (3, 3)
    assert delivery.last_error.startswith("HTTP 503")


def test_a_worker_killed_mid_delivery_leaves_exactly_one_delivery(alice: User, isolated: dict[str, str]) -> None:
    tenant = alice.membership.tenant
    env = {**isolated, "DELIVERY_LEASE_SECONDS": "2", "RULES_SWEEP_SECONDS": "0.5"}
    with http_sink(hold={1: 30.0}) as sink:
        services.channel_create(tenant=tenant, kind="webhook", name="orders", target=sink.url)
        services.rule_create(tenant=tenant, name="big orders", dsl=ORDER_RULE)
        with web_process(**env) as port:
            with celery_worker(name="doomed", **env) as doomed:
                post_events(port, alice, {"type": "order", "amount": 900})
                # The sink got the request and holds its answer: the worker dies mid-delivery.
                wait_until(lambda: sink.count() == 1, timeout=30, what="the first attempt to reach the sink")
                doomed.send_signal(signal.SIGKILL)
                doomed.wait(timeout=10)
            with celery_worker(name="heir", beat=True, **env):
                wait_until(
                    lambda: Delivery.objects.filter(status=DeliveryStatus.SENT).exists(), timeout=30, what="recovery"
                )

    delivery = Delivery.objects.get()
    keys = {request.headers["x-sentinel-idempotency-key"] for request in sink.received}
    # The receiver saw the message again after the crash, with the same key (it cannot be known
    # whether the first got through), and Sentinel recorded exactly one delivery, sent.
    assert keys == {delivery.idempotency_key}
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SENT, 2)
    assert sink.count() == 2


def test_slack_discord_and_email_get_their_own_formats(alice: User, isolated: dict[str, str]) -> None:
    tenant = alice.membership.tenant
    dsl = (
        'when type == "order" and amount > 500 then notify("slack:#big-orders", "order {event.id}: {amount}"), '
        'notify("discord:ops"), notify("email:oncall")'
    )
    with http_sink() as sink, smtp_sink() as smtp:
        services.channel_create(tenant=tenant, kind="slack", name="#big-orders", target=sink.url + "/slack")
        services.channel_create(tenant=tenant, kind="discord", name="ops", target=sink.url + "/discord")
        services.channel_create(tenant=tenant, kind="email", name="oncall", target="oncall@example.com")
        services.rule_create(tenant=tenant, name="big orders", dsl=dsl)
        mail = {"EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": str(smtp.port)}
        with web_process(**isolated) as port, celery_worker(name="formats", **isolated, **mail):
            post_events(port, alice, {"type": "order", "amount": 900, "id": "A-17"})
            wait_until(lambda: sink.count() == 2 and len(smtp.messages) == 1, timeout=30, what="three channels")

    by_path = {request.path: json.loads(request.body) for request in sink.received}
    assert by_path["/slack"] == {"text": "order A-17: 900"}
    assert set(by_path["/discord"]) == {"content"} and "big orders" in by_path["/discord"]["content"]
    message = smtp.messages[0]
    assert message["To"] == "oncall@example.com"
    assert message["Subject"] == "[Sentinel] big orders"


def test_a_count_window_fires_once_at_the_fifth_failure_from_one_ip_across_two_workers(
    alice: User, isolated: dict[str, str]
) -> None:
    env = {**isolated, "REDIS_URL": require_redis()}
    tenant = alice.membership.tenant
    dsl = 'when event.type == "login_failed" and count(1m by event.ip) >= 5 then notify("webhook:security")'
    with http_sink() as sink:
        services.channel_create(tenant=tenant, kind="webhook", name="security", target=sink.url)
        rule = services.rule_create(tenant=tenant, name="brute force", dsl=dsl)
        with (
            web_process(**env) as port,
            celery_worker(name="w1", **env) as w1,
            celery_worker(name="w2", **env) as w2,
        ):
            # Five IPs with one failure each: nothing. Then five from one IP, one request each,
            # so the evaluations spread over both workers.
            spread = post_events(port, alice, [{"type": "login_failed", "ip": f"10.0.0.{n}"} for n in range(5)])
            one_ip = [post_events(port, alice, {"type": "login_failed", "ip": "10.9.9.9"})[0] for _ in range(5)]
            wait_until(lambda: all_evaluated(spread + one_ip), timeout=30, what="all ten events evaluated")
            wait_until(lambda: sink.count() == 1, timeout=30, what="the notification")

            # Six evaluation tasks (one per request) and the delivery, each run by one worker
            def ran() -> dict[str, list[str]] | None:
                tasks = {"w1": tasks_run(w1), "w2": tasks_run(w2)}
                return tasks if sum(map(len, tasks.values())) >= 7 else None

            done = wait_until(ran, timeout=30, what="both workers' logs to show the seven tasks done")

    match = RuleMatch.objects.get(rule=rule)
    assert match.group_key.endswith("10.9.9.9")
    assert match.event_id in one_ip
    assert sink.count() == 1
    # Across two workers: each ran some of the tasks, and no task ran twice
    assert all(done.values()), done
    assert not set(done["w1"]) & set(done["w2"]), done
