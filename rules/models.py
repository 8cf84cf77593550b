"""Events, rules, notification channels, matches and deliveries (SPEC 4).

The delivery guarantee lives in two constraints: a match is unique per (rule, event), so a
re-evaluated event matches once; a delivery is unique per (match, channel), so a match notifies
each channel once. Workers claim a delivery with a conditional UPDATE and a lease, so two workers
never send the same delivery at once, and a worker killed mid-send leaves a lease that expires.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.utils import timezone

from accounts.models import Tenant


class EventSource(models.TextChoices):
    API = "api", "REST API"
    STREAM = "stream", "Redis stream"
    INSIGHT = "insight", "Insight engine"
    MONITOR = "monitor", "Monitor"
    FRAUD = "fraud", "Fraud scoring"


class Event(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=100, blank=True, db_index=False)
    payload = models.JSONField()
    source = models.CharField(max_length=10, choices=EventSource.choices, default=EventSource.API)
    received_at = models.DateTimeField(default=timezone.now)
    evaluated_at = models.DateTimeField(null=True, blank=True)
    # Where a streamed event came from ("<stream entry id>:<index>"): a redelivered entry is
    # recognised and not stored twice.
    source_ref = models.CharField(max_length=64, blank=True)

    class Meta:
        verbose_name = "event"
        verbose_name_plural = "events"
        ordering = ["-received_at", "-id"]
        indexes = [
            models.Index(fields=["tenant", "-received_at"], name="rules_event_tenant_time"),
            models.Index(fields=["tenant", "type", "-received_at"], name="rules_event_tenant_type_time"),
            # The evaluation sweeper looks for events whose evaluation was lost.
            models.Index(fields=["received_at"], name="rules_event_unevaluated", condition=models.Q(evaluated_at=None)),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "source_ref"], name="rules_event_source_once", condition=~models.Q(source_ref="")
            )
        ]

    def __str__(self) -> str:
        return f"{self.type or 'event'} #{self.pk}"


class RuleQuerySet(models.QuerySet["Rule"]):
    def enabled(self) -> RuleQuerySet:
        return self.filter(enabled=True)


class Rule(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="rules")
    name = models.CharField(max_length=120)
    dsl = models.TextField("DSL")
    enabled = models.BooleanField(default=True)
    cooldown_seconds = models.PositiveIntegerField("cooldown (seconds)", default=300)
    # Bumped when the DSL changes: compiled rules and window state are keyed by it.
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RuleQuerySet.as_manager()

    class Meta:
        verbose_name = "rule"
        verbose_name_plural = "rules"
        ordering = ["tenant_id", "name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="rules_rule_unique_name")]

    def __str__(self) -> str:
        return self.name


class ChannelKind(models.TextChoices):
    SLACK = "slack", "Slack"
    WEBHOOK = "webhook", "Webhook"
    EMAIL = "email", "E-mail"
    DISCORD = "discord", "Discord"


class NotificationChannel(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="channels")
    kind = models.CharField(max_length=10, choices=ChannelKind.choices)
    name = models.CharField(max_length=120)
    target = models.CharField(max_length=500, help_text="An https/http URL, or an e-mail address for e-mail.")
    # Signs webhook bodies (HMAC-SHA256); never returned by the API.
    secret = models.CharField(max_length=200, blank=True)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "notification channel"
        verbose_name_plural = "notification channels"
        ordering = ["tenant_id", "kind", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "kind", "name"], name="rules_channel_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


class RuleMatch(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="rule_matches")
    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="matches")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="matches")
    group_key = models.CharField(max_length=200, blank=True)
    matched_at = models.DateTimeField(default=timezone.now)
    # Within the rule's cooldown for this group: recorded, not notified.
    suppressed = models.BooleanField(default=False)
    # Actions naming a channel that does not exist, for the operator to see.
    problems = models.JSONField(default=list, blank=True)

    class Meta:
        # Django's default plural would be "rule matchs".
        verbose_name = "rule match"
        verbose_name_plural = "rule matches"
        ordering = ["-matched_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["rule", "event"], name="rules_match_once_per_event")]
        indexes = [models.Index(fields=["tenant", "-matched_at"], name="rules_match_tenant_time")]

    def __str__(self) -> str:
        return f"{self.rule} on {self.event}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed, will retry"
    DEAD = "dead", "Dead"


class DeliveryQuerySet(models.QuerySet["Delivery"]):
    def claimable(self, now: datetime) -> DeliveryQuerySet:
        """Deliveries a worker may take at `now`: pending or failed with their attempt due, or
        `sending` under a lease that has lapsed (the worker holding it died mid-send). The claim's
        conditional UPDATE and the sweeper's re-queue both read this one rule."""
        due = models.Q(status__in=[DeliveryStatus.PENDING, DeliveryStatus.FAILED], next_attempt_at__lte=now)
        lapsed = models.Q(status=DeliveryStatus.SENDING, lease_until__lt=now)
        return self.filter(due | lapsed)


class Delivery(models.Model):
    """One message to one channel. Either a rule match's (`match` set), or a notification no
    rule produced (`match` empty: a monitor's alert), which carries its own `title` (the e-mail
    subject, a webhook's `alert.title`), `context` (what a webhook receives instead of the rule,
    match and event) and `source_ref` (what it notifies about, e.g. ``monitor-flip:123``: unique
    per channel, so a re-run never notifies a channel twice)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="deliveries")
    match = models.ForeignKey(RuleMatch, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.ForeignKey(NotificationChannel, on_delete=models.CASCADE, related_name="deliveries")
    message = models.TextField()
    title = models.CharField(max_length=200, blank=True)
    context = models.JSONField(default=dict, blank=True)
    source_ref = models.CharField(max_length=100, blank=True)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # A worker's claim on a send in progress; another may take over once it has passed.
    lease_until = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = DeliveryQuerySet.as_manager()

    class Meta:
        verbose_name = "delivery"
        verbose_name_plural = "deliveries"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["match", "channel"], name="rules_delivery_once"),
            models.UniqueConstraint(
                fields=["channel", "source_ref"],
                name="rules_delivery_source_once",
                condition=~models.Q(source_ref=""),
            ),
            # Every delivery says what it is for: a rule's match, or the source it notifies about.
            models.CheckConstraint(
                condition=models.Q(match__isnull=False) | ~models.Q(source_ref=""), name="rules_delivery_has_a_source"
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="rules_delivery_tenant_time"),
            models.Index(fields=["status", "next_attempt_at"], name="rules_delivery_due"),
        ]

    def __str__(self) -> str:
        if self.match_id is None:
            return f"{self.channel} for {self.source_ref or 'a notification'}"
        return f"{self.channel} for match #{self.match_id}"

    @property
    def idempotency_key(self) -> str:
        """Sent with every attempt, so a receiver can drop a repeat after a lost acknowledgement."""
        return f"sentinel-delivery-{self.pk}"
