"""`GET /api/v1/request-logs[/<id>]`: the request log, read-only, walled by tenant, newest first.

Members of a tenant (JWT or session) and API keys with `api:read` read their tenant's rows; staff
read every row, anonymous callers' included, and may name one tenant with `?tenant=`. Pages are
cut by a keyset cursor on (time, id) (``TimeCursorPagination``): no OFFSET and no COUNT, so the
first page and the thousandth cost the same on a table of millions of rows.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import exceptions, serializers, viewsets
from rest_framework.pagination import BasePagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from accounts.api.scoping import TenantRefField
from accounts.models import Tenant
from accounts.permissions import ApiKeyScopePermission, TenantRolePermission
from accounts.selectors import Caller, caller_from_request
from core.openapi import error_responses
from core.query_params import iso_moment
from observability import selectors
from observability.models import Decision, RequestLog
from observability.selectors import LogPosition, RequestLogFilters

# --- the query string ------------------------------------------------------------------------------

_STATUS_CLASS = re.compile(r"^([1-5])xx$", re.IGNORECASE)
_METHOD = re.compile(r"^[A-Z]{1,16}$")
# Bounds of the columns compared (a longer value cannot match, and would cost a 2000-char LIKE).
_MAX_LEN = {"route": 200, "path_prefix": 2000, "correlation_id": 128}


def _invalid(name: str, message: str) -> exceptions.ValidationError:
    return exceptions.ValidationError({name: [message]})


def _values(request: Request, name: str) -> list[str]:
    """A parameter given once, as a comma-separated list, or repeated: `status=500,502&status=404`."""
    values = [part.strip() for raw in request.query_params.getlist(name) for part in raw.split(",")]
    return [value for value in values if value]


def _text(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if "\x00" in raw:  # PostgreSQL cannot compare text holding NUL: a 400, not its error
        raise _invalid(name, "Null characters are not allowed.")
    if name in _MAX_LEN and len(raw) > _MAX_LEN[name]:
        raise _invalid(name, f"At most {_MAX_LEN[name]} characters.")
    return raw


def _moment(request: Request, name: str) -> datetime | None:
    return iso_moment(_text(request, name), name=name)


def _statuses(request: Request) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(exact codes, classes) from `status=404,5xx`."""
    codes: list[int] = []
    classes: list[int] = []
    for value in _values(request, "status"):
        if match := _STATUS_CLASS.match(value):
            classes.append(int(match.group(1)))
        elif value.isascii() and value.isdigit() and 100 <= int(value) <= 599:
            codes.append(int(value))
        else:
            raise _invalid("status", f"{value[:20]!r} is neither a status code (100-599) nor a class such as 5xx.")
    return tuple(codes), tuple(classes)


def _decisions(request: Request) -> tuple[str, ...]:
    values = _values(request, "decision")
    unknown = [value for value in values if value not in Decision.values]
    if unknown:
        raise _invalid("decision", f"Unknown decision {unknown[0][:32]!r}; one of {', '.join(Decision.values)}.")
    return tuple(values)


def _client_ip(request: Request) -> str | None:
    raw = _text(request, "client_ip")
    if raw is None:
        return None
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        address = None
    # A scoped address (fe80::1%eth0) is valid Python but no inet value: never a client of ours.
    if address is None or getattr(address, "scope_id", None):
        raise _invalid("client_ip", "Must be an IPv4 or IPv6 address.")
    return str(address)


def _method(request: Request) -> str | None:
    raw = _text(request, "method")
    if raw is None:
        return None
    if not _METHOD.match(raw.upper()):
        raise _invalid("method", "Must be an HTTP method such as GET.")
    return raw.upper()


def _route(request: Request) -> dict[str, Any]:
    """`route=12` (an id) or `route=/orders/` (a path prefix)."""
    raw = _text(request, "route")
    if raw is None:
        return {}
    if raw.isascii() and raw.isdigit():
        if len(raw) > 9:  # past an integer column: no route has that id
            raise _invalid("route", "No route has this id.")
        return {"route_id": int(raw)}
    # Route prefixes end with "/" (gateway.services): `route=/orders` means the route /orders/.
    return {"route_prefix": raw if raw.endswith("/") else raw + "/"}


