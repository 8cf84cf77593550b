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

The response side is `SentinelCycle`, uvicorn's request-response cycle with a cheaper ``send``
(issue 13, lever 1): a response whose body is one message leaves in one socket write (head and
body together), and header names and values are checked in fewer passes, refusing the same
characters. The scope carries ``SentinelCycle.respond`` under ``"sentinel.respond"``
(`gateway.engine.forwarder.RESPOND_KEY`): the proxy gives an upstream's whole response in one call
through it, without ASGI's two messages; everything else is plain ASGI.

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
import urllib.parse
from collections.abc import Iterable
from typing import Any, Final

import httptools
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.httptools_impl import HEADER_RE, STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from core.correlation import accept_correlation_id as correlation_id
from core.errors import OWN_ANSWER_HEADERS
from gateway.engine.forwarder import RESPOND_KEY
from gateway.engine.proxy import MAX_HEADER_BYTES, MAX_HEADERS_TOTAL_BYTES
from gateway.engine.requestcheck import RequestRefused, ambiguous, check_head, headers_too_large, refusal_json
from gateway.engine.rewrites import count_controls

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
# uvloop's clock and timers have millisecond resolution: a timer may fire up to 1 ms early.
_CLOCK_SLACK_S: Final = 0.001
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
        # Loop time since which the connection has waited for its next request; None while a
        # request is being read or answered (`_keep_alive_due`).
        self._idle_since: float | None = None

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
        _forget_respond(self.cycle)
        for waiting, _ in self.pipeline:  # pipelined requests that will never start
            _forget_respond(waiting)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    # --- keep-alive ---------------------------------------------------------------------------
    # uvicorn arms a timer when a response completes and cancels it when the next request's
    # bytes arrive: a uvloop timer armed and cancelled per request (~2 µs of CPU). Here the timer
    # stays armed across requests and looks, when it fires, whether the connection has been idle
    # for `timeout_keep_alive` seconds: one timer per keep-alive period on a busy connection. The
    # behaviour is uvicorn's: an idle keep-alive connection is closed after that many seconds.

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # not idle: the armed timer, if any, finds that when it fires

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        idle_since = self._idle_since
        if idle_since is None:
            return  # busy: the response re-arms it
        left = idle_since + self.timeout_keep_alive - self.loop.time()
        if left > _CLOCK_SLACK_S:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

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
        # uvicorn's, with Sentinel's head check first, an origin-form target split without
        # httptools.parse_url (`check_head` has refused a fragment), and `SentinelCycle`.
        self._head_complete = True
        parser = self.parser
        http_version = parser.get_http_version()
        # Before the scope is finished and the application started: a refused request reaches
        # neither the proxy nor Django, and its body is never read.
        check_head(
            http_version=http_version,
            target=self.url,
            headers=self.headers,
            max_header_bytes=MAX_HEADER_BYTES,
            max_total_bytes=MAX_HEADERS_TOTAL_BYTES,
        )
        scope = self.scope
        scope["method"] = parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        upgrade = parser.should_upgrade()
        if upgrade and self._should_upgrade():
            return  # handled by data_received's HttpParserUpgrade: the websocket protocol
        url = self.url
        if url[:1] == b"/":
            raw_path, _, query = url.partition(b"?")
        else:  # absolute form (check_head has matched its authority to Host) or "*"
            parsed = httptools.parse_url(url)
            raw_path, query = parsed.path, parsed.query or b""
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root = self.root_path
        scope["path"] = root + path
        scope["raw_path"] = root.encode("ascii") + raw_path if root else raw_path
        scope["query_string"] = query
        app = self.app
        if self.limit_concurrency is not None and (
            len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency
        ):
            app = service_unavailable
            self.logger.warning("Exceeded concurrency limit.")
        existing = self.cycle
        self.cycle = cycle = SentinelCycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=http_version != "1.0" and parser.should_keep_alive(),
            on_response=self.on_response_complete,
            loop=self.loop,
        )
        # The proxy answers through it without ASGI's two messages (`SentinelCycle.respond`). The
        # scope now refers to the cycle, which refers to the scope: a reference cycle, which made
        # every request's objects garbage for the collector (16 young collections of 4-12 ms in
        # 8 s at 1,500 req/s instead of one): `_forget_respond` breaks it when the response
        # completes or the connection is lost. (An application that ends without completing its
        # response has the connection closed by uvicorn.) Not when the next request begins: a
        # pipelined request's is read by its task after that.
        scope[RESPOND_KEY] = cycle.respond  # type: ignore[typeddict-unknown-key]
        if existing is None or existing.response_complete:
            self._start_asgi_task(cycle, app)
        else:  # pipelined: started when the responses before it are complete
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, app))
        if not upgrade:
            # httptools reports the trailer fields of a chunked body through on_header too, and
            # uvicorn appends them to the list the scope holds: an application that reads the
            # headers after the body (Django does) would see them as headers, unchecked and unseen
            # by any proxy in front (RFC 9110 6.5.1: never merged). They go to a list nobody reads.
            # An upgrade keeps the list: uvicorn reads it again to hand the connection over.
            self.headers = []

    def on_response_complete(self) -> None:
        # uvicorn's, with the keep-alive timer kept armed (see `_keep_alive_due`).
        self.server_state.total_requests += 1
        if not self.transport.is_closing():
            self.flow.resume_reading()
            if self.pipeline:  # the next pipelined request starts: not idle
                self._idle_since = None
                cycle, app = self.pipeline.pop()
                self._start_asgi_task(cycle, app)
            else:
                self._idle_since = self.loop.time()
                if self.timeout_keep_alive_task is None:
                    self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)
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


