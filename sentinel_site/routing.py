"""Websocket routes of every app (the dashboard's `/ws/dashboard/` comes with observability)."""

from __future__ import annotations

from typing import Any

websocket_urlpatterns: list[Any] = []