def _tenant_uuid(request: Request, caller: Caller) -> uuid.UUID | None:
    """`tenant=<id|uuid|slug>`: staff choose any tenant; others may only name their own."""
    reference = request.query_params.get("tenant")
    if not reference:
        return None
    if not caller.is_staff:
        own = caller.tenant
        if own is None or reference.strip().lower() not in (str(own.pk), str(own.uuid), own.slug.lower()):
            raise exceptions.PermissionDenied("You can only read your own tenant's request log.")
        return own.uuid
    try:
        tenant: Tenant = TenantRefField().to_internal_value(reference)
    except exceptions.ValidationError as exc:
        raise exceptions.ValidationError({"tenant": exc.detail}) from None
    return tenant.uuid


# Every parameter the list reads: one it does not (a typo such as `statuss=500`) is a 400, not a
# filter silently dropped that returns every row.
LIST_PARAMETERS = frozenset(
    {
        "since", "until", "status", "decision", "client_ip", "correlation_id", "path_prefix", "method",
        "tenant", "route", "cursor", "page_size", "format",
    }
)  # fmt: skip


def filters_from_query(request: Request, caller: Caller) -> RequestLogFilters:
    """The query string as ``RequestLogFilters``; a ValidationError (400) names each bad one, and
    each parameter the list does not know."""
    unknown = sorted(set(request.query_params) - LIST_PARAMETERS)
    if unknown:
        raise exceptions.ValidationError(
            {
                name[:40]: [f"Unknown parameter; the filters are {', '.join(sorted(LIST_PARAMETERS))}."]
                for name in unknown[:5]
            }
        )
    since, until = _moment(request, "since"), _moment(request, "until")
    if since is not None and until is not None and since >= until:
        raise _invalid("until", "Must be later than since.")
    statuses, classes = _statuses(request)
    return RequestLogFilters(
        since=since,
        until=until,
        statuses=statuses,
        status_classes=classes,
        decisions=_decisions(request),
        client_ip=_client_ip(request),
        correlation_id=_text(request, "correlation_id"),
        path_prefix=_text(request, "path_prefix"),
        method=_method(request),
        tenant_uuid=_tenant_uuid(request, caller),
        **_route(request),
    )


# --- the cursor ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: strictly after (older than, ``older=True``) or strictly before (newer
    than) a row's (time, id). Opaque to clients: base64 of `o|<iso time>|<id>`. It needs no
    signature: it only positions a read inside what the caller may see anyway."""

    older: bool
    position: LogPosition

    def encode(self) -> str:
        text = f"{'o' if self.older else 'n'}|{self.position.time.isoformat()}|{self.position.id}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, raw: str) -> Cursor:
        try:
            text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
            direction, moment, row_id = text.split("|")
            when = datetime.fromisoformat(moment)
            if direction not in ("o", "n") or when.tzinfo is None or not (row_id.isdigit() and len(row_id) <= 18):
                raise ValueError(text)
            when = when.astimezone(UTC)
        except (ValueError, OverflowError, UnicodeDecodeError, binascii.Error):
            raise _invalid("cursor", "Invalid cursor: use the next or previous link of a page.") from None
        return cls(older=direction == "o", position=LogPosition(time=when, id=int(row_id)))


class TimeCursorPagination(BasePagination):
    """Keyset pages over (time, id), newest first: `{"next", "previous", "results"}`.

    `page_size` (1-500, default 50). A page takes one query of `page_size + 1` rows (the extra one
    tells whether there is a further page); nothing is counted. Rows that share one timestamp are
    ordered by id, so walking the `next` links visits every row once, without gaps or repeats.
    """

    default_page_size = 50
    max_page_size = 500
    cursor_query_param = "cursor"
    page_size_query_param = "page_size"

    def paginate_queryset(self, queryset: QuerySet[Any], request: Request, view: Any = None) -> list[Any]:
        self.request = request
        size = self._page_size(request)
        raw = request.query_params.get(self.cursor_query_param)
        self.cursor = Cursor.decode(raw) if raw else None
        if self.cursor is None or self.cursor.older:
            page = self._older_page(queryset, size)
        else:
            page = self._newer_page(queryset, size)
        return page

    def _page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None or raw == "":
            return self.default_page_size
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= self.max_page_size:
            raise _invalid(self.page_size_query_param, f"Must be a whole number from 1 to {self.max_page_size}.")
        return int(raw)

    def _older_page(self, queryset: QuerySet[Any], size: int) -> list[Any]:
        if self.cursor is not None:
            queryset = selectors.request_logs_after(queryset, position=self.cursor.position)
        rows = list(queryset[: size + 1])
        self.has_next, self.has_previous = len(rows) > size, self.cursor is not None
        self.rows = rows[:size]
        return self.rows

    def _newer_page(self, queryset: QuerySet[Any], size: int) -> list[Any]:
        assert self.cursor is not None
        rows = list(selectors.request_logs_before(queryset, position=self.cursor.position)[: size + 1])
        self.has_previous, self.has_next = len(rows) > size, True
        self.rows = list(reversed(rows[:size]))
        return self.rows

    def get_paginated_response(self, data: Any) -> Response:
        return Response({"next": self._link(older=True), "previous": self._link(older=False), "results": data})

    def _link(self, *, older: bool) -> str | None:
        """The link to the page past this one's last row (older) or before its first (newer)."""
        if not (self.has_next if older else self.has_previous):
            return None
        if self.rows:
            edge = self.rows[-1 if older else 0]
            position = LogPosition(time=edge.time, id=edge.id)
        elif self.cursor is not None:  # an empty page: turn back at the cursor it was asked from
            position = self.cursor.position
        else:
            return None
        url = self.request.build_absolute_uri()
        return replace_query_param(url, self.cursor_query_param, Cursor(older=older, position=position).encode())

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        link = {"type": "string", "format": "uri", "nullable": True}
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "next": {**link, "description": "The next (older) page, or null at the end."},
                "previous": {**link, "description": "The previous (newer) page, or null on the first."},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.cursor_query_param,
                "in": "query",
                "required": False,
                "description": "Opaque: taken from a page's next or previous link.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "in": "query",
                "required": False,
                "description": f"Rows a page (1-{self.max_page_size}, default {self.default_page_size}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size},
            },
        ]


