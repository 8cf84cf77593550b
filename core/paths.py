"""Sentinel's own paths: the one list of what a gateway route may never capture, and which of
them always answer errors as JSON.

The reserved prefixes are read from the URLconf (the first segment of every pattern, through
``include``s with an empty prefix), plus what is served outside it (static files, websockets) and
the paths the SPEC gives to apps that are not built yet. A new URL pattern is reserved by existing.
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver

# Errors on these are always SPEC 7's JSON, whatever the client's Accept says.
API_PREFIXES = ("/api/", "/auth/", "/events", "/transaction", "/health", "/circuit/", "/stats/", "/ai/")
# Served outside the URLconf (websockets by the ASGI router), or by an app still to come (SPEC 3, 6).
_BEYOND_URLCONF = ("/ws", "/transaction", "/stats", "/ai", "/dashboard")


@functools.cache
def reserved_prefixes() -> tuple[str, ...]:
    """Sorted ``("/admin", "/ai", "/api", ...)``: no leading segment a route may use. Cached for
    the process: the URLconf does not change while it runs."""
    found = set(_BEYOND_URLCONF)
    found.add("/" + settings.STATIC_URL.strip("/").split("/")[0])
    found.update(f"/{segment}" for segment in _first_segments(get_resolver().url_patterns))
    found.update(prefix.rstrip("/") for prefix in API_PREFIXES)
    return tuple(sorted(found))


def _first_segments(patterns: list[URLPattern | URLResolver]) -> set[str]:
    segments: set[str] = set()
    for pattern in patterns:
        text = str(pattern.pattern).lstrip("^")
        segment = text.split("/")[0].rstrip("$")
        if segment:
            segments.add(segment)
        elif isinstance(pattern, URLResolver):
            segments |= _first_segments(pattern.url_patterns)
    return segments
