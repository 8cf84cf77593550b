"""DRF permissions for tenant-scoped resources."""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from accounts.models import Role, Scope
from accounts.selectors import caller_from_request


class TenantRolePermission(BasePermission):
    """Staff may do anything. Others need a tenant, and a role the view allows for the method
    (API keys are judged by their scopes instead).

    Views name the roles in `read_roles` and `write_roles` (both: admin and member by default).
    """

    message = "Your role in this tenant does not allow this."

    def has_permission(self, request: Request, view: Any) -> bool:
        caller = caller_from_request(request)
        if caller.is_staff:
            return True
        if caller.tenant is None:
            self.message = "You do not belong to a tenant."
            return False
        if caller.api_key is not None:
            # A key's scopes decide (ApiKeyScopePermission): an admin granted it `api:write` on purpose.
            return True
        roles = getattr(view, "read_roles", (Role.ADMIN, Role.MEMBER))
        if request.method not in SAFE_METHODS:
            roles = getattr(view, "write_roles", (Role.ADMIN, Role.MEMBER))
        return caller.role in roles


class ApiKeyScopePermission(BasePermission):
    """An API key needs `api:read` to read and `api:write` to change configuration.

    Views may name other scopes (`api_key_scopes = {"POST": "events:write"}`), or refuse keys
    altogether with `api_key_scopes = None` (keys never manage keys, members or tenants).
    """

    message = "This API key lacks the scope for this request."

    def has_permission(self, request: Request, view: Any) -> bool:
        caller = caller_from_request(request)
        if caller.api_key is None:
            return True
        scopes = getattr(view, "api_key_scopes", {})
        if scopes is None:
            self.message = "API keys cannot use this endpoint; sign in as a person."
            return False
        read = (Scope.API_READ.value, Scope.API_WRITE.value)
        needed = scopes.get(request.method, read if request.method in SAFE_METHODS else (Scope.API_WRITE.value,))
        needed = (needed,) if isinstance(needed, str) else needed
        return any(caller.api_key.has_scope(scope) for scope in needed)
