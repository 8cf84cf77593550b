"""A user's transaction history as the brain's features need it (fraud.proto's `History`), kept in
counters rather than read from the ledger: one Redis round trip to read it, one to add to it.

The definitions are EXACTLY the proto's comments (and `fraud.brain.synthetic.history_of`, which
makes the training set): windows count the transactions at times in (t - window, t]; `small` is
amount <= small_amount(currency) (2.00 EUR at the ECB rate, fraud.engine.transaction); the ln-amount
mean and the population standard deviation are over every kept transaction (0 when none, std 0
when fewer than 2); `country_seen`/`merchant_seen` are False when this transaction's
country/merchant is ""; `countries_24h` counts distinct non-empty countries; `last_at_ms` is the
latest transaction at or before the time read (a user's transaction added after a later one, two
at once, never sees the later one as its previous: the brain refuses a `last_at_ms` after
`created_at_ms`, which was the rare `brain_error` under load), the time read itself when only
later ones are known. The transaction being scored is excluded: the endpoint reads before it adds.

A history is per tenant, user AND currency: a habit is the user's in one currency (reference
rates are approximate, and most currencies have none), and a user who paid 20 EUR a week must
not look "18 billion times his usual" paying 100,000 JPY. The price: a burst spread over several
currencies counts per currency.

Redis keys per tenant, user and currency (one hash tag, so a cluster keeps them on one slot):

* `{prefix}h:{tenant:user:currency}:w`  sorted set of the last 24 h, score = time (ms), member =
  "amount|country|transaction_id"; trimmed on every add, TTL 25 h.
* `...:s`  hash n, s1 (sum of ln amount), s2 (sum of squares), last (ms); TTL 90 days,
  refreshed by every add: "still kept" in the proto means "seen in the last 90 days".
* `...:c`, `...:m`  sets of the countries and merchants used, capped at SEEN_CAP members (a
  bot cycling merchants must not grow a key without bound); TTL 90 days.
* `...:i`  sorted set of the transaction ids counted in the last 24 h (score = time), TTL 25 h:
  `recall` says whether this transaction was recorded, so the endpoint asks the ledger about a
  replay only then, not for every new transaction.

The standard deviation comes from the running sums (sqrt(s2/n - mean^2); a variance within
rounding of 0 is 0), which differs from the two-pass formula only by rounding (~1e-12).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from fraud.engine.transaction import History, TransactionIn, small_amount
from gateway.engine.lua_scripts import LuaScript
from gateway.engine.resp import RedisUnavailable, RespClient, RespReplyError

__all__ = ["HistoryStore", "HistoryUnavailable", "MemoryHistory", "RedisHistory"]

MINUTE_MS: Final = 60_000
WINDOW_10M_MS: Final = 10 * MINUTE_MS
WINDOW_1H_MS: Final = 60 * MINUTE_MS
WINDOW_24H_MS: Final = 24 * 60 * MINUTE_MS
# The window key outlives its newest member by an hour, so a user quiet for 24 h still reads 0s.
WINDOW_TTL_MS: Final = WINDOW_24H_MS + WINDOW_1H_MS
# How long a user's habits (amount statistics, countries, merchants) are kept after their last use.
LONG_TTL_MS: Final = 90 * 24 * 60 * MINUTE_MS
SEEN_CAP: Final = 256

_LUA_DIR = Path(__file__).parent / "lua"


class HistoryUnavailable(Exception):
    """The history store could not be read or written (Redis down or erroring)."""


class HistoryStore(Protocol):
    async def read(self, tenant: str, tx: TransactionIn, at_ms: int) -> History:
        """The user's History as of `at_ms` (epoch ms), `tx` excluded. Raises HistoryUnavailable."""
        ...

    async def recall(self, tenant: str, tx: TransactionIn, at_ms: int) -> tuple[History, bool]:
        """`read`, and whether `tx.transaction_id` was added in the 24 h before `at_ms` (in the same
        round trip). False is a hint, not a proof: older replays and lost adds are not known here,
        and the ledger's unique index decides. Raises HistoryUnavailable."""
        ...

    async def add(self, tenant: str, tx: TransactionIn, at_ms: int) -> None:
        """Counts `tx` (received at `at_ms`) in the user's history. Raises HistoryUnavailable."""
        ...


def _from_sums(n: int, s1: float, s2: float) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    mean = s1 / n
    if n < 2:
        return mean, 0.0
    # E[x^2] - E[x]^2 cancels catastrophically when every amount is the same: what is left below
    # this share of E[x^2] is rounding (Redis sums in long double), and the true variance is 0.
    variance = s2 / n - mean * mean
    return mean, math.sqrt(variance) if variance > 1e-12 * (s2 / n) else 0.0


