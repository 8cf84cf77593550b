"""The rules services in process: evaluation, cooldowns, claims and backoff."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import Tenant, User
from core.conf import sentinel_settings
from rules import selectors, services
from rules.models import Delivery, DeliveryStatus, Event, RuleMatch

pytestmark = pytest.mark.django_db

ORDER_RULE = 'when event.type == "order" and amount > 500 then notify("webhook:orders")'


def store(tenant: Tenant, *payloads: dict[str, object]) -> list[int]:
    events = [Event.objects.create(tenant=tenant, type=str(p.get("type", "")), payload=p) for p in payloads]
    return [event.pk for event in events]


@pytest.fixture
def tenant(alice: User) -> Tenant:
    tenant = alice.membership.tenant
    services.channel_create(tenant=tenant, kind="webhook", name="orders", target="http://127.0.0.1:9/hook")
    return tenant


def test_a_syntax_error_names_its_position(tenant: Tenant) -> None:
    with pytest.raises(services.RuleInvalid) as error:
        services.rule_create(tenant=tenant, name="bad", dsl='when amount > then notify("webhook:orders")')

    details = error.value.details["dsl"]
    assert (details["line"], details["column"]) == (1, 15)
    assert details["expected"]


@pytest.mark.parametrize(
    ("payloads", "details"),
    [
        ([], {"events": ["Send at least one event."]}),
        ([{"i": i} for i in range(1001)], {"events": ["At most 1000 events per request (got 1001)."]}),
        (
            [{"type": "ok"}, {"note": "a\x00b"}],
            {"events": {"1": ["Text may not contain the NUL character (\\u0000)."]}},
        ),
        (
            [{"type": "ok"}, {"type": "ok"}, ["not", "an", "object"]],
            {"events": {"2": ["An event must be a JSON object."]}},
        ),
        ([{"amount": float("inf")}], {"events": {"0": ["Numbers must be finite."]}}),
    ],
    ids=["none", "over the limit", "a NUL", "not an object", "infinity"],
)
def test_ingest_checks_every_payload_itself_and_stores_none_of_a_bad_batch(
    tenant: Tenant, payloads: list[object], details: dict[str, object]
) -> None:
    with pytest.raises(services.EventInvalid) as refused:
        services.event_ingest(tenant=tenant, payloads=payloads)

    assert (refused.value.status_code, refused.value.code) == (400, "validation_error")
    assert refused.value.details == details
    assert not Event.objects.exists()


def test_matching_events_get_one_match_and_one_delivery_even_when_evaluated_twice(tenant: Tenant) -> None:
    rule = services.rule_create(tenant=tenant, name="big", dsl=ORDER_RULE, cooldown_seconds=0)
    ids = store(tenant, {"type": "order", "amount": 750}, {"type": "order", "amount": 400}, {"type": "refund"})

    first = services.events_evaluate(event_ids=ids)
    again = services.events_evaluate(event_ids=ids)

    assert (first.events, first.matches, first.deliveries) == (3, 1, 1)
    assert again.deliveries == 0
    assert RuleMatch.objects.filter(rule=rule).count() == 1
    assert Delivery.objects.get().message
    assert Event.objects.filter(evaluated_at__isnull=True).count() == 0


def test_a_cooldown_records_later_matches_without_notifying(tenant: Tenant) -> None:
    services.rule_create(tenant=tenant, name="big", dsl=ORDER_RULE, cooldown_seconds=300)

    services.events_evaluate(event_ids=store(tenant, {"type": "order", "amount": 900}))
    services.events_evaluate(event_ids=store(tenant, {"type": "order", "amount": 901}))

    assert list(RuleMatch.objects.order_by("pk").values_list("suppressed", flat=True)) == [False, True]
    assert Delivery.objects.count() == 1


def test_an_unknown_channel_is_reported_on_the_match(tenant: Tenant) -> None:
    services.rule_create(tenant=tenant, name="x", dsl='when type == "a" then notify("slack:#nowhere")')

    services.events_evaluate(event_ids=store(tenant, {"type": "a"}))

    assert RuleMatch.objects.get().problems == ["no slack channel named '#nowhere'"]
    assert not Delivery.objects.exists()


def test_rules_of_another_tenant_never_see_an_event(tenant: Tenant, mallory: User) -> None:
    services.rule_create(
        tenant=mallory.membership.tenant, name="spy", dsl='when type == "order" then notify("webhook:orders")'
    )

    services.events_evaluate(event_ids=store(tenant, {"type": "order", "amount": 1}))

    assert not RuleMatch.objects.exists()


def test_a_delivery_is_claimed_by_one_worker_at_a_time_until_its_lease_lapses(tenant: Tenant) -> None:
    services.rule_create(tenant=tenant, name="big", dsl=ORDER_RULE)
    services.events_evaluate(event_ids=store(tenant, {"type": "order", "amount": 900}))
    delivery = Delivery.objects.get()

    first = services.delivery_claim(delivery_id=delivery.pk)
    second = services.delivery_claim(delivery_id=delivery.pk)
    after_lease = services.delivery_claim(delivery_id=delivery.pk, now=timezone.now() + timedelta(minutes=5))

    assert first is not None and first.status == DeliveryStatus.SENDING
    assert second is None
    assert after_lease is not None and after_lease.attempts == 2


def test_a_failed_attempt_is_scheduled_later_and_the_last_one_is_dead(tenant: Tenant, settings: object) -> None:
    services.rule_create(tenant=tenant, name="big", dsl=ORDER_RULE)
    services.events_evaluate(event_ids=store(tenant, {"type": "order", "amount": 900}))
    delivery = Delivery.objects.get()

    attempt = services.delivery_attempt(delivery_id=delivery.pk)  # nothing listens on port 9

    assert attempt is not None and attempt.status == DeliveryStatus.FAILED
    assert attempt.next_attempt_at > timezone.now()
    assert "ConnectError" in attempt.last_error
    Delivery.objects.filter(pk=delivery.pk).update(
        attempts=sentinel_settings.rules.DELIVERY_MAX_ATTEMPTS - 1, next_attempt_at=timezone.now()
    )
    assert services.delivery_attempt(delivery_id=delivery.pk).status == DeliveryStatus.DEAD


@pytest.mark.parametrize("attempts", [1, 2, 3, 10, 30])
def test_retry_delays_grow_exponentially_within_their_jitter_and_cap(attempts: int) -> None:
    conf = sentinel_settings.rules
    ceiling = min(conf.DELIVERY_BACKOFF_MAX_SECONDS, conf.DELIVERY_BACKOFF_SECONDS * 2 ** (attempts - 1))

    delays = [services.retry_delay(attempts) for _ in range(50)]

    assert all(ceiling / 2 <= delay <= ceiling for delay in delays)


def test_the_sweepers_find_work_whose_task_was_lost(tenant: Tenant) -> None:
    services.rule_create(tenant=tenant, name="big", dsl=ORDER_RULE)
    stale = store(tenant, {"type": "order", "amount": 900})
    Event.objects.filter(pk__in=stale).update(received_at=timezone.now() - timedelta(minutes=5))
    fresh = store(tenant, {"type": "order", "amount": 901})

    assert selectors.events_unevaluated(older_than=timedelta(minutes=2)) == stale
    services.events_evaluate(event_ids=stale + fresh)
    assert selectors.events_unevaluated(older_than=timedelta(seconds=0)) == []
    due = selectors.deliveries_due()
    claimed = services.delivery_claim(delivery_id=due[0])
    assert claimed is not None
    assert selectors.deliveries_due() == due[1:]  # held by its lease
    assert due[0] in selectors.deliveries_due(now=timezone.now() + timedelta(minutes=5))  # lease lapsed
