from __future__ import annotations

from typing import Any

from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import validate_email
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer
from rest_framework_simplejwt.serializers import TokenRefreshSerializer as SimpleTokenRefreshSerializer
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.api.scoping import TenantOwnedSerializer
from accounts.models import ApiKey, Membership, Role, Scope, Tenant, User


class SignupSerializer(serializers.Serializer):
    username = serializers.RegexField(
        r"^[\w.@+-]+\Z",
        max_length=150,
        error_messages={"invalid": "Use letters, digits and @ . + - _ only."},
    )
    email = serializers.CharField(max_length=254)
    password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)
    tenant_name = serializers.CharField(max_length=120, required=False)

    def validate_email(self, value: str) -> str:
        try:
            validate_email(value)
        except DjangoValidationError:
            raise serializers.ValidationError("Enter a valid e-mail address.") from None
        return value.strip()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # The validators compare the password with the username and e-mail, so run them here.
        probe = User(username=attrs["username"], email=attrs["email"])
        try:
            password_validation.validate_password(attrs["password"], user=probe)
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"password": list(exc.messages)}) from None
        return attrs


class TenantSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Tenant
        fields = ["id", "uuid", "name", "slug", "tier", "active"]


class MeSerializer(serializers.ModelSerializer):
    tenant = serializers.SerializerMethodField()
    role = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ["id", "username", "email", "is_staff", "tenant", "role", "date_joined", "last_login"]

    def get_tenant(self, user: User) -> dict[str, Any] | None:
        tenant = user.tenant
        return TenantSummarySerializer(tenant).data if tenant else None

    def get_role(self, user: User) -> str | None:
        membership = getattr(user, "membership", None)
        return membership.role if membership else None


class TokenSerializer(TokenObtainPairSerializer):
    """Username and password for an access/refresh pair whose claims name the tenant and role."""

    default_error_messages = {"no_active_account": "Wrong username or password."}

    @classmethod
    def get_token(cls, user: User) -> RefreshToken:
        token = super().get_token(user)
        membership = getattr(user, "membership", None)
        # The gateway reads these claims without a database query per request.
        token["tenant"] = str(membership.tenant.uuid) if membership else None
        token["role"] = membership.role if membership else None
        token["staff"] = user.is_staff
        return token


class TokenRefreshSerializer(SimpleTokenRefreshSerializer):
    """A refresh token for a new pair. simplejwt looks its user up with `.get()`: a token whose
    user was deleted since would be a 500 there, and is a 401 here."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        try:
            return super().validate(attrs)
        except User.DoesNotExist:
            raise AuthenticationFailed(self.error_messages["no_active_account"], "no_active_account") from None


class TenantSerializer(serializers.ModelSerializer):
    # Always present: the list's annotation when there is one, else counted (a created or updated
    # tenant comes back from a service without the annotation).
    member_count = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = [
            "id",
            "uuid",
            "name",
            "slug",
            "tier",
            "burst_capacity",
            "refill_rate",
            "window_ms",
            "base_rate_limit",
            "fraud_review_threshold",
            "fraud_decline_threshold",
            "active",
            "member_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "uuid", "created_at", "updated_at"]
        extra_kwargs = {"slug": {"required": False, "validators": []}}

    def get_member_count(self, tenant: Tenant) -> int:
        annotated = getattr(tenant, "member_count", None)
        return annotated if annotated is not None else tenant.memberships.count()


class MemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username", max_length=150)
    email = serializers.EmailField(source="user.email", read_only=True)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)

    class Meta:
        model = Membership
        fields = ["username", "email", "role", "created_at"]
        read_only_fields = ["created_at"]


class MemberRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class ApiKeySerializer(TenantOwnedSerializer):
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices), required=False, max_length=len(Scope.choices)
    )
    status = serializers.CharField(read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "tenant",
            "name",
            "prefix",
            "scopes",
            "status",
            "revoked",
            "revoked_at",
            "expires_at",
            "last_used_at",
            "created_at",
        ]
        read_only_fields = ["id", "prefix", "revoked", "revoked_at", "last_used_at", "created_at"]


class ApiKeyCreatedSerializer(ApiKeySerializer):
    """The creation response: the only time the secret is ever shown."""

    key = serializers.SerializerMethodField()

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]

    def get_key(self, obj: ApiKey) -> str:
        return self.context["raw_key"]
