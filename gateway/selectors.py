"""Reads of the gateway domain."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from accounts.models import ApiKey, Tenant, User
from gateway.engine.auth import KeyInfo, TenantInfo
from gateway.engine.routes import RouteSpec
from gateway.models import Route, RouteTarget, Upstream


def route_list() -> QuerySet[Route]:
    """Every route, with its tenant and its targets loaded (`route.targets`, the URLs in
    round-robin order, costs no further query)."""
    targets = Prefetch("route_targets", queryset=RouteTarget.objects.select_related("upstream").order_by("position"))
    return Route.objects.select_related("tenant").prefetch_related(targets)


def upstream_list() -> QuerySet[Upstream]:
    """Every upstream (a target URL some route named), with the routes that forward to it loaded."""
    return Upstream.objects.prefetch_related("routes")


def route_specs() -> list[RouteSpec]:
    """Every active route as the proxy's engine takes it, in two queries."""
    specs = []
    for route in route_list().filter(active=True):
        specs.append(
            RouteSpec(
                id=route.pk,
                name=route.name,
                path_prefix=route.path_prefix,
                targets=tuple(route.targets),
                tenant_uuid=str(route.tenant.uuid) if route.tenant else None,
                methods=frozenset(route.methods or ()),
                auth_mode=route.auth_mode,
                strip_prefix=route.strip_prefix,
                timeout_ms=route.timeout_ms,
                burst_capacity=route.burst_capacity,
                refill_rate=route.refill_rate,
                window_ms=route.window_ms,
                base_rate_limit=route.base_rate_limit,
                max_body_bytes=route.max_body_bytes,
                allow_tenant_header=route.allow_tenant_header,
            )
        )
    return specs


def tenant_infos() -> list[TenantInfo]:
    """Every tenant as the proxy's tenant directory takes it (inactive ones too: they get 403)."""
    return [
        TenantInfo(
            uuid=str(tenant.uuid),
            slug=tenant.slug,
            tier=tenant.tier,
            active=tenant.active,
            overrides=tenant.rate_limit_overrides(),
        )
        for tenant in Tenant.objects.all()
    ]


def inactive_user_ids() -> list[str]:
    """Ids (as text, like the JWT's `user_id` claim) of deactivated users, whose unexpired access
    tokens the proxy refuses."""
    return [str(pk) for pk in User.objects.filter(is_active=False).values_list("pk", flat=True)]


def api_key_info(*, key_hash: str) -> KeyInfo | None:
    """The usable key (`ApiKey.objects.usable()`) with this SHA-256 hex digest, as the proxy's
    resolver takes it (and caches); None when there is none."""
    row = ApiKey.objects.usable().filter(key_hash=key_hash).values("prefix", "tenant__uuid", "scopes").first()
    if row is None:
        return None
    return KeyInfo(prefix=row["prefix"], tenant_uuid=str(row["tenant__uuid"]), scopes=frozenset(row["scopes"]))
