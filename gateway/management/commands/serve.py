"""`python manage.py serve`: the web process of the Procfile (HTTP API, admin, websockets, proxy)."""

from __future__ import annotations

import os
from typing import Any

import uvicorn
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Serve Sentinel's ASGI application with uvicorn (uvloop + httptools, Sentinel's error answers)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--workers",
            type=int,
            default=int(os.environ.get("WEB_CONCURRENCY", "1")),
            help="Processes sharing the port (WEB_CONCURRENCY). Shared state lives in Redis.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        uvicorn.run(
            "sentinel_site.asgi:application",
            host=options["host"],
            port=options["port"],
            workers=options["workers"],
            loop="uvloop",
            # uvicorn's httptools protocol, answering what it refuses (parser errors, oversized
            # targets and heads, ambiguous requests) with Sentinel's JSON error, and writing a
            # response's head and one-message body in one socket write: gateway/http_server.py.
            # (granian was measured in its place and not taken: docs/benchmarks.md.)
            http="gateway.http_server:SentinelHttpProtocol",
            # The sans-I/O implementation: the legacy one is deprecated in uvicorn 0.54.
            ws="websockets-sansio",
            # Django's LOGGING (JSON lines with correlation ids) applies, not uvicorn's own format;
            # Sentinel writes its own access line.
            log_config=None,
            access_log=False,
            # Starts the proxy's runtime: route table refresh, upstream connection pool.
            lifespan="on",
            timeout_graceful_shutdown=10,
            server_header=False,
            # Proxied responses carry the upstream's Date; uvicorn would add a second one.
            date_header=False,
            # The proxy decides whom to believe about client addresses (TRUSTED_PROXY_COUNT);
            # uvicorn would otherwise trust X-Forwarded-For from any loopback peer.
            proxy_headers=False,
        )
