"""Small request helpers shared by every app."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest

from core.forwarded import forwarded_client


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or the entry that trusted proxies put in X-Forwarded-For
    (``TRUSTED_PROXY_COUNT`` of them; `core.forwarded.forwarded_client`, the proxy's rule too)."""
    remote = str(request.META.get("REMOTE_ADDR") or "unknown")
    return forwarded_client(remote, [request.META.get("HTTP_X_FORWARDED_FOR", "")], settings.TRUSTED_PROXY_COUNT)
