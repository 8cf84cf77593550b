"""CPU per transaction of the fraud endpoint's admission, against the Redis window it left out.

`python -m bench.fraud.admission_cost [--redis-url redis://127.0.0.1:6379/0] [--calls 20000]`

Measures, in this process with `time.process_time` (CPU, so the box's other load inflates the
figures far less than wall time would):

* `TenantAdmission.check` as the endpoint calls it (burst bucket, pressure, tier), 50 tenants;
* the gateway's distributed window (`RedisWindowLimiter.check` and its headers, one EVALSHA) with
  1, 16 and 64 checks in flight: alone, each is a round trip of its own; concurrent, the client
  pipelines them into one write per event-loop turn.

Prints the figures; writes nothing but its keys under `bench-admission-<random>:`, deleted after.
docs/fraud.md ("Admission") quotes them.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from fraud.engine.admission import FraudLimits, TenantAdmission
from gateway.engine.auth import TenantInfo
from gateway.engine.pressure import PressureGauge, TierAdmission, combine
from gateway.engine.ratelimit import RedisWindowLimiter, ratelimit_headers
from gateway.engine.resp import gateway_redis_client

TENANTS = [
    TenantInfo(uuid=f"tenant-{n}", slug=f"t{n}", tier=("vital", "standard", "economy")[n % 3]) for n in range(50)
]


def admission_us(calls: int) -> float:
    """µs of CPU per `TenantAdmission.check`, limits too large to refuse (every step runs)."""
    gauge = PressureGauge(capacity=512, slo_ms=200)
    gate = TenantAdmission(
        FraudLimits(10**9, 1e9),
        tiers=TierAdmission(standard_at=90, economy_at=70),
        pressure=lambda: combine(gauge.score(), []),
    )
    started = time.process_time()
    for n in range(calls):
        gate.check(TENANTS[n % 50])
    return (time.process_time() - started) / calls * 1e6


async def window_us(redis_url: str, calls: int, in_flight: int) -> float:
    """µs of CPU (client side) per window check and its headers, `in_flight` at a time."""
    client = gateway_redis_client(redis_url, timeout_s=2.0)
    prefix = f"bench-admission-{uuid.uuid4().hex[:8]}:"
    limiter = RedisWindowLimiter(client, prefix)
    await limiter.check("warm-up", 10**9, 60_000)  # connects and loads the script
    each = calls // in_flight

    async def checker(k: int) -> None:
        for _ in range(each):
            ratelimit_headers(await limiter.check(TENANTS[k % 50].uuid, 10**9, 60_000))

    try:
        started = time.process_time()
        await asyncio.gather(*(checker(k) for k in range(in_flight)))
        return (time.process_time() - started) / (each * in_flight) * 1e6
    finally:
        keys = [prefix + "warm-up", *(prefix + tenant.uuid for tenant in TENANTS)]
        await client.execute("DEL", *keys)
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fraud.admission_cost", description=__doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=20_000)
    options = parser.parse_args()
    print(f"TenantAdmission.check: {admission_us(options.calls * 10):.1f} µs CPU per call")
    for in_flight in (1, 16, 64):
        cost = asyncio.run(window_us(options.redis_url, options.calls, in_flight))
        print(f"Redis window check + headers, {in_flight} in flight: {cost:.1f} µs CPU per call")


if __name__ == "__main__":
    main()
