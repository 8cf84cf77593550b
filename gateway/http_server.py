"""The web process's HTTP/1.1 protocol: uvicorn's httptools protocol, with Sentinel answering
every request it refuses (issue 8 items 3 and 6).

uvicorn answers what its parser rejects with ``400 text/plain Invalid HTTP request received.``,
whatever the fault, and has no limit of its own on the request target or the head (a 70,000-byte
target failed in ``httptools.parse_url`` and got that 400). This subclass, passed to uvicorn as
``http=`` by ``manage.py serve``, keeps uvicorn's request cycle, lifespan, websockets and graceful
shutdown, and changes only what happens before a request reaches the application:

* limits, like nginx's ``large_client_header_buffers 4 8k``: a request target over 8 KiB → 414
  ``uri_too_long``; one header over 8 KiB or all of them over 32 KiB (name + value bytes, the
  proxy's own limits) → 431 ``headers_too_large``;
* `check_head` (`gateway.engine.requestcheck`): ambiguous requests → 400 ``ambiguous_request``,
  HTTP versions other than 1.0/1.1 → 505;
* trailer fields of a chunked request are dropped, not added to the request's headers;
* the parser's own errors about the message's framing or Host (duplicate, listed or non-numeric
  Content-Length, Transfer-Encoding with Content-Length or other than ``chunked``) → 400
  ``ambiguous_request``, since that is what they are, with llhttp's reason in ``details``;
  its other errors → 400 ``bad_request`` with llhttp's reason (malformed request line, obs-fold,
  whitespace before the colon, NUL/CR/LF in a value, invalid header name, bad chunked encoding
  ...), 505 for an invalid version, 501 for a method token llhttp does not know.

Every refusal is the JSON error of SPEC 7 with ``connection: close`` and an ``x-correlation-id``
(SPEC 2.1: the client's when valid and already read, else a new one, by the proxy's own rule
`core.correlation.accept_correlation_id`), which the "Refused a request" log line carries too. The connection is then
half-closed and drained for up to `LINGER_SECONDS` (nginx's lingering close), so a client still
sending the rest of a long request reads the answer instead of a reset. A refusal found while
earlier pipelined requests are being answered waits for them; a malformed body of a request being
answered ends it (the application sees a disconnect) and, if its response had started, cuts the
connection, since the status can no longer change.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from typing import Any, Final

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from core.correlation import accept_correlation_id as correlation_id
from core.errors import OWN_ANSWER_HEADERS
from gateway.engine.proxy import MAX_HEADER_BYTES, MAX_HEADERS_TOTAL_BYTES
from gateway.engine.requestcheck import RequestRefused, ambiguous, check_head, headers_too_large, refusal_json

# nginx's large_client_header_buffers (4 8k): the request line must fit in 8 KiB, else 414.
MAX_REQUEST_TARGET_BYTES: Final = 8 * 1024
# httptools keeps a header being received in memory until its end: a head still unfinished
# after this many bytes is refused (431) without waiting for it. Far above the limits above, so
# it only bounds memory (a chunk can also hold the tail of the previous pipelined request).
MAX_UNFINISHED_HEAD_BYTES: Final = 1024 * 1024
# Lingering close after a refusal (nginx: lingering_time 30 s, lingering_timeout 5 s; shorter
# here, the answer is small): read and drop what the client still sends for this long, or this
# many bytes, then close.
LINGER_SECONDS: Final = 2.0
LINGER_MAX_BYTES: Final = 1024 * 1024
# An RFC 9110 token followed by a space: a well-formed method that llhttp does not know (501).
_METHOD_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ ")
# llhttp's reasons that are about how long the body is or which host is meant ("Duplicate
# Content-Length", "Transfer-Encoding can't be present with Content-Length", "Invalid
# `Transfer-Encoding` header value", ...): the requests RFC 9112 6.1/6.3 call ambiguous.
_AMBIGUOUS_REASON: Final = re.compile(r"content-length|transfer-encoding|\bhost\b", re.IGNORECASE)
_CORRELATION_HEADER: Final = b"x-correlation-id"


class SentinelHttpProtocol(HttpToolsProtocol):
    """uvicorn's ``HttpToolsProtocol`` with Sentinel's limits, head checks and JSON refusals."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_complete = False  # the current message's head has been parsed
        self._unfinished_head_bytes = 0
        self._refusing = False  # answered with an error: what else arrives is dropped
        self._deferred: tuple[RequestRefused, str] | None = None
        self._dropped_bytes = 0
        self._linger: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refusing:
            self._drop(len(data))
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            self.refuse(refusal_for(exc, data))
            return
        if not self._head_complete:
            self._unfinished_head_bytes += len(data)
            if self._unfinished_head_bytes > MAX_UNFINISHED_HEAD_BYTES:
                self.refuse(headers_too_large(MAX_HEADER_BYTES, MAX_HEADERS_TOTAL_BYTES))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        super().connection_lost(exc)

    # --- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._head_complete = False
        self._unfinished_head_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        # Called for each piece of the target as it arrives: refused before it is all read.
        super().on_url(url)
        if len(self.url) > MAX_REQUEST_TARGET_BYTES:
            raise RequestRefused(
                414,
                "uri_too_long",
                f"The request target is longer than {MAX_REQUEST_TARGET_BYTES} bytes.",
                {"max_bytes": MAX_REQUEST_TARGET_BYTES},
            )

    def on_headers_complete(self) -> None:
        self._head_complete = True
        # Before uvicorn builds the scope and starts the application: a refused request reaches
        # neither the proxy nor Django, and its body is never read.
        check_head(
            http_version=self.parser.get_http_version(),
            target=self.url,
            headers=self.headers,
            max_header_bytes=MAX_HEADER_BYTES,
            max_total_bytes=MAX_HEADERS_TOTAL_BYTES,
        )
        super().on_headers_complete()
        if not self.parser.should_upgrade():
            # httptools reports the trailer fields of a chunked body through on_header too, and
            # uvicorn appends them to the list the scope holds: an application that reads the
            # headers after the body (Django does) would see them as headers, unchecked and unseen
            # by any proxy in front (RFC 9110 6.5.1: never merged). They go to a list nobody reads.
            # An upgrade keeps the list: uvicorn reads it again to hand the connection over.
            self.headers = []

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A refusal waiting for earlier pipelined requests goes out after the last of them.
        if self._deferred is not None and not self.pipeline and self.cycle.response_complete:
            if not self.transport.is_closing():
                self._unset_keepalive_if_required()
                self._answer(*self._deferred)
            self._deferred = None

    # --- refusals -----------------------------------------------------------------------------

    def refuse(self, refusal: RequestRefused) -> None:
        """Answers `refusal` as the JSON error, then closes; see the module docstring for when."""
        self._refusing = True
        cycle = self.cycle
        cid = self._correlation_id()
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"
        self.logger.warning(
            "Refused a request from %s: %d %s",
            client,
            refusal.status,
            refusal.message,
            extra={"correlation_id": cid, "status": refusal.status, "code": refusal.code},
        )
        # A cycle still expecting body is the current message's (uvicorn makes one per head and
        # clears more_body when the message ends): its body is what failed.
        if cycle is not None and cycle.more_body:
            # The request being answered has a malformed body: the application stops reading it.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_complete:
                self._close_lingering()  # answered already (without reading the body): just end
            elif cycle.response_started:
                self.transport.close()  # its status is sent; only a cut response says it failed
            else:
                self._answer(refusal, cid)
        elif cycle is not None and (self.pipeline or not cycle.response_complete):
            self._deferred = (refusal, cid)
        else:
            self._answer(refusal, cid)

    def _correlation_id(self) -> str:
        """The refused request's ``x-correlation-id`` if valid and already parsed, else a new one.

        The headers read so far are the current head's (uvicorn empties the list at each message
        start); once a head is complete they live on in its cycle's scope only (see
        `on_headers_complete`), which is where a body error finds them.
        """
        headers: Iterable[tuple[bytes, bytes]] = self.headers
        cycle = self.cycle
        if cycle is not None and cycle.more_body:
            headers = cycle.scope["headers"]
        for name, value in headers:
            if name == _CORRELATION_HEADER:
                return correlation_id(value.decode("latin-1"))
        return correlation_id(None)

    def _answer(self, refusal: RequestRefused, cid: str) -> None:
        body = refusal_json(refusal)
        head = [STATUS_LINE[refusal.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        # `cid` is ASCII: `correlation_id` returns only [A-Za-z0-9._-].
        head += [b"x-correlation-id: ", cid.encode("ascii"), b"\r\n"]
        for name, value in OWN_ANSWER_HEADERS:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self._close_lingering()

    def _close_lingering(self) -> None:
        if self.transport.can_write_eof():
            # Lingering close: FIN after the answer, and keep reading (and dropping) for a while.
            # Closing at once would reset the connection if request bytes are still unread, and a
            # reset can destroy the answer before the client reads it.
            self.transport.write_eof()
            self._linger = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    def _drop(self, size: int) -> None:
        self._dropped_bytes += size
        if self._dropped_bytes > LINGER_MAX_BYTES:
            self.transport.close()


def refusal_for(exc: httptools.HttpParserError, data: bytes) -> RequestRefused:
    """The JSON error for what httptools raised while parsing `data` (the bytes just received)."""
    if isinstance(exc.__context__, RequestRefused):  # raised by a callback of ours
        return exc.__context__
    reason = str(exc).strip().rstrip(".")
    if isinstance(exc, httptools.HttpParserCallbackError):
        # One of uvicorn's callbacks could not take this input: still the client's request.
        return RequestRefused(400, "bad_request", "The request could not be read.")
    if isinstance(exc, httptools.HttpParserInvalidMethodError) and _METHOD_TOKEN.match(data.lstrip(b"\r\n")):
        return RequestRefused(501, "method_not_implemented", "The request method is not supported.")
    if reason == "Invalid HTTP version":
        return RequestRefused(
            505, "http_version_not_supported", "This HTTP version is not supported; use HTTP/1.1.", {"reason": reason}
        )
    if _AMBIGUOUS_REASON.search(reason):
        return ambiguous(
            reason, "The request's Content-Length, Transfer-Encoding or Host can be read more than one way."
        )
    return RequestRefused(400, "bad_request", "The request is not valid HTTP/1.1.", {"reason": reason})
