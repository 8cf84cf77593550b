"""The rules REST API (SPEC 4): event ingest, rules, channels, matches and deliveries.

Every resource stands behind ``TenantScopedViewSet``: lists and lookups are walled by tenant
(another tenant's object answers 404), new objects go to the caller's tenant, roles and API-key
scopes are checked by its permissions.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model, QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, status
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api.scoping import TenantRefField, TenantScopedViewSet
from accounts.models import Role, Scope, Tenant
from core.openapi import error_responses
from rules import selectors, services
from rules.api.serializers import (
    ChannelSerializer,
    DeliverySerializer,
    DryRunResultSerializer,
    DryRunSerializer,
    DslSerializer,
    DslSummarySerializer,
    EventSerializer,
    IngestResultSerializer,
    MatchSerializer,
    RuleSerializer,
    compiled_summary,
)
from rules.models import DeliveryStatus, Event, NotificationChannel, Rule


def _query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    # isascii(): str.isdigit() accepts "²", which int() refuses; 18 digits stay within bigint.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise exceptions.ValidationError({name: ["Must be a positive integer."]})
    return int(raw)


def _query_text(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if raw is not None and "\x00" in raw:
        # PostgreSQL cannot compare text with NUL in it: a 400, not the database's error.
        raise exceptions.ValidationError({name: ["Null characters are not allowed."]})
    return raw


def _query_bool(request: Request, name: str) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise exceptions.ValidationError({name: ["Must be true or false."]})


# One event (any JSON object, `type` a string when present) or a list of 1..1,000 of them.
_EVENT_SCHEMA = {
    "type": "object",
    "properties": {"type": {"type": "string", "description": "What the rules match on `event.type`."}},
    "additionalProperties": True,
}
EVENT_BATCH_SCHEMA = {
    "oneOf": [
        _EVENT_SCHEMA,
        {"type": "array", "items": _EVENT_SCHEMA, "minItems": 1, "maxItems": services.MAX_EVENTS_PER_REQUEST},
    ],
}


class EventViewSet(TenantScopedViewSet):
    """`POST /api/v1/events` (and `POST /events`): store one event or up to 1,000 and queue their
    evaluation; `GET /api/v1/events[/<id>]` reads them back, newest first, `?type=` to filter.

    Any member of the tenant may send events, and API keys with `events:write`; staff name the
    tenant with `?tenant=<id|uuid|slug>` unless they belong to one.
    """

    serializer_class = EventSerializer
    http_method_names = ["get", "post", "head", "options"]
    # Reading events back is configuration-level access (api:read), sending them is not.
    api_key_scopes = {"POST": (Scope.EVENTS_WRITE.value,)}

    def get_base_queryset(self) -> QuerySet[Event]:
        return selectors.event_list(event_type=_query_text(self.request, "type"))

    @extend_schema(
        request={"application/json": EVENT_BATCH_SCHEMA},
        responses={202: IngestResultSerializer},
        parameters=[OpenApiParameter("tenant", str, description="Staff only: the tenant (id, uuid or slug).")],
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # One event or a list; event_ingest checks them all before its first write, so a bad
        # event stores none of the batch (EventInvalid names it by its index).
        events = request.data if isinstance(request.data, list) else [request.data]
        tenant = self.target_tenant(self._requested_tenant(request))
        ids = services.event_ingest(tenant=tenant, payloads=events)
        return Response({"ids": ids, "count": len(ids)}, status=status.HTTP_202_ACCEPTED)

    @staticmethod
    def _requested_tenant(request: Request) -> Tenant | None:
        reference = request.query_params.get("tenant")
        if not reference:
            return None
        try:
            return TenantRefField().to_internal_value(reference)
        except exceptions.ValidationError as exc:
            raise exceptions.ValidationError({"tenant": exc.detail}) from None

    @extend_schema(parameters=[OpenApiParameter("type", str, description="Only events of this type.")])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)


# Dry runs and validation change nothing: whoever may read rules may use them.
_READ_LIKE_ACTIONS = ("dry_run", "validate")


_CONFLICTS = {
    "create": (201, 409),
    "update": (200, 409),
    "partial_update": (200, 409),
}


def _with_conflicts(serializer: type[Any]) -> dict[str, Any]:
    """extend_schema_view() arguments: create and update also answer 409 (a name already taken)."""
    return {
        action: extend_schema(responses={ok: serializer, **error_responses(conflict)})
        for action, (ok, conflict) in _CONFLICTS.items()
    }


@extend_schema_view(**_with_conflicts(RuleSerializer))
class RuleViewSet(TenantScopedViewSet):
    """`/api/v1/rules`: tenant admins manage rules, members read them. A DSL that does not compile
    is a 400 whose details give its line, column and what was expected."""

    serializer_class = RuleSerializer

    @property
    def write_roles(self) -> tuple[str, ...]:
        if self.action in _READ_LIKE_ACTIONS:
            return (Role.ADMIN, Role.MEMBER)
        return (Role.ADMIN,)

    @property
    def api_key_scopes(self) -> dict[str, tuple[str, ...]]:
        if self.action in _READ_LIKE_ACTIONS:
            return {"POST": (Scope.API_READ.value, Scope.API_WRITE.value)}
        return {}  # the defaults: api:read to read, api:write to change

    def get_base_queryset(self) -> QuerySet[Rule]:
        return selectors.rule_list()

    def create_object(self, *, tenant: Tenant, data: dict[str, Any]) -> Model:
        return services.rule_create(tenant=tenant, **data)

    def update_object(self, *, instance: Model, data: dict[str, Any]) -> Model:
        assert isinstance(instance, Rule)
        return services.rule_update(rule=instance, **data)

    def delete_object(self, *, instance: Model) -> None:
        assert isinstance(instance, Rule)
        services.rule_delete(rule=instance)

    @extend_schema(request=DryRunSerializer, responses={200: DryRunResultSerializer})
    @action(detail=True, methods=["post"], url_path="dry-run")
    def dry_run(self, request: Request, pk: str | None = None) -> Response:
        """Evaluates the rule against a sample event with fresh windows; nothing is recorded."""
        rule = self.get_object()
        serializer = DryRunSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(services.rule_dry_run(rule=rule, payload=serializer.validated_data["event"]))

    @extend_schema(request=DslSerializer, responses={200: DslSummarySerializer})
    @action(detail=False, methods=["post"], url_path="validate")
    def validate(self, request: Request) -> Response:
        """Compiles a DSL text without saving it: what it listens to and does, or where it is wrong."""
        serializer = DslSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(compiled_summary(services.rule_validate(serializer.validated_data["dsl"])))


@extend_schema_view(**_with_conflicts(ChannelSerializer))
class ChannelViewSet(TenantScopedViewSet):
    """`/api/v1/channels`: tenant admins manage notification channels, members read them. The
    secret is write-only; responses say `has_secret` instead."""

    serializer_class = ChannelSerializer
    write_roles = (Role.ADMIN,)

    def get_base_queryset(self) -> QuerySet[NotificationChannel]:
        return selectors.channel_list()

    def create_object(self, *, tenant: Tenant, data: dict[str, Any]) -> Model:
        return services.channel_create(tenant=tenant, **data)

    def update_object(self, *, instance: Model, data: dict[str, Any]) -> Model:
        assert isinstance(instance, NotificationChannel)
        return services.channel_update(channel=instance, **data)

    def delete_object(self, *, instance: Model) -> None:
        assert isinstance(instance, NotificationChannel)
        services.channel_delete(channel=instance)


class ReadOnlyBaseViewSet(TenantScopedViewSet):
    http_method_names = ["get", "head", "options"]


class MatchViewSet(ReadOnlyBaseViewSet):
    """`GET /api/v1/matches[/<id>]`: what the rules matched, newest first; `?rule=` and
    `?suppressed=` filter."""

    serializer_class = MatchSerializer

    def get_base_queryset(self) -> QuerySet[Any]:
        request = self.request
        return selectors.match_list(rule_id=_query_int(request, "rule"), suppressed=_query_bool(request, "suppressed"))

    @extend_schema(
        parameters=[OpenApiParameter("rule", int), OpenApiParameter("suppressed", bool)],
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)


class DeliveryViewSet(ReadOnlyBaseViewSet):
    """`GET /api/v1/deliveries[/<id>]`: notifications and their state, newest first; `?status=`."""

    serializer_class = DeliverySerializer

    def get_base_queryset(self) -> QuerySet[Any]:
        wanted = self.request.query_params.get("status") or None
        if wanted is not None and wanted not in DeliveryStatus.values:
            raise exceptions.ValidationError({"status": [f"One of: {', '.join(DeliveryStatus.values)}."]})
        return selectors.delivery_list(status=wanted)

    @extend_schema(parameters=[OpenApiParameter("status", str, enum=DeliveryStatus.values)])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)
