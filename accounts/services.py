"""Writes of the accounts domain. Views, admin pages and actions, commands, tasks and tests all
call these, so the invariants hold whichever door a change comes through: the proxies learn of
every tenant and key change within a second (the config version moves after the commit), a
tenant keeps at least one admin, secrets are stored hashed, a deactivated user is stopped at once.
"""

from __future__ import annotations

import ipaddress
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.contrib.sessions.models import Session
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError, Q
from django.utils import timezone
from django.utils.text import slugify
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts.models import (
    API_KEY_PREFIX_MARK,
    DEFAULT_SCOPES,
    ApiKey,
    LoginFailure,
    Membership,
    Role,
    Scope,
    Tenant,
    Tier,
    User,
    hash_api_key,
)
from core.conf import sentinel_settings
from core.config_version import config_version_bump
from core.errors import Conflict, DomainError

TENANT_OVERRIDE_FIELDS = ("burst_capacity", "refill_rate", "window_ms", "base_rate_limit")
# SPEC 6's per-tenant thresholds (None: the SENTINEL_FRAUD default); the web processes' scoring
# reloads them when the config version moves, like the proxy's tenants.
TENANT_FRAUD_FIELDS = ("fraud_review_threshold", "fraud_decline_threshold")


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
    with transaction.atomic():
        user = user_create(username=username, email=email, password=password)
        # Through the tenant service, so the running proxies know the new tenant within a second.
        tenant = tenant_create(name=tenant_name or username)
        membership_add(tenant=tenant, user=user, role=Role.ADMIN)
    return user


# --- tenants -------------------------------------------------------------------------------------


def tenant_create(
    *, name: str, slug: str | None = None, tier: str = Tier.STANDARD, active: bool = True, **overrides: Any
) -> Tenant:
    """A new tenant; the running proxies learn of it within a second (config version).

    `overrides` are rate-limit settings of TENANT_OVERRIDE_FIELDS and fraud thresholds of
    TENANT_FRAUD_FIELDS. Raises DomainError for an unknown field or thresholds that are not in
    0..1 or put review above decline (`fraud_thresholds_check`), Conflict (409) when the slug is
    taken.
    """
    unknown = set(overrides) - {*TENANT_OVERRIDE_FIELDS, *TENANT_FRAUD_FIELDS}
    if unknown:
        raise DomainError(f"Unknown tenant fields: {', '.join(sorted(unknown))}.")
    fraud_thresholds_check(
        review=overrides.get("fraud_review_threshold"), decline=overrides.get("fraud_decline_threshold")
    )
    slug = slug or _unique_slug(name)
    if Tenant.objects.filter(slug=slug).exists():
        raise Conflict("A tenant with this slug exists.", details={"slug": ["A tenant with this slug exists."]})
    tenant = Tenant.objects.create(name=name, slug=slug, tier=tier, active=active, **overrides)
    # The proxies hold tenants (tier, overrides, active) in memory, like routes.
    transaction.on_commit(config_version_bump)
    return tenant


def tenant_update(*, tenant: Tenant, **changes: Any) -> Tenant:
    """Changes a tenant's name, slug, tier, active flag, rate-limit overrides or fraud thresholds
    (None: back to the setting). Every running proxy and scorer applies the change within a
    second: the config version moves once the transaction commits (SPEC 2.2).

    Raises DomainError for an unknown field or fraud thresholds that are not in 0..1 or put
    review above decline once applied (`fraud_thresholds_check`), Conflict (409) when the new
    slug is taken.
    """
    allowed = {"name", "slug", "tier", "active", *TENANT_OVERRIDE_FIELDS, *TENANT_FRAUD_FIELDS}
    unknown = set(changes) - allowed
    if unknown:
        raise DomainError(f"Unknown tenant fields: {', '.join(sorted(unknown))}.")
    fraud_thresholds_check(
        review=changes.get("fraud_review_threshold", tenant.fraud_review_threshold),
        decline=changes.get("fraud_decline_threshold", tenant.fraud_decline_threshold),
    )
    if "slug" in changes and Tenant.objects.filter(slug=changes["slug"]).exclude(pk=tenant.pk).exists():
        raise Conflict("A tenant with this slug exists.", details={"slug": ["A tenant with this slug exists."]})
    for field, value in changes.items():
        setattr(tenant, field, value)
    tenant.save()
    transaction.on_commit(config_version_bump)
    return tenant


