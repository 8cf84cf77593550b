"""`python manage.py seed_demo_monitors`: a demo monitor of the mock upstream's `/health`, so the
monitors, the dashboard tile and the status page show something out of the box.

The monitor `Mock upstream (demo)` of the demo tenant checks DOWNSTREAM_URL + `/health` every 30
seconds with a condition on the answer (`status == 200 and body.status == "ok"`, what the mock
upstream answers), is published on `/status/globex/` and alerts through the demo webhook channel
when `seed_demo_rules` created it. Created once, through `monitors.services.monitor_create`;
later edits stay (with ``--follow-downstream``, what `make run` passes, a monitor that still
checks an earlier run's mock upstream follows this run's: `core.demo`).
Run after `seed_demo` (the tenant) and `seed_demo_rules` (the channel).

In production mode the egress policy refuses tenant targets on loopback addresses (SPEC 7): the
monitor is then skipped with the policy's reason; allow the network
(`EGRESS_ALLOWED_NETWORKS=127.0.0.0/8`) and run it again.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.models import Tenant
from core.conf import sentinel_settings
from core.demo import follow_downstream_option, mock_upstream_moved
from core.errors import DomainError
from monitors.models import Monitor, MonitorKind
from monitors.services import monitor_create, monitor_update
from rules.models import NotificationChannel

DEMO_TENANT = "globex"  # seed_demo's demo tenant, the one seed_demo_rules gives a channel
DEMO_CHANNEL = "demo-sink"  # seed_demo_rules' webhook channel
DEMO_MONITOR = "Mock upstream (demo)"
DEMO_CONDITIONS = 'status == 200 and body.status == "ok"'
# Shorter than the 60 s default so that a fresh `make run` shows a state within a minute or two
# (the success threshold, 2, needs two checks).
DEMO_INTERVAL_SECONDS = 30


def demo_health_url() -> str:
    """The mock upstream's health endpoint, next to DOWNSTREAM_URL."""
    return sentinel_settings.gateway.DOWNSTREAM_URL.rstrip("/") + "/health"


class Command(BaseCommand):
    help = "Create the demo monitor of the mock upstream's /health (published, alerting the demo channel)."

    def add_arguments(self, parser: CommandParser) -> None:
        follow_downstream_option(parser, "monitor")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=DEMO_TENANT).first()
        if tenant is None:
            self.stderr.write(f"tenant {DEMO_TENANT!r} does not exist: run `manage.py seed_demo` first")
            return
        target = demo_health_url()
        existing = Monitor.objects.filter(tenant=tenant, name=DEMO_MONITOR).first()
        if existing is not None:
            if options["follow_downstream"] and mock_upstream_moved(existing.target, target):
                try:
                    monitor_update(monitor=existing, target=target)
                except DomainError as exc:
                    self.stderr.write(f"monitor {DEMO_MONITOR!r} kept at {existing.target}: {exc.message}")
                    return
                self.stdout.write(f"monitor {DEMO_MONITOR!r} -> {target} (re-pointed from an earlier run's)")
                return
            self.stdout.write(f"monitor {DEMO_MONITOR!r} exists")
            return
        channels = list(NotificationChannel.objects.filter(tenant=tenant, kind="webhook", name=DEMO_CHANNEL))
        try:
            monitor_create(
                tenant=tenant,
                name=DEMO_MONITOR,
                kind=MonitorKind.HTTP,
                target=target,
                conditions=DEMO_CONDITIONS,
                interval_seconds=DEMO_INTERVAL_SECONDS,
                published=True,
                channels=channels,
            )
        except DomainError as exc:
            self.stderr.write(f"monitor {DEMO_MONITOR!r} -> {target} not created: {exc.message}")
            return
        alerts = f", alerting webhook:{DEMO_CHANNEL}" if channels else " (no demo channel: run seed_demo_rules)"
        self.stdout.write(f"monitor {DEMO_MONITOR!r} -> {target}{alerts}; status page /status/{DEMO_TENANT}/")
