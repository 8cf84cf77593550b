"""Per-tenant admission of `POST /transaction`: the gateway's burst bucket and tier shedding.

The fraud endpoint answers ahead of the proxy (`fraud.engine.endpoint`), so the proxy's admission
(SPEC 2 steps 4, 6 and 7) never saw it: one tenant could flood the brain and the ledger and starve
the others. This module applies the same pieces, from the gateway engine, to each transaction
once its tenant is known and before anything is read, scored or recorded:

1. **Burst bucket** per tenant in this process (`gateway.engine.ratelimit.LocalTokenBuckets`),
   sized by `FRAUD_BURST_CAPACITY` and `FRAUD_REFILL_RATE` (tokens/s) scaled by the tenant's tier
   with the proxy's factors (`gateway.engine.proxy.TIER_FACTORS`: vital x2, economy x0.5). Empty
   → 429 `rate_limited` with `Retry-After` and the RateLimit headers the proxy sends
   (`core.ratelimit_headers`, policy "burst").
2. **Shedding by tier** at the pressure the proxy sheds on (its `TierAdmission`, the same object,
   so the hysteresis is shared; `GATEWAY_FORCED_PRESSURE` forces it): vital is never shed,
   economy first → 503 `shed` with `Retry-After`.

A refused transaction is neither scored nor recorded: the client retries it (a replay is counted
like any request, as the proxy counts retries). No distributed (Redis) window here, by choice:
one more Redis round trip per transaction costs the web process 14-31 µs of CPU when pipelined
with others, 42-102 µs alone, against 3-5 µs for this whole check (`python -m
bench.fraud.admission_cost`; `docs/fraud.md`, "Admission"): up to a tenth of the ~1 ms per
transaction the endpoint is being cut to, for a fleet-wide bound where a per-process one suffices. This module
therefore never touches Redis and cannot fail with it.

Plain Python, no Django: `fraud.runtime` builds it from SENTINEL_FRAUD and the proxy's parts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from core.errors import error_json
from core.ratelimit_headers import Header, service_unavailable_headers, too_many_requests_headers
from gateway.engine.auth import TenantInfo
from gateway.engine.pressure import TierAdmission
from gateway.engine.proxy import TIER_FACTORS
from gateway.engine.ratelimit import LocalTokenBuckets, bucket_limit

__all__ = ["REASONS", "Admission", "AdmitAll", "FraudLimits", "Refused", "TenantAdmission"]

# Why a transaction was refused: the metric's `reason` label, the proxy's RequestRecord.reason words.
REASONS: Final = ("burst", "shed")

# What `TenantAdmission.check` answers on a refusal: (status, JSON body, headers), the shape of
# `TransactionEndpoint.handle`'s answer, so the endpoint returns it as it is.
Refused = tuple[int, bytes, list[Header]]
# (reason, tier): called once per refusal (the metric).
RefusalHook = Callable[[str, str], None]


@dataclass(frozen=True)
class FraudLimits:
    """SENTINEL_FRAUD's burst bucket of a standard tenant: `burst_capacity` transactions,
    refilled at `refill_rate` per second (other tiers: scaled by `TIER_FACTORS`)."""

    burst_capacity: int
    refill_rate: float

    def for_tier(self, tier: str) -> tuple[int, float]:
        """(capacity, refill per second) of `tier`; an unknown tier is treated as standard."""
        factor = TIER_FACTORS.get(tier, 1.0)
        return max(1, int(self.burst_capacity * factor)), self.refill_rate * factor


def _ignore(reason: str, tier: str) -> None:
    return None


class TenantAdmission:
    """Admits a tenant's transaction or answers why not (the module docstring has the steps).

    `tiers` is the proxy's `TierAdmission` and `pressure` its pressure (`Proxy.pressure`), so a
    transaction is shed exactly when a proxied request of the same tier would be.
    """

    def __init__(
        self,
        limits: FraudLimits,
        *,
        tiers: TierAdmission,
        pressure: Callable[[], float],
        on_refusal: RefusalHook = _ignore,
    ) -> None:
        self.limits = limits
        self.tiers = tiers
        self.pressure = pressure
        self.on_refusal = on_refusal
        self.buckets = LocalTokenBuckets()
        # Per tier once, not per request: the factors and the settings are fixed for the process.
        self._sizes = {tier: limits.for_tier(tier) for tier in TIER_FACTORS}

    def check(self, tenant: TenantInfo) -> Refused | None:
        """None when `tenant` may send this transaction now; else the 429 or 503 to answer."""
        capacity, refill = self._sizes.get(tenant.tier) or self.limits.for_tier(tenant.tier)
        # The bucket first, as the proxy does: a tenant over its rate is told so (429, its own
        # doing) even when it would also be shed.
        bucket = self.buckets.take(tenant.uuid, capacity, refill)
        if not bucket.allowed:
            self.on_refusal("burst", tenant.tier)
            headers = too_many_requests_headers(
                bucket_limit(bucket, capacity, refill), retry_after_s=bucket.retry_after_s
            )
            return 429, error_json("rate_limited", "Too many transactions (burst)."), headers
        if not self.tiers.admit(tenant.tier, self.pressure()):
            self.on_refusal("shed", tenant.tier)
            headers = service_unavailable_headers(retry_after_s=self.tiers.retry_after_s())
            return 503, error_json("shed", f"Shedding {tenant.tier} traffic under load."), headers
        return None


class Admission(Protocol):
    """What the endpoint asks (`TenantAdmission`, or `AdmitAll` when none is wired in)."""

    def check(self, tenant: TenantInfo) -> Refused | None: ...


class AdmitAll:
    """Admits every transaction: the endpoint's default, for callers that build it bare."""

    def check(self, tenant: TenantInfo) -> Refused | None:
        return None
