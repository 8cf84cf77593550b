"""The insight engine's detectors: plain functions from aggregates of one window (and the
baselines kept between windows) to findings. No Django, no database: ``observability.services``
feeds them the figures of a few GROUP BY queries and turns their findings into incidents.

Every rate detector grades the same way (docs/insight.md has the defaults and their sources):

    effective baseline = max(EWMA baseline, floor / factor)
    ratio              = current / effective baseline
    warning  when ratio >= factor          (so the current value is at least the floor)
    critical when ratio >= critical factor

The floor keeps a quiet subject's first burst (twenty requests to an API nobody called for an
hour) from reading as "infinitely many times its baseline"; the baseline keeps a busy subject's
normal level from reading as a flood. Baselines are exponentially weighted moving averages in
continuous time, ``b' = b + alpha * (x - b)`` with ``alpha = 1 - exp(-dt / tau)`` for a sample
``dt`` seconds after the previous one and a time constant ``tau`` (``BASELINE_SECONDS``): the
irregular-interval form of the EWMA that Netflix Atlas (``:des``/``:trend``) and Prometheus'
``holt_winters`` smooth with, exact when an analysis period is late or skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

# The kinds and severities, as observability.models names them (a test holds them equal).
FLOOD_IP = "flood_ip"
FLOOD_TENANT = "flood_tenant"
BRUTE_FORCE_IP = "brute_force_ip"
BRUTE_FORCE_USER = "brute_force_user"
ERROR_SPIKE = "error_spike"
LATENCY_REGRESSION = "latency_regression"
BREAKER_FLAPPING = "breaker_flapping"
WARNING = "warning"
CRITICAL = "critical"
TIMES = "\u00d7"  # the multiplication sign, as in "14 times its baseline"

# Upper bounds (ms) of the latency histogram the window query fills, the last one +Inf: roughly
# logarithmic, as Prometheus' default buckets, from 5 ms to a minute.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    5, 10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 30000, 60000, math.inf,
)  # fmt: skip


@dataclass(frozen=True)
class Finding:
    """One thing the engine noticed in a window: what (`kind`, `subject`), how bad, a plain
    sentence with the figures, the figures themselves, and the tenant it belongs to (None:
    fleet-wide, which only staff see)."""

    kind: str
    subject: str
    severity: str
    summary: str
    evidence: dict[str, Any]
    tenant_uuid: str | None = None


@dataclass(frozen=True)
class Traffic:
    """Requests of one subject (a client IP, a tenant) in the window, and how many were answered
    429; `label` names it for people (a tenant's slug)."""

    subject: str
    requests: int
    limited: int
    label: str = ""
    tenant_uuid: str | None = None


@dataclass(frozen=True)
class RouteWindow:
    """One route in the window: requests, 5xx answers, and the latency histogram of the requests
    forwarded upstream (counts per `LATENCY_BUCKETS_MS` bucket, not cumulative)."""

    subject: str  # the route's path prefix
    route_id: int | None
    requests: int
    errors: int
    latency_buckets: Sequence[int] = field(default_factory=tuple)
    tenant_uuid: str | None = None

    @property
    def forwarded(self) -> int:
        return sum(self.latency_buckets)


# --- Baselines ------------------------------------------------------------------------------


def ewma_alpha(elapsed_seconds: float, tau_seconds: float) -> float:
    """The weight of a sample taken `elapsed_seconds` after the previous one, for a time
    constant `tau_seconds`: ``1 - exp(-dt / tau)`` (0 < alpha <= 1)."""
    if elapsed_seconds <= 0:
        return 0.0
    return 1.0 - math.exp(-elapsed_seconds / tau_seconds)


def baselines_update(
    previous: Mapping[str, float],
    current: Mapping[str, float],
    *,
    alpha: float,
    absent: float | None,
    frozen: Iterable[str] = (),
    seed_with_first: bool = False,
    max_subjects: int = 5000,
) -> dict[str, float]:
    """The next baselines of one dimension: ``b + alpha * (x - b)`` for each subject.

    - A subject absent from `current` takes `absent` as its sample (0 for rates: silence is a
      rate of zero), or keeps its baseline when `absent` is None (no sample, no news).
    - A `frozen` subject keeps its baseline: it is anomalous now, and learning the anomaly would
      make it look normal (the baseline would chase the flood).
    - A new subject starts from 0, or from its first sample with `seed_with_first` (latency:
      there is no neutral prior for a route's p95).
    - Baselines that decayed below 0.001 are dropped, and only the `max_subjects` largest are
      kept, so the state stays bounded however many addresses pass by.
    """
    frozen = set(frozen)
    nxt: dict[str, float] = {}
    for subject in set(previous) | set(current):
        old = previous.get(subject)
        sample = current.get(subject, absent)
        if subject in frozen or sample is None:
            value = old if old is not None else None
        elif old is None:
            value = sample if seed_with_first else alpha * sample
        else:
            value = old + alpha * (sample - old)
        if value is not None and value >= 0.001:
            nxt[subject] = value
    if len(nxt) > max_subjects:
        nxt = dict(sorted(nxt.items(), key=lambda item: item[1], reverse=True)[:max_subjects])
    return nxt


def severity_of(value: float, *, warning_at: float, critical_at: float) -> str | None:
    """CRITICAL when `value` >= `critical_at`, else WARNING when >= `warning_at`, else None: the
    one grading every detector ends in (a ratio against factors, or a count against thresholds)."""
    if value >= critical_at:
        return CRITICAL
    return WARNING if value >= warning_at else None


def grade(
    current: float, baseline: float, *, floor: float, factor: float, critical_factor: float
) -> tuple[str | None, float]:
    """(severity or None, ratio): `current` against ``max(baseline, floor / factor)``."""
    effective = max(baseline, floor / factor, 1e-12)
    ratio = current / effective
    return severity_of(ratio, warning_at=factor, critical_at=critical_factor), ratio


def histogram_quantile(
    quantile: float, buckets: Sequence[int], bounds: Sequence[float] = LATENCY_BUCKETS_MS
) -> float | None:
    """The `quantile` (0-1) of a histogram of per-bucket counts, interpolated linearly inside the
    bucket where it falls, as Prometheus' ``histogram_quantile``; a quantile in the +Inf bucket
    is the last finite bound. None for an empty histogram."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = quantile * total
    cumulative = 0.0
    for index, count in enumerate(buckets):
        if count and cumulative + count >= rank:
            upper = bounds[index]
            lower = bounds[index - 1] if index else 0.0
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - cumulative) / count
        cumulative += count
    return bounds[-2]


# --- Phrasing helpers -------------------------------------------------------------------------


def number(value: float) -> str:
    """1240 -> "1,240"; 13.96 -> "14"; 3.25 -> "3.2": under 10, one decimal."""
    if value >= 10 or float(value).is_integer():
        return f"{round(value):,}"
    return f"{value:,.1f}"


def percent(share: float) -> str:
    """0.97 -> "97 %"; under 10 % one decimal (0.004 -> "0.4 %")."""
    value = share * 100
    return f"{value:.0f} %" if value >= 10 or value == 0 else f"{value:.1f} %"


def duration(seconds: float) -> str:
    """3600 -> "1-hour"; 300 -> "5-minute"; 45 -> "45-second" (an adjective, for "its 1-hour baseline")."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}-{unit}"
    return f"{number(seconds)}-second"


def span(seconds: float) -> str:
    """300 -> "5 minutes"; 60 -> "1 minute"; 2 -> "2 seconds"."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{number(seconds)} seconds"


# --- Detectors --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grading:
    """How one dimension grades its figure (module doc): the floor (in the figure's unit), the
    ratio for a warning and the ratio for critical."""

    floor: float
    factor: float
    critical_factor: float

    def grade(self, current: float, baseline: float) -> tuple[str | None, float]:
        return grade(current, baseline, floor=self.floor, factor=self.factor, critical_factor=self.critical_factor)


S = TypeVar("S")


@dataclass(frozen=True)
class Graded:
    """A figure that graded: its severity, its ratio to the effective baseline, the figure
    itself (`current`) and the EWMA baseline it was compared with."""

    severity: str
    ratio: float
    current: float
    baseline: float


def _graded(
    subjects: Iterable[S], measure: Callable[[S], tuple[float, float] | None], grading: Grading
) -> Iterator[tuple[S, Graded]]:
    """The subjects whose figure grades a warning or worse, with the grading: `measure` gives a
    subject's (current figure, baseline), or None for a subject not to judge (too few requests,
    no baseline yet). The shape the rate detectors share; each phrases its own finding."""
    for subject in subjects:
        measured = measure(subject)
        if measured is None:
            continue
        current, baseline = measured
        severity, ratio = grading.grade(current, baseline)
        if severity is not None:
            yield subject, Graded(severity, ratio, current, baseline)


def floods(
    kind: str,
    traffic: Iterable[Traffic],
    baselines: Mapping[str, float],
    limits: Grading,
    *,
    window_seconds: float,
    baseline_seconds: float,
) -> list[Finding]:
    """Request floods of one dimension (`FLOOD_IP` or `FLOOD_TENANT`): a subject's rate in the
    window (requests per minute) graded against its EWMA baseline and the floor (module doc).
    The evidence carries the share answered 429: a flood the limiter already holds off is less
    urgent to a reader than one reaching the upstream."""
    found = []

    def measure(item: Traffic) -> tuple[float, float]:
        return item.requests * 60.0 / window_seconds, baselines.get(item.subject, 0.0)

    for item, graded in _graded(traffic, measure, limits):
        rate, baseline, ratio = graded.current, graded.baseline, graded.ratio
        limited_share = item.limited / item.requests if item.requests else 0.0
        evidence = {
            "rate_per_min": round(rate, 1),
            "baseline_per_min": round(baseline, 2),
            "ratio": round(ratio, 1),
            "floor_per_min": limits.floor,
            "requests": item.requests,
            "limited": item.limited,
            "limited_share": round(limited_share, 4),
            "window_seconds": window_seconds,
        }
        summary = _flood_sentence(kind, item, rate, baseline, ratio, limited_share, limits, baseline_seconds)
        found.append(Finding(kind, item.subject, graded.severity, summary, evidence, item.tenant_uuid))
    return found


def _flood_sentence(
    kind: str,
    item: Traffic,
    rate: float,
    baseline: float,
    ratio: float,
    limited_share: float,
    limits: Grading,
    baseline_seconds: float,
) -> str:
    who = f"Traffic from {item.subject}" if kind == FLOOD_IP else f"Traffic of tenant {item.label or item.subject}"
    if baseline * limits.factor >= limits.floor:
        head = f"{who} is {number(ratio)}{TIMES} its {duration(baseline_seconds)} baseline: {number(rate)} req/min"
    else:
        # No baseline worth comparing to yet: the floor decided.
        head = (
            f"{who} is {number(rate)} req/min against a {duration(baseline_seconds)} baseline of "
            f"{number(baseline)} req/min (flood floor {number(limits.floor)} req/min)"
        )
    return f"{head}; {percent(limited_share)} answered 429."


def brute_force(
    *,
    login_failures_by_ip: Mapping[str, int],
    gateway_auth_failures_by_ip: Mapping[str, int],
    login_failures_by_user: Mapping[str, int],
    user_tenants: Mapping[str, str | None],
    ip_threshold: int,
    user_threshold: int,
    critical_factor: float,
    window_seconds: float,
) -> list[Finding]:
    """Brute force: failed logins (`POST /auth/token` and the admin's login) plus the gateway's
    `auth_failed` answers per client IP, and failed logins per username, over the brute-force
    window. Warning at the threshold, critical at `critical_factor` times it. A username's
    incident belongs to that user's tenant (`user_tenants`), an address's to the fleet."""
    found = []
    for ip in sorted(set(login_failures_by_ip) | set(gateway_auth_failures_by_ip)):
        logins, gateway = login_failures_by_ip.get(ip, 0), gateway_auth_failures_by_ip.get(ip, 0)
        severity = _count_grade(logins + gateway, ip_threshold, critical_factor)
        if severity is None:
            continue
        parts = [f"{number(logins)} failed logins"] if logins else []
        parts += [f"{number(gateway)} rejected gateway credentials"] if gateway else []
        summary = f"{' and '.join(parts)} from {ip} in {span(window_seconds)}."
        evidence = {
            "login_failures": logins,
            "gateway_auth_failures": gateway,
            "threshold": ip_threshold,
            "window_seconds": window_seconds,
        }
        found.append(Finding(BRUTE_FORCE_IP, ip, severity, _capital(summary), evidence))
    for username, failures in sorted(login_failures_by_user.items()):
        severity = _count_grade(failures, user_threshold, critical_factor)
        if severity is None:
            continue
        summary = f"{number(failures)} failed logins for user {username!r} in {span(window_seconds)}."
        evidence = {"login_failures": failures, "threshold": user_threshold, "window_seconds": window_seconds}
        found.append(Finding(BRUTE_FORCE_USER, username, severity, summary, evidence, user_tenants.get(username)))
    return found


def _count_grade(count: int, threshold: int, critical_factor: float) -> str | None:
    return severity_of(count, warning_at=threshold, critical_at=threshold * critical_factor)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class RouteLimits:
    """Thresholds of the per-route detectors (see the settings of the same names)."""

    error_min_requests: int
    errors: Grading  # the floor is a share of 5xx answers, 0-1
    latency_min_requests: int
    latency: Grading  # the floor is a p95 in milliseconds


def error_spikes(
    routes: Iterable[RouteWindow],
    baselines: Mapping[str, float],
    limits: RouteLimits,
    *,
    window_seconds: float,
    baseline_seconds: float,
) -> list[Finding]:
    """Error-rate spikes: a route's share of 5xx answers in the window against its EWMA baseline
    share and the floor share, once the window holds `error_min_requests` (fewer say nothing:
    two errors in three requests are 67 % and no spike)."""
    found = []

    def measure(route: RouteWindow) -> tuple[float, float] | None:
        if route.requests < limits.error_min_requests:
            return None
        return route.errors / route.requests, baselines.get(route.subject, 0.0)

    for route, graded in _graded(routes, measure, limits.errors):
        share, baseline, ratio = graded.current, graded.baseline, graded.ratio
        summary = (
            f"Route {route.subject} answers 5xx to {percent(share)} of requests ({number(route.errors)} of "
            f"{number(route.requests)} in {span(window_seconds)}) against a {duration(baseline_seconds)} "
            f"baseline of {percent(baseline)}."
        )
        evidence = {
            "error_share": round(share, 4),
            "baseline_share": round(baseline, 4),
            "ratio": round(ratio, 1),
            "errors": route.errors,
            "requests": route.requests,
            "route_id": route.route_id,
            "window_seconds": window_seconds,
        }
        found.append(Finding(ERROR_SPIKE, route.subject, graded.severity, summary, evidence, route.tenant_uuid))
    return found


def latency_regressions(
    routes: Iterable[RouteWindow],
    baselines: Mapping[str, float],
    limits: RouteLimits,
    *,
    window_seconds: float,
    baseline_seconds: float,
) -> list[Finding]:
    """Latency regressions: a route's p95 (of requests forwarded upstream, from the window's
    histogram) against its EWMA baseline p95 and the floor, once `latency_min_requests` were
    forwarded. A route with no baseline yet is not judged: its first p95 becomes the baseline."""
    found = []

    def measure(route: RouteWindow) -> tuple[float, float] | None:
        p95 = histogram_quantile(0.95, route.latency_buckets)
        baseline = baselines.get(route.subject)
        if p95 is None or baseline is None or route.forwarded < limits.latency_min_requests:
            return None
        return p95, baseline

    for route, graded in _graded(routes, measure, limits.latency):
        p95, baseline, ratio = graded.current, graded.baseline, graded.ratio
        summary = (
            f"Route {route.subject} p95 latency is {number(p95)} ms, {number(ratio)}{TIMES} its "
            f"{duration(baseline_seconds)} baseline of {number(baseline)} ms ({number(route.forwarded)} "
            f"requests in {span(window_seconds)})."
        )
        evidence = {
            "p95_ms": round(p95, 1),
            "baseline_p95_ms": round(baseline, 1),
            "ratio": round(ratio, 1),
            "requests": route.forwarded,
            "route_id": route.route_id,
            "window_seconds": window_seconds,
        }
        found.append(Finding(LATENCY_REGRESSION, route.subject, graded.severity, summary, evidence, route.tenant_uuid))
    return found


def breaker_flapping(
    opens_by_upstream: Mapping[str, int], *, threshold: int, critical: int, window_seconds: float
) -> list[Finding]:
    """Breaker flapping: how many times an upstream's breaker moved to open in the flapping
    window (from the request log's `breaker_transition`). A breaker that opens once and stays
    open is an outage the breaker handles; one that opens again and again is an upstream
    limping between up and down, which no single alert on "open" describes."""
    found = []
    for upstream, opens in sorted(opens_by_upstream.items()):
        # Critical needs the threshold too (a `critical` set below it does not open more).
        severity = severity_of(opens, warning_at=threshold, critical_at=max(critical, threshold))
        if severity is None:
            continue
        summary = f"The breaker of upstream {upstream} opened {number(opens)} times in {span(window_seconds)}."
        evidence = {"opens": opens, "threshold": threshold, "window_seconds": window_seconds}
        found.append(Finding(BREAKER_FLAPPING, upstream, severity, summary, evidence))
    return found
