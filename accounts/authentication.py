"""DRF authentication: JWT bearer tokens (simplejwt) and `X-API-Key`."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from accounts.models import ApiKey, Tenant, User
from accounts.services import api_key_authenticate

API_KEY_HEADER = "X-API-Key"


class TenantJWTAuthentication(JWTAuthentication):
    """simplejwt's bearer auth, loading the user's tenant in the same query and refusing users
    whose tenant was deactivated after the token was issued."""

    def get_user(self, validated_token: Any) -> User:
        try:
            user_id = validated_token[jwt_settings.USER_ID_CLAIM]
        except KeyError:
            raise exceptions.AuthenticationFailed("Token has no user id.", code="token_not_valid") from None
        user = User.objects.select_related("membership__tenant").filter(pk=user_id).first()
        if user is None or not user.is_active:
            raise exceptions.AuthenticationFailed("User not found or inactive.", code="user_inactive")
        _refuse_inactive_tenant(user.tenant)
        return user


class ApiKeyPrincipal:
    """`request.user` for a request authenticated by an API key: a member of the key's tenant."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key
        # Distinct per key, so per-user throttles count each key separately.
        self.pk = self.id = f"apikey:{api_key.pk}"
        self.username = api_key.prefix

    @property
    def tenant(self) -> Tenant:
        return self.api_key.tenant

    def __str__(self) -> str:
        return f"API key {self.api_key.prefix}"


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        raw = request.headers.get(API_KEY_HEADER)
        if raw is None:
            return None
        api_key = api_key_authenticate(raw_key=raw.strip())
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired API key.", code="invalid_api_key")
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return API_KEY_HEADER


def _refuse_inactive_tenant(tenant: Tenant | None) -> None:
    if tenant is not None and not tenant.active:
        raise exceptions.AuthenticationFailed("This tenant is deactivated.", code="tenant_inactive")
