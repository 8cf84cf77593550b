"""Users, tenants with tiers, memberships and API keys (SPEC 1)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from django.contrib.auth.models import AbstractUser
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone


class User(AbstractUser):
    """Sentinel's user. Custom from the first migration so it can grow without a painful swap."""

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        constraints = [
            # `Alice` and `alice` are the same person to a human reading the admin.
            models.UniqueConstraint(Lower("username"), name="accounts_user_username_ci_unique"),
            models.UniqueConstraint(
                Lower("email"), condition=~models.Q(email=""), name="accounts_user_email_ci_unique"
            ),
        ]

    @property
    def tenant(self) -> Tenant | None:
        membership = getattr(self, "membership", None)
        return membership.tenant if membership else None


class Tier(models.TextChoices):
    VITAL = "vital", "Vital (never shed)"
    STANDARD = "standard", "Standard"
    ECONOMY = "economy", "Economy (shed first)"


class TenantQuerySet(models.QuerySet["Tenant"]):
    def active(self) -> TenantQuerySet:
        return self.filter(active=True)

    def by_reference(self, reference: str | int) -> TenantQuerySet:
        """A tenant named by id, uuid or slug, as clients may name it."""
        text = str(reference).strip()
        if text.isdigit():
            return self.filter(pk=int(text))
        try:
            return self.filter(uuid=uuid.UUID(text))
        except ValueError:
            return self.filter(slug=text)


class RateLimitOverrides(models.Model):
    """The gateway's rate-limit settings that a tenant, or one route, may override: each field null
    means "use the next level" (route, then tenant, then the setting named in its help text)."""

    burst_capacity = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="Local bucket size (BURST_CAPACITY)."
    )
    refill_rate = models.FloatField(
        "refill rate (tokens/s)",
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0)],
        help_text="Tokens per second (REFILL_RATE).",
    )
    window_ms = models.PositiveIntegerField(
        "window (ms)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Distributed window (WINDOW_MS).",
    )
    base_rate_limit = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)], help_text="Requests per window (BASE_RATE_LIMIT)."
    )

    class Meta:
        abstract = True

    def rate_limit_overrides(self) -> dict[str, Any]:
        """The overrides that are set, keyed by the name of the setting they replace."""
        fields = {
            "BURST_CAPACITY": self.burst_capacity,
            "REFILL_RATE": self.refill_rate,
            "WINDOW_MS": self.window_ms,
            "BASE_RATE_LIMIT": self.base_rate_limit,
        }
        return {name: value for name, value in fields.items() if value is not None}


class Tenant(RateLimitOverrides):
    """A customer of the platform. Its tier decides who is shed first; nullable fields override
    the gateway's rate-limit settings for this tenant alone (null: use the setting)."""

    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=64, unique=True)
    uuid = models.UUIDField("UUID", default=uuid.uuid4, unique=True, editable=False)
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.STANDARD, db_index=True)
    active = models.BooleanField(default=True, help_text="Inactive tenants cannot log in or use their keys.")
    # SPEC 6: a fraud score (0..1) at or above a threshold gives that decision; null means the
    # setting (FRAUD_REVIEW_THRESHOLD, FRAUD_DECLINE_THRESHOLD). Review must not exceed decline.
    fraud_review_threshold = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Fraud score from which a transaction is sent to review (FRAUD_REVIEW_THRESHOLD).",
    )
    fraud_decline_threshold = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Fraud score from which a transaction is declined (FRAUD_DECLINE_THRESHOLD).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        verbose_name = "tenant"
        verbose_name_plural = "tenants"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"


