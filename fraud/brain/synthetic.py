"""The brain's labelled training set: simulated users, their honest habits, and planted fraud.

Each user has a habit: a typical amount (lognormal around a per-user median), a home country, a
handful of merchants and daytime hours (07:00-22:59 UTC). Over `DAYS` simulated days they make
honest transactions, with the honest oddities that keep the task from being trivial: a trip
abroad (several transactions in a new country), a big purchase (now and then as the very first
payment), a new merchant, a late night, a few coffees in a row. Fraud episodes are then planted,
one pattern each (`PATTERNS`); "first_payment" is a fresh account whose first payment is large (a
stolen card or a taken-over account, cashed out at once).

Amounts are in EUR, the features' reference currency (fraud.engine.currencies), except for the
users paying in `NO_RATE`, a currency without a reference rate: the brain sees their amounts
relative to their own habit only, as it does a real currency the ECB does not quote.

Every transaction's `History` is computed by `history_of`, replaying the user's earlier
transactions exactly as fraud.proto's `History` comments define it, so the model is trained on
what the web process's history store will send.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from fraud.engine.currencies import REFERENCE
from fraud.engine.transaction import SMALL_AMOUNT_EUR, History, small_amount

SEED: Final = 20261201
USERS: Final = 1500
DAYS: Final = 30
DAY_MS: Final = 86_400_000
HOUR_MS: Final = 3_600_000
MINUTE_MS: Final = 60_000
# History's windows (fraud.proto): the 10 minutes, hour and day before the transaction.
WINDOW_10M_MS: Final = 10 * MINUTE_MS
WINDOW_1H_MS: Final = HOUR_MS
WINDOW_24H_MS: Final = DAY_MS
# 2026-11-01 00:00 UTC: the simulation's first day (a Sunday; nothing depends on it).
START_MS: Final = 1_793_491_200_000
COUNTRIES: Final = ("FR", "DE", "ES", "IT", "NL", "BE", "GB", "US", "PT", "PL", "SE", "IE")
FOREIGN: Final = ("BR", "NG", "RU", "CN", "IN", "MX", "TH", "VN", "ID", "TR", "UA", "PH", *COUNTRIES)
# The planted fraud patterns, named like the feature that should reveal each (fraud.brain.features).
PATTERNS: Final = (
    "amount_vs_habit",
    "velocity_10m",
    "new_country",
    "new_merchant",
    "night",
    "small_amounts_1h",
    "first_payment",
)
# ln of the simulated users' median amount (EUR): ~27 EUR, most users 12-60 (`_new_user`). It is
# also what a new user's first payment typically is (fraud.brain.features quotes it).
HABIT_MEDIAN_LN: Final = 3.3
# ISO 4217's code "reserved for testing": no reference rate will ever exist for it. This share of
# the users pays in it, so the model learns the features a missing rate leaves missing.
NO_RATE: Final = "XTS"
NO_RATE_SHARE: Final = 0.1
# The share of honest users whose first payment is a big purchase (8-60x their usual, now and
# then more): rarer than everyday first payments, so a large one is suspicious, not damning.
HONEST_BIG_FIRST: Final = 0.05


@dataclass(frozen=True)
class Earlier:
    """One transaction as History sees it: when (Unix epoch ms), how much (major units), where."""

    at_ms: int
    amount: float
    country: str = ""
    merchant: str = ""


@dataclass(frozen=True)
class Labelled:
    """A row of the training set: the transaction, its History, and whether it was fraud
    (`pattern` names the planted pattern, "" for an honest one)."""

    user_id: str
    tx: Earlier
    history: History
    fraud: bool
    pattern: str = ""
    currency: str = REFERENCE


def _in_window(times: Sequence[int], now_ms: int, window_ms: int) -> int:
    """How many of the sorted `times` are in (now - window, now]: the window's far edge excluded."""
    return bisect.bisect_right(times, now_ms) - bisect.bisect_right(times, now_ms - window_ms)


