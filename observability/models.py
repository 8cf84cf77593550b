"""Models of the observability app: the request log, incidents, and the workers' heartbeat."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class Decision(models.TextChoices):
    """What the proxy did with a request (`gateway.engine.proxy.Decision`, SPEC 3)."""

    FORWARDED = "forwarded", "forwarded"
    LIMITED = "limited", "limited (429)"
    SHED = "shed", "shed (503)"
    BREAKER_OPEN = "breaker_open", "breaker open (503)"
    AUTH_FAILED = "auth_failed", "auth failed"
    UPSTREAM_ERROR = "upstream_error", "upstream error"
    # Refused by Sentinel's own checks before anything was forwarded (unsafe path, headers too
    # large, method not allowed, egress denied): finer in `reason`.
    REJECTED = "rejected", "rejected"


class RequestLog(models.Model):
    """One proxied request, rejections included (SPEC 3, gateway step 10).

    Written in batches by the request-log writer (never one row per request), on PostgreSQL into a
    table partitioned by day on `time`, so retention drops whole partitions. `tenant_uuid` is the
    caller's tenant (null for anonymous callers, whom only staff see); `tenant_key` is the limiter's
    key (the uuid, or `ip:<address>`). No foreign keys: a log row outlives what it names, and a
    constraint check per row would cost the writer.
    """

    id = models.BigAutoField(primary_key=True)
    time = models.DateTimeField(help_text="When the request arrived (UTC).")
    correlation_id = models.CharField(max_length=128)
    trace_id = models.CharField(max_length=32, blank=True)
    tenant_uuid = models.UUIDField("tenant UUID", null=True, blank=True)
    tenant_key = models.CharField(
        max_length=80,
        blank=True,
        help_text="The limiter's key: the tenant's uuid, or ip:ADDRESS for an anonymous caller.",
    )
    tier = models.CharField(max_length=16, blank=True)
    principal = models.CharField(max_length=64, blank=True, help_text="User id or API key prefix.")
    route_id = models.IntegerField(null=True, blank=True)
    route = models.CharField(max_length=200, blank=True, help_text="The route's path prefix.")
    method = models.CharField(max_length=16)
    path = models.CharField(
        max_length=2000, help_text="As the client sent it, escapes kept; without the query (it may hold credentials)."
    )
    status = models.PositiveSmallIntegerField()
    decision = models.CharField(max_length=16, choices=Decision.choices)
    reason = models.CharField(
        max_length=32,
        blank=True,
        help_text="Why it was refused or failed: unsafe_path, not_authenticated, connect_error, timeout, upstream_5xx…",
    )
    latency_ms = models.FloatField()
    upstream = models.CharField(max_length=300, blank=True)
    upstream_latency_ms = models.FloatField(null=True, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=256, blank=True)
    bytes_in = models.BigIntegerField(default=0)
    bytes_out = models.BigIntegerField(default=0)
    # The breaker state this request's outcome moved its upstream to ("open", "half_open",
    # "closed"), when it moved one: the insight engine counts flapping from these.
    breaker_transition = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [
            # The read API's and the dashboard's: newest first, per tenant or fleet-wide.
            models.Index(fields=["tenant_uuid", "-time"], name="reqlog_tenant_time"),
            models.Index(fields=["-time"], name="reqlog_time"),
            # The insight engine's: per route (error spikes, latency) and per client (floods).
            models.Index(fields=["route_id", "-time"], name="reqlog_route_time"),
            models.Index(fields=["client_ip", "-time"], name="reqlog_ip_time"),
            models.Index(fields=["status", "-time"], name="reqlog_status_time"),
            models.Index(fields=["correlation_id"], name="reqlog_correlation"),
        ]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.method} {self.path} {self.status} {self.decision}"


class IncidentKind(models.TextChoices):
    FLOOD_IP = "flood_ip", "request flood (client IP)"
    FLOOD_TENANT = "flood_tenant", "request flood (tenant)"
    BRUTE_FORCE_IP = "brute_force_ip", "brute force (client IP)"
    BRUTE_FORCE_USER = "brute_force_user", "brute force (user)"
    ERROR_SPIKE = "error_spike", "error-rate spike (route)"
    LATENCY_REGRESSION = "latency_regression", "latency regression (route)"
    BREAKER_FLAPPING = "breaker_flapping", "breaker flapping (upstream)"


class Severity(models.TextChoices):
    INFO = "info", "info"
    WARNING = "warning", "warning"
    CRITICAL = "critical", "critical"


SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class IncidentStatus(models.TextChoices):
    OPEN = "open", "open"
    ACKNOWLEDGED = "acknowledged", "acknowledged"
    RESOLVED = "resolved", "resolved"


class IncidentQuerySet(models.QuerySet["Incident"]):
    def unresolved(self) -> IncidentQuerySet:
        return self.exclude(status=IncidentStatus.RESOLVED)


class Incident(models.Model):
    """A finding of the insight engine, opened once per (kind, subject) while it lasts.

    The partial unique constraint makes "one unresolved incident per kind and subject" the
    database's rule, so two workers analysing the same window cannot both open one (the loser's
    insert fails and it updates the winner's row instead). `tenant_uuid` is the tenant the subject
    belongs to, when it belongs to one; null incidents (a client IP, an upstream) are staff's.
    """

    kind = models.CharField(max_length=32, choices=IncidentKind.choices)
    subject = models.CharField(max_length=300, help_text="What it is about: an IP, tenant, user, route or upstream.")
    tenant_uuid = models.UUIDField("tenant UUID", null=True, blank=True)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.WARNING)
    status = models.CharField(max_length=16, choices=IncidentStatus.choices, default=IncidentStatus.OPEN)
    summary = models.CharField(max_length=500, help_text="One plain sentence with the figures.")
    evidence = models.JSONField(default=dict, help_text="The figures behind the finding.")
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)

    objects = IncidentQuerySet.as_manager()

    class Meta:
        ordering = ["-last_seen", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "subject"],
                condition=~Q(status="resolved"),
                name="incident_one_unresolved_per_subject",
            )
        ]
        indexes = [
            models.Index(fields=["status", "-last_seen"], name="incident_status_seen"),
            models.Index(fields=["tenant_uuid", "-last_seen"], name="incident_tenant_seen"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.subject} ({self.severity}, {self.status})"


class Heartbeat(models.Model):
    """The last time a background process proved it was alive (the worker, through beat).

    Kept in the database rather than the cache because in embedded mode the cache is per process,
    and `/health` in the web process must see what the worker wrote.
    """

    name = models.CharField(max_length=64, primary_key=True)
    last_seen = models.DateTimeField()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_seen:%Y-%m-%d %H:%M:%S}"


class InsightState(models.Model):
    """The insight engine's memory between analyses, one row (pk 1) every worker sees.

    `claimed_at` elects one analysis per period: a worker runs it only if its conditional
    UPDATE moved `claimed_at` (two beats, or a retried task, find the period taken). `baselines`
    holds the EWMA baselines of each dimension (``{"flood_ip": {"203.0.113.9": 12.5}, ...}``),
    bounded by INSIGHT_BASELINE_MAX_SUBJECTS per dimension; `analysed_at` is when they were last
    brought forward (the EWMA's `dt`).
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    claimed_at = models.DateTimeField(null=True, blank=True)
    analysed_at = models.DateTimeField(null=True, blank=True)
    baselines = models.JSONField(default=dict)
    last_report = models.JSONField(default=dict, help_text="What the last analysis counted and found.")

    class Meta:
        verbose_name = "insight state"
        verbose_name_plural = "insight states"

    def __str__(self) -> str:
        return f"insight state (analysed {self.analysed_at or 'never'})"
