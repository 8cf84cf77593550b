"""The user's history (fraud.engine.history), in Redis and in memory, against the proto's
definitions computed the slow way from the list of earlier transactions. No Django."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis

from fraud.engine.history import (
    LONG_TTL_MS,
    SEEN_CAP,
    WINDOW_TTL_MS,
    HistoryStore,
    MemoryHistory,
    RedisHistory,
)
from fraud.engine.transaction import SMALL_AMOUNT, History, TransactionIn
from gateway.engine.resp import RespClient
from tests.support.redis_keys import key_prefix
from tests.support.services import redis_url_for_tests, require_redis

T0 = 1_790_000_000_000  # epoch ms
MIN = 60_000
HOUR = 60 * MIN


@dataclass(frozen=True)
class Seen:
    at_ms: int
    amount: float
    country: str
    merchant: str


def reference(earlier: list[Seen], tx: TransactionIn, at_ms: int) -> History:
    """fraud.proto's History comments, read literally: windows (t - w, t], two-pass std."""
    before = [e for e in earlier if e.at_ms <= at_ms]
    if not before:
        return History()
    hour = [e for e in before if e.at_ms > at_ms - HOUR]
    day = [e for e in before if e.at_ms > at_ms - 24 * HOUR]
    logs = [math.log(e.amount) for e in before]
    mean = math.fsum(logs) / len(logs)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in logs) / len(logs)) if len(logs) >= 2 else 0.0
    return History(
        count_total=len(before),
        count_10m=sum(1 for e in before if e.at_ms > at_ms - 10 * MIN),
        count_1h=len(hour),
        count_24h=len(day),
        small_count_1h=sum(1 for e in hour if e.amount <= SMALL_AMOUNT),
        amount_1h=math.fsum(e.amount for e in hour),
        log_amount_mean=mean,
        log_amount_std=std,
        last_at_ms=max(e.at_ms for e in before),
        country_seen=bool(tx.country) and any(e.country == tx.country for e in before),
        merchant_seen=bool(tx.merchant) and any(e.merchant == tx.merchant for e in before),
        countries_24h=len({e.country for e in day if e.country}),
    )


def assert_same(actual: History, expected: History) -> None:
    got, want = actual.to_json(), expected.to_json()
    for name, value in want.items():
        if isinstance(value, float):
            assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
        else:
            assert got[name] == value, name


@pytest.fixture(params=["redis", "memory"])
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        require_redis()
    return str(request.param)


@asynccontextmanager
async def store(kind: str) -> AsyncIterator[Any]:
    if kind == "memory":
        yield MemoryHistory()
        return
    client = RespClient.from_url(redis_url_for_tests(), timeout_s=2.0, connect_timeout_s=1.0)
    try:
        yield RedisHistory(client, f"{key_prefix('history')}:")
    finally:
        await client.aclose()


def make(n: int, amount: str, *, country: str = "", merchant: str = "", user: str = "u1") -> TransactionIn:
    return TransactionIn(f"t{n}", user, Decimal(amount), "EUR", merchant, country)


async def add(history: HistoryStore, seen: list[Seen], tx: TransactionIn, at_ms: int, tenant: str = "A") -> None:
    await history.add(tenant, tx, at_ms)
    seen.append(Seen(at_ms, float(tx.amount), tx.country, tx.merchant))


def test_a_new_user_has_an_empty_history(kind: str) -> None:
    async def scenario() -> None:
        async with store(kind) as history:
            assert await history.read("A", make(1, "10", country="FR", merchant="m"), T0) == History()

    asyncio.run(scenario())


def test_window_edges_are_open_below_and_closed_above(kind: str) -> None:
    async def scenario() -> None:
        async with store(kind) as history:
            seen: list[Seen] = []
            # Exactly 24 h, 1 h and 10 min before, and just inside each
            for n, offset in enumerate([24 * HOUR, 24 * HOUR - 1, HOUR, HOUR - 1, 10 * MIN, 10 * MIN - 1]):
                await add(history, seen, make(n, "1.50", country="FR"), T0 - offset)
            tx = make(99, "20", country="DE")
            actual = await history.read("A", tx, T0)
            assert (actual.count_24h, actual.count_1h, actual.count_10m, actual.small_count_1h) == (5, 3, 1, 3)
            assert_same(actual, reference(seen, tx, T0))

    asyncio.run(scenario())