def _script(name: str) -> LuaScript:
    return LuaScript.of((_LUA_DIR / f"history_{name}.lua").read_text(encoding="utf-8"))


_READ = _script("read")
_ADD = _script("add")


class RedisHistory:
    """The fleet's history, in Redis: one EVALSHA to read, one to add."""

    def __init__(self, redis: RespClient, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def keys_for(self, tenant: str, tx: TransactionIn) -> tuple[str, str, str, str, str]:
        base = f"{self.prefix}h:{{{tenant}:{tx.user_id}:{tx.currency}}}"
        return f"{base}:w", f"{base}:s", f"{base}:c", f"{base}:m", f"{base}:i"

    async def read(self, tenant: str, tx: TransactionIn, at_ms: int) -> History:
        return (await self.recall(tenant, tx, at_ms))[0]

    async def recall(self, tenant: str, tx: TransactionIn, at_ms: int) -> tuple[History, bool]:
        args = (
            at_ms, tx.country, tx.merchant, repr(small_amount(tx.currency)), WINDOW_10M_MS, WINDOW_1H_MS, WINDOW_24H_MS,
            tx.transaction_id,
        )  # fmt: skip
        reply = await self._run(_READ, self.keys_for(tenant, tx), args)
        c10m, c1h, c24h, small, amount_1h, countries, n, s1, s2, last, country_seen, merchant_seen, recorded = reply
        mean, std = _from_sums(int(n), float(s1), float(s2))
        history = History(
            count_total=int(n),
            count_10m=int(c10m),
            count_1h=int(c1h),
            count_24h=int(c24h),
            small_count_1h=int(small),
            amount_1h=float(amount_1h),
            log_amount_mean=mean,
            log_amount_std=std,
            last_at_ms=int(last),
            country_seen=bool(int(country_seen)),
            merchant_seen=bool(int(merchant_seen)),
            countries_24h=int(countries),
        )
        return history, bool(int(recorded))

    async def add(self, tenant: str, tx: TransactionIn, at_ms: int) -> None:
        amount = float(tx.amount)
        ln = math.log(amount)
        args = (
            at_ms,
            f"{amount!r}|{tx.country}|{tx.transaction_id}",
            repr(ln),
            repr(ln * ln),
            tx.country,
            tx.merchant,
            WINDOW_24H_MS,
            WINDOW_TTL_MS,
            LONG_TTL_MS,
            SEEN_CAP,
            tx.transaction_id,
        )
        await self._run(_ADD, self.keys_for(tenant, tx), args)

    async def _run(self, script: LuaScript, keys: tuple[str, ...], args: tuple[Any, ...]) -> list[Any]:
        try:
            reply = await self.redis.evalsha(script.sha, script.source, keys, args)
        except (RedisUnavailable, RespReplyError) as exc:
            raise HistoryUnavailable(f"fraud history call failed: {exc!r}") from exc
        return [value.decode() if isinstance(value, bytes) else value for value in reply]


# The most (tenant, user, currency) entries embedded mode keeps, so a flood of fresh user ids costs
# a bounded amount of memory: ~2.1 KB an entry with one transaction, ~2.7 KB with three (measured
# with tracemalloc, keys and ids included), so ~110-140 MB when full. Embedded mode is one machine's
# deployment; a fleet with more active users than this uses Redis.
MEMORY_MAX_USERS: Final = 50_000
# Entries an add examines at the old end of each recency order. More than the one entry an add can
# make stale, so the expired ones are removed faster than they appear, without ever a full scan.
_SWEEP_PER_ADD: Final = 4

_Key = tuple[str, str, str]  # (tenant, user_id, currency)


@dataclass(slots=True)
class _User:
    window: deque[tuple[int, float, str, str]] = field(default_factory=deque)  # (at_ms, amount, country, id)
    n: int = 0
    s1: float = 0.0
    s2: float = 0.0
    last: int = 0
    countries: set[str] = field(default_factory=set)
    merchants: set[str] = field(default_factory=set)
    ids: dict[str, int] = field(default_factory=dict)  # transaction id -> at_ms, the window's


class MemoryHistory:
    """The same history in one process (embedded mode), kept as long as the Redis keys would be.

    The clock is the ``at_ms`` of the adds. A user's 24 h window and its ids are dropped once its
    newest transaction is 24 h old (reads would count none of it), the whole entry (count, sums,
    seen sets) ``LONG_TTL_MS`` after its last add, as RedisHistory's keys expire. And at most
    ``max_users`` entries are kept: past that, the least recently added-to is forgotten, and its
    next transaction reads like a new user's (as after Redis evicts a key).

    Amortised: entries live in two recency orders (every user; the users with a non-empty
    window), and each add looks at the ``_SWEEP_PER_ADD`` oldest of each, never at them all.
    """

    def __init__(self, max_users: int = MEMORY_MAX_USERS) -> None:
        if max_users < 1:
            raise ValueError(f"max_users must be at least 1, not {max_users}")
        self.max_users = max_users
        # Every user kept, least recently added-to first.
        self._users: OrderedDict[_Key, _User] = OrderedDict()
        # The users whose window holds transactions, in the same order (a subset of _users).
        self._windows: OrderedDict[_Key, None] = OrderedDict()

    def users_kept(self) -> int:
        """How many (tenant, user, currency) entries are in memory."""
        return len(self._users)

    def windows_kept(self) -> int:
        """How many of them still hold transactions of a 24 h window."""
        return len(self._windows)

    async def read(self, tenant: str, tx: TransactionIn, at_ms: int) -> History:
        return (await self.recall(tenant, tx, at_ms))[0]

    async def recall(self, tenant: str, tx: TransactionIn, at_ms: int) -> tuple[History, bool]:
        user = self._users.get((tenant, tx.user_id, tx.currency))
        if user is None:
            return History(), False
        recorded = at_ms - WINDOW_24H_MS < user.ids.get(tx.transaction_id, -WINDOW_24H_MS - 1) <= at_ms
        day = [event for event in user.window if at_ms - WINDOW_24H_MS < event[0] <= at_ms]
        hour = [event for event in day if event[0] > at_ms - WINDOW_1H_MS]
        mean, std = _from_sums(user.n, user.s1, user.s2)
        small = small_amount(tx.currency)
        history = History(
            count_total=user.n,
            count_10m=sum(1 for event in hour if event[0] > at_ms - WINDOW_10M_MS),
            count_1h=len(hour),
            count_24h=len(day),
            small_count_1h=sum(1 for event in hour if event[1] <= small),
            amount_1h=math.fsum(event[1] for event in hour),
            log_amount_mean=mean,
            log_amount_std=std,
            last_at_ms=user.last if user.last <= at_ms else max((event[0] for event in day), default=at_ms),
            country_seen=bool(tx.country) and tx.country in user.countries,
            merchant_seen=bool(tx.merchant) and tx.merchant in user.merchants,
            countries_24h=len({event[2] for event in day if event[2]}),
        )
        return history, recorded

    async def add(self, tenant: str, tx: TransactionIn, at_ms: int) -> None:
        user = self._touch((tenant, tx.user_id, tx.currency))
        amount = float(tx.amount)
        ln = math.log(amount)
        user.window.append((at_ms, amount, tx.country, tx.transaction_id))
        user.ids[tx.transaction_id] = at_ms
        while user.window and user.window[0][0] <= at_ms - WINDOW_24H_MS:
            gone = user.window.popleft()
            if user.ids.get(gone[3]) == gone[0]:
                del user.ids[gone[3]]
        user.n += 1
        user.s1 += ln
        user.s2 += ln * ln
        user.last = max(user.last, at_ms)
        for seen, value in ((user.countries, tx.country), (user.merchants, tx.merchant)):
            if value and len(seen) < SEEN_CAP:
                seen.add(value)
        self._sweep(at_ms)

    def _touch(self, key: _Key) -> _User:
        """The user's entry (a new one if needed), moved to the recent end of both orders."""
        user = self._users.get(key)
        if user is None:
            user = self._users[key] = _User()
            if len(self._users) > self.max_users:
                # The new entry is at the recent end, so never the one forgotten.
                forgotten, _ = self._users.popitem(last=False)
                self._windows.pop(forgotten, None)
        else:
            self._users.move_to_end(key)
        self._windows[key] = None
        self._windows.move_to_end(key)
        return user

    def _sweep(self, at_ms: int) -> None:
        """Forget the oldest entries that have expired as of ``at_ms``, a few per call.

        Both orders are by last add, so the first live entry ends the search: the ones behind it
        were added to later (at a later ``at_ms`` unless the caller's clock went back, in which
        case they go a little later than due).
        """
        for _ in range(_SWEEP_PER_ADD):
            key = next(iter(self._users), None)
            if key is None or self._users[key].last > at_ms - LONG_TTL_MS:
                break
            del self._users[key]
            self._windows.pop(key, None)
        for _ in range(_SWEEP_PER_ADD):
            key = next(iter(self._windows), None)
            if key is None:
                break
            user = self._users[key]
            # Every event is at or before `last`: at 24 h past it, no read counts any of them.
            if user.last > at_ms - WINDOW_24H_MS:
                break
            del self._windows[key]
            user.window.clear()
            user.ids.clear()
