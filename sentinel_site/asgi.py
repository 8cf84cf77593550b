"""The ASGI entry point.

HTTP goes first to the fraud endpoint (`POST /transaction`, `POST /api/v1/transactions`: no
Django on its path), then to the gateway's proxy, which serves the paths its routes match and
hands every other path to Django; websockets go to Channels consumers; the lifespan protocol
starts and stops the proxy's runtime (its route table refresh and its upstream connection pool),
the fraud runtime (its thresholds refresh, its brain channel) and the request log's writer.

This is where the gateway's observers are wired in: the proxy's `on_complete` sink (the gateway's
metrics, the live dashboard's per-second buckets and the request log's queue, through
`request_sinks`) and the runtime's gauge sink.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from django.core.asgi import get_asgi_application

from core.local_state import local_state_prepare

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinel_site.settings")
# A server may import this module without manage.py (`uvicorn sentinel_site.asgi:application`).
local_state_prepare()

from observability.tracing import tracing_announce, tracing_setup, tracing_shutdown  # noqa: E402

# Before Django builds its handler: with tracing on, the Django instrumentation adds its middleware.
gateway_tracer = tracing_setup(role="web")

# Django must be set up before anything imports models (the routes below do).
django_http_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from core.asgi_guards import BodySizeLimit  # noqa: E402
from core.collector import settle_garbage_collector  # noqa: E402
from core.errors import OWN_ANSWER_HEADERS, error_json  # noqa: E402
from fraud.runtime import FraudRuntime  # noqa: E402
from gateway.metrics import FLUSH_SECONDS, gateway_gauges_set, request_counts_flush, request_observer  # noqa: E402
from gateway.runtime import GatewayRuntime, build_proxy, request_sinks  # noqa: E402
from observability.dashboard.runtime import DashboardRuntime  # noqa: E402
from observability.request_log.pipeline import request_log_pipeline  # noqa: E402
from sentinel_site.routing import websocket_urlpatterns  # noqa: E402


class SentinelApplication:
    def __init__(self) -> None:
        # None when REQUEST_LOG_ENABLED is off: the proxy then keeps its other sinks.
        self.request_log = request_log_pipeline()
        self.dashboard = DashboardRuntime()
        sinks = [request_observer(), self.dashboard.recorder]
        sinks += [self.request_log.sink] if self.request_log else []
        self.proxy = build_proxy(
            fallback=BodySizeLimit(django_http_app), on_complete=request_sinks(*sinks), tracer=gateway_tracer
        )
        self.runtime = GatewayRuntime(
            self.proxy,
            gauges=gateway_gauges_set,
            metrics_flush=request_counts_flush,
            metrics_flush_seconds=FLUSH_SECONDS,
        )
        # POST /transaction (SPEC 6) before the proxy, sharing its auth parts and tenant directory.
        self.fraud = FraudRuntime(self.proxy, next_app=self.proxy)
        self.http = self.fraud.endpoint
        self.websocket = AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self.websocket(scope, receive, send)
        except ValueError as exc:
            # Channels' URLRouter raises this for a path no consumer serves, before the handshake
            # is answered: the client's mistake, so a 404 rather than the server's 500.
            if not str(exc).startswith("No route found for path"):
                raise
            await deny_websocket(scope, send, 404, "not_found", "No websocket is served at this path.")

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.runtime.start()
                await self.fraud.start()  # after the gateway's: its tenant directory is loaded
                if self.request_log:
                    self.request_log.start()
                await self.dashboard.start(gauge=self.proxy.gauge)
                settle_garbage_collector()
                tracing_announce()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.dashboard.stop()
                await self.fraud.stop()
                await self.runtime.stop()
                # uvicorn sends this after SIGTERM/SIGINT, once open connections are done (or its
                # graceful timeout passed): every request has been recorded. Bounded by
                # REQUEST_LOG_SHUTDOWN_SECONDS.
                if self.request_log:
                    await self.request_log.stop()
                await asyncio.to_thread(tracing_shutdown)  # the last spans, after the last requests
                await send({"type": "lifespan.shutdown.complete"})
                return


async def deny_websocket(scope: dict[str, Any], send: Any, status: int, code: str, message: str) -> None:
    """Refuses a websocket handshake with the JSON error of SPEC 7, where the server offers the
    ASGI denial response extension (uvicorn does); otherwise with a close, which servers answer 403."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = error_json(code, message)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *OWN_ANSWER_HEADERS,
    ]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


application = SentinelApplication()
