"""ASGI-level guards in front of Django.

Django's ASGI handler reads the whole request body into a spooled file before any middleware
runs, so a chunked upload without Content-Length would otherwise be read to the end, however big.
This guard stops reading at the limit and answers 413 itself.

A chunked body has no Content-Length, and Django REST framework reads a request's body only up to
CONTENT_LENGTH (absent: 0), so a chunked JSON POST to the API was parsed as an empty body. The
guard reads such a body first (it is bounded by the limit anyway) and hands Django the request
with the Content-Length it had, as a proxy that de-chunks would.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings

from core.errors import OWN_ANSWER_HEADERS, error_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _too_large(limit: int) -> bytes:
    return error_json("payload_too_large", f"The request body is larger than {limit} bytes.", {"max_bytes": limit})


class BodySizeLimit:
    """Answers 413 to any HTTP request whose body passes `API_MAX_BODY_BYTES`."""

    def __init__(self, app: ASGIApp, limit: int | None = None) -> None:
        self.app = app
        self.limit = limit if limit is not None else settings.API_MAX_BODY_BYTES

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunked = False
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._reject(send)
                return
            chunked = chunked or name == b"transfer-encoding"
        if chunked:
            await self._dechunked(scope, receive, send)
            return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    exceeded = True
                    # Django treats a disconnect as an aborted request and stops reading.
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)
        if exceeded and not started:
            await self._reject(send)

    async def _dechunked(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Reads a chunked body whole (up to the limit), then passes the request on with a
        Content-Length instead of its Transfer-Encoding."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client went away: nothing to answer
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._reject(send)
                return
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        headers = [(name, value) for name, value in scope["headers"] if name != b"transfer-encoding"]
        headers.append((b"content-length", str(len(body)).encode()))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: only the disconnect is left to wait for
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)

    async def _reject(self, send: Send) -> None:
        body = _too_large(self.limit)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   *OWN_ANSWER_HEADERS]  # fmt: skip
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
