"""Monitors, their check results, state flips, roll-ups and maintenance windows (SPEC 5).

The guarantees live in the rows:

* **Scheduling.** `next_due_at` is when the next check is due; a dispatcher claims due monitors
  with one conditional UPDATE (`claimed_until` null or lapsed) that also advances `next_due_at`
  by whole intervals from the previous due time, never from when a check finished, so the
  interval does not drift. A claim lapses at `claimed_until`: a worker killed mid-check leaves no
  monitor stuck, and a check that overruns its interval is not started a second time.
* **State.** `state` changes only after `failure_threshold` failures or `success_threshold`
  successes in a row (Gatus' defaults 3 and 2). Each change is one `Flip` row; a worker sends its
  alert only after claiming it with `UPDATE … SET processed_at = now WHERE processed_at IS NULL`
  and a row count of 1 (healthchecks' `sendalerts` pattern), so two workers never alert twice.
* **History at scale.** `CheckResult` rows are kept for CHECK_RESULT_RETENTION_DAYS; every check
  also adds itself to an hourly and a daily `MonitorRollup` row, so uptime over 30 days or the
  status page's 90-day bar read roll-ups, never raw results.
"""

from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Tenant
from rules.models import NotificationChannel

# SPEC 5: a shorter interval is refused.
MIN_INTERVAL_SECONDS = 10
# Gatus' defaults (README "Alerting": failure-threshold 3, success-threshold 2).
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_SUCCESS_THRESHOLD = 2
# Gatus' default HTTP/TCP timeout (README "Client configuration": 10s).
DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_INTERVAL_SECONDS = 60


class MonitorKind(models.TextChoices):
    HTTP = "http", "HTTP(S)"
    TCP = "tcp", "TCP connect"


class MonitorState(models.TextChoices):
    """What the monitor's state machine says, after thresholds. `unknown` until enough checks
    ran; `paused` while an operator paused it; `maintenance` while a maintenance window is open
    (checks run, nothing alerts)."""

    UP = "up", "up"
    DOWN = "down", "down"
    PAUSED = "paused", "paused"
    UNKNOWN = "unknown", "unknown"
    MAINTENANCE = "maintenance", "maintenance"


class CheckOutcome(models.TextChoices):
    """One check's verdict, before thresholds."""

    UP = "up", "up"
    DOWN = "down", "down"


class MonitorQuerySet(models.QuerySet["Monitor"]):
    def enabled(self) -> MonitorQuerySet:
        return self.filter(enabled=True)


