"""The public status pages (SPEC 5): `/status/<tenant-slug>/`, its JSON twin and per-monitor badges.

No login, read-only, GET and HEAD only. What they show and what they never show is
`monitors.status`'s docstring. Each answer is kept STATUS_CACHE_SECONDS (settings
``SENTINEL_MONITORS``, 30 s) in the Django cache,
keyed by tenant slug (and page), and says so in ``Cache-Control``: a page read by thousands of
visitors during an outage costs the database a few queries every half minute, not per visitor.

An unknown slug, a tenant that published nothing, a page past the last and a monitor that is
not published all answer 404 alike (a stranger learns nothing about which tenants exist): the
HTML page raises `Http404` (the site's error handling answers JSON unless the client prefers
HTML), the JSON answers are always SPEC 7's JSON error.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_safe

from core.api_errors import error_response
from core.conf import sentinel_settings
from monitors.status import monitor_badge, status_page, status_summary

logger = logging.getLogger(__name__)

_MAX_PAGE_DIGITS = 6  # ?page= is parsed only this long: no huge int, no unbounded cache keys


def _cache_seconds() -> int:
    """How long an answer is cached, server and client side: a monitor's state can be this much
    staler on the page than in the API (the checks themselves run every interval_seconds)."""
    return sentinel_settings.monitors.STATUS_CACHE_SECONDS


def _cached(key: str, build: Any) -> Any:
    """`build()`, kept in the cache under `key`; a None (a 404) is not kept. A cache that fails
    (Redis down) is skipped with a warning: a status page is read most when things are down."""
    seconds = _cache_seconds()
    found = None
    if seconds > 0:
        try:
            found = cache.get(key)
        except Exception:
            logger.warning("status page cache unavailable; answering uncached", exc_info=True)
            seconds = 0
    if found is None:
        found = build()
        if found is not None and seconds > 0:
            try:
                cache.set(key, found, seconds)
            except Exception:
                logger.warning("status page cache unavailable; answer not kept", exc_info=True)
    return found


def _public(response: HttpResponse) -> HttpResponse:
    patch_cache_control(response, public=True, max_age=_cache_seconds())
    return response


@require_safe
def status_page_view(request: HttpRequest, slug: str) -> HttpResponse:
    """`GET /status/<slug>/[?page=N]`: the tenant's published monitors, 100 a page (HTML)."""
    text = request.GET.get("page", "1")
    page = int(text) if text.isdigit() and len(text) <= _MAX_PAGE_DIGITS else 0
    if page < 1:
        raise Http404("No such page.")

    def build() -> str | None:
        found = status_page(slug, page)
        if found is None:
            return None
        return render_to_string("monitors/status_page.html", {"page": found})

    html = _cached(f"monitors:status:{slug}:html:{page}", build)
    if html is None:
        raise Http404("No status page here.")
    return _public(HttpResponse(html))


@require_safe
def status_json_view(request: HttpRequest, slug: str) -> HttpResponse:
    """`GET /status/<slug>/status.json`: the overall status and every published monitor's state,
    since and uptime over 24 hours and 30 days (`monitors.status.status_summary`)."""
    summary = _cached(f"monitors:status:{slug}:json", lambda: status_summary(slug))
    if summary is None:
        return error_response(404, "Not found.")
    return _public(JsonResponse(summary, encoder=DjangoJSONEncoder))


@require_safe
def badge_view(request: HttpRequest, slug: str, monitor_id: int) -> HttpResponse:
    """`GET /status/<slug>/badge/<id>.json`: a shields.io endpoint badge of one published monitor
    (``https://img.shields.io/endpoint?url=<this URL>``)."""
    badge = _cached(f"monitors:status:{slug}:badge:{monitor_id}", lambda: monitor_badge(slug, monitor_id))
    if badge is None:
        return error_response(404, "Not found.")
    return _public(JsonResponse(badge))