class SentinelCycle(RequestResponseCycle):
    """uvicorn's request-response cycle with a cheaper `send` (issue 13, lever 1).

    * The head of a response (``http.response.start``) is built at once but written with the
      first body message, in one ``writelines`` (one ``writev`` on uvloop) instead of two socket
      writes; if the application yields to the event loop first (a stream whose first chunk
      comes later), the head goes out alone at the loop's next turn, so a client never waits on
      the body for the head.
    * Header names are checked against RFC 9110's token characters once per distinct name (a
      bounded cache of names seen, lower-cased as uvicorn writes them); values are checked in one
      pass over the finished head: no control character but HTAB, and exactly one CR and one LF
      per line written, so a CR, LF or NUL from the application raises ``RuntimeError`` as
      uvicorn's per-value regex did, and nothing of that head is written. Unlike uvicorn, the
      response does not count as started then, so the client gets uvicorn's 500 instead of a
      connection closed without an answer.

    Framing is uvicorn's: Content-Length counted, chunked when the application gives neither
    (not for HEAD, 204 or 304), ``connection: close`` when the connection will close, the body
    of a HEAD response dropped; flow control (`FlowControl.drain`) before each message.
    """

    def __init__(self, *args: Any, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loop = loop
        self._head: bytes | None = None  # built, not yet written
        self._head_flush: asyncio.Handle | None = None

    async def send(self, message: ASGISendEvent) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{kind}'.")
            headers: Iterable[tuple[bytes, bytes]] = message.get("headers", ())  # type: ignore[assignment]
            # Built before the response counts as started: if the application's headers are
            # refused, uvicorn's 500 can still be the answer.
            self._head = self._build_head(message["status"], headers)  # type: ignore[typeddict-item]
            self.response_started = True
            self.waiting_for_100_continue = False
            self._head_flush = self.loop.call_soon(self._flush_head)
            return
        if self.response_complete:
            raise RuntimeError(f"Unexpected ASGI message '{kind}' sent, after response already completed.")
        if kind != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
        self._write_body(message.get("body", b""), message.get("more_body", False))  # type: ignore[arg-type]

    def respond(self, status: int, headers: Iterable[tuple[bytes, bytes]], body: bytes) -> bool:
        """A whole response in one call: what `send` does for ``http.response.start`` and then one
        ``http.response.body`` message holding all of ``body``, without the two messages or the
        loop turns between them (the proxy's answers, `gateway.engine.forwarder`; issue 13).

        Returns False, having written nothing, when the response cannot be given this way: it has
        started already, or the client's socket is paused for back-pressure (`send` would wait for
        it to drain); the caller then uses `send`. Returns True once the response is written, or
        when the client has left (as `send` returns quietly then). Raises RuntimeError as `send`
        does for a header name or value it refuses, with nothing written.
        """
        if self.disconnected:
            return True
        if self.response_started or self.flow.write_paused:
            return False
        self._head = self._build_head(status, headers)
        self.response_started = True
        self.waiting_for_100_continue = False
        self._write_body(body, False)
        return True

    def _write_body(self, body: bytes, more_body: bool) -> None:
        """Writes one body message (with the head, when it is still waiting) in one socket write,
        framed as the head said; completes the response when ``more_body`` is False."""
        parts: list[bytes] = []
        if self._head is not None:
            parts.append(self._head)
            self._head = None
            if self._head_flush is not None:
                self._head_flush.cancel()
                self._head_flush = None
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
        elif self.chunked_encoding:
            if body:
                parts += (b"%x\r\n" % len(body), body, b"\r\n")
            if not more_body:
                parts.append(b"0\r\n\r\n")
        else:
            size = len(body)
            if size > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= size
            if size:
                parts.append(body)
        if len(parts) == 1:
            self.transport.write(parts[0])
        elif parts:
            self.transport.writelines(parts)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            _forget_respond(self)
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    def _flush_head(self) -> None:
        """Writes a head still waiting for its body (the application yielded in between)."""
        # The handle that ran this refers to the cycle through this bound method: dropped, or
        # the cycle would be freed by the collector only (a streamed response each, found by a
        # fresh-eyes trial). uvloop clears a handle's callback when it is cancelled, not when it runs.
        self._head_flush = None
        head, self._head = self._head, None
        if head is not None and not self.transport.is_closing():
            self.transport.write(head)

    def _build_head(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
        """The status line and header block; sets the response's framing and keep-alive as
        uvicorn does. RuntimeError for a header name that is not a token, or a value with a
        control character other than HTAB; the cycle is then unchanged (a 500 can follow)."""
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(self.scope),
                self.scope["method"],
                get_path_with_query_string(self.scope),
                self.scope["http_version"],
                status,
            )
        # Laid out as status line, then "\r\nname: " and value per header, then "\r\n\r\n": two
        # list items per header, with each name's prefix made once (`_HEADER_PREFIXES`).
        lines = [_STATUS_LINES[status]]
        chunked: bool | None = None
        length = 0
        keep_alive = self.keep_alive
        has_connection_close = False
        prefix_of = _HEADER_PREFIXES.get
        for raw_name, value in (*self.default_headers, *headers) if self.default_headers else headers:
            prefix = prefix_of(raw_name) or _header_prefix(raw_name)
            if prefix in _FRAMING_PREFIXES:
                if prefix == b"\r\ncontent-length: ":
                    if chunked is None:
                        length = int(value.decode())
                        chunked = False
                elif prefix == b"\r\ntransfer-encoding: ":
                    if value.lower() == b"chunked":
                        length = 0
                        chunked = True
                elif b"close" in [token.lower().strip() for token in value.split(b",")]:  # connection
                    keep_alive = False
                    has_connection_close = True
            lines += (prefix, value)
        line_ends = (len(lines) - 1) // 2 + 2  # one CRLF before each header line, two at the end
        if not keep_alive and not has_connection_close:
            lines.append(b"\r\nconnection: close")
            line_ends += 1
        if chunked is None and self.scope["method"] != "HEAD" and status not in (204, 304):
            chunked = True
            lines.append(b"\r\ntransfer-encoding: chunked")
            line_ends += 1
        lines.append(b"\r\n\r\n")
        head = b"".join(lines)
        # Every CRLF above was put there (names are tokens): any other control, CR and LF included,
        # came in a value.
        if count_controls(head) != 2 * line_ends:
            raise RuntimeError("Invalid HTTP header value.")
        self.chunked_encoding, self.expected_content_length, self.keep_alive = chunked, length, keep_alive
        return head


# Status lines without their CRLF (`SentinelCycle._build_head` puts one before each header line).
_STATUS_LINES: Final = {status: line[:-2] for status, line in STATUS_LINE.items()}
# "\r\n" + lower-cased name + ": " for header names already checked to be tokens (RFC 9110 5.1):
# a dict look-up instead of a regex per header. Bounded: names past the bound are checked and
# built every time.
_HEADER_PREFIXES: dict[bytes, bytes] = {}
_HEADER_PREFIXES_MAX: Final = 1024
_FRAMING_PREFIXES: Final = frozenset((b"\r\ncontent-length: ", b"\r\ntransfer-encoding: ", b"\r\nconnection: "))


def _forget_respond(cycle: RequestResponseCycle | None) -> None:
    """Drops the scope's reference to its cycle's `respond` (see `on_headers_complete`)."""
    if cycle is not None:
        cycle.scope.pop(RESPOND_KEY, None)  # type: ignore[misc,typeddict-item]


def _header_prefix(name: bytes) -> bytes:
    """``b"\\r\\n" + name.lower() + b": "`` if `name` is a non-empty token, else RuntimeError
    (uvicorn's message)."""
    if not name or HEADER_RE.search(name):
        raise RuntimeError("Invalid HTTP header name.")
    prefix = b"\r\n" + name.lower() + b": "
    if len(_HEADER_PREFIXES) < _HEADER_PREFIXES_MAX:
        _HEADER_PREFIXES[name] = prefix
    return prefix


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