class Monitor(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="monitors")
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=8, choices=MonitorKind.choices, default=MonitorKind.HTTP)
    target = models.CharField(max_length=2000, help_text="An http(s) URL, or host:port for a TCP monitor.")

    # --- the check (http) ----------------------------------------------------------------------
    method = models.CharField(max_length=10, default="GET")
    headers = models.JSONField(default=dict, blank=True, help_text="Request headers, {name: value}.")
    body = models.TextField(blank=True, help_text="Request body (http), sent as is.")
    expected_status = models.JSONField(
        default=list,
        blank=True,
        help_text='Accepted status codes and ranges, e.g. ["200-299", "301"]; empty means 200-299.',
    )
    keyword = models.CharField(max_length=500, blank=True, help_text="Text the body must contain.")
    keyword_absent = models.BooleanField(default=False, help_text="The keyword must NOT be in the body.")
    max_latency_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="Slower than this (milliseconds) counts as a failure."
    )
    conditions = models.TextField(
        blank=True,
        help_text="Rules DSL over status, response_time (ms), headers, body, cert_expiry_days, e.g. "
        'status == 200 and body.status == "UP".',
    )
    follow_redirects = models.BooleanField(default=True)
    verify_tls = models.BooleanField("verify TLS", default=True)
    timeout_seconds = models.FloatField(default=DEFAULT_TIMEOUT_SECONDS)

    # --- schedule and alerting -----------------------------------------------------------------
    interval_seconds = models.PositiveIntegerField(
        default=DEFAULT_INTERVAL_SECONDS, validators=[MinValueValidator(MIN_INTERVAL_SECONDS)]
    )
    failure_threshold = models.PositiveSmallIntegerField(default=DEFAULT_FAILURE_THRESHOLD)
    success_threshold = models.PositiveSmallIntegerField(default=DEFAULT_SUCCESS_THRESHOLD)
    reminder_interval_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="While down, alert again this often (seconds). Empty: no reminders."
    )
    cert_expiry_warning_days = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Warn once when the TLS certificate expires within this many days."
    )
    channels = models.ManyToManyField(NotificationChannel, blank=True, related_name="monitors")
    depends_on = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="dependents",
        help_text="While this parent is down, this monitor's alerts are held and summarised.",
    )
    enabled = models.BooleanField(default=True, help_text="Off: paused, no checks run.")
    published = models.BooleanField(default=False, help_text="Shown on the tenant's public status page.")
    # Bumped when what a check does changes: compiled conditions are cached by (id, version).
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # --- run state (written by the scheduler and the state machine only) ------------------------
    state = models.CharField(max_length=12, choices=MonitorState.choices, default=MonitorState.UNKNOWN)
    state_changed_at = models.DateTimeField(default=timezone.now)
    consecutive_failures = models.PositiveIntegerField(default=0)
    consecutive_successes = models.PositiveIntegerField(default=0)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_outcome = models.CharField(max_length=4, choices=CheckOutcome.choices, blank=True)
    last_reason = models.CharField(max_length=500, blank=True)
    last_latency_ms = models.FloatField(null=True, blank=True)
    cert_expires_at = models.DateTimeField(null=True, blank=True)
    cert_warned_at = models.DateTimeField(null=True, blank=True)
    last_reminder_at = models.DateTimeField(null=True, blank=True)
    next_due_at = models.DateTimeField(default=timezone.now)
    # A worker's claim on the check in progress; lapses at this time (worker killed, check hung).
    claimed_until = models.DateTimeField(null=True, blank=True)

    objects = MonitorQuerySet.as_manager()

    class Meta:
        verbose_name = "monitor"
        verbose_name_plural = "monitors"
        ordering = ["tenant_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="monitors_monitor_unique_name"),
            models.CheckConstraint(
                condition=Q(interval_seconds__gte=MIN_INTERVAL_SECONDS), name="monitors_monitor_min_interval"
            ),
        ]
        indexes = [
            # The dispatcher's scan: enabled monitors by due time.
            models.Index(fields=["next_due_at"], name="monitors_monitor_due", condition=Q(enabled=True)),
            models.Index(fields=["tenant", "state"], name="monitors_monitor_tenant_state"),
        ]

    def __str__(self) -> str:
        return self.name


class CheckResult(models.Model):
    """One check. `reason` says in words why a failed check failed (timeout, DNS failure,
    connection refused, TLS error with the certificate's problem, status, keyword, condition, too
    slow); `failed_condition` is the condition rendered with its actual value, e.g.
    ``status (500) == 200``. `lag_ms` is how late the check started against its due time."""

    id = models.BigAutoField(primary_key=True)
    monitor = models.ForeignKey(Monitor, on_delete=models.CASCADE, related_name="results")
    checked_at = models.DateTimeField(help_text="When the check started (UTC).")
    outcome = models.CharField(max_length=4, choices=CheckOutcome.choices)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True, help_text="Connect to last byte read, milliseconds.")
    reason = models.CharField(max_length=500, blank=True)
    failed_condition = models.CharField(max_length=500, blank=True)
    cert_expiry_days = models.IntegerField(null=True, blank=True)
    lag_ms = models.FloatField(null=True, blank=True, help_text="Start minus due time, milliseconds.")

    class Meta:
        verbose_name = "check result"
        verbose_name_plural = "check results"
        ordering = ["-checked_at", "-id"]
        indexes = [
            models.Index(fields=["monitor", "-checked_at", "-id"], name="monitors_result_monitor_time"),
            # Retention deletes by time across monitors.
            models.Index(fields=["checked_at"], name="monitors_result_time"),
        ]

    def __str__(self) -> str:
        return f"{self.monitor_id} {self.outcome} at {self.checked_at:%Y-%m-%d %H:%M:%S}"


