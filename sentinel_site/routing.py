"""Websocket routes of every app (the dashboard's `/ws/dashboard/` comes with observability)."""

from __future__ import annotations

from typing import Any

from django.urls import re_path

from observability.consumers import DashboardConsumer

websocket_urlpatterns: list[Any] = [
    # With or without the trailing slash, as browsers and clients are written either way.
    re_path(r"^ws/dashboard/?$", DashboardConsumer.as_asgi()),
]
