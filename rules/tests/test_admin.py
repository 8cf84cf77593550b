"""The rules admin: pages render, the DSL is validated with its position, the dry run works,
channel secrets stay hidden, and actions call the services."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from accounts.models import Tenant, User
from rules import services
from rules.models import Delivery, DeliveryStatus, Event, NotificationChannel, Rule, RuleMatch

pytestmark = pytest.mark.django_db

BIG_ORDERS = 'when type == "order" and amount > 500 then notify("slack:#big", "order of {amount}")'
SECRET = "s3cr3t-signing-key-do-not-leak"


@pytest.fixture
def dead_delivery(tenant_a: Tenant) -> Delivery:
    rule = services.rule_create(tenant=tenant_a, name="big orders", dsl=BIG_ORDERS)
    event = Event.objects.create(tenant=tenant_a, type="order", payload={"type": "order", "amount": 900})
    match = RuleMatch.objects.create(tenant=tenant_a, rule=rule, event=event, problems=["no slack channel named '#x'"])
    channel = services.channel_create(
        tenant=tenant_a, kind="webhook", name="orders", target="https://h.example/o", secret=SECRET
    )
    return Delivery.objects.create(
        tenant=tenant_a,
        match=match,
        channel=channel,
        message="order of 900",
        status=DeliveryStatus.DEAD,
        attempts=8,
        last_error="HTTP 500 " + "x" * 200,
    )


def messages_of(response: object) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]  # type: ignore[attr-defined]


MODELS = [Event, Rule, NotificationChannel, RuleMatch, Delivery]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_page_renders(staff_client: Client, dead_delivery: Delivery, model: type) -> None:
    info = f"admin:rules_{model._meta.model_name}"
    obj = model.objects.first()

    assert staff_client.get(reverse(f"{info}_changelist")).status_code == 200
    assert staff_client.get(reverse(f"{info}_changelist"), {"q": "order"}).status_code == 200
    assert staff_client.get(reverse(f"{info}_change", args=[obj.pk])).status_code == 200


def test_filters_render(staff_client: Client, dead_delivery: Delivery) -> None:
    for url, query in [
        ("admin:rules_event_changelist", {"evaluated": "no"}),
        ("admin:rules_rulematch_changelist", {"suppressed__exact": "0"}),
        ("admin:rules_delivery_changelist", {"status__exact": "dead", "channel__kind__exact": "webhook"}),
    ]:
        response = staff_client.get(reverse(url), query)
        assert response.status_code == 200
        assert len(response.context["cl"].result_list) == 1


def test_events_matches_and_deliveries_cannot_be_added_by_hand(staff_client: Client) -> None:
    for name in ("event", "rulematch", "delivery"):
        assert staff_client.get(reverse(f"admin:rules_{name}_add")).status_code == 403


def test_the_admin_is_for_staff_only(alice: User) -> None:
    client = Client()
    client.force_login(alice)

    response = client.get(reverse("admin:rules_rule_changelist"))

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


class TestRuleAdmin:
    def test_an_invalid_dsl_is_refused_with_its_position(self, staff_client: Client, tenant_a: Tenant) -> None:
        response = staff_client.post(
            reverse("admin:rules_rule_add"),
            {
                "tenant": tenant_a.pk,
                "name": "broken",
                "dsl": 'when type ==\n then notify("slack:#x")',
                "enabled": "on",
                "cooldown_seconds": 300,
            },
        )

        assert response.status_code == 200
        errors = response.context["adminform"].form.errors["dsl"]
        assert "line 2, column 2" in errors[0]
        assert "line 2, column 2" in response.content.decode()
        assert not Rule.objects.exists()

    def test_a_valid_rule_is_created_and_a_dsl_change_bumps_the_version(
        self, staff_client: Client, tenant_a: Tenant
    ) -> None:
        form = {"tenant": tenant_a.pk, "name": "big", "dsl": BIG_ORDERS, "enabled": "on", "cooldown_seconds": 60}
        created = staff_client.post(reverse("admin:rules_rule_add"), form)
        assert created.status_code == 302, created.content
        rule = Rule.objects.get()
        assert (rule.tenant, rule.version, rule.cooldown_seconds) == (tenant_a, 1, 60)
        change_url = reverse("admin:rules_rule_change", args=[rule.pk])

        staff_client.post(change_url, {**form, "name": "renamed"})
        rule.refresh_from_db()
        assert (rule.name, rule.version) == ("renamed", 1)

        staff_client.post(change_url, {**form, "name": "renamed", "dsl": BIG_ORDERS.replace("500", "50")})
        rule.refresh_from_db()
        assert (rule.version, rule.tenant) == (2, tenant_a)

    def test_a_taken_name_is_a_form_error(self, staff_client: Client, tenant_a: Tenant) -> None:
        services.rule_create(tenant=tenant_a, name="taken", dsl=BIG_ORDERS)
        rule = services.rule_create(tenant=tenant_a, name="mine", dsl=BIG_ORDERS)

        response = staff_client.post(
            reverse("admin:rules_rule_change", args=[rule.pk]),
            {"name": "taken", "dsl": BIG_ORDERS, "enabled": "on", "cooldown_seconds": 300},
        )

        assert response.status_code == 200
        assert "name" in response.context["adminform"].form.errors
        rule.refresh_from_db()
        assert rule.name == "mine"

    def test_enable_and_disable_actions(self, staff_client: Client, tenant_a: Tenant) -> None:
        rules = [services.rule_create(tenant=tenant_a, name=f"r{i}", dsl=BIG_ORDERS) for i in range(2)]
        url = reverse("admin:rules_rule_changelist")
        selected = [rule.pk for rule in rules]

        disabled = staff_client.post(url, {"action": "disable", "_selected_action": selected}, follow=True)
        assert not Rule.objects.filter(enabled=True).exists()
        assert "Disabled 2 rule(s)." in messages_of(disabled)

        staff_client.post(url, {"action": "enable", "_selected_action": selected[:1]})
        assert list(Rule.objects.filter(enabled=True).values_list("pk", flat=True)) == selected[:1]

    def test_the_change_page_links_to_the_dry_run(self, staff_client: Client, tenant_a: Tenant) -> None:
        rule = services.rule_create(tenant=tenant_a, name="big", dsl=BIG_ORDERS)

        page = staff_client.get(reverse("admin:rules_rule_change", args=[rule.pk])).content.decode()

        assert reverse("admin:rules_rule_dry_run", args=[rule.pk]) in page

    def test_the_dry_run_page_shows_the_result(self, staff_client: Client, tenant_a: Tenant) -> None:
        rule = services.rule_create(tenant=tenant_a, name="big", dsl=BIG_ORDERS)
        url = reverse("admin:rules_rule_dry_run", args=[rule.pk])

        empty = staff_client.get(url)
        matched = staff_client.post(url, {"event": '{"type": "order", "amount": 900}'})
        missed = staff_client.post(url, {"event": '{"type": "order", "amount": 9}'})
        broken = staff_client.post(url, {"event": "{not json"})

        assert empty.status_code == 200
        assert "Dry run" in empty.content.decode()
        assert matched.status_code == 200
        assert matched.context["result"]["matched"] is True
        assert "order of 900" in matched.content.decode()
        assert "slack:#big" in matched.content.decode()
        assert missed.context["result"]["matched"] is False
        assert "Not matched" in missed.content.decode()
        assert broken.context["result"] is None
        assert "Not valid JSON" in broken.content.decode()
        assert not RuleMatch.objects.exists()

    def test_the_dry_run_of_an_unknown_rule_is_a_404(self, staff_client: Client) -> None:
        assert staff_client.get(reverse("admin:rules_rule_dry_run", args=[999999])).status_code == 404


class TestChannelAdmin:
    def add_form(self, tenant: Tenant, **overrides: object) -> dict[str, object]:
        return {
            "tenant": tenant.pk,
            "kind": "webhook",
            "name": "orders",
            "target": "https://h.example/o",
            "new_secret": SECRET,
            "active": "on",
            **overrides,
        }

    def test_the_secret_is_set_never_shown_and_kept_when_left_empty(
        self, staff_client: Client, tenant_a: Tenant
    ) -> None:
        created = staff_client.post(reverse("admin:rules_notificationchannel_add"), self.add_form(tenant_a))
        assert created.status_code == 302, created.content
        channel = NotificationChannel.objects.get()
        assert channel.secret == SECRET
        change_url = reverse("admin:rules_notificationchannel_change", args=[channel.pk])

        assert SECRET not in staff_client.get(change_url).content.decode()
        assert SECRET not in staff_client.get(reverse("admin:rules_notificationchannel_changelist")).content.decode()

        staff_client.post(change_url, {**self.add_form(tenant_a), "new_secret": "", "target": "https://h.example/v2"})
        channel.refresh_from_db()
        assert (channel.secret, channel.target) == (SECRET, "https://h.example/v2")

        staff_client.post(change_url, {**self.add_form(tenant_a), "new_secret": "", "clear_secret": "on"})
        channel.refresh_from_db()
        assert channel.secret == ""

    def test_an_invalid_target_is_a_form_error(self, staff_client: Client, tenant_a: Tenant) -> None:
        response = staff_client.post(
            reverse("admin:rules_notificationchannel_add"), self.add_form(tenant_a, kind="email", target="nope")
        )

        assert response.status_code == 200
        assert "target" in response.context["adminform"].form.errors
        assert not NotificationChannel.objects.exists()

    def test_a_channel_may_be_created_inactive(self, staff_client: Client, tenant_a: Tenant) -> None:
        form = self.add_form(tenant_a)
        del form["active"]

        staff_client.post(reverse("admin:rules_notificationchannel_add"), form)

        assert NotificationChannel.objects.get().active is False


class TestDeliveryAdmin:
    def test_resend_requeues_a_dead_delivery(self, staff_client: Client, dead_delivery: Delivery) -> None:
        response = staff_client.post(
            reverse("admin:rules_delivery_changelist"),
            {"action": "resend", "_selected_action": [dead_delivery.pk]},
            follow=True,
        )

        dead_delivery.refresh_from_db()
        assert (dead_delivery.status, dead_delivery.attempts) == (DeliveryStatus.PENDING, 0)
        assert "Re-queued 1 delivery(ies)." in messages_of(response)

    def test_resend_skips_deliveries_already_sent(self, staff_client: Client, dead_delivery: Delivery) -> None:
        Delivery.objects.filter(pk=dead_delivery.pk).update(status=DeliveryStatus.SENT)

        response = staff_client.post(
            reverse("admin:rules_delivery_changelist"),
            {"action": "resend", "_selected_action": [dead_delivery.pk]},
            follow=True,
        )

        dead_delivery.refresh_from_db()
        assert dead_delivery.status == DeliveryStatus.SENT
        assert any("1 skipped" in text for text in messages_of(response))

    def test_the_change_page_does_not_show_the_channel_secret(
        self, staff_client: Client, dead_delivery: Delivery
    ) -> None:
        page = staff_client.get(reverse("admin:rules_delivery_change", args=[dead_delivery.pk])).content.decode()

        assert SECRET not in page
        assert "order of 900" in page
