"""The user's history (fraud.engine.history), in Redis and in memory, against the proto's
definitions computed the slow way from the list of earlier transactions (the training set's own
replay, `fraud.brain.synthetic.history_of`: serving and training agree). No Django."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis

from fraud.brain.synthetic import Earlier, history_of
from fraud.engine.currencies import PER_EUR
from fraud.engine.history import (
    LONG_TTL_MS,
    MEMORY_MAX_USERS,
    SEEN_CAP,
    WINDOW_TTL_MS,
    HistoryStore,
    MemoryHistory,
    RedisHistory,
)
from fraud.engine.transaction import History, TransactionIn
from gateway.engine.resp import RespClient
from tests.support.redis_keys import key_prefix
from tests.support.services import redis_url_for_tests, require_redis

T0 = 1_790_000_000_000  # epoch ms
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR


def reference(earlier: list[Earlier], tx: TransactionIn, at_ms: int) -> History:
    """The proto's History computed the slow way: the training set's replay, which reads the
    proto's comments literally (windows (t - w, t], two-pass std) and is what the model learnt on."""
    return history_of(earlier, Earlier(at_ms, float(tx.amount), tx.country, tx.merchant), tx.currency)


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


def make(
    n: int, amount: str, *, country: str = "", merchant: str = "", user: str = "u1", currency: str = "EUR"
) -> TransactionIn:
    return TransactionIn(f"t{n}", user, Decimal(amount), currency, merchant, country)


async def add(history: HistoryStore, seen: list[Earlier], tx: TransactionIn, at_ms: int, tenant: str = "A") -> None:
    await history.add(tenant, tx, at_ms)
    seen.append(Earlier(at_ms, float(tx.amount), tx.country, tx.merchant))


def test_a_new_user_has_an_empty_history(kind: str) -> None:
    async def scenario() -> None:
        async with store(kind) as history:
            assert await history.read("A", make(1, "10", country="FR", merchant="m"), T0) == History()

    asyncio.run(scenario())


def test_window_edges_are_open_below_and_closed_above(kind: str) -> None:
    async def scenario() -> None:
        async with store(kind) as history:
            seen: list[Earlier] = []
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
            seen: list[Earlier] = []
            at = T0
            for n in range(120):
                at += rng.choice([5_000, 40_000, 7 * MIN, 50 * MIN, 5 * HOUR])
                amount = rng.choice(["0.99", "1.00", "2.00", "2.01", "15.5", "120", "4999.99"])
                tx = make(n, amount, country=rng.choice(["", "FR", "DE", "US"]), merchant=rng.choice(["", "a", "b"]))
                assert_same(await history.read("A", tx, at), reference(seen, tx, at))
                await add(history, seen, tx, at)

    asyncio.run(scenario())


def test_a_transaction_added_later_with_a_later_time_is_never_the_previous_one(kind: str) -> None:
    """Two of a user's transactions at once, the later (T0 + 5 ms) answered and added first: the
    earlier one's history must not say its previous transaction came after it."""

    async def scenario() -> None:
        async with store(kind) as history:
            await history.add("A", make(1, "10"), T0 - HOUR)
            await history.add("A", make(2, "10"), T0 + 5)
            assert (await history.read("A", make(3, "10"), T0)).last_at_ms == T0 - HOUR
            await history.add("A", make(4, "10"), T0 + 2 * 24 * HOUR)  # nothing in the day before T0 + 25 h
            assert (await history.read("A", make(5, "10"), T0 + 25 * HOUR)).last_at_ms == T0 + 25 * HOUR

    asyncio.run(scenario())


