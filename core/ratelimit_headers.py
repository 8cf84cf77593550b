"""The one builder of the headers that tell a client about a limit and when to come back.

Every 429 and 503 that Sentinel itself produces (the gateway's local burst bucket, its distributed
window, the limiter-unavailable and shed and breaker-open and no-upstream 503s, Django's throttles
and the failed-login limiter) gets its headers here, so they all look alike (issue 8 item 7, shared
decision 3). The set, and what each field means:

=========================  ===========================================================================
``Retry-After``            every 429 and 503: whole seconds (RFC 9110 10.2.3 delay-seconds), rounded
                           up, at least 1 ("0" invites an immediate retry that fails again), at most
                           ``MAX_RETRY_AFTER_S``; never earlier than ``RateLimit-Reset`` (the IETF
                           draft, section 6: Retry-After must not point before the effective window's
                           end).
``RateLimit-Limit``        the quota ``q`` of the policy that decided: requests per window.
``RateLimit-Remaining``    requests left under that policy now (0 on a refusal).
``RateLimit-Reset``        seconds until at least one more request is allowed under that policy (the
                           draft's ``t``: slots free one by one in a sliding window or a refilling
                           bucket, so "the whole quota is back" would overstate the wait).
``RateLimit-Policy``       ``"<name>";q=<quota>;w=<window seconds>``: draft-ietf-httpapi-ratelimit-
                           headers-10/-11 section 3 (a Structured Fields List of Strings with
                           parameters ``q``, ``w``).
``RateLimit``              ``"<name>";r=<remaining>;t=<reset seconds>``: the same draft's section 4.
``x-ratelimit-remaining``  the same number as ``RateLimit-Remaining``, for clients written against
                           the de facto ``X-RateLimit-*`` convention (Kong, GitHub, APISIX).
=========================  ===========================================================================

A 429 carries the full set: ``too_many_requests_headers`` takes the ``LimitState`` of the policy
that refused. A 503 carries ``Retry-After`` only (``service_unavailable_headers``): it says the
service cannot serve now, not that the client used up a quota, and the draft's rule above would
otherwise drag a shed request's short ``Retry-After`` out to the end of its window's slot.
Successful responses carry the set without ``Retry-After`` (``limit_headers``).

Headers are ASGI pairs: lower-case ``bytes`` names and ``bytes`` values (``as_text`` for Django).
No Django, no Sentinel app: the gateway's hot path and the accounts app both use it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_RETRY_AFTER_S",
    "RATELIMIT_HEADER_NAMES",
    "Header",
    "LimitState",
    "as_text",
    "limit_headers",
    "retry_after_seconds",
    "service_unavailable_headers",
    "too_many_requests_headers",
]

Header = tuple[bytes, bytes]

# A client told to wait longer than an hour has, in practice, been told "not now"; a token bucket
# with no refill would otherwise announce infinity.
MAX_RETRY_AFTER_S: Final = 3600
# Every name this module writes, for layers that rebuild a response and must carry them over.
RATELIMIT_HEADER_NAMES: Final = (
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "RateLimit-Policy",
    "RateLimit",
    "X-RateLimit-Remaining",
)


_SPELLING: Final = {name.lower().encode(): name for name in RATELIMIT_HEADER_NAMES}


@dataclass(frozen=True, slots=True)
class LimitState:
    """One quota policy as the client should see it in this response.

    ``policy``: the policy's name, printable ASCII (``"burst"``, ``"window"``, ``"login"``);
    ``limit``: the quota ``q`` in requests (>= 0); ``window_s``: the window ``w`` in whole seconds
    (>= 1; 0 means unknown and leaves ``w`` out); ``remaining``: requests left (>= 0);
    ``reset_s``: seconds (may be fractional; rounded up when written) until one more request is
    allowed. Raises ValueError on a negative number or a name that is not printable ASCII.
    """

    policy: str
    limit: int
    window_s: int
    remaining: int
    reset_s: float

    def __post_init__(self) -> None:
        if min(self.limit, self.window_s, self.remaining) < 0 or self.reset_s < 0:
            raise ValueError(f"negative figure in {self!r}")
        # Printable ASCII is " " to "~": isascii() and isprintable() say it in C.
        if not self.policy or not (self.policy.isascii() and self.policy.isprintable()):
            raise ValueError(f"policy name must be non-empty printable ASCII: {self.policy!r}")


def retry_after_seconds(seconds: float) -> int:
    """``seconds`` as a ``Retry-After`` value: rounded up, at least 1, at most MAX_RETRY_AFTER_S.

    Rounded up so a client that waits as told is never early; infinity and NaN give the maximum.
    """
    if math.isnan(seconds) or seconds >= MAX_RETRY_AFTER_S:
        return MAX_RETRY_AFTER_S
    return max(1, math.ceil(seconds))


def limit_headers(limit: LimitState) -> list[Header]:
    """The informational fields for ``limit`` (module docstring), without ``Retry-After``."""
    name, quota, policy = _policy_fields(limit.policy, limit.limit, limit.window_s)
    remaining = b"%d" % limit.remaining
    reset = b"%d" % math.ceil(min(limit.reset_s, MAX_RETRY_AFTER_S))
    return [
        (b"x-ratelimit-remaining", remaining),
        (b"ratelimit-limit", quota),
        (b"ratelimit-remaining", remaining),
        (b"ratelimit-reset", reset),
        (b"ratelimit-policy", policy),
        (b"ratelimit", b"%s;r=%s;t=%s" % (name, remaining, reset)),
    ]


@functools.lru_cache(maxsize=1024)
def _policy_fields(policy: str, limit: int, window_s: int) -> tuple[bytes, bytes, bytes]:
    """The parts of `limit_headers` that a policy's requests share: the policy's name as a
    Structured Field String, ``RateLimit-Limit`` and ``RateLimit-Policy`` (every proxied request
    built them again before; a process has a handful of policies)."""
    name = _structured_string(policy)
    value = f"{name};q={limit}"
    if window_s > 0:
        value += f";w={window_s}"
    return name.encode(), b"%d" % limit, value.encode()


def too_many_requests_headers(limit: LimitState, *, retry_after_s: float) -> list[Header]:
    """The headers of a 429: ``limit``'s fields and ``Retry-After``.

    ``retry_after_s`` (seconds until this request would be admitted) is raised to
    ``limit.reset_s`` when shorter, so Retry-After never points before ``RateLimit-Reset``.
    """
    retry_after = retry_after_seconds(max(retry_after_s, limit.reset_s))
    return [*limit_headers(limit), (b"retry-after", str(retry_after).encode())]


def service_unavailable_headers(*, retry_after_s: float) -> list[Header]:
    """The headers of a 503: ``Retry-After`` alone (module docstring)."""
    return [(b"retry-after", str(retry_after_seconds(retry_after_s)).encode())]


def as_text(headers: list[Header]) -> list[tuple[str, str]]:
    """The same headers as ``str`` pairs with their usual spelling (``RateLimit-Policy``), for
    Django's ``HttpResponse[name] = value`` (names are case-insensitive; this is for readers)."""
    return [(_SPELLING.get(name, name.decode("latin-1")), value.decode("latin-1")) for name, value in headers]


def _structured_string(value: str) -> str:
    """``value`` as a Structured Field String (RFC 8941 3.3.3): quoted, ``\\`` and ``"`` escaped."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