class Membership(models.Model):
    """A user's place in a tenant. One tenant per user, so "the caller's tenant" is never ambiguous."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="membership")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "membership"
        verbose_name_plural = "memberships"
        ordering = ["tenant__name", "user__username"]
        indexes = [models.Index(fields=["tenant", "role"])]

    def __str__(self) -> str:
        return f"{self.user.username} @ {self.tenant.slug} ({self.role})"


class Scope(models.TextChoices):
    """What an API key may do. Keys never manage keys, members or tenants: that takes a person."""

    PROXY = "proxy", "Call APIs through the gateway"
    EVENTS_WRITE = "events:write", "Send events"
    TRANSACTIONS_WRITE = "transactions:write", "Score transactions"
    API_READ = "api:read", "Read configuration through the REST API"
    API_WRITE = "api:write", "Change configuration through the REST API"


# A new key is a data-plane key unless asked otherwise: it can call, send and score, but it
# cannot read or change the tenant's configuration.
DEFAULT_SCOPES = [Scope.PROXY.value, Scope.EVENTS_WRITE.value, Scope.TRANSACTIONS_WRITE.value]

API_KEY_PREFIX_MARK = "snl_"


def hash_api_key(raw_key: str) -> str:
    """SHA-256 of the whole key. Keys carry 256 random bits, so a slow hash would only slow the
    gateway down without making a stolen table any easier to reverse."""
    return hashlib.sha256(raw_key.encode("utf-8")).hexdigest()


def api_key_active_q(path: str = "") -> models.Q:
    """The condition "this key is active" (neither revoked nor expired), for keys reached through
    ``path`` (``"api_keys__"`` from a tenant; empty on ApiKey itself)."""
    return models.Q(**{f"{path}revoked": False}) & (
        models.Q(**{f"{path}expires_at__isnull": True}) | models.Q(**{f"{path}expires_at__gt": timezone.now()})
    )


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def active(self) -> ApiKeyQuerySet:
        """Keys whose own `status` is "active": neither revoked nor expired (their tenant may be
        inactive; the admin's status filter lists them)."""
        return self.filter(api_key_active_q())

    def usable(self) -> ApiKeyQuerySet:
        """Keys that authenticate now: active, of an active tenant (the API's authentication and the
        gateway's key lookup)."""
        return self.active().filter(tenant__active=True)


class ApiKey(models.Model):
    """A tenant's credential for machines. The secret is shown once; only its hash is kept."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=120)
    prefix = models.CharField(max_length=16, unique=True, help_text="Public part that identifies the key.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list)
    revoked = models.BooleanField(default=False, db_index=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(User, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def status(self) -> str:
        if self.revoked:
            return "revoked"
        if self.is_expired:
            return "expired"
        return "active"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class LoginFailureReason(models.TextChoices):
    BAD_CREDENTIALS = "bad_credentials", "wrong username or password"
    LOCKED_OUT = "locked_out", "refused: too many failures"


class LoginFailure(models.Model):
    """One failed login, kept in the database so every process sees it (the login limiter's
    window lives in the cache, which in embedded mode is one process's memory): the insight
    engine's brute-force detector counts these per client IP and per username.

    Attempts refused by the limiter count too (`locked_out`): a guesser who keeps trying while
    locked out is still guessing. Rows are purged after a retention (`login_failures_purge`).
    """

    time = models.DateTimeField(default=timezone.now)
    username = models.CharField(max_length=150, help_text="As the client sent it, folded to lower case.")
    client_ip = models.GenericIPAddressField("client IP", null=True, blank=True)
    reason = models.CharField(max_length=16, choices=LoginFailureReason.choices)
    door = models.CharField(max_length=8, help_text="Where the login was tried: api or admin.")

    class Meta:
        ordering = ["-time", "-id"]
        verbose_name = "failed login"
        verbose_name_plural = "failed logins"
        indexes = [
            # The brute-force detector's GROUP BYs over a recent window, and the purge.
            models.Index(fields=["time"], name="accounts_loginfail_time"),
            models.Index(fields=["client_ip", "time"], name="accounts_loginfail_ip_time"),
            models.Index(fields=["username", "time"], name="accounts_loginfail_user_time"),
        ]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.username} from {self.client_ip} ({self.reason})"
