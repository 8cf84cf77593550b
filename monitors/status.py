"""The reads behind the public status page, its JSON twin, the badges, the monitors metrics
gathered at scrape time and the dashboard tile: bounded queries, whatever the number of monitors.

What a public page may show (it has no login, anyone reads it): a published monitor's id, name,
state, since when, when it was last checked, its daily uptime and, while it is down, the *kind*
of failure in words (`public_reason`: "timed out", "answered HTTP 503", "TLS error"...).
Never its target, method, headers, body, keyword, conditions or the raw reason, which may name
an internal host, a header or a body value.

Uptime is ``100 * (1 - failures / checks)`` over `MonitorRollup` rows, never raw results:
the 90-day bar reads the daily rows (one cell per UTC day), `uptime_24h` the hourly rows of the
last 24 hours (the current, partial hour included), `uptime_30d` the daily rows of the last 30
UTC days (today included). A period with no check has no figure (``None``), not 100 %.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.db.models import Count, F, Q, Sum
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe

from accounts.models import Tenant
from monitors.models import Monitor, MonitorRollup, MonitorState, RollupPeriod

# The bar's length: 90 UTC days, today last (statuspage.io's and Uptime Kuma's length).
BAR_DAYS = 90
# Monitors per HTML page: a 2,000-monitor page would be ~180,000 cells (megabytes of HTML) that
# nobody reads; 100 rows stay a few hundred kilobytes. The JSON twin lists them all.
PAGE_SIZE = 100
# Incidents listed at the top of the page (the count of all of them is shown too).
INCIDENTS_SHOWN = 20

# Overall status of a status page (and of its JSON twin).
OPERATIONAL = "operational"  # nothing published is down
DEGRADED = "degraded"  # some published monitors are down
OUTAGE = "outage"  # every published monitor that is checked (not paused, not unknown) is down

# A check's reason starts with words naming its kind (`monitors.engine.runner`'s docstring lists
# them): the kind is read from that start only, never searched for in the rest, which quotes a
# keyword, a condition's values, a host. Only these phrases reach a public page.
_PUBLIC_REASONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"timeout\b|timed out", re.I), "timed out"),
    (re.compile(r"status (\d{3})\b", re.I), "answered HTTP {0}"),
    (re.compile(r"dns failure", re.I), "DNS failure"),
    (re.compile(r"connection refused", re.I), "connection refused"),
    (re.compile(r"tls error|ssl", re.I), "TLS error"),
    (re.compile(r"too slow", re.I), "too slow"),
    (re.compile(r"keyword", re.I), "unexpected content"),
    (re.compile(r"condition failed|the condition", re.I), "a health condition failed"),
    (re.compile(r"connection reset|cannot connect|the server closed", re.I), "connection failed"),
    (re.compile(r"too many redirects", re.I), "too many redirects"),
    (re.compile(r"the answer is not valid http|the body could not be read", re.I), "invalid answer"),
)


def public_reason(reason: str) -> str:
    """The kind of failure `reason` (a `Monitor.last_reason`) names, in words safe for anyone:
    ``"timed out"``, ``"answered HTTP 503"``, ``"TLS error"``...; ``"check failed"`` for any
    other (an egress refusal, a target that cannot be read). Nothing of the reason itself is
    shown but a status code."""
    for pattern, phrase in _PUBLIC_REASONS:
        found = pattern.match(reason)
        if found is not None:
            return phrase.format(*found.groups())
    return "check failed"


def uptime_percent(checks: int | None, failures: int | None) -> float | None:
    """``100 * (1 - failures / checks)`` rounded to 3 decimals, or None for no check."""
    if not checks:
        return None
    return round(100.0 * (1.0 - (failures or 0) / checks), 3)


def published_tenant(slug: str) -> Tenant | None:
    """The active tenant `slug` names, or None. (Whether it published anything is the caller's
    next query.)"""
    return Tenant.objects.active().filter(slug=slug).only("id", "name", "slug").first()


def _published(tenant: Tenant) -> Any:
    return Monitor.objects.filter(tenant=tenant, published=True)


def state_counts(monitors: Any) -> dict[str, int]:
    """``{state: count}`` of `monitors` (a Monitor queryset), every state present; one query."""
    counts = dict.fromkeys(MonitorState.values, 0)
    for row in monitors.order_by().values("state").annotate(n=Count("id")):
        counts[row["state"]] = row["n"]
    return counts


def overall_status(counts: dict[str, int]) -> str:
    """`OPERATIONAL`, `DEGRADED` or `OUTAGE` from `state_counts` (see the constants)."""
    down = counts[MonitorState.DOWN]
    if down == 0:
        return OPERATIONAL
    checked = down + counts[MonitorState.UP] + counts[MonitorState.MAINTENANCE]
    return OUTAGE if down == checked else DEGRADED


@dataclass(frozen=True)
class PublicMonitor:
    id: int
    name: str
    state: str
    since: datetime
    last_checked_at: datetime | None
    reason: str  # public_reason() while down, else ""
    uptime_90d: float | None
    # The 90 cells, oldest day first: `<i class="LEVEL" title="YYYY-MM-DD: 99.95% up"></i>`, built
    # here rather than in a template loop (9,000 cells a page: a third of the page's time).
    bar_html: SafeString


@dataclass(frozen=True)
class StatusPage:
    tenant_name: str
    tenant_slug: str
    status: str
    counts: dict[str, int]
    total: int
    incidents: tuple[PublicMonitor, ...]
    monitors: tuple[PublicMonitor, ...]
    page: int
    pages: int
    generated_at: datetime


def _level(uptime: float | None) -> str:
    if uptime is None:
        return "none"
    if uptime >= 99.9:
        return "ok"
    if uptime >= 99.0:
        return "minor"
    if uptime >= 95.0:
        return "major"
    return "bad"


def _day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def status_page(slug: str, page: int = 1) -> StatusPage | None:
    """The status page of tenant `slug`, monitors `page` (1-based, `PAGE_SIZE` a page, by name).

    None when the slug names no active tenant, the tenant published nothing, or `page` is past
    the last. Five queries whatever the number of monitors: the tenant, the counts by state, the
    incidents (down, longest first, at most `INCIDENTS_SHOWN`), the page's monitors and the
    page's daily roll-ups of the last `BAR_DAYS` days.
    """
    tenant = published_tenant(slug)
    if tenant is None:
        return None
    published = _published(tenant)
    counts = state_counts(published)
    total = sum(counts.values())
    pages = max(1, -(-total // PAGE_SIZE))
    if total == 0 or not 1 <= page <= pages:
        return None
    now = timezone.now()
    first_day = _day_start(now) - timedelta(days=BAR_DAYS - 1)
    fields = ("id", "name", "state", "state_changed_at", "last_checked_at", "last_reason")
    down = published.filter(state=MonitorState.DOWN).order_by("state_changed_at", "id").values(*fields)
    rows = list(published.order_by("name", "id").values(*fields)[(page - 1) * PAGE_SIZE : page * PAGE_SIZE])
    days: dict[int, dict[date, tuple[int, int]]] = {row["id"]: {} for row in rows}
    rollups = MonitorRollup.objects.filter(
        monitor_id__in=list(days), period=RollupPeriod.DAY, bucket__gte=first_day
    ).values_list("monitor_id", "bucket", "checks", "failures")
    for monitor_id, bucket, checks, failures in rollups:
        # A day's bucket is its UTC midnight, and the database hands it back in UTC.
        days[monitor_id][bucket.date()] = (checks, failures)
    calendar = [((first_day + timedelta(days=n)).date()) for n in range(BAR_DAYS)]
    labels = [day.isoformat() for day in calendar]

    def public(row: dict[str, Any], by_day: dict[date, tuple[int, int]] | None) -> PublicMonitor:
        cells: list[str] = []
        total_checks = total_failures = 0
        for day, label in zip(calendar, labels, strict=True) if by_day is not None else ():
            checks, failures = (by_day or {}).get(day, (0, 0))
            total_checks += checks
            total_failures += failures
            uptime = uptime_percent(checks, failures)
            # Only a fixed word, a date and a number: nothing to escape.
            title = "no data" if uptime is None else f"{uptime:.2f}% up"
            cells.append(f'<i class="{_level(uptime)}" title="{label}: {title}"></i>')
        return PublicMonitor(
            id=row["id"],
            name=row["name"],
            state=row["state"],
            since=row["state_changed_at"],
            last_checked_at=row["last_checked_at"],
            reason=public_reason(row["last_reason"]) if row["state"] == MonitorState.DOWN else "",
            uptime_90d=uptime_percent(total_checks, total_failures),
            bar_html=mark_safe("".join(cells)),  # noqa: S308 (see above: nothing to escape)
        )

    return StatusPage(
        tenant_name=tenant.name,
        tenant_slug=tenant.slug,
        status=overall_status(counts),
        counts=counts,
        total=total,
        incidents=tuple(public(row, None) for row in down[:INCIDENTS_SHOWN]),
        monitors=tuple(public(row, days[row["id"]]) for row in rows),
        page=page,
        pages=pages,
        generated_at=now,
    )


def status_summary(slug: str) -> dict[str, Any] | None:
    """The JSON twin of tenant `slug`'s status page, every published monitor (by name)::

        {"tenant": "acme", "status": "operational" | "degraded" | "outage",
         "counts": {"up": 3, "down": 0, ...}, "generated_at": "2026-12-01T06:00:00Z",
         "monitors": [{"id": 7, "name": "API", "state": "up", "since": "...",
                       "uptime_24h": 99.95 | null, "uptime_30d": 99.991 | null}, ...]}

    Uptimes are percentages (see the module's docstring for their periods). None like
    `status_page`. Four queries whatever the number of monitors.
    """
    tenant = published_tenant(slug)
    if tenant is None:
        return None
    now = timezone.now()
    published = _published(tenant)
    rows = list(published.order_by("name", "id").values("id", "name", "state", "state_changed_at"))
    if not rows:
        return None
    hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    month = _day_start(now) - timedelta(days=29)
    per_monitor = Q(monitor__tenant=tenant, monitor__published=True)

    def sums(period: str, since: datetime) -> dict[int, float | None]:
        aggregated = (
            MonitorRollup.objects.filter(per_monitor, period=period, bucket__gte=since)
            .order_by()
            .values("monitor_id")
            .annotate(checks=Sum("checks"), failures=Sum("failures"))
        )
        return {row["monitor_id"]: uptime_percent(row["checks"], row["failures"]) for row in aggregated}

    day, month_figures = sums(RollupPeriod.HOUR, hour), sums(RollupPeriod.DAY, month)
    counts = dict.fromkeys(MonitorState.values, 0)
    for row in rows:
        counts[row["state"]] += 1
    return {
        "tenant": tenant.slug,
        "status": overall_status(counts),
        "counts": counts,
        "generated_at": now,
        "monitors": [
            {
                "id": row["id"],
                "name": row["name"],
                "state": row["state"],
                "since": row["state_changed_at"],
                "uptime_24h": day.get(row["id"]),
                "uptime_30d": month_figures.get(row["id"]),
            }
            for row in rows
        ],
    }


# shields.io's named colours for a monitor's state (https://shields.io/badges/endpoint-badge).
BADGE_COLOURS: dict[str, str] = {
    MonitorState.UP: "brightgreen",
    MonitorState.DOWN: "red",
    MonitorState.PAUSED: "lightgrey",
    MonitorState.UNKNOWN: "lightgrey",
    MonitorState.MAINTENANCE: "blue",
}


def monitor_badge(slug: str, monitor_id: int) -> dict[str, Any] | None:
    """A shields.io endpoint badge of tenant `slug`'s published monitor `monitor_id`:
    ``{"schemaVersion": 1, "label": <name>, "message": <state>, "color": <shields colour>}``;
    None for a monitor that is not published by that tenant. One query."""
    row = (
        Monitor.objects.filter(pk=monitor_id, published=True, tenant__slug=slug, tenant__active=True)
        .values("name", "state")
        .first()
    )
    if row is None:
        return None
    return {"schemaVersion": 1, "label": row["name"], "message": row["state"], "color": BADGE_COLOURS[row["state"]]}


# --- fleet-wide figures, for the metrics read at scrape time -------------------------------------


def fleet_state_counts() -> dict[str, int]:
    """``{state: count}`` of every enabled monitor of every tenant, every state present; one query."""
    return state_counts(Monitor.objects.enabled())


def certificate_days_remaining() -> list[tuple[int, str, float]]:
    """``[(monitor id, tenant slug, days)]``: days (fractional, negative once expired) until the
    TLS certificate of each enabled monitor that saw one expires; one query."""
    now = timezone.now()
    rows = (
        Monitor.objects.enabled()
        .filter(cert_expires_at__isnull=False)
        .order_by("id")
        .values_list("id", F("tenant__slug"), "cert_expires_at")
    )
    return [(pk, slug, (expires - now).total_seconds() / 86400.0) for pk, slug, expires in rows]