def history_of(earlier: Sequence[Earlier], tx: Earlier, currency: str = REFERENCE) -> History:
    """The History of `tx` given the user's `earlier` transactions in `currency` (any order; those
    after `tx`'s time are ignored, `tx` itself must not be among them), per fraud.proto's History
    comments.

    A window counts the transactions at `at_ms` in (tx.at_ms - window, tx.at_ms]. `small` is
    amount <= small_amount(currency) (2.00 EUR at the reference rate; none for a currency
    without one). The ln-amount mean is over all earlier transactions (0 when none), its
    standard deviation the population one (0 when fewer than 2). `country_seen`/`merchant_seen`
    are False when `tx`'s country/merchant is "" ; `countries_24h` counts the distinct non-empty
    countries of the last 24 h.
    """
    before = sorted((e for e in earlier if e.at_ms <= tx.at_ms), key=lambda e: e.at_ms)
    if not before:
        return History()
    times = [e.at_ms for e in before]
    small = small_amount(currency)
    hour = [e for e in before if e.at_ms > tx.at_ms - WINDOW_1H_MS]
    day = [e for e in before if e.at_ms > tx.at_ms - WINDOW_24H_MS]
    logs = [math.log(e.amount) for e in before]
    mean = math.fsum(logs) / len(logs)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in logs) / len(logs)) if len(logs) >= 2 else 0.0
    return History(
        count_total=len(before),
        count_10m=_in_window(times, tx.at_ms, WINDOW_10M_MS),
        count_1h=len(hour),
        count_24h=len(day),
        small_count_1h=sum(1 for e in hour if e.amount <= small),
        amount_1h=math.fsum(e.amount for e in hour),
        log_amount_mean=mean,
        log_amount_std=std,
        last_at_ms=times[-1],
        country_seen=bool(tx.country) and any(e.country == tx.country for e in before),
        merchant_seen=bool(tx.merchant) and any(e.merchant == tx.merchant for e in before),
        countries_24h=len({e.country for e in day if e.country}),
    )


@dataclass
class _User:
    user_id: str
    median: float
    spread: float
    home: str
    merchants: list[str]
    rate_per_day: float
    currency: str


def _new_user(rng: random.Random, index: int) -> _User:
    return _User(
        user_id=f"u{index:05d}",
        median=math.exp(rng.gauss(HABIT_MEDIAN_LN, 0.8)),  # a median of ~27 EUR, most users 12-60
        spread=rng.uniform(0.25, 0.7),
        home=rng.choice(COUNTRIES),
        merchants=[f"m{rng.randrange(4000):04d}" for _ in range(rng.randint(3, 8))],
        rate_per_day=rng.uniform(0.6, 3.0),
        currency=NO_RATE if rng.random() < NO_RATE_SHARE else REFERENCE,
    )


def _daytime_ms(rng: random.Random, day: int) -> int:
    return START_MS + day * DAY_MS + rng.randint(7 * HOUR_MS, 23 * HOUR_MS - 1)


