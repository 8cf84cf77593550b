"""Reads of the accounts domain, and who the caller of a request is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, QuerySet

from accounts.models import ApiKey, LoginFailure, Membership, Role, Tenant, User


@dataclass(frozen=True)
class Caller:
    """Who is asking, as every tenant-scoped view needs to know it.

    A person (JWT or session) acts with their membership's role; an API key acts as a member of
    its tenant, limited further by its scopes. Staff see and may change every tenant's objects.
    """

    user: User | None
    api_key: ApiKey | None
    tenant: Tenant | None
    role: str | None
    is_staff: bool

    @property
    def is_tenant_admin(self) -> bool:
        return self.role == Role.ADMIN and self.api_key is None


def caller_from_request(request: Any) -> Caller:
    """The caller of a DRF request, computed once and kept on the request."""
    cached = getattr(request, "_sentinel_caller", None)
    if isinstance(cached, Caller):
        return cached
    api_key = request.auth if isinstance(request.auth, ApiKey) else None
    if api_key is not None:
        caller = Caller(user=None, api_key=api_key, tenant=api_key.tenant, role=Role.MEMBER, is_staff=False)
    else:
        user = request.user if getattr(request.user, "is_authenticated", False) else None
        membership = getattr(user, "membership", None) if user is not None else None
        caller = Caller(
            user=user,
            api_key=None,
            tenant=membership.tenant if membership else None,
            role=membership.role if membership else None,
            is_staff=bool(user and user.is_staff),
        )
    request._sentinel_caller = caller
    return caller


def user_get_with_tenant(*, user_id: Any) -> User | None:
    return User.objects.select_related("membership__tenant").filter(pk=user_id).first()


def tenant_list() -> QuerySet[Tenant]:
    return Tenant.objects.annotate(member_count=Count("memberships", distinct=True)).order_by("name")


def membership_list(*, tenant: Tenant) -> QuerySet[Membership]:
    return Membership.objects.filter(tenant=tenant).select_related("user", "tenant").order_by("user__username")


def api_key_list() -> QuerySet[ApiKey]:
    return ApiKey.objects.select_related("tenant", "created_by")


def login_failure_counts(*, since: datetime, by: str, at_least: int = 1, limit: int = 100) -> list[tuple[str, int]]:
    """Failed logins since `since`, counted per `by` ("client_ip" or "username"), the subjects
    with at least `at_least` of them, most first, at most `limit`: ``[(subject, count)]``.
    One indexed GROUP BY; rows are never loaded."""
    if by not in ("client_ip", "username"):
        raise ValueError(f"login failures are counted by client_ip or username, not {by!r}")
    rows = (
        LoginFailure.objects.filter(time__gte=since)
        .exclude(**{f"{by}__isnull": True})
        .values(by)
        .annotate(failures=Count("id"))
        .filter(failures__gte=at_least)
        .order_by("-failures", by)[:limit]
    )
    return [(str(row[by]), int(row["failures"])) for row in rows]


def tenant_uuid_of_username(*, username: str) -> Any:
    """The uuid of the tenant of the user called `username` (case folded), or None."""
    return Membership.objects.filter(user__username__iexact=username).values_list("tenant__uuid", flat=True).first()