def test_tenants_users_and_currencies_are_kept_apart(kind: str) -> None:
    async def scenario() -> None:
        async with store(kind) as history:
            await history.add("A", make(1, "10", country="FR", merchant="m"), T0)
            probe = make(2, "10", country="FR", merchant="m")
            assert await history.read("B", probe, T0 + 1) == History()
            other_user = make(3, "10", country="FR", merchant="m", user="u2")
            assert await history.read("A", other_user, T0 + 1) == History()
            assert (await history.read("A", probe, T0 + 1)).count_total == 1
            # 100,000 JPY is not compared with a habit of 10 EUR: no exchange rates here
            yen = TransactionIn("t4", "u1", Decimal("100000"), "JPY", "m", "FR")
            assert await history.read("A", yen, T0 + 1) == History()

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


def test_recall_knows_the_ids_of_the_last_24_hours(kind: str) -> None:
    """The endpoint's replay hint: an id added in the 24 h before is recalled; another id, or the
    same one a day later, is not (the ledger's unique index still catches those)."""

    async def scenario() -> None:
        async with store(kind) as history:
            first = make(1, "10", country="FR")
            assert (await history.recall("A", first, T0))[1] is False
            await history.add("A", first, T0)
            assert (await history.recall("A", first, T0 + HOUR))[1] is True
            assert (await history.recall("A", make(2, "10"), T0 + HOUR))[1] is False
            assert (await history.recall("B", first, T0 + HOUR))[1] is False
            await history.add("A", make(3, "10"), T0 + 24 * HOUR + 1)  # trims the day before
            assert (await history.recall("A", first, T0 + 24 * HOUR + 1))[1] is False

    asyncio.run(scenario())


def test_redis_keys_expire() -> None:
    require_redis()

    async def scenario() -> None:
        async with store("redis") as history:
            await history.add("A", make(1, "10", country="FR", merchant="m"), T0)
            control = Redis.from_url(redis_url_for_tests())
            try:
                window, stats, countries, merchants, ids = history.keys_for("A", make(1, "10"))
                assert 0 < await control.pttl(window) <= WINDOW_TTL_MS
                assert 0 < await control.pttl(ids) <= WINDOW_TTL_MS
                for key in (stats, countries, merchants):
                    assert WINDOW_TTL_MS < await control.pttl(key) <= LONG_TTL_MS
            finally:
                await control.aclose()

    asyncio.run(scenario())


# Amounts around each currency's card-testing bound (2.00 EUR: ~351.36 JPY; none for AED, which
# the ECB does not quote), and far above it.
AMOUNTS = {
    "EUR": ["0.50", "1.99", "2.00", "18.40", "75", "2300.10"],
    "JPY": ["2", "300", "351", "352", "4000", "100000"],
    "AED": ["0.50", "1.99", "2.00", "18.40", "75", "2300.10"],
}


@pytest.mark.parametrize("currency", sorted(AMOUNTS))
def test_serving_and_training_histories_agree(kind: str, currency: str) -> None:
    """The web process's history and the training set's (`fraud.brain.synthetic.history_of`)
    describe the same transactions identically, small charges by their EUR value included: the
    model is served the features it learnt on."""

    async def scenario() -> None:
        rng = random.Random(12)
        async with store(kind) as history:
            earlier: list[Earlier] = []
            at = T0
            smalls = 0
            for n in range(150):
                at += rng.choice([3_000, 30_000, 9 * MIN, 59 * MIN, 6 * HOUR, 23 * HOUR])
                amount = rng.choice(AMOUNTS[currency])
                country, merchant = rng.choice(["", "FR", "GB"]), rng.choice(["", "m1", "m2"])
                tx = make(n, amount, country=country, merchant=merchant, currency=currency)
                this = Earlier(at, float(tx.amount), tx.country, tx.merchant)
                served = await history.read("A", tx, at)
                assert_same(served, history_of(earlier, this, currency))
                smalls += served.small_count_1h
                await history.add("A", tx, at)
                earlier.append(this)
            # Small charges were seen where the currency has a rate, and none where it has not
            assert (smalls > 0) == (currency in PER_EUR)

    asyncio.run(scenario())