def _honest(rng: random.Random, user: _User) -> list[Earlier]:
    """The user's honest transactions over DAYS days, with honest oddities mixed in."""
    out: list[Earlier] = []
    trip = rng.randrange(DAYS) if rng.random() < 0.25 else -1
    abroad = rng.choice([c for c in FOREIGN if c != user.home])
    for day in range(DAYS):
        for _ in range(_poisson(rng, user.rate_per_day)):
            at = _daytime_ms(rng, day)
            amount = rng.lognormvariate(math.log(user.median), user.spread)
            country, merchant = user.home, rng.choice(user.merchants)
            roll = rng.random()
            if roll < 0.03:  # a big purchase (a laptop, a flight)
                amount *= rng.uniform(4, 15)
            elif roll < 0.12:  # somewhere new
                merchant = f"m{rng.randrange(4000):04d}"
            elif roll < 0.15:  # a late night out
                at = START_MS + day * DAY_MS + rng.randint(0, 5 * HOUR_MS)
            elif roll < 0.18:  # a coffee, a parking meter
                amount = rng.uniform(0.8, SMALL_AMOUNT_EUR)
            if trip <= day < trip + 4:  # a trip abroad: new country, new merchants, all honest
                country, merchant = abroad, f"m{rng.randrange(4000):04d}"
            if not out and rng.random() < HONEST_BIG_FIRST:  # an account opened for a big purchase
                amount = user.median * rng.uniform(8, 60) * (rng.uniform(1.5, 3) if rng.random() < 0.1 else 1)
            out.append(Earlier(at, round(max(amount, 0.5), 2), country, merchant))
        if rng.random() < 0.03:  # a few purchases in a row at one shop (honest velocity)
            at = _daytime_ms(rng, day)
            merchant = rng.choice(user.merchants)
            for k in range(rng.randint(2, 4)):
                out.append(Earlier(at + k * rng.randint(30_000, 150_000), round(user.median, 2), user.home, merchant))
    return out


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method (TAOCP 3.4.1): small means only."""
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def _episode(rng: random.Random, user: _User, pattern: str) -> list[Earlier]:
    """One planted fraud episode of `pattern`, on any day but the first few (a habit exists)."""
    day = rng.randrange(5, DAYS)
    at = _daytime_ms(rng, day)
    usual = user.median * rng.uniform(0.7, 1.6)
    home, known = user.home, rng.choice(user.merchants)
    fresh = f"m{rng.randrange(4000):04d}"
    if pattern == "amount_vs_habit":
        return [Earlier(at, round(user.median * rng.uniform(8, 40), 2), home, known)]
    if pattern == "velocity_10m":
        count = rng.randint(5, 12)
        return [Earlier(at + k * rng.randint(20_000, 70_000), round(usual, 2), home, known) for k in range(count)]
    if pattern == "new_country":
        country = rng.choice([c for c in FOREIGN if c != home])
        return [Earlier(at, round(usual * rng.uniform(1, 3), 2), country, fresh)]
    if pattern == "new_merchant":
        return [Earlier(at, round(usual * rng.uniform(1, 3), 2), home, fresh)]
    if pattern == "night":
        night = START_MS + day * DAY_MS + rng.randint(1 * HOUR_MS, 5 * HOUR_MS)
        return [Earlier(night, round(usual * rng.uniform(1, 2.5), 2), home, known)]
    if pattern == "first_payment":
        # A fresh account's first payment, large (~2,400 EUR, most 600-10,000): `generate` gives
        # this user no honest transactions before it.
        big = math.exp(rng.gauss(math.log(2400), 0.7))
        return [Earlier(at, round(big, 2), home, fresh)]
    # small_amounts_1h: card testing, many charges of at most SMALL_AMOUNT_EUR within the hour.
    count = rng.randint(5, 15)
    return [
        Earlier(at + k * rng.randint(60_000, 240_000), round(rng.uniform(0.5, SMALL_AMOUNT_EUR), 2), home, fresh)
        for k in range(count)
    ]


def generate(seed: int = SEED, users: int = USERS) -> list[Labelled]:
    """The labelled set: every transaction of `users` simulated users with its History, in time
    order per user. Deterministic for a given `seed` (Python's `random.Random`); about 40 % of the
    users suffer one fraud episode, its transactions labelled fraud with the episode's pattern (a
    "first_payment" user is the fraudster's fresh account: that payment is all it has)."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible simulation, not a secret
    rows: list[Labelled] = []
    for index in range(users):
        user = _new_user(rng, index)
        timeline = [(tx, "") for tx in _honest(rng, user)]
        if rng.random() < 0.4:
            pattern = rng.choice(PATTERNS)
            episode = [(tx, pattern) for tx in _episode(rng, user, pattern)]
            # A fresh account cashed out: nothing honest before (nor after: it is closed).
            timeline = episode if pattern == "first_payment" else timeline + episode
        timeline.sort(key=lambda item: item[0].at_ms)
        rows.extend(_replay(user.user_id, user.currency, timeline))
    return rows


def _replay(user_id: str, currency: str, timeline: list[tuple[Earlier, str]]) -> list[Labelled]:
    earlier: list[Earlier] = []
    out: list[Labelled] = []
    for tx, pattern in timeline:
        out.append(Labelled(user_id, tx, history_of(earlier, tx, currency), bool(pattern), pattern, currency))
        earlier.append(tx)
    return out
