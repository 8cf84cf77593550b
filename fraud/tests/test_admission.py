"""`fraud.engine.admission` in-process: the burst bucket per tenant, its tier scaling, the headers
of its 429, and shedding by tier at the proxy's thresholds. The end-to-end behaviour (nothing
scored or recorded, the metric, the access line) is in test_admission_e2e.py."""

from __future__ import annotations

import json

from fraud.engine.admission import FraudLimits, TenantAdmission
from gateway.engine.auth import TenantInfo
from gateway.engine.pressure import TierAdmission

STANDARD = TenantInfo(uuid="u-standard", slug="standard", tier="standard")
OTHER = TenantInfo(uuid="u-other", slug="other", tier="standard")
VITAL = TenantInfo(uuid="u-vital", slug="vital", tier="vital")
ECONOMY = TenantInfo(uuid="u-economy", slug="economy", tier="economy")


def admission(
    capacity: int = 4, refill: float = 1.0, pressure: float = 0.0, refusals: list[tuple[str, str]] | None = None
) -> TenantAdmission:
    seen = refusals if refusals is not None else []
    return TenantAdmission(
        FraudLimits(capacity, refill),
        tiers=TierAdmission(standard_at=90, economy_at=70),
        pressure=lambda: pressure,
        on_refusal=lambda reason, tier: seen.append((reason, tier)),
    )


def admitted(gate: TenantAdmission, tenant: TenantInfo, times: int) -> int:
    return sum(gate.check(tenant) is None for _ in range(times))


def test_a_tenant_over_its_burst_gets_a_429_with_retry_after_and_ratelimit_headers() -> None:
    refusals: list[tuple[str, str]] = []
    gate = admission(capacity=4, refill=1.0, refusals=refusals)
    # Given a standard tenant that used its burst of 4
    assert admitted(gate, STANDARD, 4) == 4
    # When it sends one more
    refused = gate.check(STANDARD)
    # Then it is a 429 in SPEC 7's shape, told when to come back (one token a second: 1 s)
    assert refused is not None
    status, body, headers = refused
    assert (status, json.loads(body)["error"]["code"]) == (429, "rate_limited")
    named = dict(headers)
    assert named[b"retry-after"] == b"1"
    assert (named[b"ratelimit-limit"], named[b"ratelimit-remaining"], named[b"x-ratelimit-remaining"]) == (
        b"4", b"0", b"0",
    )  # fmt: skip
    assert named[b"ratelimit-policy"] == b'"burst";q=4;w=4'
    assert refusals == [("burst", "standard")]


def test_tenants_are_walls() -> None:
    gate = admission(capacity=3, refill=0.0)
    assert admitted(gate, STANDARD, 10) == 3
    # Another tenant of the same tier has its own bucket, full
    assert admitted(gate, OTHER, 3) == 3


def test_the_bucket_is_scaled_by_tier_like_the_gateways_window() -> None:
    gate = admission(capacity=4, refill=0.0)
    assert [admitted(gate, tenant, 20) for tenant in (VITAL, STANDARD, ECONOMY)] == [8, 4, 2]


def test_under_pressure_economy_is_shed_first_and_vital_never() -> None:
    refusals: list[tuple[str, str]] = []
    # Between the economy (70) and standard (90) thresholds
    gate = admission(capacity=100, pressure=80.0, refusals=refusals)
    refused = gate.check(ECONOMY)
    assert refused is not None
    status, body, headers = refused
    assert (status, json.loads(body)["error"]["code"], dict(headers)[b"retry-after"]) == (503, "shed", b"5")
    assert gate.check(STANDARD) is None and gate.check(VITAL) is None
    # Above the standard threshold, only vital passes
    gate = admission(capacity=100, pressure=95.0, refusals=refusals)
    assert [gate.check(tenant) is None for tenant in (ECONOMY, STANDARD, VITAL)] == [False, False, True]
    assert refusals == [("shed", "economy"), ("shed", "economy"), ("shed", "standard")]


def test_a_tenant_over_its_burst_is_told_so_even_when_it_would_be_shed() -> None:
    # An economy tenant's bucket of 1 (2 x 0.5) under full pressure: shed while it has a token
    # (the token is spent, as in the proxy), then limited once it has none
    gate = admission(capacity=2, refill=0.0, pressure=100.0)
    answers = [gate.check(ECONOMY) for _ in range(2)]
    assert [answer[0] if answer else None for answer in answers] == [503, 429]
