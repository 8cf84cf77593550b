"""`POST /transaction` as a client sees it (SPEC 6, SPEC 7): a real `manage.py serve` on the test
database, a real gRPC brain (tests.support.fake_brain, scripted to answer, fail, lag or stop), and,
in production mode, the real Redis holding the breaker and the history.

What is checked is what a client or an operator notices: the answer and its status, the ledger's
rows, what reached the brain, the time a fail-open answer takes, `/circuit/status`.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from accounts.api.serializers import TokenSerializer
from accounts.models import Tenant, User
from accounts.services import api_key_create, tenant_update
from fraud.models import Transaction
from tests.support.fake_brain import FakeBrain, fake_brain
from tests.support.net import http_request, tcp_relay
from tests.support.processes import web_server
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

RESET_SECONDS = "1"


def token(user: User) -> str:
    return str(TokenSerializer.get_token(user).access_token)


def bearer(user: User) -> dict[str, str]:
    return {"authorization": f"Bearer {token(user)}"}


def post(
    port: int, payload: Any, headers: dict[str, str], path: str = "/transaction"
) -> tuple[int, dict[str, str], Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    status, answer_headers, raw = http_request(
        port, "POST", path, body=body, headers={"content-type": "application/json", **headers}
    )
    return status, answer_headers, json.loads(raw)


def tx(transaction_id: str = "tx-1", **changes: Any) -> dict[str, Any]:
    return {"transaction_id": transaction_id, "amount": "12.50", "currency": "EUR", "user_id": "u-1", **changes}


@contextlib.contextmanager
def serving(brain: FakeBrain, **env: str | None) -> Iterator[int]:
    settings = {
        "FRAUD_BRAIN_ADDRESS": brain.address,
        "FRAUD_BRAIN_TIMEOUT_MS": "1000",  # generous: two busy cores must not make a healthy call late
        "FRAUD_BREAKER_RESET_SECONDS": RESET_SECONDS,
        **env,
    }
    with web_server(**settings) as (port, _):
        yield port


def fraud_breaker(port: int, user: User) -> dict[str, Any]:
    status, _, raw = http_request(port, "GET", "/circuit/status", headers=bearer(user))
    assert status == 200, raw
    entries = [entry for entry in json.loads(raw)["breakers"] if entry.get("name") == "fraud-brain"]
    assert len(entries) == 1, raw
    return dict(entries[0])


# --- answers, replays, conflicts, tenants ------------------------------------------------------------


def test_scored_answer_replay_conflict_and_tenant_isolation(
    shared_cache: dict[str, str], alice: User, mallory: User, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    with fake_brain(score=0.95) as brain, serving(brain) as port:
        # When alice submits a transaction the brain scores 0.95 (default thresholds 0.5 / 0.9)
        status, headers, first = post(port, tx(), bearer(alice))
        # Then it is declined, scored, with the brain's reasons and model version
        assert status == 201, first
        assert (first["decision"], first["scored"], first["score"], first["model_version"]) == (
            "decline", True, 0.95, "fake-1",
        )  # fmt: skip
        assert first["reasons"] == [{"code": "amount_vs_habit", "message": "scripted reason", "contribution": 1.5}]
        assert "idempotent-replayed" not in headers
        assert brain.received[0].tenant == str(tenant_a.uuid) and brain.received[0].amount == 12.5

        # When she sends it again (12.5 for 12.50 is the same amount)
        status, headers, again = post(port, tx(amount=12.5), bearer(alice))
        # Then the first answer is replayed, and the brain is not asked twice
        assert (status, headers.get("idempotent-replayed"), again) == (201, "true", first)
        assert len(brain.received) == 1

        # When the same id comes with another amount: 409, nothing stored
        status, _, conflict = post(port, tx(amount="99.00"), bearer(alice))
        assert (status, conflict["error"]["code"]) == (409, "idempotency_conflict")

        # Every answer carries a correlation id (SPEC 2.1): the client's when valid, else a new one
        assert len(headers["x-correlation-id"]) == 32
        _, headers, _ = post(port, tx(), {**bearer(alice), "x-correlation-id": "pay-77.a_b"})
        assert headers["x-correlation-id"] == "pay-77.a_b"
        _, headers, _ = post(port, tx(), {**bearer(alice), "x-correlation-id": "bad id!"})
        assert headers["x-correlation-id"] != "bad id!" and len(headers["x-correlation-id"]) == 32

        # When mallory's tenant uses the same transaction_id: its own row, not alice's answer
        status, headers, theirs = post(port, tx(user_id="m-1", amount="5.00"), bearer(mallory))
        assert status == 201 and "idempotent-replayed" not in headers and theirs["decision"] == "decline"
        rows = Transaction.objects.filter(transaction_id="tx-1")
        assert sorted((row.tenant_id, str(row.amount)) for row in rows) == sorted(
            [(tenant_a.pk, "12.5000"), (tenant_b.pk, "5.0000")]
        )
        # And the second transaction of alice's user sees the first in its history
        post(port, tx("tx-2"), bearer(alice))
        assert brain.received[-1].history.count_total == 1
        assert brain.received[-1].history.count_1h == 1


def test_thresholds_of_the_tenant_decide_and_a_change_applies_within_a_second(
    shared_cache: dict[str, str], alice: User, tenant_a: Tenant
) -> None:
    tenant_update(tenant=tenant_a, fraud_review_threshold=0.2, fraud_decline_threshold=0.99)
    with fake_brain(score=0.5) as brain, serving(brain) as port:
        # Given review 0.2 and decline 0.99, a score of 0.5 is a review
        status, _, answer = post(port, tx(), bearer(alice), path="/api/v1/transactions/")
        assert (status, answer["decision"]) == (201, "review")
        # When an operator lowers the decline threshold, the running process applies it
        tenant_update(tenant=tenant_a, fraud_decline_threshold=0.4)
        numbers = iter(range(2, 1000))

        def declined() -> bool:
            return post(port, tx(f"tx-{next(numbers)}"), bearer(alice))[2]["decision"] == "decline"

        wait_until(declined, timeout=5, what="the new threshold to apply")


def test_credentials_and_tenants(
    shared_cache: dict[str, str], alice: User, staff: User, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    _, scoped = api_key_create(tenant=tenant_a, name="scoring", scopes=["transactions:write"])
    _, proxy_only = api_key_create(tenant=tenant_a, name="proxy", scopes=["proxy"])
    tenant_b.active = False
    tenant_b.save()
    with fake_brain(score=0.1) as brain, serving(brain) as port:
        # An API key with the scope scores for its tenant
        status, _, answer = post(port, tx("k-1"), {"x-api-key": scoped}, path="/api/v1/transactions")
        assert (status, answer["decision"]) == (201, "approve")
        assert Transaction.objects.get(transaction_id="k-1").tenant_id == tenant_a.pk
        refusals = [
            ({"x-api-key": proxy_only}, tx("k-2"), 403, "insufficient_scope"),
            ({"x-api-key": "snl_nope"}, tx("k-3"), 401, "invalid_api_key"),
            ({}, tx("k-4"), 401, "not_authenticated"),
            ({"authorization": "Bearer not-a-jwt"}, tx("k-5"), 401, "token_not_valid"),
            (bearer(staff), tx("k-6"), 400, "validation_error"),  # staff must name the tenant
            (bearer(staff), tx("k-7", tenant="evil"), 403, "tenant_inactive"),
            (bearer(staff), tx("k-8", tenant="nowhere"), 400, "unknown_tenant"),
            (bearer(alice), tx("k-9", tenant="evil"), 403, "wrong_tenant"),
        ]
        for headers, payload, expected_status, code in refusals:
            status, _, error = post(port, payload, headers)
            assert (status, error["error"]["code"]) == (expected_status, code), (headers, payload, error)
        # A staff caller naming an active tenant scores for it
        status, _, _ = post(port, tx("k-10", tenant="wonderland"), bearer(staff))
        assert status == 201
        assert sorted(Transaction.objects.values_list("transaction_id", flat=True)) == ["k-1", "k-10"]


def test_bad_input_is_a_json_4xx(shared_cache: dict[str, str], alice: User) -> None:
    with fake_brain() as brain, serving(brain) as port:
        cases: list[tuple[Any, int, str]] = [
            (b"{not json", 400, "invalid_json"),
            (b'{"amount": NaN}', 400, "invalid_json"),
            (b"\xff\xfe", 400, "invalid_json"),
            (b"[" * 100_00 + b"]" * 100_00, 413, "payload_too_large"),
            (json.dumps(tx(padding="x" * 17_000)).encode(), 413, "payload_too_large"),
            (b"[]", 400, "validation_error"),
            (tx(amount=-1), 400, "validation_error"),
            (tx(amount=True), 400, "validation_error"),
            (tx(amount="12.345"), 400, "validation_error"),
            (tx(currency="XYZ"), 400, "validation_error"),
            (tx(transaction_id="x" * 65), 400, "validation_error"),
            (tx(country="FRA"), 400, "validation_error"),
            (tx(colour="red"), 400, "validation_error"),
            # One key twice: parsers disagree on which wins (the first amount, or the second?)
            (b'{"transaction_id": "t", "amount": "1.00", "amount": "9000.00", "currency": "EUR", "user_id": "u"}',
             400, "invalid_json"),
            (b'{"transaction_id": "t", "amount": "1.00", "currency": "EUR", "user_id": "u", "meta": {"a": 1, "a": 2}}',
             400, "invalid_json"),
        ]  # fmt: skip
        for payload, expected_status, code in cases:
            status, headers, error = post(port, payload, bearer(alice))
            assert (status, error["error"]["code"]) == (expected_status, code), (payload[:80], error)
            assert headers["content-type"] == "application/json"
            assert headers["x-content-type-options"] == "nosniff"  # as every answer of Sentinel's
        # A body declared as another media type is not read as JSON; a JSON type with parameters is
        for n, (content_type, expected_status) in enumerate(
            (
                ("text/plain", 415),
                ("application/x-www-form-urlencoded", 415),
                ("application/json; charset=utf-8", 201),
                ("application/merchant+json", 201),
            )
        ):
            status, _, answer = post(port, tx(f"typed-{n}"), {**bearer(alice), "content-type": content_type})
            assert status == expected_status, (content_type, answer)
            if status == 415:
                assert answer["error"]["code"] == "unsupported_media_type"
        status, headers, raw = http_request(port, "GET", "/transaction", headers=bearer(alice))
        assert (status, headers["allow"], json.loads(raw)["error"]["code"]) == (405, "POST", "method_not_allowed")
        # Field details name the field
        _, _, error = post(port, tx(amount="0"), bearer(alice))
        assert list(error["error"]["details"]) == ["amount"]
        assert len(brain.received) == 2 and Transaction.objects.count() == 2  # the two JSON types


def test_two_identical_concurrent_requests_leave_one_row(shared_cache: dict[str, str], alice: User) -> None:
    with fake_brain(score=0.3) as brain, serving(brain) as port:
        brain.mode, brain.delay_ms = "slow", 100  # both reach the brain before either records
        headers = bearer(alice)
        answers: list[tuple[int, Any]] = []
        barrier = threading.Barrier(4)

        def submit() -> None:
            barrier.wait()
            status, _, answer = post(port, tx("twin"), headers)
            answers.append((status, answer))

        threads = [threading.Thread(target=submit) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(answers) == 4
        assert {status for status, _ in answers} == {201}
        assert all(answer == answers[0][1] for _, answer in answers)
        assert Transaction.objects.filter(transaction_id="twin").count() == 1


# --- fail-open and the breaker -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["redis", "memory"])
def test_fail_open_breaker_opens_on_the_third_failure_and_closes_when_the_brain_is_back(
    mode: str, request: pytest.FixtureRequest, alice: User
) -> None:
    env: dict[str, str | None] = {"REDIS_URL": None}
    if mode == "redis":
        request.getfixturevalue("shared_cache")
        env = {}
    with fake_brain(score=0.2) as brain, serving(brain, **env) as port:
        headers = bearer(alice)
        assert post(port, tx("ok-0"), headers)[0] == 201
        # Given the brain stopped
        brain.stop()
        reasons = []
        for n in range(1, 4):
            status, _, answer = post(port, tx(f"down-{n}"), headers)
            assert (status, answer["decision"], answer["scored"], answer["score"]) == (201, "approve", False, None)
            reasons.append(answer["reasons"][0]["code"])
        # Then three failures reached it and the third opened the breaker
        assert reasons == ["brain_unavailable"] * 3
        assert fraud_breaker(port, alice)["state"] == "open"
        # And later requests fail open at once, never reaching the brain
        brain.restart()
        calls = len(brain.received)
        timings = []
        for n in range(4, 14):
            started = time.perf_counter()
            status, _, answer = post(port, tx(f"down-{n}"), headers)
            timings.append(time.perf_counter() - started)
            assert (status, answer["scored"], answer["reasons"][0]["code"]) == (201, False, "breaker_open")
        assert len(brain.received) == calls
        assert sorted(timings)[len(timings) // 2] < 0.05, timings
        assert Transaction.objects.filter(scored=False).count() == 13
        # When the cooldown is over, the brain (back) is tried again and scoring resumes
        wait_until(
            lambda: fraud_breaker(port, alice)["state"] == "half_open", timeout=10, what="the breaker's cooldown"
        )
        status, _, answer = post(port, tx("back-1"), headers)
        assert (status, answer["scored"], answer["score"]) == (201, True, 0.2)
        assert fraud_breaker(port, alice)["state"] == "closed"


@pytest.mark.parametrize(("mode", "code"), [("slow", "brain_timeout"), ("fail", "brain_unavailable")])
def test_a_late_or_failing_brain_fails_open_and_the_fourth_call_is_refused_at_once(
    mode: str, code: str, shared_cache: dict[str, str], alice: User
) -> None:
    with fake_brain() as brain, serving(brain, FRAUD_BRAIN_TIMEOUT_MS="40") as port:
        brain.mode, brain.delay_ms = mode, 2000
        headers = bearer(alice)
        for n in range(3):
            started = time.perf_counter()
            status, _, answer = post(port, tx(f"late-{n}"), headers)
            # Answered at the deadline, not after the brain's 2 s
            assert time.perf_counter() - started < 1.0
            assert (status, answer["scored"], answer["reasons"][0]["code"]) == (201, False, code)
        # Refused by the breaker without a call: no deadline to wait for
        status, _, answer = post(port, tx("late-4"), headers)
        assert (status, answer["reasons"][0]["code"]) == (201, "breaker_open")
        assert len(brain.received) == 3


def test_two_web_processes_see_one_breaker(shared_cache: dict[str, str], alice: User, staff: User) -> None:
    # A cooldown longer than the test: the breaker stays open until the staff reset (with 1 s, a
    # busy machine saw it half-open by the time the scrape was read).
    with fake_brain() as brain, serving(brain, FRAUD_BREAKER_RESET_SECONDS="60") as first, \
            serving(brain, FRAUD_BREAKER_RESET_SECONDS="60") as second:  # fmt: skip
        headers = bearer(alice)
        brain.stop()
        for n in range(3):
            post(first, tx(f"a-{n}"), headers)
        # The second process never failed a call, yet refuses at once: the breaker is shared
        status, _, answer = post(second, tx("b-1"), headers)
        assert (status, answer["reasons"][0]["code"]) == (201, "breaker_open")
        assert fraud_breaker(second, alice)["state"] == "open"
        # And the scrape says so too, beside the upstreams' breakers
        status, _, scrape = http_request(second, "GET", "/metrics")
        assert status == 200 and b'sentinel_circuit_breaker_state{upstream="fraud-brain"} 1.0' in scrape
        # And a staff reset from either process closes it for both
        status, _, raw = http_request(
            second, "POST", "/circuit/reset", body=b'{"upstream": "fraud-brain"}',
            headers={"content-type": "application/json", **bearer(staff)},
        )  # fmt: skip
        assert status == 200 and json.loads(raw)["reset"] is True, raw
        assert fraud_breaker(first, alice)["state"] == "closed"


def test_losing_redis_does_not_stop_scoring(alice: User) -> None:
    redis = urlsplit(require_redis())
    with tcp_relay(redis.port or 6379) as relay, fake_brain(score=0.3) as brain:
        env = {"REDIS_URL": f"redis://127.0.0.1:{relay.port}{redis.path}", "CACHE_KEY_PREFIX": key_prefix("fraud")}
        with serving(brain, **env) as port:
            headers = bearer(alice)
            assert post(port, tx("r-1"), headers)[2]["scored"] is True
            # When Redis (breaker and history) becomes unreachable
            relay.cut()
            status, _, answer = post(port, tx("r-2"), headers)
            # Then the brain is still asked (unprotected), with no history to go on
            assert (status, answer["scored"], answer["score"]) == (201, True, 0.3)
            assert brain.received[-1].transaction_id == "r-2"
            assert brain.received[-1].history.count_total == 0
            # And once it is back, the history counts again
            relay.start()
            numbers = iter(range(3, 1000))

            def history_back() -> bool:
                post(port, tx(f"r-{next(numbers)}"), headers)
                return brain.received[-1].history.count_total >= 1

            wait_until(history_back, timeout=10, what="the history to come back with Redis")
