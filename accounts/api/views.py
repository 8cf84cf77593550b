from __future__ import annotations

import logging
from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema, extend_schema_view, inline_serializer
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import SAFE_METHODS, AllowAny, BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt.views import TokenRefreshView as SimpleTokenRefreshView

from accounts import services
from accounts.api.scoping import TenantScopedViewSet
from accounts.api.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeySerializer,
    MemberRoleSerializer,
    MemberSerializer,
    MeSerializer,
    SignupSerializer,
    TenantSerializer,
    TenantSummarySerializer,
    TokenRefreshSerializer,
    TokenSerializer,
)
from accounts.login_limiter import login_failure_record, login_lockout, login_success_record
from accounts.models import ApiKey, LoginFailureReason, Membership, Role, Tenant, User
from accounts.selectors import api_key_list, caller_from_request, membership_list, tenant_list
from core.errors import TooManyRequests
from core.http import client_ip
from core.openapi import error_responses

security_logger = logging.getLogger("sentinel.security")

# Documentation of answers that have no serializer of their own.
TokenPairSerializer = inline_serializer(
    "TokenPair",
    fields={
        "access": serializers.CharField(help_text="JWT for `Authorization: Bearer`."),
        "refresh": serializers.CharField(help_text="For `POST /auth/token/refresh`, once."),
    },
)
ApiKeyMeSerializer = inline_serializer(
    "ApiKeyMe",
    fields={
        "api_key": inline_serializer(
            "ApiKeyIdentity",
            fields={
                "id": serializers.IntegerField(),
                "name": serializers.CharField(),
                "prefix": serializers.CharField(),
                "scopes": serializers.ListField(child=serializers.CharField()),
            },
        ),
        "tenant": TenantSummarySerializer(),
        "role": serializers.CharField(allow_null=True),
        "is_staff": serializers.BooleanField(),
    },
)