def test_a_user_quiet_for_more_than_a_day_keeps_the_habits_of_90_days(kind: str) -> None:
    """Past 24 h only the window is gone (memory drops it, Redis lets its key expire): the count,
    the amount statistics and the countries and merchants seen are still there."""

    async def scenario() -> None:
        async with store(kind) as history:
            seen: list[Earlier] = []
            await add(history, seen, make(1, "10", country="FR", merchant="m"), T0)
            await add(history, seen, make(2, "30", country="DE", merchant="m"), T0 + HOUR)
            # Another user's add at T0 + 30 h is when memory looks at the quiet one.
            await history.add("A", make(3, "5", user="u2"), T0 + 30 * HOUR)
            tx = make(4, "12", country="FR", merchant="m")
            actual = await history.read("A", tx, T0 + 30 * HOUR)
            assert (actual.count_total, actual.count_24h) == (2, 0)
            assert actual.country_seen and actual.merchant_seen
            assert_same(actual, reference(seen, tx, T0 + 30 * HOUR))

    asyncio.run(scenario())


def test_memory_drops_windows_a_day_old_and_users_90_days_old_a_few_per_add() -> None:
    async def scenario() -> None:
        history = MemoryHistory()
        for n in range(100):
            await history.add("A", make(n, "10", country="FR", user=f"idle{n}"), T0 + n)
        await history.add("A", make(100, "10", user="active"), T0 + DAY - 1)
        assert (history.users_kept(), history.windows_kept()) == (101, 101)  # the oldest are 1 ms short

        # Each add examines a few of the oldest entries, not every user.
        late = T0 + DAY + 1000
        await history.add("A", make(101, "10", user="active"), late)
        assert 1 < history.windows_kept() < 101
        for n in range(102, 200):
            if history.windows_kept() == 1:
                break
            await history.add("A", make(n, "10", user="active"), late + n)
        assert (history.users_kept(), history.windows_kept()) == (101, 1)
        quiet = await history.read("A", make(900, "10", country="FR", user="idle0"), late + 200)
        assert (quiet.count_total, quiet.count_24h, quiet.country_seen) == (1, 0, True)
        assert (await history.recall("A", make(0, "10", user="idle0"), late + 200))[1] is False

        # 90 days after their last add, the idle users are forgotten altogether; the active one stays.
        later = T0 + 99 + LONG_TTL_MS
        for n in range(300, 400):
            if history.users_kept() == 1:
                break
            await history.add("A", make(n, "10", user="active"), later + n)
        assert (history.users_kept(), history.windows_kept()) == (1, 1)
        assert await history.read("A", make(901, "10", country="FR", user="idle0"), later + 400) == History()
        assert (await history.read("A", make(902, "10", user="active"), later + 400)).count_total > 3

    asyncio.run(scenario())


def test_memory_keeps_at_most_max_users_forgetting_the_least_recently_active() -> None:
    async def scenario() -> None:
        assert MemoryHistory().max_users == MEMORY_MAX_USERS
        history = MemoryHistory(max_users=100)
        for n in range(100):
            await history.add("A", make(n, "10", user=f"u{n}"), T0 + n)
        await history.add("A", make(1000, "10", user="u0"), T0 + 500)  # u0 is the most recent now
        # A flood of fresh ids, all within the day: only the cap holds them back.
        for n in range(100, 5000):
            await history.add("B", make(n, "10", user=f"flood{n}"), T0 + 1000 + n)
            assert history.users_kept() <= 100
        assert history.users_kept() == 100
        assert history.windows_kept() == 100
        for user in ("u0", "u1", "u99", "flood4899"):
            assert await history.read("A", make(2000, "10", user=user), T0 + 9000) == History()
        assert (await history.read("B", make(2001, "10", user="flood4999"), T0 + 9000)).count_total == 1
        assert (await history.read("B", make(2002, "10", user="flood4900"), T0 + 9000)).count_total == 1

    asyncio.run(scenario())
