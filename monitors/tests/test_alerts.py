"""A monitor's alerts in process (monitors.alerts): which flips alert, what they say, events into
the rules engine, held dependents, maintenance windows, reminders, certificate warnings, the
sweep, and the tenant wall. Deliveries are sent to a real local HTTP sink."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import Tenant
from monitors import alerts
from monitors.models import Flip, MaintenanceWindow, Monitor, MonitorState
from monitors.services import monitor_delete, monitor_pause
from rules import services as rules_services
from rules.models import Delivery, DeliveryStatus, Event, EventSource, NotificationChannel
from rules.tests.sinks import HttpSink, http_sink

pytestmark = pytest.mark.django_db

DOWN, UP = MonitorState.DOWN, MonitorState.UP
SECRET = "monitor-s3cret"


@dataclass
class Setup:
    tenant: Tenant
    sink: HttpSink
    channel: NotificationChannel

    def monitor(self, name: str = "shop", **fields: Any) -> Monitor:
        monitor = Monitor.objects.create(
            tenant=self.tenant, name=name, target=f"https://{name}.example/health", **fields
        )
        monitor.channels.add(self.channel)
        return monitor

    def received(self) -> list[dict[str, Any]]:
        """What the sink got, once every pending delivery has been attempted."""
        for delivery_id in (
            Delivery.objects.filter(status=DeliveryStatus.PENDING).order_by("pk").values_list("pk", flat=True)
        ):
            rules_services.delivery_attempt(delivery_id=delivery_id)
        return [json.loads(request.body) for request in self.sink.received]


@pytest.fixture(scope="module")
def module_sink() -> Iterator[HttpSink]:
    # One server for the module: stopping one takes half a second (its poll interval).
    with http_sink() as sink:
        yield sink


@pytest.fixture
def setup(tenant_a: Tenant, module_sink: HttpSink) -> Setup:
    module_sink.received.clear()
    channel = rules_services.channel_create(
        tenant=tenant_a, kind="webhook", name="oncall", target=module_sink.url + "/hook", secret=SECRET
    )
    return Setup(tenant_a, module_sink, channel)


def flip(monitor: Monitor, old: str, new: str, *, at: datetime | None = None, reason: str = "") -> Flip:
    """Writes a flip as the state machine does, and the monitor's state with it."""
    at = at or timezone.now()
    Monitor.objects.filter(pk=monitor.pk).update(state=new, state_changed_at=at, last_reason=reason)
    monitor.refresh_from_db()
    return Flip.objects.create(
        tenant=monitor.tenant, monitor=monitor, old_state=old, new_state=new, reason=reason, created_at=at
    )


def events(kind: str) -> list[dict[str, Any]]:
    return [event.payload for event in Event.objects.filter(type=kind).order_by("pk")]


# --- which flips alert ---------------------------------------------------------------------------


