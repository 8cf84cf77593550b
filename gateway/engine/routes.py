"""The route table of the proxy: loaded once from the database, matched in memory per request.

Plain Python with no Django import: the gateway process builds a `RouteTable` from
`RouteSpec`s (the Django side converts its models, `gateway.selectors.route_specs`) and swaps it
whole when the routes version moves, so a request never sees half a table.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

AUTH_MODES = ("none", "jwt", "api_key", "jwt_or_api_key")


class UnsafePath(ValueError):
    """The request path is ambiguous or hostile (traversal, encoded separators, NUL)."""


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

    def upstream_path(self, path: str) -> str:
        """The path sent upstream: without the prefix when the route says so, always with a "/"."""
        if not self.strip_prefix:
            return path
        rest = path[len(self.path_prefix) :] if path.startswith(self.path_prefix) else ""
        return "/" + rest

    def targets_in_turn(self) -> list[str]:
        """Every target, starting with the next one in round-robin order (the caller skips open
        breakers by walking on)."""
        if len(self.targets) <= 1:
            return list(self.targets)
        start = next(self._cursor) % len(self.targets)
        return [*self.targets[start:], *self.targets[:start]]


def safe_path(raw_path: str) -> str:
    """The decoded path, or UnsafePath when it could mean something else to the upstream.

    `/proxy/../admin/` must not be forwarded as-is nor matched as `/proxy/`: any `.`/`..` segment,
    an encoded slash or backslash, or a NUL is refused outright rather than normalised, because
    upstreams normalise differently and the difference is where request smuggling lives.
    """
    if not raw_path.startswith("/"):
        raise UnsafePath("the path must start with /")
    lowered = raw_path.lower()
    if "%2f" in lowered or "%5c" in lowered or "%00" in lowered or "\\" in raw_path or "\x00" in raw_path:
        raise UnsafePath("encoded separators or NUL in the path")
    decoded = unquote(raw_path)
    if any(segment in (".", "..") for segment in decoded.split("/")):
        raise UnsafePath("'.' or '..' segments in the path")
    return decoded


class RouteTable:
    """Longest-prefix match over the active routes."""

    def __init__(self, routes: Iterable[RouteSpec], version: int = 0) -> None:
        # Longest prefix first: the first match is the longest one.
        self.routes = sorted(routes, key=lambda route: len(route.path_prefix), reverse=True)
        self.version = version
        self.prefixes = tuple(route.path_prefix for route in self.routes)

    def match(self, path: str) -> RouteSpec | None:
        """The route for a decoded path. `/proxy` matches the route `/proxy/` too."""
        candidate = path if path.endswith("/") else path + "/"
        for route in self.routes:
            if candidate.startswith(route.path_prefix):
                return route
        return None

    def __len__(self) -> int:
        return len(self.routes)
