"""`POST /transaction`'s per-tenant admission as a client and an operator see it: a real
`manage.py serve` (tests.support.processes) and a real gRPC brain (tests.support.fake_brain), in
production mode (PostgreSQL or the test database, and Redis) and in embedded mode (no Redis).

Checked: the 429's status, JSON and headers, that a refused transaction reached neither the brain
nor the ledger, that other tenants are served meanwhile, shedding by tier under the gateway's
forced pressure, the metric and the access line, and that losing Redis changes nothing.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from accounts.models import Tenant, Tier, User
from accounts.services import api_key_create
from fraud.models import Transaction
from fraud.tests.test_endpoint_e2e import bearer, post, serving, tx
from tests.support.fake_brain import fake_brain
from tests.support.net import http_request, tcp_relay
from tests.support.processes import web_server
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis

pytestmark = pytest.mark.django_db(transaction=True)

# A bucket of 3 for a standard tenant (economy 1, vital 6) that refills once in 100 s: nothing
# refills during a test, so the counts are exact.
SMALL_BUCKET = {"FRAUD_BURST_CAPACITY": "3", "FRAUD_REFILL_RATE": "0.01"}


def mode_env(mode: str, request: pytest.FixtureRequest) -> dict[str, str | None]:
    """Production mode on the real Redis (skipped without it, unless CI), or embedded mode."""
    if mode == "redis":
        request.getfixturevalue("shared_cache")
        return {}
    return {"REDIS_URL": None}


def refusals(port: int, reason: str, tier: str) -> float:
    """sentinel_fraud_refusals_total{reason,tier} in /metrics. Counters of the test session's
    earlier web processes stay in the sum (they share a metrics folder): compare, never equate."""
    status, _, raw = http_request(port, "GET", "/metrics")
    assert status == 200
    prefix = f'sentinel_fraud_refusals_total{{reason="{reason}",tier="{tier}"}} '
    values = [float(line[len(prefix) :]) for line in raw.decode().splitlines() if line.startswith(prefix)]
    assert len(values) == 1, values
    return values[0]


def access_lines(log: Path) -> list[dict[str, object]]:
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "sentinel.access":
                lines.append(entry)
    return lines


@pytest.mark.parametrize("mode", ["redis", "memory"])
def test_a_tenant_over_its_burst_is_refused_unscored_and_unrecorded_while_another_is_served(
    mode: str, request: pytest.FixtureRequest, alice: User, mallory: User, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    env = mode_env(mode, request)
    with tempfile.NamedTemporaryFile(prefix="web-", suffix=".log") as log:
        # The access lines are at info; a generous deadline, as test_endpoint_e2e's `serving`.
        settings = {"FRAUD_BRAIN_TIMEOUT_MS": "1000", "LOG_LEVEL": "info", **SMALL_BUCKET, **env}
        with fake_brain(score=0.2) as brain, web_server(log=log, FRAUD_BRAIN_ADDRESS=brain.address, **settings) as web:
            port = web[0]
            limited_before = refusals(port, "burst", "standard")
            # Given alice's standard tenant used its burst of 3
            for n in range(3):
                assert post(port, tx(f"a-{n}"), bearer(alice))[0] == 201
            # When she sends a fourth
            status, headers, answer = post(port, tx("a-3"), bearer(alice))
            # Then it is a 429 in SPEC 7's shape with Retry-After and the RateLimit headers
            assert (status, answer["error"]["code"]) == (429, "rate_limited"), answer
            assert headers["content-type"] == "application/json"
            assert int(headers["retry-after"]) >= 1
            assert (headers["ratelimit-limit"], headers["ratelimit-remaining"], headers["x-ratelimit-remaining"]) == (
                "3", "0", "0",
            )  # fmt: skip
            assert headers["ratelimit-policy"].startswith('"burst";q=3')
            # And the other tenant (economy: a bucket of 1) is served meanwhile
            status, _, theirs = post(port, tx("m-0", user_id="m-1"), bearer(mallory))
            assert (status, theirs["scored"]) == (201, True)
            # And the refusal is counted
            assert refusals(port, "burst", "standard") == limited_before + 1
        # Nothing of the refused transaction reached the brain or the ledger
        assert [call.transaction_id for call in brain.received] == ["a-0", "a-1", "a-2", "m-0"]
        assert sorted(Transaction.objects.filter(tenant=tenant_a).values_list("transaction_id", flat=True)) == [
            "a-0", "a-1", "a-2",
        ]  # fmt: skip
        assert Transaction.objects.filter(tenant=tenant_b).count() == 1
        # And the access log has the refusal's line, as any other answer's
        statuses = [(line["path"], line["status"]) for line in access_lines(Path(log.name))]
        assert statuses.count(("/transaction", 201)) == 4 and statuses.count(("/transaction", 429)) == 1, statuses


@pytest.mark.parametrize("mode", ["redis", "memory"])
def test_under_pressure_an_economy_tenant_is_shed_while_a_vital_one_is_served(
    mode: str, request: pytest.FixtureRequest, alice: User, mallory: User, tenant_b: Tenant
) -> None:
    env = mode_env(mode, request)
    vital = Tenant.objects.create(name="Hospital", slug="hospital", tier=Tier.VITAL)
    _, vital_key = api_key_create(tenant=vital, name="payments", scopes=["transactions:write"])
    # Pressure forced between the economy (70) and standard (90) thresholds
    with fake_brain(score=0.2) as brain, serving(brain, GATEWAY_FORCED_PRESSURE="80", **env) as port:
        shed_before = refusals(port, "shed", "economy")
        status, headers, answer = post(port, tx("e-1", user_id="m-1"), bearer(mallory))
        assert (status, answer["error"]["code"], headers["retry-after"]) == (503, "shed", "5"), answer
        assert post(port, tx("s-1"), bearer(alice))[0] == 201
        status, _, answer = post(port, tx("v-1"), {"x-api-key": vital_key})
        assert (status, answer["scored"]) == (201, True)
        assert refusals(port, "shed", "economy") == shed_before + 1
    assert [call.transaction_id for call in brain.received] == ["s-1", "v-1"]
    assert not Transaction.objects.filter(tenant=tenant_b).exists()


def test_losing_redis_changes_nothing_to_admission(alice: User, tenant_a: Tenant) -> None:
    redis = urlsplit(require_redis())
    with tcp_relay(redis.port or 6379) as relay, fake_brain(score=0.3) as brain:
        env = {"REDIS_URL": f"redis://127.0.0.1:{relay.port}{redis.path}", "CACHE_KEY_PREFIX": key_prefix("fraud")}
        with serving(brain, **SMALL_BUCKET, **env) as port:
            assert post(port, tx("r-0"), bearer(alice))[0] == 201
            # When Redis becomes unreachable
            relay.cut()
            # Then transactions are still admitted, scored and recorded, up to the bucket
            for n in (1, 2):
                status, _, answer = post(port, tx(f"r-{n}"), bearer(alice))
                assert (status, answer["scored"]) == (201, True), answer
            # And the bucket, in the process, still holds the tenant back
            status, headers, answer = post(port, tx("r-3"), bearer(alice))
            assert (status, answer["error"]["code"]) == (429, "rate_limited") and "retry-after" in headers
    assert Transaction.objects.filter(tenant=tenant_a).count() == 3