def test_a_down_flip_alerts_each_channel_once_with_a_signed_body_and_emits_an_event(setup: Setup) -> None:
    shop = setup.monitor()
    down = flip(shop, UP, DOWN, reason="HTTP 500: status (500) == 200")

    outcomes = [alerts.flip_alert(flip_id=down.pk), alerts.flip_alert(flip_id=down.pk)]

    assert outcomes == ["alerted", "claimed"]
    [body] = setup.received()
    request = setup.sink.received[0]
    assert request.headers["x-sentinel-signature"] == (
        "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    )
    assert body["alert"]["title"] == "shop is down"
    assert body["alert"]["monitor"] == {"id": shop.pk, "name": "shop", "kind": "http", "target": shop.target}
    assert "shop is DOWN since" in body["message"] and "HTTP 500: status (500) == 200" in body["message"]
    assert shop.target in body["message"]
    [event] = Event.objects.filter(source=EventSource.MONITOR)
    assert event.type == "monitor.down"
    assert event.payload == {
        "type": "monitor.down",
        "monitor": {"id": shop.pk, "name": "shop", "kind": "http", "target": shop.target},
        "state": "down",
        "previous_state": "up",
        "reason": "HTTP 500: status (500) == 200",
        "at": down.created_at.isoformat(),
        "down_for_seconds": None,
    }
    assert Flip.objects.get(pk=down.pk).processed_at is not None


def test_recovery_alerts_with_how_long_it_was_down(setup: Setup) -> None:
    shop = setup.monitor()
    start = timezone.now() - timedelta(hours=2, minutes=10)
    alerts.flip_alert(flip_id=flip(shop, UP, DOWN, at=start, reason="timeout").pk)
    up = flip(shop, DOWN, UP, at=start + timedelta(hours=2, minutes=10))

    assert alerts.flip_alert(flip_id=up.pk) == "alerted"

    down_body, up_body = setup.received()
    assert down_body["alert"]["title"] == "shop is down"
    assert up_body["alert"]["title"] == "shop is up"
    assert "UP again after 2 h 10 min down" in up_body["message"]
    assert up_body["alert"]["down_for_seconds"] == 7800.0
    assert events("monitor.up")[0]["down_for_seconds"] == 7800.0


@pytest.mark.parametrize(
    ("old", "new", "outcome", "sent"),
    [
        (MonitorState.UNKNOWN, UP, "silent", 0),
        (MonitorState.MAINTENANCE, UP, "silent", 0),
        (UP, MonitorState.PAUSED, "silent", 0),
        (DOWN, MonitorState.PAUSED, "silent", 0),
        (UP, MonitorState.MAINTENANCE, "silent", 0),
        (MonitorState.UNKNOWN, DOWN, "alerted", 1),
        (MonitorState.MAINTENANCE, DOWN, "alerted", 1),  # still down when its window ends
        (MonitorState.PAUSED, DOWN, "alerted", 1),
    ],
)
def test_which_flips_alert(setup: Setup, old: str, new: str, outcome: str, sent: int) -> None:
    shop = setup.monitor()

    assert alerts.flip_alert(flip_id=flip(shop, old, new).pk) == outcome

    assert len(setup.received()) == sent
    # Every flip to down or up is an event, whether it alerts or not.
    assert Event.objects.count() == (1 if new in (UP, DOWN) else 0)


def test_nothing_alerts_inside_a_maintenance_window_but_the_event_is_emitted(setup: Setup) -> None:
    shop = setup.monitor()
    now = timezone.now()
    MaintenanceWindow.objects.create(
        tenant=setup.tenant, name="upgrade", starts_at=now - timedelta(minutes=5), duration_minutes=30
    )

    down = flip(shop, UP, DOWN, at=now)
    up = flip(shop, DOWN, UP, at=now + timedelta(minutes=1))

    assert [alerts.flip_alert(flip_id=f.pk) for f in (down, up)] == ["maintenance", "maintenance"]
    assert setup.received() == []
    assert len(events("monitor.down")) == len(events("monitor.up")) == 1


def test_a_recovery_after_the_window_of_an_outage_that_began_inside_it_is_not_reported(setup: Setup) -> None:
    shop = setup.monitor()
    now = timezone.now()
    MaintenanceWindow.objects.create(
        tenant=setup.tenant, monitor=shop, name="m", starts_at=now - timedelta(minutes=50), duration_minutes=30
    )
    alerts.flip_alert(flip_id=flip(shop, UP, DOWN, at=now - timedelta(minutes=40)).pk)

    assert alerts.flip_alert(flip_id=flip(shop, DOWN, UP, at=now).pk) == "silent"
    assert setup.received() == []


def test_a_channel_of_another_tenant_is_never_used(setup: Setup, tenant_b: Tenant) -> None:
    with http_sink() as theirs:
        foreign = rules_services.channel_create(tenant=tenant_b, kind="webhook", name="x", target=theirs.url)
        shop = setup.monitor()
        shop.channels.add(foreign)

        alerts.flip_alert(flip_id=flip(shop, UP, DOWN).pk)
        setup.received()

        assert theirs.count() == 0
    assert list(Delivery.objects.values_list("channel_id", flat=True)) == [setup.channel.pk]
    assert setup.sink.count() == 1


def test_a_missing_flip_is_said_so(setup: Setup) -> None:
    assert alerts.flip_alert(flip_id=999_999) == "missing"


# --- dependencies ----------------------------------------------------------------------------------


def test_held_dependents_send_nothing_and_the_parents_alerts_summarise_them(setup: Setup) -> None:
    router = setup.monitor("router")
    shop, api, blog = (setup.monitor(name, depends_on=router) for name in ("shop", "api", "blog"))
    t0 = timezone.now() - timedelta(minutes=30)
    router_down = flip(router, UP, DOWN, at=t0, reason="connection refused")
    assert alerts.flip_alert(flip_id=router_down.pk) == "alerted"
    held = [flip(m, UP, DOWN, at=t0 + timedelta(seconds=5)) for m in (shop, api, blog)]

    assert [alerts.flip_alert(flip_id=f.pk) for f in held] == ["held"] * 3
    assert set(Flip.objects.filter(pk__in=[f.pk for f in held]).values_list("held_by", flat=True)) == {router_down.pk}
    assert len(setup.received()) == 1  # the router's down alert only
    # blog recovers while the router is still down: nothing.
    assert alerts.flip_alert(flip_id=flip(blog, DOWN, UP, at=t0 + timedelta(minutes=10)).pk) == "silent"
    assert len(setup.received()) == 1
    # Every flip was an event all the same.
    assert len(events("monitor.down")) == 4 and len(events("monitor.up")) == 1

    # The router comes back; shop and api are still down.
    assert alerts.flip_alert(flip_id=flip(router, DOWN, UP, at=t0 + timedelta(minutes=20)).pk) == "alerted"

    bodies = setup.received()
    router_up = next(b for b in bodies if b["alert"]["title"] == "router is up")
    assert "3 dependents also went down meanwhile: api, blog, shop." in router_up["message"]
    released = sorted(b["alert"]["monitor"]["name"] for b in bodies if b["alert"]["title"].endswith(" is down"))
    assert released == ["api", "router", "shop"]  # each still-down dependent alerts on its own now
    assert "Held while router was down" in next(b for b in bodies if b["alert"]["title"] == "shop is down")["message"]
    # shop's recovery now alerts: its outage was reported.
    assert alerts.flip_alert(flip_id=flip(shop, DOWN, UP).pk) == "alerted"
    assert setup.received()[-1]["alert"]["title"] == "shop is up"


def test_a_dependent_of_an_up_parent_alerts_on_its_own(setup: Setup) -> None:
    router = setup.monitor("router")
    shop = setup.monitor("shop", depends_on=router)
    Monitor.objects.filter(pk=router.pk).update(state=UP)

    assert alerts.flip_alert(flip_id=flip(shop, UP, DOWN).pk) == "alerted"
    assert [b["alert"]["title"] for b in setup.received()] == ["shop is down"]


# --- reminders ---------------------------------------------------------------------------------------


def test_a_reminder_is_sent_once_per_interval_while_down(setup: Setup) -> None:
    shop = setup.monitor(reminder_interval_seconds=3600)
    quiet = setup.monitor("quiet")  # no interval: reminders are off by default
    start = timezone.now() - timedelta(hours=2, minutes=10)
    for monitor in (shop, quiet):
        alerts.flip_alert(flip_id=flip(monitor, UP, DOWN, at=start, reason="timeout").pk)
    now = timezone.now()

    assert alerts.reminders_send(now=now) == 1
    assert alerts.reminders_send(now=now + timedelta(minutes=59)) == 0
    assert alerts.reminders_send(now=now + timedelta(minutes=60)) == 1

    reminders = [b for b in setup.received() if b["alert"]["type"] == "monitor.reminder"]
    assert len(reminders) == 2
    assert reminders[0]["alert"]["title"] == "shop is still down"
    assert "still down since" in reminders[0]["message"] and "for 2 h 10 min" in reminders[0]["message"]


def test_a_reminder_is_not_due_before_the_interval_after_the_down_alert(setup: Setup) -> None:
    shop = setup.monitor(reminder_interval_seconds=600)
    alerts.flip_alert(flip_id=flip(shop, UP, DOWN, at=timezone.now() - timedelta(minutes=9)).pk)

    assert alerts.reminders_send() == 0
    assert alerts.reminders_send(now=timezone.now() + timedelta(minutes=1)) == 1


def test_reminders_skip_held_dependents_and_carry_them_in_the_parents(setup: Setup) -> None:
    router = setup.monitor("router", reminder_interval_seconds=600)
    shop = setup.monitor("shop", depends_on=router, reminder_interval_seconds=600)
    start = timezone.now() - timedelta(hours=1)
    alerts.flip_alert(flip_id=flip(router, UP, DOWN, at=start).pk)
    alerts.flip_alert(flip_id=flip(shop, UP, DOWN, at=start).pk)

    assert alerts.reminders_send() == 1

    reminder = setup.received()[-1]
    assert reminder["alert"]["title"] == "router is still down"
    assert "1 dependent also down: shop." in reminder["message"]


# --- certificates ------------------------------------------------------------------------------------


def test_a_certificate_warning_is_sent_once_per_certificate(setup: Setup) -> None:
    now = timezone.now()
    shop = setup.monitor(cert_expiry_warning_days=14, cert_expires_at=now + timedelta(days=5))
    setup.monitor("far", cert_expiry_warning_days=14, cert_expires_at=now + timedelta(days=40))
    setup.monitor("off", cert_expires_at=now + timedelta(days=1))  # no warning days: off

    assert alerts.cert_warnings_check(now=now) == 1
    assert alerts.cert_warnings_check(now=now + timedelta(days=1)) == 0
    # Renewed: the new certificate expires in 95 days; warned about when its own period begins.
    Monitor.objects.filter(pk=shop.pk).update(cert_expires_at=now + timedelta(days=95))
    assert alerts.cert_warnings_check(now=now + timedelta(days=2)) == 0
    assert alerts.cert_warnings_check(now=now + timedelta(days=82), monitor_ids=[shop.pk]) == 1

    titles = [b["alert"]["title"] for b in setup.received()]
    assert titles == ["shop: TLS certificate expires in 5 d", "shop: TLS certificate expires in 13 d"]


# --- the sweep ---------------------------------------------------------------------------------------


def test_the_sweep_finds_flips_whose_task_was_lost(setup: Setup) -> None:
    shop = setup.monitor()
    lost = flip(shop, UP, DOWN, at=timezone.now() - timedelta(minutes=2))
    fresh = flip(shop, DOWN, UP)
    done = flip(shop, UP, DOWN, at=timezone.now() - timedelta(minutes=3))
    alerts.flip_alert(flip_id=done.pk)

    assert alerts.flips_unprocessed() == [lost.pk]
    assert fresh.pk not in alerts.flips_unprocessed()


def test_in_a_chain_a_dependent_still_down_when_its_held_parent_recovers_alerts_on_its_own(setup: Setup) -> None:
    core = setup.monitor("core")
    router = setup.monitor("router", depends_on=core)
    shop = setup.monitor("shop", depends_on=router)
    t0 = timezone.now() - timedelta(minutes=30)
    alerts.flip_alert(flip_id=flip(core, UP, DOWN, at=t0).pk)
    assert alerts.flip_alert(flip_id=flip(router, UP, DOWN, at=t0).pk) == "held"
    assert alerts.flip_alert(flip_id=flip(shop, UP, DOWN, at=t0).pk) == "held"

    # The router recovers while core is still down: its recovery is silent, shop is released.
    assert alerts.flip_alert(flip_id=flip(router, DOWN, UP, at=t0 + timedelta(minutes=5)).pk) == "silent"

    titles = [b["alert"]["title"] for b in setup.received()]
    assert titles == ["core is down", "shop is down"]


def test_a_parent_paused_while_down_releases_its_held_dependents(setup: Setup) -> None:
    router = setup.monitor("router")
    shop = setup.monitor("shop", depends_on=router)
    alerts.flip_alert(flip_id=flip(router, UP, DOWN).pk)
    alerts.flip_alert(flip_id=flip(shop, UP, DOWN).pk)

    assert alerts.flip_alert(flip_id=flip(router, DOWN, MonitorState.PAUSED).pk) == "silent"

    shop_alert = setup.received()[-1]
    assert shop_alert["alert"]["title"] == "shop is down"
    assert "it is paused now, this one is still down" in shop_alert["message"]


def test_pausing_a_down_parent_through_the_service_releases_its_held_dependents(setup: Setup) -> None:
    router = setup.monitor("router")
    shop = setup.monitor("shop", depends_on=router)
    alerts.flip_alert(flip_id=flip(router, UP, DOWN).pk)
    assert alerts.flip_alert(flip_id=flip(shop, UP, DOWN).pk) == "held"
    alerted = len(setup.received())

    monitor_pause(monitor=router)

    paused = Flip.objects.get(monitor=router, new_state=MonitorState.PAUSED)
    assert (paused.old_state, paused.reason) == (DOWN, "paused by an operator")
    assert alerts.flip_alert(flip_id=paused.pk) == "silent"
    sent = setup.received()[alerted:]
    assert [alert["alert"]["title"] for alert in sent] == ["shop is down"]
    assert "it is paused now, this one is still down" in sent[0]["message"]


def test_pausing_a_monitor_that_is_not_down_writes_no_flip(setup: Setup) -> None:
    shop = setup.monitor()
    flip(shop, MonitorState.UNKNOWN, UP)

    monitor_pause(monitor=shop)

    assert not Flip.objects.filter(new_state=MonitorState.PAUSED).exists()


def test_deleting_a_down_parent_releases_its_held_dependents(setup: Setup) -> None:
    router = setup.monitor("router")
    shop = setup.monitor("shop", depends_on=router)
    alerts.flip_alert(flip_id=flip(router, UP, DOWN).pk)
    assert alerts.flip_alert(flip_id=flip(shop, UP, DOWN).pk) == "held"
    alerted = len(setup.received())

    monitor_delete(monitor=router)

    sent = setup.received()[alerted:]
    assert [alert["alert"]["title"] for alert in sent] == ["shop is down"]
    assert "it is deleted now, this one is still down" in sent[0]["message"]
    assert Flip.objects.get(monitor=shop).held_by_id is None


def test_two_monitors_depending_on_each_other_do_not_hold_each_other(setup: Setup) -> None:
    a = setup.monitor("a")
    b = setup.monitor("b", depends_on=a)
    Monitor.objects.filter(pk=a.pk).update(depends_on=b)
    a_down, b_down = flip(a, UP, DOWN), flip(b, UP, DOWN)

    # b's flip is processed first: a is down, so b is held by a's flip; a's then is not held by b's.
    assert alerts.flip_alert(flip_id=b_down.pk) == "held"
    assert alerts.flip_alert(flip_id=a_down.pk) == "alerted"
