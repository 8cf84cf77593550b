"""`/ws/dashboard/`: pushes the dashboard's snapshot to a signed-in browser every second.

The socket carries no logic: it works out the viewer's scope (`scope_for`), joins that scope's
group and forwards what the producer publishes there (`observability.dashboard`). An anonymous
socket, a tenant-less user, or a tenant user asking for another tenant is refused before the
handshake completes (close code 4403, which servers answer with HTTP 403).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

import redis
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from core.tiles import DashboardScope
from observability.dashboard.scopes import (
    VIEWER_TTL_SECONDS,
    ScopeDenied,
    ScopeNotFound,
    fleet_store,
    group_of,
    scope_for,
    snapshot_kept,
    viewer_mark,
)

logger = logging.getLogger("sentinel.observability")

# Refused sockets: 4000-4999 is the application's range (RFC 6455 7.4.2); 4401/4403 read as HTTP.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
# A viewer renews its view's "watched" mark this often (in frames, one a second).
TOUCH_EVERY = VIEWER_TTL_SECONDS // 3


class DashboardConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    group: str | None = None
    view: DashboardScope | None = None
    frames = 0

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode(errors="replace"))
        try:
            self.view = await database_sync_to_async(_scope_of)(user, (query.get("tenant") or [None])[0])
        except (ScopeDenied, ScopeNotFound):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.group = group_of(self.view)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self._touch()
        # The page fills at once from the latest snapshot instead of waiting for the next tick.
        try:
            kept = await database_sync_to_async(snapshot_kept)(self.view)
        except (redis.RedisError, OSError):
            kept = None  # the next tick's frame will do
        if kept is not None:
            await self.send_json(kept)

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The socket is one-way; what a browser sends is ignored."""

    async def snapshot_push(self, event: dict[str, Any]) -> None:
        """A snapshot the producer published to this socket's group (`snapshot.push`)."""
        await self.send_json(event["snapshot"])
        self.frames += 1
        if self.frames % TOUCH_EVERY == 0:
            await self._touch()

    async def _touch(self) -> None:
        """Marks the socket's view as watched, so the producer computes it. Redis being down
        costs the viewer its frames until it is back, not its socket."""
        view = self.view
        if view is not None:
            try:
                await database_sync_to_async(viewer_mark)(fleet_store(), view)
            except (redis.RedisError, OSError):
                logger.warning("dashboard viewer mark failed (Redis)", exc_info=True)


def _scope_of(user: Any, tenant_slug: str | None) -> DashboardScope:
    # The session's user is a lazy object: its membership is read here, in a thread, not on the loop.
    return scope_for(user, tenant_slug=tenant_slug)
