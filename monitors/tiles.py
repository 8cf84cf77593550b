"""The monitors tile of `/dashboard/` (`core.tiles.Tile`, listed in `SENTINEL_DASHBOARD_TILES`).

Two indexed queries per call (the counts by state, then the down monitors), whatever the number
of monitors, scoped to the viewer's tenant when the scope has one: tenants are walls.
"""

from __future__ import annotations

from django.utils import timezone
from django.utils.timesince import timesince

from core.tiles import DashboardScope, TileData, TileRow, TileStatus
from monitors.models import Monitor, MonitorState
from monitors.status import state_counts

ROWS = 8  # like the other tiles: the list stays readable at a glance
REASON_CHARS = 80  # a reason is cut here: the tile's row is one line


class MonitorsTile:
    """Monitors up, down, paused and in maintenance; the down ones listed, longest down first,
    each with how long it has been down and its last reason (members only see the dashboard, so
    the raw reason is shown, unlike the public status page)."""

    key = "monitors"
    title = "Monitors"

    def __call__(self, scope: DashboardScope) -> TileData:
        monitors = Monitor.objects.all()
        if scope.tenant_uuid is not None:
            monitors = monitors.filter(tenant__uuid=scope.tenant_uuid)
        counts = state_counts(monitors)
        down = monitors.filter(state=MonitorState.DOWN).order_by("state_changed_at", "id")
        now = timezone.now()
        rows: list[TileRow] = []
        for monitor in down.select_related("tenant").only("name", "state_changed_at", "last_reason", "tenant__slug")[
            :ROWS
        ]:
            reason = monitor.last_reason or "no reason recorded"
            if len(reason) > REASON_CHARS:
                reason = reason[: REASON_CHARS - 1] + "…"
            since = timesince(monitor.state_changed_at, now).split(",")[0]
            rows.append(
                {
                    "label": monitor.name if scope.tenant_uuid else f"{monitor.tenant.slug} · {monitor.name}",
                    "value": f"down {since} · {reason}",
                    "status": "critical",
                }
            )
        total = sum(counts.values())
        status: TileStatus = "critical" if counts[MonitorState.DOWN] else ("ok" if total else "idle")
        return {
            "status": status,
            "figures": [
                {"label": "up", "value": counts[MonitorState.UP]},
                {"label": "down", "value": counts[MonitorState.DOWN]},
                {"label": "paused", "value": counts[MonitorState.PAUSED]},
                {"label": "maintenance", "value": counts[MonitorState.MAINTENANCE]},
            ],
            "rows": rows,
            "empty": "Nothing is down." if total else "No monitor yet: POST /api/v1/monitors creates one.",
        }


monitors = MonitorsTile()
