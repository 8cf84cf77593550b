"""`python manage.py seed_demo_rules`: a demo webhook channel and two demo rules, so the rules engine
does something out of the box.

The channel `demo-sink` of the demo tenant posts to the mock upstream's `/sink` (DOWNSTREAM_URL +
`/sink`), which lists what it received at `GET /sink`; one rule notifies it of orders over 500, the
other of the insight engine's incidents (warning or critical, opened or escalated).
All are created once; later edits stay (with ``--follow-downstream``, what `make run` passes, a
channel that still points at an earlier run's mock upstream follows this run's: `core.demo`).
Run after `seed_demo`, which creates the tenant.

In production mode the egress policy refuses tenant channels to loopback addresses (SPEC 7): the
channel is then skipped with the policy's reason, and so is the rule (a demo that cannot deliver
would only confuse); allow the network (`EGRESS_ALLOWED_NETWORKS=127.0.0.0/8`) and run it again.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.models import Tenant
from core.conf import sentinel_settings
from core.demo import follow_downstream_option, mock_upstream_moved
from core.errors import DomainError
from rules.models import NotificationChannel, Rule
from rules.services import channel_create, channel_update, rule_create

DEMO_TENANT = "globex"
DEMO_CHANNEL = "demo-sink"
DEMO_RULE = "Big orders (demo)"
DEMO_DSL = (
    'when event.type == "order" and amount > 500\n'
    f'then notify("webhook:{DEMO_CHANNEL}", "Big order {{event.id}}: {{amount}} {{currency}}")'
)
# The insight engine's incidents arrive as events (`type == "incident"`): fleet-wide ones in the
# tenant INSIGHT_EVENTS_TENANT names, which `make run` sets to this demo tenant.
DEMO_INCIDENT_RULE = "Incidents (demo)"
DEMO_INCIDENT_DSL = (
    'when event.type == "incident" and change != "resolved" and severity in ["warning", "critical"]\n'
    f'then notify("webhook:{DEMO_CHANNEL}", "Incident {{kind}} ({{severity}}): {{summary}}")'
)
DEMO_RULES = [(DEMO_RULE, DEMO_DSL), (DEMO_INCIDENT_RULE, DEMO_INCIDENT_DSL)]


def demo_sink_url() -> str:
    """The mock upstream's webhook sink, next to DOWNSTREAM_URL."""
    return sentinel_settings.gateway.DOWNSTREAM_URL.rstrip("/") + "/sink"


class Command(BaseCommand):
    help = "Create the demo webhook channel (to the mock upstream's /sink) and the demo rules; safe to run again."

    def add_arguments(self, parser: CommandParser) -> None:
        follow_downstream_option(parser, "channel")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=DEMO_TENANT).first()
        if tenant is None:
            self.stderr.write(f"tenant {DEMO_TENANT!r} does not exist: run `manage.py seed_demo` first")
            return
        if not self._ensure_channel(tenant, follow=options["follow_downstream"]):
            self.stderr.write("demo rules not created either: they would have no channel to notify")
            return
        for name, dsl in DEMO_RULES:
            if Rule.objects.filter(tenant=tenant, name=name).exists():
                self.stdout.write(f"rule    {name!r} exists")
            else:
                rule_create(tenant=tenant, name=name, dsl=dsl, cooldown_seconds=0)
                self.stdout.write(f"rule    {name!r} created for {DEMO_TENANT}")

    def _ensure_channel(self, tenant: Tenant, *, follow: bool) -> bool:
        """True when the demo channel exists (now or already)."""
        target = demo_sink_url()
        channel = NotificationChannel.objects.filter(tenant=tenant, kind="webhook", name=DEMO_CHANNEL).first()
        if channel is not None and follow and mock_upstream_moved(channel.target, target):
            try:
                channel_update(channel=channel, target=target)
            except DomainError as exc:
                self.stderr.write(f"channel webhook:{DEMO_CHANNEL} kept at {channel.target}: {exc.message}")
                return True
            self.stdout.write(f"channel webhook:{DEMO_CHANNEL} -> {target} (re-pointed from an earlier run's)")
            return True
        if channel is not None:
            self.stdout.write(f"channel webhook:{DEMO_CHANNEL} exists")
            return True
        try:
            channel_create(
                tenant=tenant, kind="webhook", name=DEMO_CHANNEL, target=target, secret=secrets.token_urlsafe(24)
            )
        except DomainError as exc:
            self.stderr.write(f"channel webhook:{DEMO_CHANNEL} -> {target} not created: {exc.message}")
            return False
        self.stdout.write(f"channel webhook:{DEMO_CHANNEL} -> {target}")
        return True
