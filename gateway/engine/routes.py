"""The route table of the proxy: loaded once from the database, matched in memory per request.

Plain Python with no Django import: the gateway process builds a `RouteTable` from
`RouteSpec`s (the Django side converts its models, `gateway.selectors.route_specs`) and swaps it
whole when the routes version moves, so a request never sees half a table.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

AUTH_MODES = ("none", "jwt", "api_key", "jwt_or_api_key")


class UnsafePath(ValueError):
    """The request path is ambiguous or hostile (see `parse_path`); the message is for the client."""


@dataclass(frozen=True)
class RouteSpec:
    """One route, as the hot path needs it. Limits left None fall back to the tenant, then settings."""

    id: int
    name: str
    path_prefix: str
    targets: tuple[str, ...]
    tenant_uuid: str | None = None
    methods: frozenset[str] = frozenset()
    auth_mode: str = "jwt_or_api_key"
    strip_prefix: bool = True
    timeout_ms: int | None = None
    burst_capacity: int | None = None
    refill_rate: float | None = None
    window_ms: int | None = None
    base_rate_limit: int | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    allow_tenant_header: bool = False
    # Round-robin position over the targets, shared by every request on this route.
    _cursor: Iterator[int] = field(default_factory=lambda: itertools.count(), compare=False, repr=False)

    def allows_method(self, method: str) -> bool:
        return not self.methods or method in self.methods

    def upstream_path(self, raw_path: str) -> str:
        """The path sent upstream, percent-encoded: `RequestPath.raw` of a path this route matched,
        without the prefix's segments when the route strips it, always starting with "/".

        The prefix is removed by segments of the encoded path, not by characters of the decoded
        one, so the client's escapes reach the upstream as they were (``/pub/a%3Db`` → ``/a%3Db``).
        Prefixes are plain ASCII ending in "/" and matching is segment-aligned (`RouteTable.match`),
        so the segments removed are exactly the ones that decoded to the prefix.
        """
        if not self.strip_prefix:
            return raw_path
        segments = self.path_prefix.count("/") - 1
        parts = raw_path.split("/", segments + 1)
        return "/" + (parts[segments + 1] if len(parts) > segments + 1 else "")

    def targets_in_turn(self) -> list[str]:
        """Every target, starting with the next one in round-robin order (the caller skips open
        breakers by walking on)."""
        if len(self.targets) <= 1:
            return list(self.targets)
        start = next(self._cursor) % len(self.targets)
        return [*self.targets[start:], *self.targets[:start]]


# What the slow path of `parse_path` refuses once a segment is percent-decoded: C0 controls and DEL
# (NUL truncates in C backends, CR/LF split log lines and headers), "/" and "\\" (an encoded
# separator splits a segment in two for backends that decode first: Envoy's
# path_with_escaped_slashes_action REJECT_REQUEST), and ";" (a path parameter for Tomcat, Jetty
# and Spring, a plain character elsewhere).
_FORBIDDEN_BYTES = frozenset({*range(0x20), 0x7F, 0x2F, 0x5C, 0x3B})
_HEX = frozenset("0123456789abcdefABCDEF")


class RequestPath(NamedTuple):
    """A request path checked and normalised once, so that routing and forwarding see one path.

    ``raw`` is the path as it is forwarded: the client's own percent-encoding, with runs of "/"
    merged; ``decoded`` is the same path percent-decoded (UTF-8), which routes are matched
    against. Decoding ``raw`` one segment at a time gives ``decoded`` exactly, and no segment of
    either is a dot segment or holds a separator, so an upstream that decodes the forwarded path
    once resolves it to the routed path. ``changed`` says ``raw`` differs from what the client sent.
    """

    raw: str
    decoded: str
    changed: bool = False


def parse_path(raw_path: str) -> RequestPath:
    """The request path (percent-encoded, as on the wire, without the query), checked and normalised.

    Normalised (Envoy's ``merge_slashes``): runs of "/" become one, so ``/pub//x`` is ``/pub/x``
    for routing and forwarding alike. Refused with ``UnsafePath`` (400), because backends read
    them differently and that difference is where a request routed under one prefix is served
    under another (``/pub/..;/admin/secret`` is ``/admin/secret`` to Tomcat):

    * dot segments in any spelling: ``.``, ``..``, ``%2e``, ``%2E%2e``, ``.%2e``, and any segment
      of only dots and spaces (``...``, ``.. ``: Windows drops trailing dots and spaces). HTTP
      clients remove dot segments before sending (RFC 3986 5.2.4), so one arriving here was
      written by hand; refusing it costs no legitimate client;
    * ";" literal or encoded (``..;``, ``..;jsessionid=x``, ``..%3b``, ``/admin;x/secret``):
      Tomcat, Jetty and Spring strip path parameters, other servers keep them;
    * encoded separators and backslashes (``%2f``, ``%2F``, ``%5c``, ``\\``);
    * control characters (``%00``, ``%0a``, ``%7f``) and raw non-ASCII or unprintable characters;
    * double encoding: a segment that decodes to another percent-escape (``%252e%252e``,
      ``%25%32%65``): a backend that decodes twice would find a dot segment or a separator there;
    * malformed escapes (``%``, ``%4``, ``%zz``) and bytes that are not UTF-8 (the overlong
      ``%c0%ae`` some old decoders read as "."), and Unicode that NFKC folds to a dot segment or
      a separator (``%ef%bc%8e%ef%bc%8e``, two FULLWIDTH FULL STOPs).

    ``raw_path`` must start with "/" (origin form). Cost: a few substring scans for an ordinary
    path; a per-segment pass when it holds "%", ";", "\\", "//" or "/.".
    """
    if not raw_path.startswith("/"):
        raise UnsafePath("The path must start with '/'.")
    if (
        "%" not in raw_path
        and ";" not in raw_path
        and "\\" not in raw_path
        and "//" not in raw_path
        and "/." not in raw_path
        and raw_path.isascii()
        and raw_path.isprintable()
    ):
        return RequestPath(raw_path, raw_path)  # the common case: nothing to decode or merge
    raw_segments: list[str] = []
    decoded_segments: list[str] = []
    for segment in raw_path.split("/")[1:]:
        if segment:  # an empty segment is a doubled "/": merged
            raw_segments.append(segment)
            decoded_segments.append(_decoded_segment(segment))
    trailing = "/" if raw_segments and raw_path.endswith("/") else ""
    raw = "/" + "/".join(raw_segments) + trailing
    return RequestPath(raw, "/" + "/".join(decoded_segments) + trailing, changed=raw != raw_path)


def _decoded_segment(segment: str) -> str:
    """One path segment percent-decoded, or UnsafePath (the rules of `parse_path`)."""
    if not (segment.isascii() and segment.isprintable()):
        raise UnsafePath("The path holds raw non-ASCII or control characters; percent-encode them.")
    if ";" in segment or "\\" in segment:
        raise UnsafePath("The path holds ';' (a path parameter to some servers) or '\\'.")
    decoded = _percent_decoded(segment) if "%" in segment else segment
    if "%" in decoded and _has_escape(decoded):
        raise UnsafePath("The path is percent-encoded twice (it decodes to another percent-escape).")
    if not decoded.strip(". "):
        raise UnsafePath("The path holds a '.' or '..' segment (in some spelling).")
    if not decoded.isascii():
        folded = unicodedata.normalize("NFKC", decoded)
        if not folded.strip(". ") or "/" in folded or "\\" in folded or ";" in folded:
            raise UnsafePath("The path holds Unicode that folds to a dot segment or a separator.")
    return decoded


def _has_escape(text: str) -> bool:
    """Whether `text` holds a percent-escape ("%" and two hex digits)."""
    start = 0
    while (escape := text.find("%", start)) >= 0:
        digits = text[escape + 1 : escape + 3]
        if len(digits) == 2 and digits[0] in _HEX and digits[1] in _HEX:
            return True
        start = escape + 1
    return False


def _percent_decoded(segment: str) -> str:
    """RFC 3986 2.1 percent-decoding of one segment, strict (see `parse_path`)."""
    octets = bytearray()
    start = 0
    while (escape := segment.find("%", start)) >= 0:
        octets += segment[start:escape].encode("ascii")
        digits = segment[escape + 1 : escape + 3]
        if len(digits) != 2 or digits[0] not in _HEX or digits[1] not in _HEX:
            raise UnsafePath("The path holds a malformed percent-escape.")
        octet = int(digits, 16)
        if octet in _FORBIDDEN_BYTES:
            raise UnsafePath("The path holds an encoded separator, ';' or control character.")
        octets.append(octet)
        start = escape + 3
    octets += segment[start:].encode("ascii")
    try:
        return octets.decode("utf-8")  # strict: overlong forms and surrogates are errors
    except UnicodeDecodeError:
        raise UnsafePath("The path's percent-escapes are not UTF-8.") from None


class RouteTable:
    """Longest-prefix match over the active routes."""

    def __init__(self, routes: Iterable[RouteSpec], version: int = 0) -> None:
        # Longest prefix first: the first match is the longest one.
        self.routes = sorted(routes, key=lambda route: len(route.path_prefix), reverse=True)
        self.version = version
        self.prefixes = tuple(route.path_prefix for route in self.routes)

    def match(self, path: str) -> RouteSpec | None:
        """The route for a decoded path (`RequestPath.decoded`). `/proxy` matches the route `/proxy/`
        too. Prefixes end in "/", so a match always ends on a segment boundary."""
        candidate = path if path.endswith("/") else path + "/"
        for route in self.routes:
            if candidate.startswith(route.path_prefix):
                return route
        return None

    def __len__(self) -> int:
        return len(self.routes)
