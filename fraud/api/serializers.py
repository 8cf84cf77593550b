"""Shapes of the fraud API: the ledger's list and detail, and the documented request and answer of
`POST /transaction` (served by the hot path, `fraud.engine`, before Django sees it)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from fraud.models import MERCHANT_MAX, TRANSACTION_ID_MAX, USER_ID_MAX, Decision, Transaction
from fraud.selectors import amount_text


class ReasonSerializer(serializers.Serializer[Any]):
    code = serializers.CharField(help_text="The feature (e.g. `amount_vs_habit`) or the fail-open cause.")
    message = serializers.CharField(help_text="For a risk analyst.")
    contribution = serializers.FloatField(
        allow_null=True, help_text="Log-odds (SHAP), positive towards fraud; null for a fail-open reason."
    )


class TransactionAnswerSerializer(serializers.ModelSerializer[Transaction]):
    """SPEC 6's answer: what `POST /transaction` returns, first time and on replay."""

    reasons = ReasonSerializer(many=True, help_text="Strongest first.")
    score = serializers.FloatField(allow_null=True, help_text="Probability of fraud, 0..1; null until scored.")

    class Meta:
        model = Transaction
        fields = ["transaction_id", "decision", "score", "scored", "reasons", "model_version", "created_at"]
        read_only_fields = fields


class TransactionSerializer(TransactionAnswerSerializer):
    """A ledger row: the answer, what was asked, and the late score of a fail-open row."""

    amount = serializers.SerializerMethodField(help_text="Exact, with the currency's minor units (`12.50`).")
    tenant = serializers.IntegerField(source="tenant_id", read_only=True, help_text="The owning tenant's id.")

    class Meta(TransactionAnswerSerializer.Meta):
        fields = [
            *TransactionAnswerSerializer.Meta.fields,
            "tenant",
            "user_id",
            "amount",
            "currency",
            "merchant",
            "country",
            "rescored_at",
            "late_score",
            "late_reasons",
            "late_model_version",
            "late_decision",
        ]
        read_only_fields = fields

    def get_amount(self, obj: Transaction) -> str:
        return amount_text(obj.amount, obj.currency)


class TransactionRequestSerializer(serializers.Serializer[Any]):
    """Documentation of `POST /transaction`'s body; `fraud.engine.validation` is what checks it."""

    transaction_id = serializers.CharField(max_length=TRANSACTION_ID_MAX, help_text="The client's id; idempotent.")
    amount = serializers.DecimalField(
        max_digits=16, decimal_places=4, help_text="> 0, at most the currency's minor units (a JSON number or string)."
    )
    currency = serializers.CharField(min_length=3, max_length=3, help_text="ISO 4217 alphabetic code, e.g. EUR.")
    user_id = serializers.CharField(max_length=USER_ID_MAX)
    merchant = serializers.CharField(max_length=MERCHANT_MAX, required=False)
    country = serializers.CharField(min_length=2, max_length=2, required=False, help_text="ISO 3166-1 alpha-2.")


DECISION_VALUES = list(Decision.values)