class RollupPeriod(models.TextChoices):
    HOUR = "hour", "hour"
    DAY = "day", "day"


class MonitorRollup(models.Model):
    """Checks of one monitor in one hour or one UTC day, added to as checks land (an
    ``INSERT … ON CONFLICT DO UPDATE`` of the counts, on PostgreSQL and SQLite alike).
    Uptime over a period is ``1 - failures / checks`` summed over its rows."""

    id = models.BigAutoField(primary_key=True)
    monitor = models.ForeignKey(Monitor, on_delete=models.CASCADE, related_name="rollups")
    period = models.CharField(max_length=4, choices=RollupPeriod.choices)
    bucket = models.DateTimeField(help_text="Start of the hour or UTC day.")
    checks = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    # Checks that measured a latency (a timeout or a refused connection measures none): the mean
    # latency of the bucket is latency_sum_ms / latency_count, not / checks.
    latency_count = models.PositiveIntegerField(default=0)
    latency_sum_ms = models.FloatField(default=0.0)
    latency_max_ms = models.FloatField(default=0.0)

    class Meta:
        verbose_name = "roll-up"
        verbose_name_plural = "roll-ups"
        ordering = ["monitor_id", "period", "-bucket"]
        constraints = [
            models.UniqueConstraint(fields=["monitor", "period", "bucket"], name="monitors_rollup_once"),
        ]

    def __str__(self) -> str:
        return f"{self.monitor_id} {self.period} {self.bucket:%Y-%m-%d %H:00}"


class Flip(models.Model):
    """A change of a monitor's state (healthchecks' `Flip`). `processed_at` is set by the one
    worker that claims it and sends its alert. A flip held because the monitor's parent
    (`depends_on`) was down at the time names the parent's flip in `held_by` and is summarised in
    the parent's alerts instead of alerting on its own."""

    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="monitor_flips")
    monitor = models.ForeignKey(Monitor, on_delete=models.CASCADE, related_name="flips")
    created_at = models.DateTimeField(default=timezone.now)
    old_state = models.CharField(max_length=12, choices=MonitorState.choices)
    new_state = models.CharField(max_length=12, choices=MonitorState.choices)
    reason = models.CharField(max_length=500, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    held_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="held")

    class Meta:
        verbose_name = "flip"
        verbose_name_plural = "flips"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["monitor", "-created_at"], name="monitors_flip_monitor_time"),
            models.Index(fields=["created_at"], name="monitors_flip_unprocessed", condition=Q(processed_at=None)),
        ]

    def __str__(self) -> str:
        return f"{self.monitor_id}: {self.old_state} → {self.new_state}"


class Recurrence(models.TextChoices):
    ONCE = "once", "once"
    WEEKLY = "weekly", "every week"


class MaintenanceWindow(models.Model):
    """A time when checks run but nothing alerts: once (`starts_at` for `duration_minutes`) or
    every week at the same local weekday and time in `timezone`. For one monitor, or for every
    monitor of the tenant when `monitor` is empty."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="maintenance_windows")
    monitor = models.ForeignKey(
        Monitor, null=True, blank=True, on_delete=models.CASCADE, related_name="maintenance_windows"
    )
    name = models.CharField(max_length=120)
    starts_at = models.DateTimeField(help_text="The first (or only) start.")
    duration_minutes = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    recurrence = models.CharField(max_length=8, choices=Recurrence.choices, default=Recurrence.ONCE)
    timezone = models.CharField(max_length=64, default="UTC", help_text="IANA zone a weekly window follows.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "maintenance window"
        verbose_name_plural = "maintenance windows"
        ordering = ["tenant_id", "starts_at"]
        indexes = [models.Index(fields=["tenant", "monitor"], name="monitors_maintenance_scope")]

    def __str__(self) -> str:
        return self.name
