"""Failed-login limiting per username and per client IP (SPEC 1).

Fixed windows counted in the Django cache (Redis in production, so every web process shares the
counts). A username or IP that reached its limit is refused *before* the password is checked, so
a locked account cannot be probed further and bcrypt's cost is not spent on an attacker.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

logger = logging.getLogger("sentinel.accounts")


@dataclass(frozen=True)
class Lockout:
    subject: str  # "username" or "ip"
    retry_after: int  # seconds until the window ends


def _window() -> tuple[int, int]:
    """(window length, start of the current window) in whole seconds."""
    length = settings.SENTINEL_ACCOUNTS["LOGIN_FAILURE_WINDOW_SECONDS"]
    now = int(time.time())
    return length, now - now % length


def _keys(username: str, ip: str, start: int) -> dict[str, str]:
    return {
        "username": f"accounts:login_fail:u:{username.strip().lower()}:{start}",
        "ip": f"accounts:login_fail:ip:{ip}:{start}",
    }


def _limits() -> dict[str, int]:
    conf = settings.SENTINEL_ACCOUNTS
    return {"username": conf["LOGIN_FAILURES_PER_USERNAME"], "ip": conf["LOGIN_FAILURES_PER_IP"]}


def login_lockout(*, username: str, ip: str) -> Lockout | None:
    """The lockout in force for this username or IP, if any."""
    length, start = _window()
    keys = _keys(username, ip, start)
    try:
        counts = cache.get_many(list(keys.values()))
    except Exception:  # a dead cache must neither lock everybody out nor answer 500
        logger.warning("login limiter unavailable: cache read failed", exc_info=True)
        return None
    limits = _limits()
    for subject, key in keys.items():
        if int(counts.get(key) or 0) >= limits[subject]:
            retry_after = max(1, math.ceil(start + length - time.time()))
            return Lockout(subject=subject, retry_after=retry_after)
    return None


def login_failure_record(*, username: str, ip: str) -> None:
    """Counts one failed login against both the username and the IP."""
    length, start = _window()
    for key in _keys(username, ip, start).values():
        try:
            # add() is a no-op when the key exists; incr() is atomic on Redis and in-process.
            cache.add(key, 0, timeout=length + 5)
            cache.incr(key)
        except ValueError:
            cache.set(key, 1, timeout=length + 5)  # expired between add() and incr()
        except Exception:
            logger.warning("login limiter unavailable: cache write failed", exc_info=True)
            return


def login_success_record(*, username: str) -> None:
    """A right password clears the username's count (never the IP's: one good account must not
    launder an IP that is guessing at others)."""
    _, start = _window()
    try:
        cache.delete(_keys(username, "-", start)["username"])
    except Exception:
        logger.warning("login limiter unavailable: cache delete failed", exc_info=True)
