"""The one tenant wall every tenant-owned REST resource stands behind.

Subclass ``TenantScopedViewSet`` with a selector in ``get_base_queryset()`` and services in
``create_object()``, ``update_object()`` and ``delete_object()``; the base filters every list and
lookup to the caller's tenant (staff see all, other tenants' objects answer 404 as if they did not
exist), decides which tenant a new object belongs to, and checks roles and API-key scopes.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model, QuerySet
from rest_framework import exceptions, serializers, viewsets
from rest_framework.permissions import IsAuthenticated

from accounts.models import Tenant
from accounts.permissions import ApiKeyScopePermission, TenantRolePermission
from accounts.selectors import Caller, caller_from_request


def _storable_reference(text: str) -> bool:
    """Whether a query can even look the reference up. PostgreSQL refuses NUL in text and ids
    past bigint, and `int()` refuses the non-ASCII digits `str.isdigit()` accepts ("²"): each
    would be a 500 where the client deserves "no such tenant"."""
    text = text.strip()
    if len(text) > 64 or "\x00" in text:
        return False
    return not text.isdigit() or (text.isascii() and len(text) <= 18)


class TenantRefField(serializers.Field):
    """A tenant named by id, uuid or slug on input; its id on output."""

    default_error_messages = {"unknown": "No tenant is named {reference!r}."}

    def to_representation(self, value: Tenant) -> int:
        return value.pk

    def to_internal_value(self, data: Any) -> Tenant:
        if not isinstance(data, (str, int)) or isinstance(data, bool) or not _storable_reference(str(data)):
            self.fail("unknown", reference=str(data)[:64])
        tenant = Tenant.objects.by_reference(data).first()
        if tenant is None:
            self.fail("unknown", reference=str(data))
        return tenant


class TenantOwnedSerializer(serializers.ModelSerializer):
    """Base for serializers of tenant-owned models: `tenant` is optional and only staff choose it."""

    tenant = TenantRefField(required=False)


class TenantScopedViewSet(viewsets.ModelViewSet):
    """CRUD over one tenant-owned model, walled by tenant."""

    permission_classes = [IsAuthenticated, TenantRolePermission, ApiKeyScopePermission]
    # The path from the model to its tenant, for models that reach it through a relation.
    tenant_lookup = "tenant"

    @property
    def caller(self) -> Caller:
        return caller_from_request(self.request)

    def get_base_queryset(self) -> QuerySet[Any]:
        """Every object of the resource, from a selector; the base applies the wall."""
        raise NotImplementedError

    def get_queryset(self) -> QuerySet[Any]:
        queryset = self.get_base_queryset()
        caller = self.caller
        if caller.is_staff:
            return queryset
        if caller.tenant is None:
            return queryset.none()
        return queryset.filter(**{self.tenant_lookup: caller.tenant})

    def target_tenant(self, requested: Tenant | None) -> Tenant:
        """The tenant a new object goes to: the caller's, or for staff the one they name."""
        caller = self.caller
        if caller.is_staff:
            tenant = requested or caller.tenant
            if tenant is None:
                raise exceptions.ValidationError({"tenant": ["Staff must name the tenant (id, uuid or slug)."]})
            return tenant
        if requested is not None and requested != caller.tenant:
            raise exceptions.PermissionDenied("You can only create objects in your own tenant.")
        assert caller.tenant is not None  # TenantRolePermission refused callers without one
        return caller.tenant

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        data = dict(serializer.validated_data)
        tenant = self.target_tenant(data.pop("tenant", None))
        serializer.instance = self.create_object(tenant=tenant, data=data)

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        data = dict(serializer.validated_data)
        if "tenant" in data and data.pop("tenant") != getattr(serializer.instance, "tenant", None):
            raise exceptions.ValidationError({"tenant": ["An object cannot move to another tenant."]})
        serializer.instance = self.update_object(instance=serializer.instance, data=data)

    def perform_destroy(self, instance: Model) -> None:
        self.delete_object(instance=instance)

    # Writes go through the app's services (CONVENTIONS 1), whichever door they come through: a
    # resource that forgets to name its service fails loudly instead of writing behind its back.
    def create_object(self, *, tenant: Tenant, data: dict[str, Any]) -> Model:
        """Creates through the app's service."""
        raise NotImplementedError(f"{type(self).__name__} must create through a service")

    def update_object(self, *, instance: Model, data: dict[str, Any]) -> Model:
        """Updates through the app's service."""
        raise NotImplementedError(f"{type(self).__name__} must update through a service")

    def delete_object(self, *, instance: Model) -> None:
        """Deletes through the app's service."""
        raise NotImplementedError(f"{type(self).__name__} must delete through a service")
