"""The fraud API (SPEC 6): the tenant's ledger, read-only, and the documentation of the scoring
endpoint the hot path serves.

`GET /api/v1/transactions[/{transaction_id}]` stand behind ``TenantScopedViewSet``'s wall (another
tenant's transaction answers 404; API keys need `api:read`). There is no PUT, PATCH or DELETE
(405): the ledger is append-only. `POST /api/v1/transactions` and `POST /transaction` are
answered by `fraud.engine` in the ASGI layer before Django sees them; the views below only
document them, and answer 503 `fraud_path_unavailable` if a request ever reaches Django (a
second write path would be a second set of rules to keep in step).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions
from rest_framework.generics import GenericAPIView
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api.scoping import TenantRefField, TenantScopedViewSet
from accounts.models import Scope, Tenant
from accounts.permissions import ApiKeyScopePermission, TenantRolePermission
from core.errors import ServiceUnavailable
from core.openapi import error_responses
from core.query_params import iso_moment
from fraud import selectors
from fraud.api.serializers import (
    DECISION_VALUES,
    TransactionAnswerSerializer,
    TransactionRequestSerializer,
    TransactionSerializer,
)
from fraud.models import TRANSACTION_ID_MAX, Transaction

LIST_PARAMETERS = frozenset(
    {
        "decision",
        "scored",
        "late_decision",
        "user_id",
        "currency",
        "since",
        "until",
        "tenant",
        "page",
        "page_size",
        "format",
    }
)
TEXT_FILTER_MAX = 64
_SCORED = {"true": True, "false": False}

_LIST_DOCS = [
    OpenApiParameter("decision", OpenApiTypes.STR, enum=DECISION_VALUES, description="Only this decision."),
    OpenApiParameter(
        "scored", OpenApiTypes.BOOL, description="false: the fail-open approvals (answered without a score)."
    ),
    OpenApiParameter(
        "late_decision",
        OpenApiTypes.STR,
        enum=DECISION_VALUES,
        description="Fail-open approvals whose late score gave this decision (review, decline: to look at).",
    ),
    OpenApiParameter("user_id", OpenApiTypes.STR, description="Only this user's transactions."),
    OpenApiParameter("currency", OpenApiTypes.STR, description="Only this ISO 4217 currency."),
    OpenApiParameter("since", OpenApiTypes.DATETIME, description="Created at or after (ISO 8601; no offset: UTC)."),
    OpenApiParameter("until", OpenApiTypes.DATETIME, description="Created before (ISO 8601; no offset: UTC)."),
    OpenApiParameter("tenant", OpenApiTypes.STR, description="Staff: only this tenant (id, uuid or slug)."),
]


def _invalid(name: str, message: str) -> exceptions.ValidationError:
    return exceptions.ValidationError({name: [message]})


def _text(request: Request, name: str) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and (len(value) > TEXT_FILTER_MAX or "\x00" in value):
        raise _invalid(name, f"At most {TEXT_FILTER_MAX} characters, no NUL.")
    return value


def _tenant(request: Request) -> Tenant | None:
    reference = request.query_params.get("tenant") or None
    if reference is None:
        return None
    try:
        return TenantRefField().to_internal_value(reference)
    except exceptions.ValidationError as exc:
        raise exceptions.ValidationError({"tenant": exc.detail}) from None


def list_filters(request: Request) -> dict[str, Any]:
    """The list's query string as `selectors.transaction_list` arguments; a 400 names each bad
    value, and each parameter it does not know (a typo must not silently return every row)."""
    unknown = sorted(set(request.query_params) - LIST_PARAMETERS)
    if unknown:
        known = ", ".join(sorted(LIST_PARAMETERS - {"format"}))
        raise exceptions.ValidationError(
            {name[:40]: [f"Unknown parameter; the filters are {known}."] for name in unknown[:5]}
        )
    decision = _text(request, "decision")
    if decision is not None and decision not in DECISION_VALUES:
        raise _invalid("decision", f"One of {', '.join(DECISION_VALUES)}.")
    late_decision = _text(request, "late_decision")
    if late_decision is not None and late_decision not in DECISION_VALUES:
        raise _invalid("late_decision", f"One of {', '.join(DECISION_VALUES)}.")
    raw_scored = request.query_params.get("scored") or None
    if raw_scored is not None and raw_scored not in _SCORED:
        raise _invalid("scored", "true or false.")
    since = iso_moment(request.query_params.get("since"), name="since")
    until = iso_moment(request.query_params.get("until"), name="until")
    if since is not None and until is not None and since >= until:
        raise _invalid("until", "Must be later than since.")
    currency = _text(request, "currency")
    return {
        "tenant": _tenant(request),
        "decision": decision,
        "late_decision": late_decision,
        "scored": None if raw_scored is None else _SCORED[raw_scored],
        "user_id": _text(request, "user_id"),
        "currency": currency.upper() if currency else None,
        "since": since,
        "until": until,
    }


def _fast_path_only() -> ServiceUnavailable:
    return ServiceUnavailable(
        "Transactions are scored by the fraud hot path, which did not take this request; try again.",
        retry_after=1,
        code="fraud_path_unavailable",
    )


_POST_DOC = extend_schema(
    request=TransactionRequestSerializer,
    responses={
        201: TransactionAnswerSerializer,
        **error_responses(400, 401, 403, 409, 413, 503),
    },
    description=(
        "Scores a transaction and answers approve, review or decline by the tenant's thresholds. "
        "Idempotent on `transaction_id`: a replay answers the first decision, with the same 201 and "
        "`Idempotent-Replayed: true`; a replay with other fields is a 409 `idempotency_conflict`. "
        "When the brain is down, late or its breaker open, "
        "the answer is an approval with `scored: false` and the reason (fail-open); the "
        "transaction is recorded all the same and scored later. API keys need `transactions:write`."
    ),
)


class TransactionViewSet(TenantScopedViewSet):
    """`/api/v1/transactions`: the tenant's ledger, newest first; the detail by the client's
    `transaction_id`. Staff see every tenant's; when two tenants used one transaction id they
    name the tenant with `?tenant=`."""

    serializer_class = TransactionSerializer
    http_method_names = ["get", "post", "head", "options"]
    lookup_field = "transaction_id"
    lookup_value_regex = rf"[^/]{{1,{TRANSACTION_ID_MAX}}}"
    api_key_scopes = {"POST": (Scope.TRANSACTIONS_WRITE.value,)}

    def get_base_queryset(self) -> QuerySet[Transaction]:
        if self.action == "list":
            return selectors.transaction_list(**list_filters(self.request))
        return selectors.transaction_list(tenant=_tenant(self.request))

    def get_object(self) -> Transaction:
        transaction_id = self.kwargs["transaction_id"]
        # PostgreSQL cannot compare text holding NUL: no stored id has one (validation refuses it).
        matches = (
            [] if "\x00" in transaction_id else list(self.get_queryset().filter(transaction_id=transaction_id)[:2])
        )
        if not matches:
            raise exceptions.NotFound("No such transaction.")
        if len(matches) > 1:  # staff only: a tenant's own ids are unique
            raise _invalid("tenant", "Several tenants used this transaction id; name the tenant (id, uuid or slug).")
        row: Transaction = matches[0]
        self.check_object_permissions(self.request, row)
        return row

    @extend_schema(parameters=_LIST_DOCS)
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @extend_schema(parameters=[_LIST_DOCS[-1]])
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    @_POST_DOC
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise _fast_path_only()


class TransactionScoreView(GenericAPIView[Transaction]):
    """`POST /transaction`: SPEC 6's short path, the same as `POST /api/v1/transactions`."""

    permission_classes = [IsAuthenticated, TenantRolePermission, ApiKeyScopePermission]
    api_key_scopes = {"POST": (Scope.TRANSACTIONS_WRITE.value,)}
    serializer_class = TransactionAnswerSerializer

    @_POST_DOC
    def post(self, request: Request) -> Response:
        raise _fast_path_only()
