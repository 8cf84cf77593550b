"""The fraud ledger in the admin: read-only for everyone (SPEC 6: append-only), with the filters a
risk analyst reaches for (decision, scored, tenant, day) and the reasons readable in the detail."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from accounts.admin_base import short_time
from fraud.models import Decision, Transaction
from fraud.selectors import amount_text

# What an analyst scans for first: declines red, reviews amber.
DECISION_COLOURS = {Decision.APPROVE: "#1a7f37", Decision.REVIEW: "#9a6700", Decision.DECLINE: "#cf222e"}


def _decision_badge(decision: str) -> SafeString | str:
    if not decision:
        return "—"
    colour = DECISION_COLOURS.get(Decision(decision), "#6e7781")
    return format_html('<strong style="color: {}; white-space: nowrap">{}</strong>', colour, decision)


@admin.register(Transaction)
class TransactionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]  # not subscriptable at run time
    """Read-only: nobody adds, changes or deletes a ledger row here, superusers included; the
    only write after a row's creation is the re-score's (`fraud.services.transaction_rescore`)."""

    list_display = [
        "transaction_id",
        "tenant_slug",
        "user_id",
        "amount_currency",
        "decision_coloured",
        "score_text",
        "scored",
        "created",
        "late_decision_coloured",
    ]
    list_filter = ["decision", "scored", "tenant", "late_decision"]
    date_hierarchy = "created_at"
    # Exact ids only: a LIKE over the ledger would scan it.
    search_fields = ["=transaction_id", "=user_id"]
    list_select_related = ["tenant"]
    show_full_result_count = False  # the ledger grows without bound: no COUNT(*) per page
    list_per_page = 50
    fields = [
        ("transaction_id", "tenant"),
        ("user_id", "amount_currency", "merchant", "country"),
        ("decision_coloured", "score_text", "scored", "model_version"),
        "reasons_table",
        "created_at",
        ("rescored_at", "late_decision_coloured", "late_score_text", "late_model_version"),
        "late_reasons_table",
        "history_table",
        "request_hash",
    ]
    readonly_fields = [
        "transaction_id",
        "tenant",
        "user_id",
        "amount_currency",
        "merchant",
        "country",
        "decision_coloured",
        "score_text",
        "scored",
        "model_version",
        "reasons_table",
        "created_at",
        "rescored_at",
        "late_decision_coloured",
        "late_score_text",
        "late_model_version",
        "late_reasons_table",
        "history_table",
        "request_hash",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="tenant", ordering="tenant__slug")
    def tenant_slug(self, obj: Transaction) -> str:
        return obj.tenant.slug

    @admin.display(description="amount", ordering="amount")
    def amount_currency(self, obj: Transaction) -> SafeString:
        return format_html(
            '<span style="white-space: nowrap">{} {}</span>', amount_text(obj.amount, obj.currency), obj.currency
        )

    @admin.display(description="decision", ordering="decision")
    def decision_coloured(self, obj: Transaction) -> SafeString | str:
        return _decision_badge(obj.decision)

    @admin.display(description="late decision", ordering="late_decision")
    def late_decision_coloured(self, obj: Transaction) -> SafeString | str:
        return _decision_badge(obj.late_decision)

    @admin.display(description="score", ordering="score")
    def score_text(self, obj: Transaction) -> str:
        return _score_text(obj.score)

    @admin.display(description="late score", ordering="late_score")
    def late_score_text(self, obj: Transaction) -> str:
        return _score_text(obj.late_score)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Transaction) -> SafeString | str:
        return short_time(obj.created_at)

    @admin.display(description="reasons")
    def reasons_table(self, obj: Transaction) -> SafeString | str:
        """The reasons strongest first: code, the analyst's sentence, the log-odds contribution."""
        return _reasons_table(obj.reasons)

    @admin.display(description="late reasons")
    def late_reasons_table(self, obj: Transaction) -> SafeString | str:
        """A fail-open row's late score's reasons, as `reasons_table`."""
        return _reasons_table(obj.late_reasons)

    @admin.display(description="user's history as this transaction saw it")
    def history_table(self, obj: Transaction) -> SafeString | str:
        if not obj.history:
            return "—"
        rows = format_html_join("", "<tr><td>{}</td><td>{}</td></tr>", sorted(obj.history.items()))
        return format_html("<table><tbody>{}</tbody></table>", rows)


def _score_text(score: float | None) -> str:
    """Four decimals: a tenant's threshold may be as fine as 0.0002."""
    return "—" if score is None else f"{score:.4f}"


def _reasons_table(reasons: list[dict[str, Any]]) -> SafeString | str:
    if not reasons:
        return "—"
    rows = format_html_join(
        "",
        "<tr><td><code>{}</code></td><td>{}</td><td style='text-align: right'>{}</td></tr>",
        (
            (
                reason.get("code", ""),
                reason.get("message", ""),
                "—" if reason.get("contribution") is None else f"{reason['contribution']:+.3f}",
            )
            for reason in reasons
        ),
    )
    return format_html(
        "<table><thead><tr><th>code</th><th>why</th><th>contribution (log-odds)</th></tr></thead>"
        "<tbody>{}</tbody></table>",
        rows,
    )
