"""The insight engine's analysis of one period (docs/insight.md): claim the period, aggregate
the window with a few GROUP BY queries, run the detectors, turn findings into incidents, resolve
the quiet ones, and carry the EWMA baselines forward."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from accounts.selectors import login_failure_counts, tenant_uuid_of_username
from accounts.services import login_failures_purge
from observability import selectors
from observability.insight import detectors
from observability.insight.config import InsightConfig, insight_config
from observability.insight.detectors import Finding, Grading, RouteLimits, RouteWindow, Traffic
from observability.models import InsightState
from observability.services.incidents import incident_observe, incidents_resolve_quiet

logger = logging.getLogger("sentinel.insight")

# The baselines' dimensions, as keys of InsightState.baselines.
FLOOD_IP, FLOOD_TENANT, ERROR_SHARE, LATENCY_P95 = "flood_ip", "flood_tenant", "error_share", "latency_p95"


@dataclass
class Window:
    """What one analysis counted: the aggregates the detectors read."""

    ips: list[Traffic]
    tenants: list[Traffic]
    routes: list[RouteWindow]
    login_by_ip: dict[str, int]
    login_by_user: dict[str, int]
    gateway_auth_by_ip: dict[str, int]
    breaker_opens: dict[str, int]


@dataclass
class AnalysisReport:
    """The outcome of one analysis: the findings and the incidents that changed."""

    at: datetime
    findings: list[Finding] = field(default_factory=list)
    opened: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)


def insight_claim(*, now: datetime, period_seconds: float) -> bool:
    """Whether this caller runs the analysis of the period ending at `now`: a conditional UPDATE
    moves `claimed_at` only if the last claim is at least half a period old, so a second beat,
    a duplicate or a retried task in the same period does nothing (its row count is 0)."""
    InsightState.objects.get_or_create(pk=1)
    free = Q(claimed_at__isnull=True) | Q(claimed_at__lte=now - timedelta(seconds=period_seconds / 2))
    return InsightState.objects.filter(free, pk=1).update(claimed_at=now) == 1


def insight_analyse_run(*, now: datetime | None = None, claim: bool = True) -> AnalysisReport | None:
    """One analysis (the beat task's body). Returns its report, or None when another worker
    claimed this period. `claim=False` skips the election (tests of the incident races)."""
    config = insight_config()
    now = now or timezone.now()
    if claim and not insight_claim(now=now, period_seconds=config.PERIOD_SECONDS):
        return None
    state, _ = InsightState.objects.get_or_create(pk=1)
    window = _window_read(now, config)
    findings = _detect(window, state.baselines, config)
    report = AnalysisReport(at=now, findings=findings)
    for finding in findings:
        incident, change = incident_observe(finding=finding, now=now)
        if change is not None:
            (report.opened if change == "opened" else report.escalated).append(incident.pk)
    quiet_since = now - timedelta(seconds=(config.RESOLVE_AFTER_PERIODS - 0.5) * config.PERIOD_SECONDS)
    still = {(finding.kind, finding.subject) for finding in findings}
    report.resolved = [i.pk for i in incidents_resolve_quiet(still_found=still, quiet_since=quiet_since, now=now)]
    elapsed = (now - state.analysed_at).total_seconds() if state.analysed_at else config.PERIOD_SECONDS
    baselines = _baselines_next(state.baselines, window, findings, config, elapsed)
    InsightState.objects.filter(pk=1).update(baselines=baselines, analysed_at=now, last_report=_summary(report))
    login_failures_purge(before=now - timedelta(seconds=config.LOGIN_FAILURE_RETENTION_SECONDS))
    return report


def _window_read(now: datetime, config: InsightConfig) -> Window:
    since = now - timedelta(seconds=config.WINDOW_SECONDS)
    brute_since = now - timedelta(seconds=config.BRUTE_FORCE_WINDOW_SECONDS)
    limit = config.BASELINE_MAX_SUBJECTS
    return Window(
        ips=selectors.traffic_by_client_ip(since=since, until=now, limit=limit),
        tenants=selectors.traffic_by_tenant(since=since, until=now, limit=limit),
        routes=selectors.route_windows(since=since, until=now, limit=limit),
        login_by_ip=dict(login_failure_counts(since=brute_since, by="client_ip", limit=limit)),
        login_by_user=dict(login_failure_counts(since=brute_since, by="username", limit=limit)),
        gateway_auth_by_ip=selectors.gateway_auth_failures_by_ip(since=brute_since, until=now, limit=limit),
        breaker_opens=selectors.breaker_opens_by_upstream(
            since=now - timedelta(seconds=config.FLAP_WINDOW_SECONDS), until=now, limit=limit
        ),
    )


def _detect(window: Window, baselines: dict[str, Any], config: InsightConfig) -> list[Finding]:
    times = {"window_seconds": config.WINDOW_SECONDS, "baseline_seconds": config.BASELINE_SECONDS}
    ip_limits = Grading(config.FLOOD_IP_FLOOR_PER_MIN, config.FLOOD_FACTOR, config.FLOOD_CRITICAL_FACTOR)
    tenant_limits = Grading(config.FLOOD_TENANT_FLOOR_PER_MIN, config.FLOOD_FACTOR, config.FLOOD_CRITICAL_FACTOR)
    route_limits = RouteLimits(
        error_min_requests=config.ERROR_MIN_REQUESTS,
        errors=Grading(config.ERROR_FLOOR_SHARE, config.ERROR_FACTOR, config.ERROR_CRITICAL_FACTOR),
        latency_min_requests=config.LATENCY_MIN_REQUESTS,
        latency=Grading(config.LATENCY_FLOOR_MS, config.LATENCY_FACTOR, config.LATENCY_CRITICAL_FACTOR),
    )
    users = {
        name: tenant_uuid_of_username(username=name)
        for name, count in window.login_by_user.items()
        if count >= config.BRUTE_FORCE_USER_FAILURES
    }
    return [
        *detectors.floods(detectors.FLOOD_IP, window.ips, baselines.get(FLOOD_IP, {}), ip_limits, **times),
        *detectors.floods(
            detectors.FLOOD_TENANT, window.tenants, baselines.get(FLOOD_TENANT, {}), tenant_limits, **times
        ),
        *detectors.brute_force(
            login_failures_by_ip=window.login_by_ip,
            gateway_auth_failures_by_ip=window.gateway_auth_by_ip,
            login_failures_by_user=window.login_by_user,
            user_tenants={name: str(uuid) if uuid else None for name, uuid in users.items()},
            ip_threshold=config.BRUTE_FORCE_IP_FAILURES,
            user_threshold=config.BRUTE_FORCE_USER_FAILURES,
            critical_factor=config.BRUTE_FORCE_CRITICAL_FACTOR,
            window_seconds=config.BRUTE_FORCE_WINDOW_SECONDS,
        ),
        *detectors.error_spikes(window.routes, baselines.get(ERROR_SHARE, {}), route_limits, **times),
        *detectors.latency_regressions(window.routes, baselines.get(LATENCY_P95, {}), route_limits, **times),
        *detectors.breaker_flapping(
            window.breaker_opens,
            threshold=config.FLAP_OPENS,
            critical=config.FLAP_CRITICAL_OPENS,
            window_seconds=config.FLAP_WINDOW_SECONDS,
        ),
    ]


def _baselines_next(
    previous: dict[str, Any], window: Window, findings: list[Finding], config: InsightConfig, elapsed: float
) -> dict[str, dict[str, float]]:
    """Each dimension's EWMA brought forward by this window's samples (detectors.baselines_update):
    rates per minute (silence is 0), the 5xx share and the p95 of routes with enough requests
    (fewer: no sample). Subjects found anomalous keep their baseline."""
    alpha = detectors.ewma_alpha(elapsed, config.BASELINE_SECONDS)
    per_min = 60.0 / config.WINDOW_SECONDS
    flagged = {(finding.kind, finding.subject) for finding in findings}
    errors = {r.subject: r.errors / r.requests for r in window.routes if r.requests >= config.ERROR_MIN_REQUESTS}
    p95s = {
        r.subject: detectors.histogram_quantile(0.95, r.latency_buckets)
        for r in window.routes
        if r.forwarded >= config.LATENCY_MIN_REQUESTS
    }
    samples: dict[str, tuple[dict[str, float], float | None, str, bool]] = {
        FLOOD_IP: ({t.subject: t.requests * per_min for t in window.ips}, 0.0, detectors.FLOOD_IP, False),
        FLOOD_TENANT: ({t.subject: t.requests * per_min for t in window.tenants}, 0.0, detectors.FLOOD_TENANT, False),
        ERROR_SHARE: (errors, None, detectors.ERROR_SPIKE, False),
        LATENCY_P95: ({k: v for k, v in p95s.items() if v is not None}, None, detectors.LATENCY_REGRESSION, True),
    }
    return {
        name: detectors.baselines_update(
            previous.get(name, {}),
            current,
            alpha=alpha,
            absent=absent,
            frozen={subject for kind_, subject in flagged if kind_ == kind},
            seed_with_first=seed,
            max_subjects=config.BASELINE_MAX_SUBJECTS,
        )
        for name, (current, absent, kind, seed) in samples.items()
    }


def _summary(report: AnalysisReport) -> dict[str, Any]:
    return {
        "at": report.at.isoformat(),
        "findings": len(report.findings),
        "opened": report.opened,
        "escalated": report.escalated,
        "resolved": report.resolved,
    }
