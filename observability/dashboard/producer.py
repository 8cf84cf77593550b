"""One producer for the fleet: the process holding the lease computes the snapshots each second.

Election (production mode): a Redis key `<prefix>:dash:producer` holds the producer's name with a
`LEASE_SECONDS` expiry. Every tick each web process runs one Lua script that renews the lease if
it holds it, takes it if nobody does, and otherwise leaves it: one holder at a time, renewed once
a second, taken over by another process at most `LEASE_SECONDS` (+ one tick) after its holder
died without releasing it. A process stopping cleanly releases it (the next tick elsewhere takes
it). This is the single-instance lock of Redis' documentation (SET NX PX, check-and-delete by
value); a holder paused past its lease could publish one snapshot next to its successor, which
costs a viewer one duplicate frame, nothing more. Embedded mode: the one web process produces.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Protocol

import redis
from django.conf import settings

from accounts.models import Tenant
from core.prometheus import process_identifier
from core.tiles import DashboardScope
from observability.dashboard.fleet import Fleet, FleetWindow, RedisFleet
from observability.dashboard.scopes import group_of, snapshot_keep, watched_scopes
from observability.dashboard.snapshot import snapshot_build

logger = logging.getLogger("sentinel.observability")

LEASE_SECONDS = 3

# KEYS[1] the lease; ARGV[1] this process's name, ARGV[2] the lease in ms. 1 when this process
# holds the lease after the call (renewed or taken), else 0.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease(Protocol):
    name: str

    def hold(self) -> bool: ...

    def release(self) -> None: ...


class SoleLease:
    """Embedded mode: there is one web process, and it always produces."""

    name = "embedded"

    def hold(self) -> bool:
        return True

    def release(self) -> None:
        return None


class RedisLease:
    """The producer's lease in Redis (see the module). `hold()` raises `redis.RedisError` when
    Redis does not answer; the caller then produces nothing that tick."""

    def __init__(self, client: redis.Redis, prefix: str, *, seconds: float = LEASE_SECONDS) -> None:
        self.client = client
        self.key = f"{prefix}:dash:producer"
        # Unique even when a host reuses a pid: a restarted process must not inherit a lease.
        self.name = f"{process_identifier()}-{uuid.uuid4().hex[:8]}"
        self.ms = int(seconds * 1000)

    def hold(self) -> bool:
        return bool(self.client.eval(_HOLD, 1, self.key, self.name, self.ms))

    def release(self) -> None:
        self.client.eval(_RELEASE, 1, self.key, self.name)

    def holder(self) -> str | None:
        value = self.client.get(self.key)
        return value.decode() if isinstance(value, bytes) else None


def lease_for(fleet: Fleet) -> Lease:
    """The lease matching the fleet's store: in its Redis, or the embedded sole one."""
    if isinstance(fleet, RedisFleet):
        return RedisLease(fleet.client, settings.CACHE_KEY_PREFIX)
    return SoleLease()


def snapshots_produce(*, fleet: Fleet, now: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """One tick's snapshots, as `(group, snapshot)` pairs: one per watched view
    (`scopes.watched_scopes`: the fleet's if watched, each watched tenant's), none when nobody
    watches; each also kept in the cache for `GET /stats/dashboard`. Synchronous (ORM, Redis):
    call it from a worker thread."""
    scopes = watched_scopes(fleet)
    if not scopes:
        return []
    window = fleet.window(now if now is not None else int(time.time()))
    slugs = _tenant_slugs(window)
    produced = []
    for scope in scopes:
        snapshot = snapshot_build(scope=scope, window=window, tenant_slugs=slugs)
        snapshot_keep(scope, snapshot)
        produced.append((group_of(scope), snapshot))
    return produced


def snapshots_for(scope: DashboardScope, *, fleet: Fleet, now: int) -> dict[str, Any]:
    """One scope's snapshot computed now and kept (for a view no producer has computed yet)."""
    window = fleet.window(now)
    snapshot = snapshot_build(scope=scope, window=window, tenant_slugs=_tenant_slugs(window))
    snapshot_keep(scope, snapshot)
    return snapshot


def _tenant_slugs(window: FleetWindow) -> dict[str, str]:
    """Slugs of the tenants (by UUID) that sent requests in the window, in one query."""
    keys = {key for bucket in window.seconds.values() for key in bucket.tenants}
    uuids = [key for key in keys if _is_uuid(key)]
    if not uuids:
        return {}
    return {str(u): slug for u, slug in Tenant.objects.filter(uuid__in=uuids).values_list("uuid", "slug")}


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
