"""Writes of the accounts domain. Views, admin actions, commands and tests all call these."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import (
    API_KEY_PREFIX_MARK,
    DEFAULT_SCOPES,
    ApiKey,
    Membership,
    Role,
    Scope,
    Tenant,
    Tier,
    User,
    hash_api_key,
)
from gateway.services import gateway_config_changed
from sentinel_site.errors import Conflict, DomainError

TENANT_OVERRIDE_FIELDS = ("burst_capacity", "refill_rate", "window_ms", "base_rate_limit")


def _unique_slug(base: str) -> str:
    """`acme`, then `acme-2`, `acme-3`… for the first free one."""
    root = slugify(base)[:50] or "tenant"
    slug, n = root, 1
    while Tenant.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{root}-{n}"
    return slug


def _taken(field: str, message: str) -> DomainError:
    return DomainError(message, details={field: [message]}, code="validation_error")


@transaction.atomic
def user_signup(*, username: str, email: str, password: str, tenant_name: str | None = None) -> User:
    """A new user with a tenant of their own, whose admin they are.

    The caller has validated the password against the validators; uniqueness is enforced by the
    database constraints, so two signups racing for one name cannot both succeed.
    """
    if User.objects.filter(username__iexact=username).exists():
        raise _taken("username", "This username is taken.")
    if email and User.objects.filter(email__iexact=email).exists():
        raise _taken("email", "This e-mail is already registered.")
    try:
        with transaction.atomic():
            user = User.objects.create_user(username=username, email=email, password=password)
    except IntegrityError:  # lost a race with an identical signup
        raise _taken("username", "This username or e-mail is taken.") from None
    name = tenant_name or username
    tenant = Tenant.objects.create(name=name, slug=_unique_slug(name))
    Membership.objects.create(user=user, tenant=tenant, role=Role.ADMIN)
    return user


def tenant_create(
    *, name: str, slug: str | None = None, tier: str = Tier.STANDARD, active: bool = True, **overrides: Any
) -> Tenant:
    unknown = set(overrides) - set(TENANT_OVERRIDE_FIELDS)
    if unknown:
        raise DomainError(f"Unknown tenant fields: {', '.join(sorted(unknown))}.")
    slug = slug or _unique_slug(name)
    if Tenant.objects.filter(slug=slug).exists():
        raise Conflict("A tenant with this slug exists.", details={"slug": ["A tenant with this slug exists."]})
    tenant = Tenant.objects.create(name=name, slug=slug, tier=tier, active=active, **overrides)
    # The proxies hold tenants (tier, overrides, active) in memory, like routes.
    transaction.on_commit(gateway_config_changed)
    return tenant


def tenant_update(*, tenant: Tenant, **changes: Any) -> Tenant:
    allowed = {"name", "slug", "tier", "active", *TENANT_OVERRIDE_FIELDS}
    unknown = set(changes) - allowed
    if unknown:
        raise DomainError(f"Unknown tenant fields: {', '.join(sorted(unknown))}.")
    if "slug" in changes and Tenant.objects.filter(slug=changes["slug"]).exclude(pk=tenant.pk).exists():
        raise Conflict("A tenant with this slug exists.", details={"slug": ["A tenant with this slug exists."]})
    for field, value in changes.items():
        setattr(tenant, field, value)
    tenant.save()
    transaction.on_commit(gateway_config_changed)
    return tenant


def tenant_set_active(*, tenant: Tenant, active: bool) -> Tenant:
    return tenant_update(tenant=tenant, active=active)


@transaction.atomic
def member_add(*, tenant: Tenant, user: User, role: str = Role.MEMBER) -> Membership:
    if Membership.objects.select_for_update().filter(user=user).exists():
        raise Conflict(f"{user.username} already belongs to a tenant.")
    return Membership.objects.create(user=user, tenant=tenant, role=role)


def _lock_admins(tenant: Tenant) -> list[Membership]:
    # Locks the tenant's admin rows: two admins demoting each other at once must not leave the
    # tenant with none.
    return list(Membership.objects.select_for_update().filter(tenant=tenant, role=Role.ADMIN))


@transaction.atomic
def member_set_role(*, membership: Membership, role: str) -> Membership:
    if membership.role == Role.ADMIN and role != Role.ADMIN:
        admins = _lock_admins(membership.tenant)
        if len(admins) <= 1:
            raise Conflict("A tenant keeps at least one admin.")
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def member_remove(*, membership: Membership) -> None:
    if membership.role == Role.ADMIN:
        admins = _lock_admins(membership.tenant)
        if len(admins) <= 1:
            raise Conflict("A tenant keeps at least one admin.")
    membership.delete()


def _new_raw_key() -> tuple[str, str]:
    """(prefix, full key). The prefix is public; 32 random bytes make the secret."""
    prefix = API_KEY_PREFIX_MARK + secrets.token_hex(4)
    return prefix, f"{prefix}_{secrets.token_urlsafe(32)}"


def api_key_create(
    *,
    tenant: Tenant,
    name: str,
    scopes: list[str] | None = None,
    created_by: User | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its secret. The secret exists only in the return value: show it once."""
    chosen = list(dict.fromkeys(scopes if scopes is not None else DEFAULT_SCOPES))
    unknown = [scope for scope in chosen if scope not in Scope.values]
    if unknown:
        raise DomainError(f"Unknown scopes: {', '.join(unknown)}.", details={"scopes": unknown})
    if expires_at is not None and expires_at <= timezone.now():
        raise DomainError("expires_at is in the past.", details={"expires_at": ["Must be in the future."]})
    for _ in range(5):  # a prefix collision is a 1-in-4-billion event; retry rather than fail
        prefix, raw = _new_raw_key()
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    tenant=tenant,
                    name=name,
                    prefix=prefix,
                    key_hash=hash_api_key(raw),
                    scopes=chosen,
                    created_by=created_by,
                    expires_at=expires_at,
                )
            return key, raw
        except IntegrityError:
            continue
    raise DomainError("Could not allocate a unique key prefix; try again.")


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revokes the key for good. Idempotent: revoking twice keeps the first revocation time."""
    ApiKey.objects.filter(pk=api_key.pk, revoked=False).update(revoked=True, revoked_at=timezone.now())
    api_key.refresh_from_db(fields=["revoked", "revoked_at"])
    return api_key


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    """The usable key this secret belongs to, or None. Records the use, at most once a minute."""
    if not raw_key.startswith(API_KEY_PREFIX_MARK) or len(raw_key) > 200:
        return None
    key = ApiKey.objects.usable().select_related("tenant").filter(key_hash=hash_api_key(raw_key)).first()
    if key is None:
        return None
    now = timezone.now()
    touch_after = settings.SENTINEL_ACCOUNTS["API_KEY_TOUCH_SECONDS"]
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() >= touch_after:
        # A conditional UPDATE: a burst of requests on one key writes one row, not one per request.
        stale = Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - timedelta(seconds=touch_after))
        ApiKey.objects.filter(stale, pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key
