"""Failed-login limiting per username and per client IP (SPEC 1), over a sliding window.

An exact sliding-window *log*, like the gateway's distributed limiter: each subject (a username, an
IP) keeps the times of its failed logins, and is locked while `limit` of them fall within the last
`window` seconds. Exact rather than a sliding-window *counter* (two fixed windows weighted by the
overlap): the counter approximates, so a guesser who spreads tries across a boundary could still
get more than the limit, or an honest user be told a wrong Retry-After; the log's memory is
bounded by the limit itself (5 times per username, 20 per IP: only the newest `limit` times
matter, see `_retry_after`), so exactness costs nothing here.

The log lives in the Django cache's backend: a sorted set per subject in Redis (production; one
Lua script per write, so concurrent web processes cannot lose a failure), a list under a lock in
the local-memory cache (embedded mode, one process). A subject that reached its limit is refused
*before* the password is checked, so a locked account cannot be probed further and bcrypt's cost is
not spent on an attacker. If the cache is down, the limiter fails open: logging in keeps working.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from django.core.cache import caches
from django_redis import get_redis_connection
from django_redis.cache import RedisCache

from core.conf import sentinel_settings
from core.ratelimit_headers import LimitState

logger = logging.getLogger("sentinel.accounts")

Clock = Callable[[], float]  # wall-clock seconds (time.time); injectable for tests


@dataclass(frozen=True)
class Lockout:
    subject: str  # "username" or "ip"
    retry_after: int  # whole seconds until enough counted failures have left the window
    limit: int = 0  # the subject's quota of failures per window
    window: int = 0  # the window, in whole seconds

    def state(self) -> LimitState:
        """The refusing policy as the 429's RateLimit headers state it (`core.ratelimit_headers`):
        `"login-username"` or `"login-ip"`, nothing remaining until `retry_after`."""
        return LimitState(f"login-{self.subject}", self.limit, self.window, 0, self.retry_after)


class FailureLog(Protocol):
    """Where failure times are kept. Times are seconds (float) from the limiter's clock."""

    def recent(self, keys: Iterable[str], *, now: float, window: float) -> dict[str, list[float]]:
        """Each key's failure times within (now - window, now], oldest first."""
        ...

    def add(self, limits: Mapping[str, int], *, now: float, window: float) -> None:
        """Records one failure at `now` under each key, keeping at most its limit of newest times."""
        ...

    def clear(self, key: str) -> None: ...