class SignupView(APIView):
    """`POST /auth/signup`: a user, and a tenant of their own that they administer."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes = [ScopedRateThrottle]
    throttle_scope = "signup"

    @extend_schema(request=SignupSerializer, responses={201: MeSerializer, **error_responses(429)})
    def post(self, request: Request) -> Response:
        serializer = SignupSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = services.user_signup(**serializer.validated_data)
        return Response(MeSerializer(user).data, status=status.HTTP_201_CREATED)


class TokenView(APIView):
    """`POST /auth/token`: username and password for a JWT pair, with failed logins limited."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def get_authenticate_header(self, request: Request) -> str:
        # Without credentials classes DRF would turn a wrong password's 401 into a 403.
        return 'Bearer realm="api"'

    @extend_schema(request=TokenSerializer, responses={200: TokenPairSerializer, **error_responses(401, 429)})
    def post(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise exceptions.ValidationError({"non_field_errors": ["Send a JSON object."]})
        username = str(request.data.get("username", ""))[:150]
        ip = client_ip(request)
        lockout = login_lockout(username=username, ip=ip)
        if lockout is not None:
            services.login_failure_log(username=username, ip=ip, reason=LoginFailureReason.LOCKED_OUT, door="api")
            security_logger.warning(
                "login refused: too many failures", extra={"username": username, "client_ip": ip, "by": lockout.subject}
            )
            raise TooManyRequests(
                "Too many failed logins; try again later.",
                retry_after=lockout.retry_after,
                code="too_many_failed_logins",
                limit=lockout.state(),
            )
        serializer = TokenSerializer(data=request.data)
        try:
            serializer.is_valid(raise_exception=True)
        except exceptions.AuthenticationFailed:
            login_failure_record(username=username, ip=ip)
            services.login_failure_log(username=username, ip=ip, reason=LoginFailureReason.BAD_CREDENTIALS, door="api")
            # One line per failure: the insight engine's brute-force detector reads these.
            security_logger.warning(
                "login failed", extra={"event": "login_failed", "username": username, "client_ip": ip}
            )
            raise
        tenant = serializer.user.tenant
        if tenant is not None and not tenant.active:
            raise exceptions.AuthenticationFailed("This tenant is deactivated.", code="tenant_inactive")
        login_success_record(username=username)
        return Response(serializer.validated_data)


@extend_schema_view(
    post=extend_schema(
        request=inline_serializer("TokenRefreshRequest", fields={"refresh": serializers.CharField()}),
        responses={200: TokenPairSerializer, **error_responses(401)},
    )
)
class TokenRefreshView(SimpleTokenRefreshView):
    """`POST /auth/token/refresh`: a new pair for a refresh token, which then stops working."""

    authentication_classes: list[Any] = []
    serializer_class = TokenRefreshSerializer


class MeView(APIView):
    """`GET /auth/me`: who the credentials belong to."""

    @extend_schema(
        responses={
            200: PolymorphicProxySerializer(
                component_name="Identity",
                serializers=[MeSerializer, ApiKeyMeSerializer],
                resource_type_field_name=None,
            )
        }
    )
    def get(self, request: Request) -> Response:
        caller = caller_from_request(request)
        if caller.api_key is not None:
            key = caller.api_key
            return Response(
                {
                    "api_key": {"id": key.pk, "name": key.name, "prefix": key.prefix, "scopes": key.scopes},
                    "tenant": TenantSummarySerializer(key.tenant).data,
                    "role": caller.role,
                    "is_staff": False,
                }
            )
        return Response(MeSerializer(request.user).data)


class TenantPermission(BasePermission):
    """Tenants: any member reads their own; tenant admins manage members; staff do the rest."""

    def has_permission(self, request: Request, view: Any) -> bool:
        caller = caller_from_request(request)
        if caller.api_key is not None:
            self.message = "API keys cannot use this endpoint; sign in as a person."
            return False
        if caller.is_staff or request.method in SAFE_METHODS:
            return True
        if view.action in ("members", "member_detail"):
            return caller.is_tenant_admin
        self.message = "Only staff create, change or delete tenants."
        return False


@extend_schema_view(
    create=extend_schema(responses={201: TenantSerializer, **error_responses(409)}),
    update=extend_schema(responses={200: TenantSerializer, **error_responses(409)}),
    partial_update=extend_schema(responses={200: TenantSerializer, **error_responses(409)}),
)
class TenantViewSet(viewsets.ModelViewSet):
    """`/api/v1/tenants`: staff manage tenants; members see their own."""

    serializer_class = TenantSerializer
    permission_classes = [IsAuthenticated, TenantPermission]

    def get_queryset(self) -> QuerySet[Tenant]:
        caller = caller_from_request(self.request)
        queryset = tenant_list()
        if caller.is_staff:
            return queryset
        if caller.tenant is None:
            return queryset.none()
        return queryset.filter(pk=caller.tenant.pk)

    def perform_create(self, serializer: TenantSerializer) -> None:
        serializer.instance = services.tenant_create(**serializer.validated_data)

    def perform_update(self, serializer: TenantSerializer) -> None:
        serializer.instance = services.tenant_update(tenant=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance: Tenant) -> None:
        services.tenant_delete(tenant=instance)

    @extend_schema(methods=["GET"], request=None, responses={200: MemberSerializer(many=True)})
    @extend_schema(
        methods=["POST"], request=MemberSerializer, responses={201: MemberSerializer, **error_responses(409)}
    )
    @action(detail=True, methods=["get", "post"], url_path="members")
    def members(self, request: Request, pk: str | None = None) -> Response:
        """List the tenant's members, or add an existing user to it with a role."""
        tenant = self.get_object()
        if request.method == "GET":
            page = self.paginate_queryset(membership_list(tenant=tenant))
            return self.get_paginated_response(MemberSerializer(page, many=True).data)
        serializer = MemberSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        username = serializer.validated_data["user"]["username"]
        user = User.objects.filter(username__iexact=username).first()
        if user is None:
            raise exceptions.ValidationError({"username": [f"No user is named {username!r}."]})
        membership = services.membership_add(tenant=tenant, user=user, role=serializer.validated_data["role"])
        return Response(MemberSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        methods=["PATCH"], request=MemberRoleSerializer, responses={200: MemberSerializer, **error_responses(409)}
    )
    @extend_schema(methods=["DELETE"], request=None, responses={204: None, **error_responses(409)})
    @action(detail=True, methods=["patch", "delete"], url_path=r"members/(?P<username>[\w.@+-]+)")
    def member_detail(self, request: Request, pk: str | None = None, username: str = "") -> Response:
        """Change a member's role, or remove them. A tenant always keeps one admin."""
        tenant = self.get_object()
        membership = Membership.objects.filter(tenant=tenant, user__username__iexact=username).first()
        if membership is None:
            raise exceptions.NotFound(f"{username!r} is not a member of this tenant.")
        if request.method == "DELETE":
            services.membership_remove(membership=membership)
            return Response(status=status.HTTP_204_NO_CONTENT)
        serializer = MemberRoleSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        membership = services.membership_set_role(membership=membership, role=serializer.validated_data["role"])
        return Response(MemberSerializer(membership).data)


class ApiKeyViewSet(TenantScopedViewSet):
    """`/api/v1/api-keys`: tenant admins create, list and revoke their tenant's keys.

    The secret appears once, in the creation response. DELETE revokes (the row stays, for the
    audit trail); so does `POST /api/v1/api-keys/{id}/revoke`.
    """

    serializer_class = ApiKeySerializer
    read_roles = (Role.ADMIN,)
    write_roles = (Role.ADMIN,)
    api_key_scopes = None
    http_method_names = ["get", "post", "delete", "head", "options"]

    def get_base_queryset(self) -> QuerySet[ApiKey]:
        return api_key_list()

    @extend_schema(responses={201: ApiKeyCreatedSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        tenant = self.target_tenant(data.pop("tenant", None))
        key, raw = services.api_key_create(tenant=tenant, created_by=self.caller.user, **data)
        body = ApiKeyCreatedSerializer(key, context={"raw_key": raw}).data
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: ApiKey) -> None:
        services.api_key_revoke(api_key=instance)

    @extend_schema(request=None, responses={200: ApiKeySerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        key = services.api_key_revoke(api_key=self.get_object())
        return Response(self.get_serializer(key).data)
