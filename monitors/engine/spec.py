"""What one check is (``CheckSpec``) and what it found (``CheckReport``), plus target parsing.

Plain data and pure functions: the scheduler builds specs from Monitor rows, the runner turns
each into a report, the API validates targets and status lists with the same functions the
runner relies on. No Django here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_EXPECTED_STATUS",
    "MAX_EXPECTED_STATUS_ENTRIES",
    "CheckReport",
    "CheckSpec",
    "http_target_problem",
    "parse_expected_status",
    "split_tcp_target",
]

#: Uptime Kuma's default "accepted status codes" (``200-299``), used when a monitor lists none.
DEFAULT_EXPECTED_STATUS: Final[tuple[tuple[int, int], ...]] = ((200, 299),)
#: More entries than anyone writes by hand; a bound on what a request can make us store.
MAX_EXPECTED_STATUS_ENTRIES: Final = 50
MIN_STATUS: Final = 100
MAX_STATUS: Final = 599
MAX_URL_CHARS: Final = 2000
# What a condition may read (the runner's values): the status code, the response time in ms, the
# headers (lower-cased names), the body (parsed JSON when it is JSON), the certificate's days left.
CONDITION_NAMES: Final = ("status", "response_time", "headers", "body", "cert_expiry_days")


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One check to run, as loaded from a Monitor row (``version`` bumps whenever it changes).

    ``kind`` is ``"http"`` or ``"tcp"``; ``target`` a URL (http) or ``host:port`` (tcp).
    ``expected_status`` is inclusive ranges; ``keyword`` is searched in the body as text
    (``keyword_absent``: it must not be there); ``max_latency_ms`` makes a slower answer a
    failure ("too slow"); ``conditions`` is rules-DSL text (``rules.dsl.compile_condition``).
    ``timeout_seconds`` bounds the whole check (DNS, connect, TLS, request, body), 10 s by
    default as in Gatus. ``due_at`` is when the scheduler wanted it started (epoch seconds;
    0 means now), for the lag figure.
    """

    monitor_id: int
    version: int
    kind: str  # "http" | "tcp"
    target: str  # URL, or host:port
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    expected_status: tuple[tuple[int, int], ...] = DEFAULT_EXPECTED_STATUS  # inclusive ranges
    keyword: str = ""
    keyword_absent: bool = False
    max_latency_ms: float | None = None
    conditions: str = ""
    follow_redirects: bool = True
    verify_tls: bool = True
    timeout_seconds: float = 10.0
    due_at: float = 0.0  # epoch seconds; 0 = now


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What one check found, before thresholds.

    ``outcome`` is ``"up"`` or ``"down"``; ``reason`` is ``""`` when up, else one sentence an
    operator understands ("connection refused by 127.0.0.1:8080", "status 500, expected
    200-299"...); ``failed_condition`` is the failing conjunct with its actual values
    (``'status (500) == 200'``) when a condition failed, else ``""``. ``latency_ms`` runs from
    the start of the connection (the DNS lookup when not cached, the TCP connect, the TLS
    handshake; every redirect hop) to the last byte read: the body's when a keyword or a
    condition read it, else the headers'; for tcp, until connected. None when nothing answered.
    ``cert_expiry_days`` (whole days, negative once expired) and ``cert_expires_at`` (epoch
    seconds) are set on every https check that completed a TLS handshake, verified or not.
    ``lag_ms`` is ``started_at - due_at`` in milliseconds (0 when ``due_at`` is 0).
    """

    monitor_id: int
    started_at: float  # epoch seconds
    outcome: str  # "up" | "down"
    status_code: int | None
    latency_ms: float | None  # connect to last byte read
    reason: str  # "" when up; else words an operator understands
    failed_condition: str  # "" unless a condition failed
    cert_expiry_days: int | None  # every https check, verified or not
    cert_expires_at: float | None  # epoch seconds
    lag_ms: float  # started_at - due_at, in ms (0 when due_at is 0)

    @property
    def up(self) -> bool:
        return self.outcome == "up"


def parse_expected_status(values: Sequence[str | int]) -> tuple[tuple[int, int], ...]:
    """Accepted status codes as inclusive ranges: ``["200-299", "301", 404]`` →
    ``((200, 299), (301, 301), (404, 404))``; an empty list → ``((200, 299),)`` (Uptime Kuma's
    default). Codes are 100..599. Raises ValueError, in words, for anything else: a non-number
    (``"abc"``), a reversed range (``"299-200"``), a code out of range (``99``, ``600``), a
    boolean, or more than 50 entries.
    """
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise ValueError('expected status must be a list such as ["200-299", "301"]')
    if len(values) > MAX_EXPECTED_STATUS_ENTRIES:
        raise ValueError(f"expected status lists at most {MAX_EXPECTED_STATUS_ENTRIES} codes or ranges")
    if not values:
        return DEFAULT_EXPECTED_STATUS
    return tuple(_status_range(value) for value in values)


def _status_range(value: object) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a status code")
    if isinstance(value, int):
        return _code(value, value), _code(value, value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a status code or a range such as 200-299")
    text = value.strip()
    low_text, dash, high_text = text.partition("-")
    low = _number(low_text, value)
    high = _number(high_text, value) if dash else low
    _code(low, value)
    _code(high, value)
    if low > high:
        raise ValueError(f"{value!r}: a range goes from the lower code to the higher, e.g. 200-299")
    return low, high


def _number(text: str, original: object) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 3:
        raise ValueError(f"{original!r} is not a status code or a range such as 200-299")
    return int(text)


def _code(code: int, original: object) -> int:
    if not MIN_STATUS <= code <= MAX_STATUS:
        raise ValueError(f"{original!r}: status codes go from {MIN_STATUS} to {MAX_STATUS}")
    return code


def format_expected_status(ranges: Sequence[tuple[int, int]]) -> str:
    """``((200, 299), (301, 301))`` → ``"200-299, 301"``, as reasons show it."""
    return ", ".join(f"{low}-{high}" if low != high else str(low) for low, high in ranges)


def split_tcp_target(target: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` → ``(host, port)`` (brackets removed, port 1..65535).

    Raises ValueError in words when there is no port, the port is not a number in range, the host
    is empty, or the target is a URL (a tcp target has no scheme).
    """
    text = target.strip()
    if not text:
        raise ValueError("a tcp target is host:port, e.g. db.example.com:5432")
    if "://" in text or "/" in text:
        raise ValueError("a tcp target is host:port without a scheme or path, e.g. db.example.com:5432")
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError("an IPv6 tcp target is [address]:port, e.g. [2001:db8::1]:5432")
        host, rest = text[1:close], text[close + 1 :]
        if not rest.startswith(":"):
            raise ValueError("a tcp target needs a port: [address]:port")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address") from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ValueError("a tcp target needs a port: host:port, e.g. db.example.com:5432")
        if ":" in host:
            raise ValueError("write an IPv6 tcp target in brackets: [address]:port")
    if not host:
        raise ValueError("a tcp target needs a host before the port")
    if any(char.isspace() for char in host):
        raise ValueError("a tcp target's host cannot contain spaces")
    if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{port_text!r} is not a port (1 to 65535)")
    return host, int(port_text)


def http_target_problem(url: str) -> str | None:
    """Why ``url`` is not a checkable http(s) URL (a sentence), or None when it is.

    Wants a scheme http or https, a host, a port in range if any, no spaces or control
    characters, at most 2000 characters (the Monitor field's length)."""
    if not isinstance(url, str) or not url.strip():
        return "the URL is empty"
    if len(url) > MAX_URL_CHARS:
        return f"the URL is longer than {MAX_URL_CHARS} characters"
    if any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
        return "the URL contains spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"the URL cannot be read ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return "the URL must start with http:// or https://"
    if not parts.hostname:
        return "the URL has no host"
    if port == 0:
        return "the URL's port must be 1 to 65535"
    return None
