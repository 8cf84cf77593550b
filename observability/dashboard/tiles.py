"""The dashboard's built-in tiles (`core.tiles.Tile`), registered in `SENTINEL_DASHBOARD_TILES` like
any app's: circuit breakers, open incidents and the latest insight, rule matches, deliveries.

Each reads through the selectors, scoped to the viewer's tenant when the scope has one, with a
few indexed queries (they run once a second in the producing process, never per viewer).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from django.utils.timesince import timesince

from core.tiles import DashboardScope, TileData, TileRow, TileStatus
from gateway.breaker_state import breaker_states, circuit_sources
from gateway.engine.breaker import BreakerUnavailable
from gateway.selectors import upstream_list
from observability.insight.phrasing import DEGRADED, OK, overview
from observability.models import IncidentStatus, Severity
from observability.selectors import incidents_unresolved_in
from rules.models import DeliveryStatus
from rules.selectors import delivery_list, match_list

ROWS = 8
RECENT = timedelta(hours=1)


def _ago(moment: Any) -> str:
    """`5 minutes ago`, or `just now` within the first minute."""
    since = timesince(moment, timezone.now()).split(",")[0]
    return "just now" if since.startswith("0\xa0") else f"{since} ago"


class BreakersTile:
    """Every upstream's circuit breaker (a tenant sees the upstreams of its own routes), then the
    breakers of SENTINEL_CIRCUIT_SOURCES (the fraud brain's, shared by every tenant), by name."""

    key = "breakers"
    title = "Circuit breakers"
    _STATUS: dict[str, TileStatus] = {"closed": "ok", "half_open": "warning", "open": "critical"}
    _ORDER = {"open": 0, "half_open": 1, "closed": 2}  # the ones that need an operator first

    def __call__(self, scope: DashboardScope) -> TileData:
        upstreams = upstream_list()
        if scope.tenant_uuid is not None:
            upstreams = upstreams.filter(routes__tenant__uuid=scope.tenant_uuid).distinct()
        urls = sorted(upstreams.values_list("url", flat=True))[:50]
        try:
            states = breaker_states(urls)
            for source in circuit_sources():
                states.update((entry["name"], entry) for entry in source.entries(is_staff=scope.fleet))
        except BreakerUnavailable:
            return {"status": "warning", "figures": [], "rows": [], "empty": "Breaker state unavailable (Redis)."}
        rows: list[TileRow] = [
            {"label": name, "value": state["state"].replace("_", "-"), "status": self._STATUS[state["state"]]}
            for name, state in sorted(states.items(), key=lambda item: (self._ORDER[item[1]["state"]], item[0]))
        ]
        not_closed = sum(1 for row in rows if row["status"] != "ok")
        return {
            "status": _worst(row["status"] for row in rows),
            "figures": [
                {"label": "breaker" if len(rows) == 1 else "breakers", "value": len(rows)},
                {"label": "not closed", "value": not_closed},
            ],
            "rows": rows[:ROWS],
            "empty": "No upstream yet: routes name them.",
        }


class InsightTile:
    """What `GET /ai/insight` tells this scope, then its open incidents.

    Rows: first the overall status and plain sentences of `/ai/insight` for the same viewer
    (staff for the fleet, a member for a tenant: `observability.insight.phrasing.overview` of
    the same incidents; never the LLM's phrasing, which the tile, called every second, must not
    ask for), then the open incidents, most severe and newest first, each with its age. The
    tile's status is the overall status (`degraded` shows as `warning`)."""

    key = "insight"
    title = "Insight"
    _STATUS: dict[str, TileStatus] = {
        Severity.INFO: "ok",
        Severity.WARNING: "warning",
        Severity.CRITICAL: "critical",
        OK: "ok",
        DEGRADED: "warning",
    }

    def __call__(self, scope: DashboardScope) -> TileData:
        seen = overview(incidents_unresolved_in(tenant_uuid=scope.tenant_uuid))
        status = self._STATUS[seen.status]
        # The sentences that are not an incident's own summary (the status, "And N more."): the
        # summaries follow as the incidents' rows, each once.
        summaries = {incident.summary for incident in seen.findings}
        lead: list[TileRow] = [
            {"label": sentence, "value": "", "status": status}
            for sentence in seen.sentences
            if sentence not in summaries
        ]
        rows: list[TileRow] = [
            {
                "label": incident.summary,
                "value": ("acknowledged · " if incident.status == IncidentStatus.ACKNOWLEDGED else "")
                + _ago(incident.last_seen),
                "status": self._STATUS[incident.severity],
            }
            for incident in seen.findings[:ROWS]
        ]
        acknowledged = sum(1 for incident in seen.findings if incident.status == IncidentStatus.ACKNOWLEDGED)
        return {
            "status": status,
            "figures": [
                {"label": "open", "value": seen.open_incidents - acknowledged},
                {"label": "acknowledged", "value": acknowledged},
            ],
            "rows": lead + rows,
            "empty": "All clear: no open incident.",
        }


def insight_tile(scope: DashboardScope) -> TileData:
    """The insight tile's data for `scope` (see `InsightTile`)."""
    return InsightTile()(scope)


class RuleMatchesTile:
    """The newest rule matches (a cooldown-suppressed one says so)."""

    key = "rule_matches"
    title = "Rule matches"

    def __call__(self, scope: DashboardScope) -> TileData:
        matches = match_list()
        if scope.tenant_uuid is not None:
            matches = matches.filter(tenant__uuid=scope.tenant_uuid)
        recent = matches.filter(matched_at__gte=timezone.now() - RECENT).count()
        rows: list[TileRow] = [
            {
                "label": f"{match.rule.name}" + (" (suppressed)" if match.suppressed else ""),
                "value": _ago(match.matched_at),
                "status": "idle" if match.suppressed else "ok",
            }
            for match in matches[:ROWS]
        ]
        return {
            "status": "ok" if rows else "idle",
            "figures": [{"label": "last hour", "value": recent}],
            "rows": rows,
            "empty": "No rule has matched yet.",
        }


class DeliveriesTile:
    """The newest notification deliveries and the last hour's failures."""

    key = "deliveries"
    title = "Deliveries"
    _STATUS: dict[str, TileStatus] = {
        DeliveryStatus.SENT: "ok",
        DeliveryStatus.PENDING: "idle",
        DeliveryStatus.SENDING: "idle",
        DeliveryStatus.FAILED: "warning",
        DeliveryStatus.DEAD: "critical",
    }

    def __call__(self, scope: DashboardScope) -> TileData:
        deliveries = delivery_list()
        if scope.tenant_uuid is not None:
            deliveries = deliveries.filter(tenant__uuid=scope.tenant_uuid)
        hour = deliveries.filter(created_at__gte=timezone.now() - RECENT)
        failing = hour.filter(status__in=[DeliveryStatus.FAILED, DeliveryStatus.DEAD]).count()
        rows: list[TileRow] = [
            {
                "label": f"{d.channel.kind}:{d.channel.name}",
                "value": f"{d.get_status_display()} · {_ago(d.created_at)}",
                "status": self._STATUS.get(d.status, "idle"),
            }
            for d in deliveries[:ROWS]
        ]
        return {
            "status": "critical" if failing else ("ok" if rows else "idle"),
            "figures": [{"label": "last hour", "value": hour.count()}, {"label": "failing", "value": failing}],
            "rows": rows,
            "empty": "Nothing delivered yet.",
        }


_RANK: dict[TileStatus, int] = {"idle": 0, "ok": 1, "warning": 2, "critical": 3}


def _worst(statuses: Any) -> TileStatus:
    """The most serious of `statuses`; "ok" when there is none (nothing wrong to show)."""
    return max(statuses, key=lambda status: _RANK[status], default="ok")


breakers = BreakersTile()
insight = InsightTile()
rule_matches = RuleMatchesTile()
deliveries = DeliveriesTile()
