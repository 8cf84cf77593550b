"""Routes and the upstream targets they forward to (SPEC 2)."""

from __future__ import annotations

from django.core.validators import MinValueValidator
from django.db import models

from accounts.models import RateLimitOverrides, Tenant


class AuthMode(models.TextChoices):
    NONE = "none", "None (public)"
    JWT = "jwt", "JWT bearer token"
    API_KEY = "api_key", "API key"
    JWT_OR_API_KEY = "jwt_or_api_key", "JWT or API key"


class Upstream(models.Model):
    """One target URL. Its circuit breaker is keyed by the URL and shared by every route using it."""

    url = models.URLField("URL", max_length=500, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["url"]

    def __str__(self) -> str:
        return self.url


# A route's own editable fields (besides its tenant and targets): the API, the admin form and the
# services all take their field lists from here.
ROUTE_FIELDS = (
    "name",
    "path_prefix",
    "methods",
    "auth_mode",
    "strip_prefix",
    "timeout_ms",
    "burst_capacity",
    "refill_rate",
    "window_ms",
    "base_rate_limit",
    "max_body_bytes",
    "allow_tenant_header",
    "active",
)


class RouteQuerySet(models.QuerySet["Route"]):
    def active(self) -> RouteQuerySet:
        return self.filter(active=True)


class Route(RateLimitOverrides):
    """A path prefix the proxy serves, and how: auth, limits, body size, targets.

    `tenant` empty: a platform route, managed by staff. Otherwise the tenant's own route, managed
    by its admins. Nullable limit fields override the settings for this route (null: the tenant's
    override, then the setting).
    """

    tenant = models.ForeignKey(Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="routes")
    name = models.CharField(max_length=120)
    path_prefix = models.CharField(max_length=200, unique=True)
    upstreams = models.ManyToManyField(Upstream, through="RouteTarget", related_name="routes")
    methods = models.JSONField(default=list, blank=True, help_text="Allowed HTTP methods; empty allows all.")
    auth_mode = models.CharField(max_length=16, choices=AuthMode.choices, default=AuthMode.JWT_OR_API_KEY)
    strip_prefix = models.BooleanField(default=True, help_text="Forward the path without the prefix.")
    # The limit fields are RateLimitOverrides (shared with accounts.Tenant); units in the labels.
    timeout_ms = models.PositiveIntegerField(
        "timeout (ms)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="No upstream response headers within it: 504 (REQUEST_TIMEOUT_MS).",
    )
    max_body_bytes = models.PositiveBigIntegerField(
        "max body size (bytes)",
        default=10 * 1024 * 1024,
        validators=[MinValueValidator(0)],
        help_text="Larger request bodies get 413.",
    )
    allow_tenant_header = models.BooleanField(
        default=False, help_text="Let unauthenticated callers name their tenant in TENANT_HEADER."
    )
    active = models.BooleanField(default=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RouteQuerySet.as_manager()

    class Meta:
        ordering = ["path_prefix"]

    def __str__(self) -> str:
        return f"{self.name} ({self.path_prefix})"

    @property
    def targets(self) -> list[str]:
        return [target.upstream.url for target in self.targets_in_order()]

    def targets_in_order(self) -> list[RouteTarget]:
        return sorted(self.route_targets.all(), key=lambda target: target.position)


class RouteTarget(models.Model):
    """A route's upstream, in round-robin order."""

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="route_targets")
    upstream = models.ForeignKey(Upstream, on_delete=models.PROTECT, related_name="route_targets")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["route", "position"]
        constraints = [models.UniqueConstraint(fields=["route", "upstream"], name="gateway_route_target_unique")]

    def __str__(self) -> str:
        return f"{self.route.path_prefix} → {self.upstream.url}"
