"""A receiver's answer decides what happens next, end to end: an event posted to a real web
process, evaluated and delivered by a real Celery worker to a real local sink that answers what
the test scripted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from accounts.api.serializers import TokenSerializer
from accounts.models import User
from rules import services
from rules.models import Delivery, DeliveryStatus
from rules.tests.sinks import Answer, http_sink
from tests.support.net import http_request
from tests.support.processes import celery_worker, web_process
from tests.support.redis_keys import key_prefix
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

ORDER_RULE = 'when event.type == "order" and amount > 500 then notify("webhook:orders")'


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for this test's web and worker processes: their own broker queue, fast
    retries (a retry after a refusal would come within a second), five attempts."""
    yield {
        "SENTINEL_VAR_DIR": str(tmp_path),
        "CACHE_KEY_PREFIX": key_prefix("answers"),
        "CELERY_POLL_INTERVAL": "0.05",
        "DELIVERY_BACKOFF_SECONDS": "0.2",
        "DELIVERY_MAX_ATTEMPTS": "5",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }


def post_order(port: int, user: User) -> None:
    token = TokenSerializer.get_token(user).access_token
    status, _, body = http_request(
        port,
        "POST",
        "/events",
        body=json.dumps({"type": "order", "amount": 900}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert status == 202, body


def test_a_webhook_that_answers_410_gone_gets_one_attempt_and_the_delivery_is_dead(
    alice: User, isolated: dict[str, str]
) -> None:
    tenant = alice.membership.tenant
    with http_sink(answers=[Answer(410, body=b"this hook was removed")]) as sink:
        services.channel_create(tenant=tenant, kind="webhook", name="orders", target=sink.url)
        services.rule_create(tenant=tenant, name="big orders", dsl=ORDER_RULE)
        with web_process(**isolated) as port, celery_worker(name="gone", **isolated):
            post_order(port, alice)
            wait_until(
                lambda: Delivery.objects.filter(status=DeliveryStatus.DEAD).exists(), timeout=60, what="a dead delivery"
            )
            metrics = http_request(port, "GET", "/metrics")[2].decode()

    delivery = Delivery.objects.get()
    # A dead delivery is never claimed again, so what the sink saw by now is all it will see.
    assert sink.count() == 1
    assert delivery.attempts == 1
    assert delivery.last_error == "HTTP 410 Gone (this hook was removed): permanent, not retried"
    assert 'notifications_sent_total{channel="webhook",outcome="dead"} 1.0' in metrics
    # never counted as a failed (retried) attempt: that series stays at its zero
    assert 'notifications_sent_total{channel="webhook",outcome="failed"} 0.0' in metrics


def test_a_429_with_retry_after_is_retried_no_earlier_than_asked_and_delivered(
    alice: User, isolated: dict[str, str]
) -> None:
    tenant = alice.membership.tenant
    answers = [Answer(429, headers={"Retry-After": "2"}, body=b"slow down"), Answer(200, body=b"ok")]
    with http_sink(answers=answers) as sink:
        services.channel_create(tenant=tenant, kind="webhook", name="orders", target=sink.url)
        services.rule_create(tenant=tenant, name="big orders", dsl=ORDER_RULE)
        with web_process(**isolated) as port, celery_worker(name="patient", **isolated):
            post_order(port, alice)
            wait_until(lambda: Delivery.objects.filter(status=DeliveryStatus.SENT).exists(), timeout=60, what="sent")
            metrics = http_request(port, "GET", "/metrics")[2].decode()

    delivery = Delivery.objects.get()
    first, second = sink.received
    assert (sink.count(), delivery.attempts) == (2, 2)
    # The next attempt was recorded 2 s after the 429 reached Sentinel (the sink stamps the
    # request just before it answers), not after the 0.2 s backoff; the second request was
    # made only once it was due.
    assert delivery.next_attempt_at >= first.wall + timedelta(seconds=2)
    assert delivery.next_attempt_at - first.wall < timedelta(seconds=2 + 30)  # 30 s: a busy machine's margin
    assert second.wall >= delivery.next_attempt_at
    assert delivery.sent_at is not None and delivery.sent_at >= delivery.next_attempt_at
    assert delivery.last_error == ""
    assert 'notifications_sent_total{channel="webhook",outcome="failed"} 1.0' in metrics
    assert 'notifications_sent_total{channel="webhook",outcome="sent"} 1.0' in metrics


def test_a_delivery_made_while_its_receiver_asked_for_a_pause_waits_for_the_end_of_it(
    alice: User, isolated: dict[str, str]
) -> None:
    tenant = alice.membership.tenant
    answers = [Answer(429, headers={"Retry-After": "6"}, body=b"rate_limited"), Answer(200, body=b"ok")]
    with http_sink(answers=answers) as sink:
        services.channel_create(tenant=tenant, kind="slack", name="#orders", target=sink.url)
        dsl = 'when event.type == "order" then notify("slack:#orders")'
        services.rule_create(tenant=tenant, name="every order", dsl=dsl, cooldown_seconds=0)
        with web_process(**isolated) as port, celery_worker(name="paused", **isolated):
            post_order(port, alice)
            wait_until(lambda: sink.count() == 1, timeout=60, what="the rate-limited first message")
            post_order(port, alice)  # a second alert while Slack asked for 6 s of quiet
            wait_until(
                lambda: Delivery.objects.filter(status=DeliveryStatus.SENT).count() == 2, timeout=60, what="both sent"
            )

    limited, later = Delivery.objects.order_by("pk")
    pause_end = limited.next_attempt_at
    assert sink.count() == 3  # the 429, then each message once
    assert all(request.wall >= pause_end for request in sink.received[1:])
    # The later delivery was held to the same instant without spending an attempt.
    assert (later.next_attempt_at, later.attempts) == (pause_end, 1)
    assert limited.attempts == 2