def test_a_random_user_matches_the_definitions_at_every_step(kind: str) -> None:
    async def scenario() -> None:
        rng = random.Random(6)
        async with store(kind) as history:
            seen: list[Seen] = []
            at = T0
            for n in range(120):
                at += rng.choice([5_000, 40_000, 7 * MIN, 50 * MIN, 5 * HOUR])
                amount = rng.choice(["0.99", "1.00", "2.00", "2.01", "15.5", "120", "4999.99"])
                tx = make(n, amount, country=rng.choice(["", "FR", "DE", "US"]), merchant=rng.choice(["", "a", "b"]))
                assert_same(await history.read("A", tx, at), reference(seen, tx, at))
                await add(history, seen, tx, at)

    asyncio.run(scenario())


def test_tenants_and_users_are_kept_apart(kind: str) -> None:
    async def scenario() -> None:
        async with store(kind) as history:
            await history.add("A", make(1, "10", country="FR", merchant="m"), T0)
            probe = make(2, "10", country="FR", merchant="m")
            assert await history.read("B", probe, T0 + 1) == History()
            other_user = make(3, "10", country="FR", merchant="m", user="u2")
            assert await history.read("A", other_user, T0 + 1) == History()
            assert (await history.read("A", probe, T0 + 1)).count_total == 1

    asyncio.run(scenario())


def test_seen_countries_and_merchants_are_capped(kind: str) -> None:
    async def scenario() -> None:
        async with store(kind) as history:
            for n in range(SEEN_CAP + 5):
                await history.add("A", make(n, "3", merchant=f"m{n}"), T0 + n)
            first, late = make(900, "3", merchant="m0"), make(901, "3", merchant=f"m{SEEN_CAP + 2}")
            assert (await history.read("A", first, T0 + 10_000)).merchant_seen is True
            assert (await history.read("A", late, T0 + 10_000)).merchant_seen is False

    asyncio.run(scenario())


def test_redis_keys_expire() -> None:
    require_redis()

    async def scenario() -> None:
        async with store("redis") as history:
            await history.add("A", make(1, "10", country="FR", merchant="m"), T0)
            control = Redis.from_url(redis_url_for_tests())
            try:
                window, stats, countries, merchants = history.keys_for("A", "u1")
                assert 0 < await control.pttl(window) <= WINDOW_TTL_MS
                for key in (stats, countries, merchants):
                    assert WINDOW_TTL_MS < await control.pttl(key) <= LONG_TTL_MS
            finally:
                await control.aclose()

    asyncio.run(scenario())


def test_serving_and_training_histories_agree(kind: str) -> None:
    """The web process's history and the training set's (`fraud.brain.synthetic.history_of`)
    describe the same transactions identically: the model is served the features it learnt on."""
    synthetic = pytest.importorskip("fraud.brain.synthetic", reason="the brain's training set is another branch")

    async def scenario() -> None:
        rng = random.Random(12)
        async with store(kind) as history:
            earlier: list[Any] = []
            at = T0
            for n in range(150):
                at += rng.choice([3_000, 30_000, 9 * MIN, 59 * MIN, 6 * HOUR, 23 * HOUR])
                amount = rng.choice(["0.50", "1.99", "2.00", "18.40", "75", "2300.10"])
                tx = make(n, amount, country=rng.choice(["", "FR", "GB"]), merchant=rng.choice(["", "m1", "m2"]))
                this = synthetic.Earlier(at, float(tx.amount), tx.country, tx.merchant)
                assert_same(await history.read("A", tx, at), synthetic.history_of(earlier, this))
                await history.add("A", tx, at)
                earlier.append(this)

    asyncio.run(scenario())
