"""Small request helpers shared by every app."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or the entry that trusted proxies put in X-Forwarded-For.

    Only the last ``TRUSTED_PROXY_COUNT`` hops are ours; anything left of them was written by
    the client and could be forged, so it is never believed.
    """
    remote = str(request.META.get("REMOTE_ADDR") or "unknown")
    hops = settings.TRUSTED_PROXY_COUNT
    if hops <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if len(forwarded) >= hops:
        return str(forwarded[-hops])
    return remote
