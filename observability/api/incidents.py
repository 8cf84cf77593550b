"""`/api/v1/incidents` (SPEC 3): the insight engine's incidents, walled by tenant (staff see
all, fleet-wide ones included), with the verbs `acknowledge` and `resolve`; and `GET /ai/insight`,
the overall status in plain sentences with the findings behind them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.cache import cache
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import ApiKeyScopePermission, TenantRolePermission
from accounts.selectors import caller_from_request
from core.openapi import error_responses
from observability import selectors, services
from observability.insight.config import insight_config
from observability.insight.phrasing import overview, phrase
from observability.models import Incident, IncidentKind, IncidentStatus, Severity


class IncidentSerializer(serializers.ModelSerializer):
    tenant_uuid = serializers.UUIDField(read_only=True, allow_null=True, help_text="Null: fleet-wide (staff only).")

    class Meta:
        model = Incident
        fields = [
            "id", "kind", "subject", "tenant_uuid", "severity", "status", "summary", "evidence",
            "first_seen", "last_seen", "resolved_at", "acknowledged_at", "acknowledged_by",
        ]  # fmt: skip
        read_only_fields = fields


def _choice(request: Request, name: str, choices: list[str]) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and value not in choices:
        raise exceptions.ValidationError({name: [f"One of: {', '.join(choices)}."]})
    return value


def _moment(request: Request, name: str) -> dt.datetime | None:
    """An ISO 8601 time (UTC when it names no offset), in UTC; a 400 for anything else."""
    raw = request.query_params.get(name) or None
    if raw is None:
        return None
    try:
        moment = parse_datetime(raw) if len(raw) <= 64 else None
        if moment is not None:
            # In UTC: PostgreSQL refuses offsets past 15:59 ("-19:06" parses), and a time near
            # year 1 or 9999 that leaves the calendar in UTC is no time to filter by.
            moment = moment.astimezone(dt.UTC) if timezone.is_aware(moment) else moment.replace(tzinfo=dt.UTC)
    except (ValueError, OverflowError):  # well-formed but impossible, such as month 13
        moment = None
    if moment is None:
        raise exceptions.ValidationError({name: ["An ISO 8601 date and time, e.g. 2026-11-30T14:02:00Z."]})
    return moment


class IncidentViewSet(viewsets.ReadOnlyModelViewSet):
    """`GET /api/v1/incidents[/<id>]`, most recently seen first; `?kind= &severity= &status=
    &since= &until=` filter (an incident matches a time range it was going on during).
    `POST .../<id>/acknowledge` and `.../<id>/resolve` act on one (admins and members; keys
    with `api:write`)."""

    serializer_class = IncidentSerializer
    permission_classes = [IsAuthenticated, TenantRolePermission, ApiKeyScopePermission]

    def get_queryset(self) -> QuerySet[Incident]:
        request = self.request
        filters = selectors.IncidentFilters(
            kind=_choice(request, "kind", IncidentKind.values),
            severity=_choice(request, "severity", Severity.values),
            status=_choice(request, "status", IncidentStatus.values),
            since=_moment(request, "since"),
            until=_moment(request, "until"),
        )
        queryset = selectors.incident_list(filters=filters if self.action == "list" else None)
        return selectors.incidents_visible(queryset, caller=caller_from_request(request))

    @extend_schema(
        parameters=[
            OpenApiParameter("kind", str, enum=IncidentKind.values),
            OpenApiParameter("severity", str, enum=Severity.values),
            OpenApiParameter("status", str, enum=IncidentStatus.values),
            OpenApiParameter("since", dt.datetime, description="Still seen at or after this time."),
            OpenApiParameter("until", dt.datetime, description="First seen before this time."),
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    def _actor(self) -> str:
        caller = caller_from_request(self.request)
        if caller.api_key is not None:
            return f"api key {caller.api_key.prefix}"
        return caller.user.get_username() if caller.user is not None else ""

    @extend_schema(request=None, responses={200: IncidentSerializer, **error_responses(409)})
    @action(detail=True, methods=["post"])
    def acknowledge(self, request: Request, pk: str | None = None) -> Response:
        incident = services.incident_acknowledge(incident=self.get_object(), by=self._actor())
        return Response(IncidentSerializer(incident).data)

    @extend_schema(request=None, responses={200: IncidentSerializer, **error_responses(409)})
    @action(detail=True, methods=["post"])
    def resolve(self, request: Request, pk: str | None = None) -> Response:
        incident = services.incident_resolve(incident=self.get_object(), by=self._actor())
        return Response(IncidentSerializer(incident).data)


InsightSerializer = inline_serializer(
    "Insight",
    fields={
        "status": serializers.ChoiceField(choices=["ok", "degraded", "critical"]),
        "summary": serializers.CharField(help_text="A few plain sentences with the figures."),
        "sentences": serializers.ListField(child=serializers.CharField(), help_text="Sentinel's own sentences."),
        "phrasing": serializers.ChoiceField(choices=["plain", "llm"], help_text="Who wrote `summary`."),
        "llm_error": serializers.CharField(allow_null=True, help_text="Why a configured LLM's text is not used."),
        "findings": IncidentSerializer(many=True),
        "open_incidents": serializers.IntegerField(),
        "analysed_at": serializers.DateTimeField(allow_null=True, help_text="The engine's last analysis."),
        "generated_at": serializers.DateTimeField(),
    },
)


class InsightView(APIView):
    """`GET /ai/insight`: the overall status (`ok | degraded | critical`, from the unresolved
    incidents the caller may see), plain sentences with the figures, optionally rephrased by
    the operator's LLM (INSIGHT_LLM_URL; `phrasing` says which), and the findings themselves."""

    permission_classes = [IsAuthenticated, TenantRolePermission, ApiKeyScopePermission]

    @extend_schema(responses={200: InsightSerializer})
    def get(self, request: Request) -> Response:
        # The same overview as the dashboard's insight tile (observability.dashboard.tiles).
        seen = overview(selectors.incidents_unresolved_for(caller=caller_from_request(request)))
        findings: list[dict[str, Any]] = list(IncidentSerializer(seen.findings, many=True).data)
        phrasing = phrase(seen.status, findings, insight_config(), cache)
        state = selectors.insight_state()
        return Response(
            {
                "status": seen.status,
                "summary": phrasing.text,
                "sentences": seen.sentences,
                "phrasing": phrasing.source,
                "llm_error": phrasing.llm_error,
                "findings": findings,
                "open_incidents": seen.open_incidents,
                "analysed_at": state.analysed_at if state else None,
                "generated_at": timezone.now(),
            }
        )
