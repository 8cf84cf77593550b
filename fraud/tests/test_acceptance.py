"""Issue 12's acceptance, with every part real: the brain process (`run_brain`, the session's
trained model), two web processes sharing Redis and PostgreSQL, and a Celery worker with its beat
running the re-score.

The story an operator lives through: transactions are scored with the model's reasons; the brain
dies; the third failure opens the breaker, which both web processes see, and later transactions
are approved unscored at once, each in the ledger; the brain comes back, the breaker closes after
its cooldown, and the re-score fills the unscored rows, a late decline raising a
`transaction.review` event in the rules engine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from accounts.api.serializers import TokenSerializer
from accounts.models import User
from fraud.models import Transaction
from rules.models import Event, EventSource
from tests.support.brain import BrainProcess
from tests.support.net import http_request
from tests.support.processes import celery_worker, web_server
from tests.support.services import require_redis
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

RESET_SECONDS = 2.0


def post(port: int, headers: dict[str, str], transaction_id: str, **fields: Any) -> tuple[int, dict[str, Any]]:
    payload = {"transaction_id": transaction_id, "user_id": "u-1", "amount": "24.00", "currency": "EUR"}
    payload |= {"country": "FR", "merchant": "bakery"} | fields
    status, _, raw = http_request(
        port, "POST", "/transaction", body=json.dumps(payload).encode(),
        headers={"content-type": "application/json", **headers},
    )  # fmt: skip
    return status, json.loads(raw)


def breaker_state(port: int, headers: dict[str, str]) -> str:
    status, _, raw = http_request(port, "GET", "/circuit/status", headers=headers)
    assert status == 200, raw
    (entry,) = [entry for entry in json.loads(raw)["breakers"] if entry.get("name") == "fraud-brain"]
    return str(entry["state"])


def test_the_brain_dies_and_comes_back(
    shared_cache: dict[str, str], brain: BrainProcess, alice: User, tmp_path: Path
) -> None:
    require_redis()
    headers = {"authorization": f"Bearer {TokenSerializer.get_token(alice).access_token}"}
    env = {
        "FRAUD_BRAIN_ADDRESS": brain.address,
        # Generous: the deadline is for a sick brain, not for two cores busy with this test.
        "FRAUD_BRAIN_TIMEOUT_MS": "1000",
        "FRAUD_BREAKER_RESET_SECONDS": str(RESET_SECONDS),
        "FRAUD_RESCORE_SECONDS": "0.5",
        "FRAUD_EMIT_SECONDS": "0.5",
        "CELERY_POLL_INTERVAL": "0.05",
    }
    with web_server(**env) as (first, _), web_server(**env) as (second, _):
        # A user with a habit: small payments in France, scored with the model's version (six in a
        # few seconds is a burst, which the model may well send to review: only the scoring counts)
        for n in range(6):
            status, answer = post(first if n % 2 else second, headers, f"habit-{n}")
            assert (status, answer["scored"]) == (201, True), answer
            assert answer["model_version"].startswith("lgbm-") and answer["reasons"] is not None

        # When the brain dies
        brain.kill()
        fail_open = []
        for n in range(3):
            status, answer = post(first, headers, f"dark-{n}")
            fail_open.append((status, answer["decision"], answer["scored"], answer["reasons"][0]["code"]))
        # Then the three failures are approved unscored, and the third opened the breaker...
        assert fail_open == [(201, "approve", False, "brain_unavailable")] * 3
        # ...which the other web process sees without having failed a call itself
        assert breaker_state(second, headers) == "open"
        status, answer = post(second, headers, "dark-3")
        assert (status, answer["scored"], answer["reasons"][0]["code"]) == (201, False, "breaker_open")
        # A fraud pattern arriving in the dark: a big amount from a new country at a new merchant
        status, answer = post(second, headers, "dark-big", amount="4800.00", country="BR", merchant="electronics-hub")
        assert (status, answer["decision"], answer["scored"], answer["score"]) == (201, "approve", False, None)
        dark = Transaction.objects.filter(tenant=alice.membership.tenant, transaction_id__startswith="dark-")
        assert sorted(dark.values_list("transaction_id", "scored")) == [
            ("dark-0", False), ("dark-1", False), ("dark-2", False), ("dark-3", False), ("dark-big", False),
        ]  # fmt: skip

        # When the brain is back and the cooldown is over, the breaker lets a call through and closes
        brain.start()
        opened_at = time.monotonic()
        wait_until(
            lambda: breaker_state(first, headers) == "half_open", timeout=RESET_SECONDS + 10, what="the cooldown"
        )
        assert time.monotonic() - opened_at <= RESET_SECONDS + 10
        status, answer = post(first, headers, "light-0")
        assert (status, answer["scored"]) == (201, True), answer
        assert breaker_state(second, headers) == "closed"

        # And a worker's re-score fills every unscored row once, with the history each saw; the
        # worker also makes every transaction's `transaction` event from the ledger's outbox
        events = Event.objects.filter(tenant=alice.membership.tenant, type="transaction")
        with celery_worker(name="rescore", beat=True, log=(tmp_path / "worker.log").open("w+b"), **env):
            wait_until(lambda: not dark.filter(rescored_at=None).exists(), timeout=60, what="the re-score")
            wait_until(lambda: events.count() >= 12, timeout=60, what="the transactions' events")

    big = dark.get(transaction_id="dark-big")
    # The answer given stays; the late score says what the model thinks, with its reasons
    assert (big.decision, big.scored, big.score, big.late_decision) == ("approve", False, None, "decline")
    assert big.late_score is not None and big.late_score >= 0.9 and big.rescored_at is not None
    assert {"amount_vs_habit", "new_country", "new_merchant"} & {reason["code"] for reason in big.late_reasons}
    assert big.history["count_total"] == 10  # the six of the habit and the four dark ones before it
    # A late decline is a `transaction.review` event for the rules engine
    reviews = Event.objects.filter(tenant=alice.membership.tenant, type="transaction.review", source=EventSource.FRAUD)
    late = {event.payload["transaction_id"]: event.payload["late_decision"] for event in reviews}
    assert late["dark-big"] == "decline"
    # (a late review raises one too: the burst of the dark ones may have earned it)
    assert set(late.values()) <= {"review", "decline"}
    # Every transaction was also a `transaction` event, once, fail-open ones included
    assert sorted(events.values_list("payload__transaction_id", flat=True)) == sorted(
        [f"habit-{n}" for n in range(6)] + [f"dark-{n}" for n in range(4)] + ["dark-big", "light-0"]
    )
