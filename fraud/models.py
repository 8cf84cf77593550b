"""The fraud ledger (SPEC 6): one append-only `Transaction` row per transaction a tenant submitted.

The guarantees live in the rows:

* **Idempotency.** `(tenant, transaction_id)` is unique: two identical requests, even concurrent
  ones, leave one row, and both get its answer. `request_hash` is the SHA-256 of the request's
  canonical fields (`fraud.engine.transaction.request_hash`); a replay whose hash differs is
  refused with 409, never stored.
* **Append-only.** Nothing updates or deletes a row, in the API, the admin or the services, with
  one exception: the re-score of a fail-open row (`scored` false) fills its `late_*` fields and
  `rescored_at` once, with `UPDATE … WHERE scored = false AND rescored_at IS NULL`, so two
  workers never re-score it twice. What the client was answered (`decision`, `scored`, `score`,
  `reasons`, `model_version`) never changes: a replay gets the first answer, and `scored` false
  keeps saying which answers were fail-open.
* **Replayable.** `history` keeps the user's history as the transaction saw it (the `History`
  message of `fraud/protos/fraud.proto`), so a re-score scores what the first call would have.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Tenant

# Bounds of SPEC 6's "bounded ids and strings".
TRANSACTION_ID_MAX = 64
USER_ID_MAX = 64
MERCHANT_MAX = 64
# Amounts up to 10^12 major units with up to 4 decimals (ISO 4217's largest minor unit, CLF/UYW).
AMOUNT_MAX_DIGITS = 16
AMOUNT_DECIMAL_PLACES = 4


class Decision(models.TextChoices):
    APPROVE = "approve", "Approve"
    REVIEW = "review", "Review"
    DECLINE = "decline", "Decline"


class TransactionQuerySet(models.QuerySet["Transaction"]):
    def unscored(self) -> TransactionQuerySet:
        """Fail-open rows still waiting for their late score (the re-score task's queue)."""
        return self.filter(scored=False, rescored_at__isnull=True)


class Transaction(models.Model):
    """One scored (or fail-open) transaction. Created only by `fraud.services.transaction_record`."""

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="transactions")
    transaction_id = models.CharField("transaction id", max_length=TRANSACTION_ID_MAX)
    user_id = models.CharField("user id", max_length=USER_ID_MAX)
    amount = models.DecimalField(max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES)
    currency = models.CharField(max_length=3, help_text="ISO 4217 alphabetic code.")
    merchant = models.CharField(max_length=MERCHANT_MAX, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2.")
    request_hash = models.CharField(max_length=64, help_text="SHA-256 of the request's canonical fields.")

    decision = models.CharField(max_length=8, choices=Decision.choices, help_text="What the client was answered.")
    scored = models.BooleanField(
        help_text="False when the answer was a fail-open approval (brain down, late, breaker open)."
    )
    score = models.FloatField(null=True, blank=True, help_text="Probability of fraud, 0..1; null until scored.")
    # [{"code": str, "message": str, "contribution": float | None}], strongest first; a fail-open
    # row's one reason says why it was not scored (its late score's reasons are `late_reasons`).
    reasons = models.JSONField(default=list, blank=True)
    model_version = models.CharField(max_length=64, blank=True)
    history = models.JSONField(default=dict, blank=True, help_text="The user's history as this transaction saw it.")

    created_at = models.DateTimeField(default=timezone.now, db_index=False)
    # A fail-open row's late score (the re-score task), beside the answer it was given.
    rescored_at = models.DateTimeField(null=True, blank=True, help_text="When a fail-open row got its late score.")
    late_score = models.FloatField(null=True, blank=True, help_text="The brain's score, once it answered again.")
    late_reasons = models.JSONField(default=list, blank=True)
    late_model_version = models.CharField(max_length=64, blank=True)
    late_decision = models.CharField(
        max_length=8, choices=Decision.choices, blank=True, help_text="What the thresholds say of the late score."
    )

    objects = TransactionQuerySet.as_manager()

    class Meta:
        verbose_name = "transaction"
        verbose_name_plural = "transactions"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "transaction_id"], name="fraud_transaction_once_per_tenant"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="fraud_transaction_amount_positive"),
            models.CheckConstraint(
                condition=Q(scored=False) | Q(score__isnull=False), name="fraud_transaction_scored_has_score"
            ),
        ]
        indexes = [
            # The API's list, newest first, per tenant; and a user's recent transactions.
            models.Index(fields=["tenant", "-created_at", "-id"], name="fraud_tx_tenant_recent"),
            models.Index(fields=["tenant", "user_id", "-created_at"], name="fraud_tx_tenant_user"),
            # The re-score task's queue: small, since fail-open rows are rare and leave it once scored.
            models.Index(
                fields=["created_at"], condition=Q(scored=False, rescored_at__isnull=True), name="fraud_tx_unscored"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.transaction_id} ({self.decision})"


class TransactionOutbox(models.Model):
    """A stored transaction whose rules event (`type: transaction`) is not made yet: the ledger's
    transactional outbox. The row is written in the ledger's own database transaction, so a
    committed transaction always has its event coming; `fraud.services.transactions_emit` (a worker
    task every EMIT_SECONDS) makes the events and deletes these rows in one database transaction,
    so each event is made once. The web process thereby answers without building events or
    queueing their evaluation (bench/fraud: a third of its ledger work), and the ledger stays
    append-only: the outbox, not the transaction, is what changes."""

    transaction = models.OneToOneField(Transaction, on_delete=models.CASCADE, primary_key=True, related_name="+")

    class Meta:
        verbose_name = "transaction event waiting"
        verbose_name_plural = "transaction events waiting"

    def __str__(self) -> str:
        return f"event of transaction {self.pk} waiting"
