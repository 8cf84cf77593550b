"""Who sees what on the dashboard, and where each view is published and kept.

Tenant views: the producer computes one snapshot per scope (the fleet, and each tenant that has a
viewer), rather than sending the fleet's figures to every socket for the consumer to filter; so a
tenant's socket is only ever in its own tenant's group and never receives another's figures.
A viewer (a socket, or a `GET /stats/dashboard`) marks its view as watched for
`VIEWER_TTL_SECONDS` (`viewer_mark`); the producer computes the watched views each second, the
fleet's included, and nothing when nobody watches (its queries cost a busy web process ~5 % of
its CPU and stalled its requests once a second, bench/fraud).
"""

from __future__ import annotations

import functools
from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache

from accounts.models import Tenant, User
from core.tiles import DashboardScope
from observability.dashboard.fleet import Fleet, MemoryFleet, RedisFleet

FLEET_GROUP = "observability.snapshot"
# Kept a few seconds past the producer's period, so a reader between two ticks always finds one
# and a dead producer's last snapshot is not served for long.
SNAPSHOT_TTL_SECONDS = 5
VIEWER_TTL_SECONDS = 30


# The fleet's view in the viewers' set (a tenant is marked by its uuid and slug).
_FLEET_MARK = ("", "")


def viewer_mark(fleet: Fleet, scope: DashboardScope) -> None:
    """Marks `scope` as watched for VIEWER_TTL_SECONDS. Raises what the fleet store raises
    (`redis.RedisError`, OSError)."""
    uuid, slug = _FLEET_MARK if scope.fleet else (str(scope.tenant_uuid), str(scope.tenant_slug))
    fleet.viewer_touch(uuid, slug, ttl=VIEWER_TTL_SECONDS)


def watched_scopes(fleet: Fleet) -> list[DashboardScope]:
    """The views someone watched in the last VIEWER_TTL_SECONDS, the fleet's first."""
    viewers = fleet.viewers()
    fleet_watched = [DashboardScope()] if _FLEET_MARK in viewers else []
    return fleet_watched + [DashboardScope(uuid, slug) for uuid, slug in viewers if (uuid, slug) != _FLEET_MARK]


class ScopeDenied(Exception):
    """The caller may not see the scope asked for (no tenant, or another tenant's slug)."""


class ScopeNotFound(Exception):
    """`?tenant=<slug>` names no tenant."""


def scope_for(user: User, *, tenant_slug: str | None = None) -> DashboardScope:
    """The view `user` gets: staff the fleet, or the tenant they pick by slug; anyone else their
    own tenant (asking for another tenant's slug is refused, asking for one's own is allowed).
    Raises `ScopeDenied` or `ScopeNotFound`."""
    if user.is_staff:
        if not tenant_slug:
            return DashboardScope()
        tenant = Tenant.objects.filter(slug=tenant_slug).values_list("uuid", "slug").first()
        if tenant is None:
            raise ScopeNotFound(f"No tenant has the slug {tenant_slug!r}.")
        return DashboardScope(str(tenant[0]), tenant[1])
    membership = getattr(user, "membership", None)
    if membership is None:
        raise ScopeDenied("You do not belong to a tenant.")
    if tenant_slug and tenant_slug != membership.tenant.slug:
        raise ScopeDenied("You may only see your own tenant's dashboard.")
    return DashboardScope(str(membership.tenant.uuid), membership.tenant.slug)


def tenant_choices() -> list[tuple[str, str]]:
    """(slug, name) of every tenant, by name: the staff's tenant picker."""
    return list(Tenant.objects.order_by("name").values_list("slug", "name"))


def group_of(scope: DashboardScope) -> str:
    """The Channels group a scope's snapshots go to: `observability.snapshot` for the fleet,
    `observability.snapshot.<tenant uuid>` for a tenant."""
    return FLEET_GROUP if scope.fleet else f"{FLEET_GROUP}.{scope.tenant_uuid}"


def _cache_key(scope: DashboardScope) -> str:
    return f"observability:dashboard:snapshot:{scope.tenant_uuid or 'fleet'}"


def snapshot_keep(scope: DashboardScope, snapshot: dict[str, Any]) -> None:
    cache.set(_cache_key(scope), snapshot, SNAPSHOT_TTL_SECONDS)


def snapshot_kept(scope: DashboardScope) -> dict[str, Any] | None:
    """The scope's latest snapshot, or None when none was produced in the last few seconds."""
    kept: dict[str, Any] | None = cache.get(_cache_key(scope))
    return kept


@functools.cache
def fleet_store() -> Fleet:
    """This process's way to the fleet's buckets and viewers: Redis with REDIS_URL, else memory."""
    if settings.REDIS_URL:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        return RedisFleet(client, settings.CACHE_KEY_PREFIX)
    return MemoryFleet()
