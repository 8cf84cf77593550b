"""Notifications no rule produced (``services.notification_send``): one delivery per channel per
source, sent by the same machinery as a rule's, with a payload and subject of their own."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import Tenant, User
from core.errors import DomainError
from rules import selectors, services
from rules.models import Delivery, DeliveryStatus, NotificationChannel
from rules.tests.sinks import http_sink, smtp_sink

pytestmark = pytest.mark.django_db

CONTEXT = {"type": "monitor.down", "monitor": {"id": 7, "name": "shop"}, "state": "down"}


def webhook(tenant: Tenant, url: str, *, name: str = "ops", secret: str = "") -> NotificationChannel:
    return services.channel_create(tenant=tenant, kind="webhook", name=name, target=url, secret=secret)


def send(tenant: Tenant, channels: list[NotificationChannel], source_ref: str = "monitor-flip:1") -> list[int]:
    return services.notification_send(
        tenant=tenant,
        channels=channels,
        title="shop is down",
        message="shop is DOWN: HTTP 500",
        context=CONTEXT,
        source_ref=source_ref,
    )


def test_one_delivery_per_channel_and_a_rerun_adds_none(tenant_a: Tenant) -> None:
    first, second = webhook(tenant_a, "https://a.example/h"), webhook(tenant_a, "https://b.example/h", name="b")

    ids = send(tenant_a, [first, second])
    again = send(tenant_a, [first, second])

    assert len(ids) == 2 and again == []
    assert sorted(Delivery.objects.values_list("channel_id", flat=True)) == sorted([first.pk, second.pk])
    delivery = Delivery.objects.get(channel=first)
    assert (delivery.match, delivery.title, delivery.source_ref) == (None, "shop is down", "monitor-flip:1")
    assert delivery.context == CONTEXT
    # Another source notifies the same channel again.
    assert len(send(tenant_a, [first], source_ref="monitor-flip:2")) == 1


def test_channels_of_another_tenant_and_inactive_ones_are_not_used(tenant_a: Tenant, tenant_b: Tenant) -> None:
    mine = webhook(tenant_a, "https://a.example/h")
    inactive = webhook(tenant_a, "https://c.example/h", name="off")
    NotificationChannel.objects.filter(pk=inactive.pk).update(active=False)
    theirs = webhook(tenant_b, "https://b.example/h")

    send(tenant_a, [mine, inactive, theirs])

    assert list(Delivery.objects.values_list("channel_id", "tenant_id")) == [(mine.pk, tenant_a.pk)]


@pytest.mark.parametrize("source_ref", ["", "x" * 101])
def test_a_source_ref_is_required(tenant_a: Tenant, source_ref: str) -> None:
    with pytest.raises(DomainError):
        send(tenant_a, [webhook(tenant_a, "https://a.example/h")], source_ref=source_ref)
    assert not Delivery.objects.exists()


def test_the_webhook_gets_the_alert_signed_with_the_channel_secret(tenant_a: Tenant) -> None:
    with http_sink() as sink:
        [delivery_id] = send(tenant_a, [webhook(tenant_a, sink.url + "/hook", secret="s3cret")])

        delivery = services.delivery_attempt(delivery_id=delivery_id)

    assert delivery is not None and delivery.status == DeliveryStatus.SENT
    [received] = sink.received
    expected = "sha256=" + hmac.new(b"s3cret", received.body, hashlib.sha256).hexdigest()
    assert received.headers["x-sentinel-signature"] == expected
    assert json.loads(received.body) == {
        "delivery_id": delivery_id,
        "idempotency_key": f"sentinel-delivery-{delivery_id}",
        "alert": {**CONTEXT, "title": "shop is down"},
        "message": "shop is DOWN: HTTP 500",
    }


def test_a_failed_notification_is_retried_like_a_rules_one(tenant_a: Tenant) -> None:
    with http_sink(statuses=[503]) as sink:
        [delivery_id] = send(tenant_a, [webhook(tenant_a, sink.url)])

        delivery = services.delivery_attempt(delivery_id=delivery_id)

    assert delivery is not None and delivery.status == DeliveryStatus.FAILED
    assert "HTTP 503" in delivery.last_error
    # The sweeper sees it once its next attempt is due.
    assert delivery_id in selectors.deliveries_due(now=delivery.next_attempt_at)


def test_the_email_subject_is_the_title(tenant_a: Tenant, settings: Any) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_TIMEOUT = 5
    with smtp_sink() as smtp:
        settings.EMAIL_PORT = smtp.port
        channel = services.channel_create(tenant=tenant_a, kind="email", name="oncall", target="oncall@example.com")
        [delivery_id] = send(tenant_a, [channel])

        services.delivery_attempt(delivery_id=delivery_id)

    [message] = smtp.messages
    assert message["Subject"] == "[Sentinel] shop is down"
    assert "shop is DOWN: HTTP 500" in message.get_payload()


def test_the_api_and_the_admin_show_a_delivery_without_a_match(
    tenant_a: Tenant, alice: User, staff: User, api: Callable[..., APIClient]
) -> None:
    [delivery_id] = send(tenant_a, [webhook(tenant_a, "https://a.example/h")])

    listed = api(alice).get(f"/api/v1/deliveries/{delivery_id}").json()
    client = Client()
    client.force_login(staff)
    change = client.get(reverse("admin:rules_delivery_change", args=[delivery_id]))
    changelist = client.get(reverse("admin:rules_delivery_changelist"))

    assert (listed["match"], listed["title"], listed["source_ref"]) == (None, "shop is down", "monitor-flip:1")
    assert change.status_code == 200 and changelist.status_code == 200
    assert "shop is down" in changelist.content.decode()


def test_a_delivery_without_a_match_needs_a_source_ref(tenant_a: Tenant) -> None:
    channel = webhook(tenant_a, "https://a.example/h")

    with pytest.raises(IntegrityError), transaction.atomic():
        Delivery.objects.create(tenant=tenant_a, channel=channel, message="about nothing")