def fraud_thresholds_check(*, review: float | None, decline: float | None) -> None:
    """Refuses (DomainError, 400, naming the field) a threshold outside 0..1 (NaN included), and a
    review threshold above the decline one, each null one taken at its setting (SENTINEL_FRAUD
    REVIEW_THRESHOLD, DECLINE_THRESHOLD): `fraud.engine.transaction.decide` checks decline first,
    so review > decline would make review unreachable between them."""
    for field, value in (("fraud_review_threshold", review), ("fraud_decline_threshold", decline)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise DomainError("A fraud threshold is a score from 0 to 1.", details={field: ["Must be from 0 to 1."]})
    conf = sentinel_settings.fraud
    effective_review = conf.REVIEW_THRESHOLD if review is None else review
    effective_decline = conf.DECLINE_THRESHOLD if decline is None else decline
    if effective_review > effective_decline:
        message = f"Must not exceed the decline threshold ({effective_decline:g})."
        raise DomainError(
            "The review threshold must not exceed the decline threshold.",
            details={"fraud_review_threshold": [message]},
        )


def tenant_set_active(*, tenant: Tenant, active: bool) -> Tenant:
    """`tenant_update` of the active flag: an inactive tenant's logins, tokens and keys stop."""
    return tenant_update(tenant=tenant, active=active)


@transaction.atomic
def tenant_delete(*, tenant: Tenant) -> None:
    """Deletes a tenant and all it owns (memberships, keys, routes, rules, channels, events); its
    users stay, without a tenant. The proxies drop its routes, keys and limits within a second of
    the commit.

    Raises Conflict (409) when the tenant has fraud transactions: the ledger is append-only
    (`fraud.models.Transaction.tenant` is PROTECT), so such a tenant is deactivated instead."""
    try:
        with transaction.atomic():
            tenant.delete()
    except ProtectedError:
        message = "This tenant has fraud transactions, which are kept (append-only): deactivate it instead."
        raise Conflict(message) from None
    transaction.on_commit(config_version_bump)


# --- memberships ---------------------------------------------------------------------------------

LAST_ADMIN = "A tenant keeps at least one admin: make another member admin first."


def _keep_an_admin(membership: Membership) -> None:
    """Raises Conflict (`last_admin`) if `membership` is its tenant's last admin, which the caller
    is about to demote, move or remove."""
    if membership.role != Role.ADMIN:
        return
    # Locks the tenant's admin rows: two admins demoting each other at once must not leave the
    # tenant with none (the second waits for the first and then sees one admin left).
    admins = Membership.objects.select_for_update().filter(tenant_id=membership.tenant_id, role=Role.ADMIN)
    if not any(admin.pk != membership.pk for admin in admins):
        raise Conflict(LAST_ADMIN, details={"role": [LAST_ADMIN]}, code="last_admin")


def _check_role(role: str) -> None:
    if role not in Role.values:
        message = f"One of: {', '.join(Role.values)}."
        raise DomainError(f"Unknown role {role!r}.", details={"role": [message]}, code="validation_error")


@transaction.atomic
def membership_add(*, tenant: Tenant, user: User, role: str = Role.MEMBER) -> Membership:
    """Puts a user in a tenant with a role. Raises Conflict (409) if the user already belongs to
    a tenant (one each, so "the caller's tenant" is never ambiguous), DomainError for a bad role."""
    _check_role(role)
    taken = f"{user.username} already belongs to a tenant."
    if Membership.objects.select_for_update().filter(user=user).exists():
        raise Conflict(taken, details={"user": [taken]})
    try:
        with transaction.atomic():
            return Membership.objects.create(user=user, tenant=tenant, role=role)
    except IntegrityError:  # a concurrent add for the same user won the one-to-one
        raise Conflict(taken, details={"user": [taken]}) from None


@transaction.atomic
def membership_update(*, membership: Membership, role: str | None = None, tenant: Tenant | None = None) -> Membership:
    """Changes a member's role, or moves them to another tenant (with the role given, or theirs).

    Raises Conflict (409, code `last_admin`) when the member is their tenant's last admin and
    would stop being its admin (demoted or moved away); DomainError for an unknown role.
    """
    stored = Membership.objects.select_for_update().select_related("user", "tenant").get(pk=membership.pk)
    new_role = stored.role if role is None else role
    new_tenant = stored.tenant if tenant is None else tenant
    _check_role(new_role)
    if new_tenant.pk != stored.tenant_id or new_role != Role.ADMIN:
        _keep_an_admin(stored)
    stored.role, stored.tenant = new_role, new_tenant
    stored.save(update_fields=["role", "tenant"])
    return stored


def membership_set_role(*, membership: Membership, role: str) -> Membership:
    """`membership_update` of the role alone (same errors)."""
    return membership_update(membership=membership, role=role)


@transaction.atomic
def membership_remove(*, membership: Membership) -> None:
    """Takes a user out of their tenant (the user stays). Raises Conflict (409, `last_admin`) for
    the tenant's last admin; removing a membership that is gone already is not an error."""
    stored = Membership.objects.select_for_update().filter(pk=membership.pk).first()
    if stored is None:
        return
    _keep_an_admin(stored)
    stored.delete()


# --- users ---------------------------------------------------------------------------------------

USER_FIELDS = ("username", "email", "first_name", "last_name", "is_staff", "is_superuser")


def user_create(
    *, username: str, email: str = "", password: str | None = None, is_staff: bool = False, is_superuser: bool = False
) -> User:
    """A user with the password hashed (BCryptSHA256 first, SPEC 1); None sets an unusable one.

    Raises DomainError (`validation_error`) when the username or e-mail is taken, in any case.
    """
    if User.objects.filter(username__iexact=username).exists():
        raise _taken("username", "This username is taken.")
    if email and User.objects.filter(email__iexact=email).exists():
        raise _taken("email", "This e-mail is already registered.")
    try:
        with transaction.atomic():
            return User.objects.create_user(
                username=username, email=email, password=password, is_staff=is_staff, is_superuser=is_superuser
            )
    except IntegrityError:  # lost a race with an identical creation
        raise _taken("username", "This username or e-mail is taken.") from None


def user_update(*, user: User, **changes: Any) -> User:
    """Changes a user's names, e-mail and staff flags (USER_FIELDS). `is_active` goes through
    `user_deactivate`/`user_activate`, the password through `User.set_password` (Django's forms).

    Raises DomainError for another field, or when the username or e-mail is taken.
    """
    unknown = set(changes) - set(USER_FIELDS)
    if unknown:
        raise DomainError(f"Unknown user fields: {', '.join(sorted(unknown))}.")
    username = changes.get("username")
    if username and User.objects.filter(username__iexact=username).exclude(pk=user.pk).exists():
        raise _taken("username", "This username is taken.")
    email = changes.get("email")
    if email and User.objects.filter(email__iexact=email).exclude(pk=user.pk).exists():
        raise _taken("email", "This e-mail is already registered.")
    for field, value in changes.items():
        setattr(user, field, value)
    if changes:
        user.save(update_fields=list(changes))
    return user


@transaction.atomic
def user_deactivate(*, user: User, by: User | None = None) -> User:
    """Stops a user at once; idempotent.

    Guarantees: `is_active` is off, so password logins fail and the REST API refuses any token
    they hold (its JWT authentication loads the user); every outstanding refresh token of theirs
    is blacklisted, so no new access token can be minted; every session of theirs is deleted, so an
    open admin page is logged out; the config version moves after the commit, so the running
    proxies refuse their unexpired access tokens within a second. Left as is: their tenant's API
    keys (they belong to the tenant, not to the person).

    Raises Conflict (409, `self_deactivation`) when `by` is the user: no one locks themself out.
    """
    if by is not None and by.pk == user.pk:
        raise Conflict("You cannot deactivate yourself.", code="self_deactivation")
    User.objects.filter(pk=user.pk).update(is_active=False)
    user.is_active = False
    live = OutstandingToken.objects.filter(user=user, blacklistedtoken__isnull=True)
    BlacklistedToken.objects.bulk_create([BlacklistedToken(token=token) for token in live], ignore_conflicts=True)
    _sessions_delete(user)
    transaction.on_commit(config_version_bump)
    return user


def user_activate(*, user: User) -> User:
    """Lets a deactivated user log in again (refresh tokens blacklisted meanwhile stay dead); the
    proxies accept their tokens again once the config version moves."""
    User.objects.filter(pk=user.pk).update(is_active=True)
    user.is_active = True
    transaction.on_commit(config_version_bump)
    return user


def _sessions_delete(user: User) -> int:
    """Deletes the live database sessions logged in as `user` (Django's default SESSION_ENGINE).
    Session data is signed and encoded, so each live session is decoded: an admin's occasional
    action, not a hot path."""
    mine = [
        session.pk
        for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator()
        if str(session.get_decoded().get("_auth_user_id")) == str(user.pk)
    ]
    return Session.objects.filter(pk__in=mine).delete()[0] if mine else 0


@transaction.atomic
def user_delete(*, user: User, by: User | None = None) -> None:
    """Deletes a user; their membership goes with them, keys they created stay (unattributed).

    Raises Conflict (409, `last_admin`) when they are their tenant's last admin, and Conflict
    (`self_deletion`) when `by` is the user.
    """
    if by is not None and by.pk == user.pk:
        raise Conflict("You cannot delete yourself.", code="self_deletion")
    membership = Membership.objects.select_for_update().filter(user=user).first()
    if membership is not None:
        _keep_an_admin(membership)
    user.delete()


# --- API keys ------------------------------------------------------------------------------------


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


def api_key_update(*, api_key: ApiKey, **changes: Any) -> ApiKey:
    """Renames a key or changes its expiry (None: never). Scopes and the secret never change: make
    a new key for that. The proxies drop their cached copy within a second.

    Raises DomainError for another field, or for a new expiry in the past.
    """
    unknown = set(changes) - {"name", "expires_at"}
    if unknown:
        raise DomainError(f"Unknown API key fields: {', '.join(sorted(unknown))}.")
    expires_at = changes.get("expires_at")
    if expires_at is not None and expires_at != api_key.expires_at and expires_at <= timezone.now():
        raise DomainError("expires_at is in the past.", details={"expires_at": ["Must be in the future."]})
    for field, value in changes.items():
        setattr(api_key, field, value)
    if changes:
        api_key.save(update_fields=list(changes))
        transaction.on_commit(config_version_bump)
    return api_key


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    """Revokes the key for good. Idempotent: revoking twice keeps the first revocation time.

    The proxies cache a resolved key for a few seconds; the config version moves on commit, so
    they forget it within a second (the refresh of SPEC 2.2) rather than at the cache's expiry.
    """
    ApiKey.objects.filter(pk=api_key.pk, revoked=False).update(revoked=True, revoked_at=timezone.now())
    api_key.refresh_from_db(fields=["revoked", "revoked_at"])
    transaction.on_commit(config_version_bump)
    return api_key


@transaction.atomic
def api_key_delete(*, api_key: ApiKey) -> None:
    """Deletes a key's row (the admin's clean-up; the API revokes instead, keeping the row for the
    audit trail). The proxies forget the key within a second. Raises nothing of its own."""
    api_key.delete()
    transaction.on_commit(config_version_bump)


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    """The usable key this secret belongs to, or None. Records the use, at most once a minute."""
    if not raw_key.startswith(API_KEY_PREFIX_MARK) or len(raw_key) > 200:
        return None
    key = ApiKey.objects.usable().select_related("tenant").filter(key_hash=hash_api_key(raw_key)).first()
    if key is None:
        return None
    now = timezone.now()
    touch_after = sentinel_settings.accounts.API_KEY_TOUCH_SECONDS
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() >= touch_after:
        # A conditional UPDATE: a burst of requests on one key writes one row, not one per request.
        stale = Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - timedelta(seconds=touch_after))
        ApiKey.objects.filter(stale, pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def login_failure_log(*, username: str, ip: str, reason: str, door: str, at: datetime | None = None) -> LoginFailure:
    """Keeps one failed login (`LoginFailureReason`: a wrong password, or an attempt the limiter
    refused) for the insight engine's brute-force detector. `ip` that is not an address (the
    admin's "unknown") is stored as null; the username is folded like the limiter's keys, cut to
    150 characters, NUL removed and lone surrogates replaced (PostgreSQL's text refuses both)."""
    try:
        address: str | None = str(ipaddress.ip_address(ip))
    except ValueError:
        address = None
    # Lone surrogates ("\ud800" from JSON) cannot be encoded for the database: replaced by "?".
    name = username.strip().lower().replace("\x00", "").encode("utf-8", "replace").decode("utf-8")[:150]
    return LoginFailure.objects.create(
        time=at or timezone.now(), username=name, client_ip=address, reason=reason, door=door
    )


def login_failures_purge(*, before: datetime) -> int:
    """Deletes failed logins older than `before` (the retention bound); returns how many."""
    deleted, _ = LoginFailure.objects.filter(time__lt=before).delete()
    return deleted
