"""The fraud tile of `/dashboard/` (`core.tiles.Tile`, listed in `SENTINEL_DASHBOARD_TILES`).

Three indexed queries per call, scoped to the viewer's tenant when the scope has one: the last
hour's decisions (`fraud_tx_tenant_recent`), the unscored backlog (the partial index
`fraud_tx_unscored`), the latest reviews and declines of that hour.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from core.tiles import DashboardScope, TileData, TileRow, TileStatus
from fraud.models import Decision, Transaction
from fraud.selectors import amount_text

ROWS = 8  # like the other tiles: the list stays readable at a glance
WINDOW = timedelta(hours=1)


class FraudTile:
    """Decisions of the last hour (approve, review, decline, and of the approvals those given
    unscored by the fail-open), the backlog of unscored rows the re-score has yet to reach, and
    the hour's latest reviews and declines."""

    key = "fraud"
    title = "Fraud"

    def __call__(self, scope: DashboardScope) -> TileData:
        rows: QuerySet[Transaction] = Transaction.objects.all()
        if scope.tenant_uuid is not None:
            rows = rows.filter(tenant__uuid=scope.tenant_uuid)
        recent = rows.filter(created_at__gte=timezone.now() - WINDOW)
        counts = recent.aggregate(
            approve=Count("id", filter=Q(decision=Decision.APPROVE)),
            review=Count("id", filter=Q(decision=Decision.REVIEW)),
            decline=Count("id", filter=Q(decision=Decision.DECLINE)),
            # A fail-open row stays one after its late score (`scored` is what the client got).
            fail_open=Count("id", filter=Q(scored=False)),
        )
        backlog = rows.unscored().count()
        alarming = (Decision.REVIEW, Decision.DECLINE)
        flagged = (
            recent.filter(Q(decision__in=alarming) | Q(late_decision__in=alarming))
            .select_related("tenant")
            .order_by("-created_at", "-id")[:ROWS]
        )
        lines: list[TileRow] = []
        for tx in flagged:
            label = tx.transaction_id if scope.tenant_uuid else f"{tx.tenant.slug} · {tx.transaction_id}"
            # An approval given unscored whose late score alarms: what an analyst must look at first.
            late = tx.decision == Decision.APPROVE and tx.late_decision in alarming
            decision, score = (tx.late_decision, tx.late_score) if late else (tx.decision, tx.score)
            shown = "—" if score is None else f"{score:.2f}"
            lines.append(
                {
                    "label": label,
                    "value": f"{'late ' if late else ''}{decision} {shown} · "
                    f"{amount_text(tx.amount, tx.currency)} {tx.currency}",
                    "status": "critical" if decision == Decision.DECLINE else "warning",
                }
            )
        total = counts["approve"] + counts["review"] + counts["decline"]
        status: TileStatus = "idle" if not total and not backlog else "ok"
        if backlog or counts["fail_open"]:
            status = "warning"
        return {
            "status": status,
            "figures": [
                {"label": "approved (1 h)", "value": counts["approve"]},
                {"label": "review (1 h)", "value": counts["review"]},
                {"label": "declined (1 h)", "value": counts["decline"]},
                {"label": "fail-open (1 h)", "value": counts["fail_open"]},
                {"label": "unscored", "value": backlog},
            ],
            "rows": lines,
            "empty": "No review or decline in the last hour." if total else "No transaction in the last hour.",
        }


fraud = FraudTile()