# KEYS: the logs; ARGV: now (ms), window (ms), a member suffix unique to this call, then one limit
# per key. Expired times go, the new one comes in, only the newest `limit` stay (older ones can no
# longer decide a lockout), and the key expires with its newest entry.
_RECORD_LUA = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[3 + i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  redis.call('ZADD', key, now, ARGV[1] .. ':' .. ARGV[3])
  redis.call('ZREMRANGEBYRANK', key, 0, -(limit + 1))
  redis.call('PEXPIRE', key, math.ceil(window))
end
return 1
"""


class RedisFailureLog:
    """Sorted sets (score: failure time in ms) through the cache's own Redis connection."""

    def __init__(self, client: Any, make_key: Callable[[str], str]) -> None:
        self._client = client
        self._make_key = make_key
        self._record = client.register_script(_RECORD_LUA)

    def recent(self, keys: Iterable[str], *, now: float, window: float) -> dict[str, list[float]]:
        names = list(keys)
        low = f"({(now - window) * 1000.0!r}"  # exclusive: a failure counts during [t, t + window)
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.zrangebyscore(self._make_key(name), low, "+inf", withscores=True)
        replies = pipe.execute()
        return {name: [score / 1000.0 for _, score in reply] for name, reply in zip(names, replies, strict=True)}

    def add(self, limits: Mapping[str, int], *, now: float, window: float) -> None:
        keys = [self._make_key(name) for name in limits]
        args = [now * 1000.0, window * 1000.0, secrets.token_hex(6), *limits.values()]
        self._record(keys=keys, args=args)

    def clear(self, key: str) -> None:
        self._client.delete(self._make_key(key))


class CacheFailureLog:
    """A list of times per key in any Django cache, read and written under a process-wide lock.

    Atomic only within one process, which is what the local-memory cache is (embedded mode); a
    shared cache other than Redis would need a server-side script like `RedisFailureLog`'s.
    """

    _lock = threading.Lock()

    def __init__(self, cache: Any) -> None:
        self._cache = cache

    def recent(self, keys: Iterable[str], *, now: float, window: float) -> dict[str, list[float]]:
        names = list(keys)
        stored = self._cache.get_many(names)
        return {name: [t for t in stored.get(name) or [] if t > now - window] for name in names}

    def add(self, limits: Mapping[str, int], *, now: float, window: float) -> None:
        with self._lock:
            current = self.recent(limits, now=now, window=window)
            for name, limit in limits.items():
                times = sorted([*current[name], now])[-limit:]
                self._cache.set(name, times, timeout=math.ceil(window) + 1)

    def clear(self, key: str) -> None:
        self._cache.delete(key)


def failure_log_for(alias: str = "default") -> FailureLog:
    """The Redis log when this cache is django-redis, the generic one otherwise."""
    backend = caches[alias]
    if isinstance(backend, RedisCache):
        return RedisFailureLog(get_redis_connection(alias), backend.make_key)
    return CacheFailureLog(backend)


def _retry_after(times: list[float], limit: int, *, now: float, window: float) -> int | None:
    """Seconds until this subject may try again, or None if it may now.

    Locked while `limit` or more failures are in the window. It may try again once the count drops
    below the limit, i.e. once the `limit`-th newest failure leaves, at that time + window (with
    exactly `limit` failures, that is the oldest one). Whole seconds, rounded up, at least 1
    (RFC 9110 10.2.3: Retry-After is a whole number of seconds).
    """
    if len(times) < limit:
        return None
    deciding = sorted(times)[-limit]
    return max(1, math.ceil(deciding + window - now))


class LoginLimiter:
    """Failed logins per username and per IP over a sliding window of `window` seconds."""

    def __init__(
        self,
        log: FailureLog,
        *,
        per_username: int,
        per_ip: int,
        window: float,
        clock: Clock = time.time,
    ) -> None:
        self.log = log
        self.limits = {"username": per_username, "ip": per_ip}
        self.window = float(window)
        self.clock = clock

    @staticmethod
    def keys(username: str, ip: str) -> dict[str, str]:
        # Usernames are case-insensitive (accounts_user_username_ci_unique): `Alice` is `alice`. A
        # username is whatever a client typed (spaces, control characters, 150 characters): its
        # digest keeps the cache key short and printable.
        folded = hashlib.sha256(username.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return {"username": f"accounts:login_fail:u:{folded}", "ip": f"accounts:login_fail:ip:{ip}"}

    def lockout(self, *, username: str, ip: str) -> Lockout | None:
        """The lockout in force for this username or IP, if any; None when the cache is down."""
        keys = self.keys(username, ip)
        now = self.clock()
        try:
            recent = self.log.recent(keys.values(), now=now, window=self.window)
        except Exception:  # a dead cache must neither lock everybody out nor answer 500
            logger.warning("login limiter unavailable: cache read failed", exc_info=True)
            return None
        waits = {
            subject: _retry_after(recent[key], self.limits[subject], now=now, window=self.window)
            for subject, key in keys.items()
        }
        locked = {subject: wait for subject, wait in waits.items() if wait is not None}
        if not locked:
            return None
        # Locked on both: the client must wait for the later of the two.
        subject = max(locked, key=lambda name: locked[name])
        return Lockout(
            subject=subject, retry_after=locked[subject], limit=self.limits[subject], window=math.ceil(self.window)
        )

    def failure(self, *, username: str, ip: str) -> None:
        """Counts one failed login against both the username and the IP."""
        keys = self.keys(username, ip)
        try:
            self.log.add({keys[s]: self.limits[s] for s in keys}, now=self.clock(), window=self.window)
        except Exception:
            logger.warning("login limiter unavailable: cache write failed", exc_info=True)

    def success(self, *, username: str) -> None:
        """A right password clears the username's log (never the IP's: one good account must not
        launder an IP that is guessing at others)."""
        try:
            self.log.clear(self.keys(username, "-")["username"])
        except Exception:
            logger.warning("login limiter unavailable: cache delete failed", exc_info=True)


def login_limiter() -> LoginLimiter:
    """The limiter configured by SENTINEL_ACCOUNTS on the default cache. Built per call: cheap,
    and settings overridden in tests are honoured."""
    conf = sentinel_settings.accounts
    return LoginLimiter(
        failure_log_for(),
        per_username=conf.LOGIN_FAILURES_PER_USERNAME,
        per_ip=conf.LOGIN_FAILURES_PER_IP,
        window=conf.LOGIN_FAILURE_WINDOW_SECONDS,
    )


def login_lockout(*, username: str, ip: str) -> Lockout | None:
    """The lockout in force for this username or IP, if any."""
    return login_limiter().lockout(username=username, ip=ip)


def login_failure_record(*, username: str, ip: str) -> None:
    """Counts one failed login against both the username and the IP."""
    login_limiter().failure(username=username, ip=ip)


def login_success_record(*, username: str) -> None:
    """A right password clears the username's count (not the IP's)."""
    login_limiter().success(username=username)