# --- the resource ----------------------------------------------------------------------------------


class RequestLogSerializer(serializers.ModelSerializer[RequestLog]):
    class Meta:
        model = RequestLog
        fields = [
            "id",
            "time",
            "correlation_id",
            "trace_id",
            "tenant_uuid",
            "tenant_key",
            "tier",
            "principal",
            "route_id",
            "route",
            "method",
            "path",
            "status",
            "decision",
            "reason",
            "latency_ms",
            "upstream",
            "upstream_latency_ms",
            "client_ip",
            "user_agent",
            "bytes_in",
            "bytes_out",
            "breaker_transition",
        ]
        read_only_fields = fields


def _list_parameters() -> list[OpenApiParameter]:
    text, moment = OpenApiTypes.STR, OpenApiTypes.DATETIME
    return [
        OpenApiParameter("since", moment, description="Rows at or after this time (ISO 8601; no offset: UTC)."),
        OpenApiParameter("until", moment, description="Rows before this time (ISO 8601; no offset: UTC)."),
        OpenApiParameter("route", text, description="A route's id, or its path prefix."),
        OpenApiParameter("status", text, description="Status codes or classes, comma-separated: `404,5xx`."),
        OpenApiParameter("decision", text, description=f"One or more, comma-separated: {', '.join(Decision.values)}."),
        OpenApiParameter("client_ip", text, description="The client's IPv4 or IPv6 address."),
        OpenApiParameter("correlation_id", text, description="The request's X-Request-ID."),
        OpenApiParameter("path_prefix", text, description="Rows whose path starts with this."),
        OpenApiParameter("method", text, description="An HTTP method, e.g. POST."),
        OpenApiParameter("tenant", text, description="Staff: one tenant (id, uuid or slug). Others: their own."),
    ]


@extend_schema_view(
    list=extend_schema(parameters=_list_parameters(), responses={200: RequestLogSerializer(many=True)}),
    retrieve=extend_schema(
        description="One row of the request log. Another tenant's row answers 404, as if it did not exist.",
        responses={200: RequestLogSerializer, **error_responses(404)},
    ),
)
class RequestLogViewSet(viewsets.ReadOnlyModelViewSet[RequestLog]):
    """The request log: one row per proxied request, rejections included (SPEC 3), newest first.

    Filters are ANDed; a list inside one (`status`, `decision`) is ORed. An invalid filter or
    cursor is a 400 naming it. Another tenant's row answers 404, as if it did not exist.
    """

    serializer_class = RequestLogSerializer
    pagination_class = TimeCursorPagination
    permission_classes = [IsAuthenticated, TenantRolePermission, ApiKeyScopePermission]
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self) -> QuerySet[RequestLog]:
        caller = caller_from_request(self.request)
        filters = filters_from_query(self.request, caller) if self.action == "list" else None
        tenant_uuid = caller.tenant.uuid if caller.tenant is not None else None
        return selectors.request_logs_for(tenant_uuid=tenant_uuid, everyone=caller.is_staff, filters=filters)
