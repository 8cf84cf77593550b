"""The proxy's forwarder: one request to one upstream target, bodies streamed both ways (SPEC 2 step 9).

Plain async Python with no Django import. The gateway's ASGI app calls ``Forwarder.forward`` with
the scope/receive/send of the incoming request once routing, auth, limits and the breaker have let
it through; the forwarder answers the client itself (the upstream's response, or a JSON error) and
returns a ``ForwardResult`` for the request log, the metrics and the circuit breaker.

Which client serves what: ``http://`` targets go through the lean pooled HTTP/1.1 client of
``gateway.engine.upstream`` (asyncio.Protocol and httptools, written for this forwarder: it cost a
fraction of aiohttp's CPU per call, docs/benchmarks.md). aiohttp (several times cheaper than
httpx/httpcore, docs/engine.md) stays for what the lean client does not do: ``https://`` targets
(TLS), and targets it cannot take as they are (user information, a query; the route API refuses
both). The two clients keep separate pools; outcomes, error mapping and results are the same.

Errors, before the response has started:

* body over ``max_body_bytes`` (declared, or counted while streaming) → 413 ``payload_too_large``;
* connection refused, DNS failure, reset or a malformed answer before the headers → 502 ``bad_gateway``;
* no response headers within ``timeout_ms`` → 504 ``gateway_timeout``;
* a tenant route's target resolves to, or connects to, an address the egress policy refuses
  (``core.egress``) → 502 ``egress_denied``, before a byte is sent. Not a breaker failure: it says
  nothing about the upstream's health.

Exact proxying: the octets of the request line's target, of every header value and of the
bodies pass unchanged in both directions; the rewrites are the documented ones (README, "What the
proxy changes"): hop-by-hop headers and chunk framing, ``X-Forwarded-*``, the route's prefix, the
credential Sentinel checked (the header rules: ``gateway.engine.rewrites``). The lean client writes
the target and the header octets as they are; for aiohttp they are Latin-1 text, one character per
octet, written back as those octets by ``gateway.engine.octets``.

After the response has started the status cannot change: if the upstream drops or goes silent for
longer than the read timeout mid-body, the forwarder stops sending and leaves the response
*unfinished* on purpose (outcome ``upstream_aborted`` or ``timeout``). Sending the final body
message would turn a truncated chunked download into one the client believes complete; left
unfinished, the ASGI server closes the connection and the client sees the truncation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, TypeAlias, get_args
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from core.egress import EgressDenied, EgressPolicy
from core.egress_aiohttp import GuardedConnector
from core.errors import OWN_ANSWER_HEADERS, error_json
from gateway.engine.disconnect import DisconnectWatch
from gateway.engine.octets import ExactRequest
from gateway.engine.rewrites import (
    Header,
    declared_length,
    downstream_headers,
    has_body,
    upstream_header_octets,
    upstream_url,
)
from gateway.engine.upstream import (
    CHUNKED_FRAMING,
    ZERO_LENGTH_FRAMING,
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    invalid_status,
    request_head,
)

__all__ = ["OUTCOMES", "RESPOND_KEY", "ForwardResult", "Forwarder", "Outcome", "Respond"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# A server's way to answer a whole response in one call, found in the ASGI scope under RESPOND_KEY
# (Sentinel's own HTTP server puts `SentinelCycle.respond` there: gateway.http_server). Called as
# respond(status, headers, body): True once written (or the client has left), False when it must
# go as ASGI messages instead (the client's socket is paused for back-pressure).
Respond = Callable[[int, Sequence[tuple[bytes, bytes]], bytes], bool]
RESPOND_KEY: Final = "sentinel.respond"

# What happened to a forwarded request (ForwardResult.outcome).
Outcome: TypeAlias = Literal[
    "ok",
    "upstream_5xx",
    "connect_error",
    "timeout",
    "body_too_large",
    "client_disconnect",
    "upstream_aborted",
    "egress_denied",
]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)
# What the circuit breaker counts against the upstream. Body limits and client disconnects are the
# client's doing, not the upstream's.
_FAILURE_OUTCOMES: Final = frozenset({"connect_error", "timeout", "upstream_5xx", "upstream_aborted"})

# outcome → (status, error code, message) of the JSON error answered before the response started.
_ERRORS: Final = {
    "connect_error": (502, "bad_gateway", "The upstream service could not be reached."),
    "timeout": (504, "gateway_timeout", "The upstream service did not answer in time."),
    "body_too_large": (413, "payload_too_large", "The request body is larger than this route accepts."),
    # The client is not told the address: the operator's log has it (Forwarder's on_egress_refusal).
    "egress_denied": (502, "egress_denied", "The route's target is an address this gateway may not connect to."),
}
# nginx's convention for "the client closed the connection before a response was sent".
CLIENT_CLOSED_REQUEST: Final = 499

# Past this many response body bytes the disconnect watch starts at once (DisconnectWatch.hurry):
# a client that leaves takes uvicorn's backpressure with it, and the rest of the download would be
# relayed into the void at memory speed, up to its end, before the delayed watch looked. Below it,
# a response fits in the sockets' buffers (loopback's default is 128 KiB for reading, more once
# autotuned), where a client that left and one that got it all look the same to any server.
_WATCH_NOW_BYTES: Final = 256 * 1024

# What the upstream may fail with while we talk to it. aiohttp wraps most socket errors in
# ClientError, but not all (a reset while writing can surface as a bare OSError).
_UPSTREAM_ERRORS: Final = (aiohttp.ClientError, OSError, TimeoutError)

# Methods a request without a body is sent with no Content-Length: aiohttp added "Content-Length: 0"
# to the others (POST, PUT, PATCH, DELETE...), and the lean client does the same, so upstreams see
# what they saw before (some answer a POST without a length with 411).
_NO_LENGTH_NEEDED: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})


@dataclass(frozen=True, slots=True)
class _PlainTarget:
    """An ``http://host[:port][/path]`` target as the lean client takes it."""

    host: str  # to connect to: a name, or an IP address without brackets
    port: int
    host_header: bytes  # the Host header: the name or [address], and the port unless 80
    base_path: bytes  # the target's own path, without its trailing "/"


def _plain_target(target: str) -> _PlainTarget | None:
    """The target as the lean client takes it, or None for aiohttp (https, user information, a
    query or fragment, no host)."""
    try:
        parts = urlsplit(target)
        port = parts.port or 80
    except ValueError:
        return None
    host = parts.hostname
    if parts.scheme.lower() != "http" or not host or parts.username is not None or parts.query or parts.fragment:
        return None
    named = f"[{host}]" if "[" in parts.netloc else host
    host_header = named if port == 80 else f"{named}:{port}"
    if not host_header.isascii() or not parts.path.isascii():
        return None  # an internationalised name: aiohttp encodes it
    return _PlainTarget(host, port, host_header.encode("ascii"), parts.path.rstrip("/").encode("ascii"))


# A named tuple, not a frozen dataclass: one is built per proxied request (0.3 µs against 0.8 µs).
class ForwardResult(NamedTuple):
    """What happened to one forwarded request.

    ``status`` is what the client got (499 when it left before any response); ``bytes_in`` the
    request body bytes read from the client, ``bytes_out`` the response body bytes sent to it;
    ``upstream_latency_ms`` the time from the upstream call to its response headers (or failure);
    ``error`` a diagnostic for logs, never shown to the client.
    """

    status: int
    outcome: Outcome
    bytes_in: int
    bytes_out: int
    upstream_latency_ms: float
    error: str | None = None

    @property
    def counts_as_failure(self) -> bool:
        """True when the circuit breaker should count this against the upstream."""
        return self.outcome in _FAILURE_OUTCOMES


class _BodyTooLarge(Exception):
    """The streamed request body passed the route's limit."""


class _ClientGone(Exception):
    """The client disconnected while its request body was being streamed."""


class _Exchange:
    """One forward in progress: what it needs to answer the client, and its tallies.

    With aiohttp the body generator runs in aiohttp's writer task, so its failures reach the
    forwarder only as a wrapped ClientConnectionError: the ``body_too_large``/``client_gone`` flags
    say what happened. The lean client reads the body through ``next_chunk`` in the forward's task.
    """

    __slots__ = (
        "body_done",
        "body_too_large",
        "bytes_in",
        "bytes_out",
        "client_gone",
        "latency_ms",
        "max_body_bytes",
        "receive",
        "respond",
        "response_headers",
        "send",
        "started_at",
        "status",
        "timeout_ms",
        "watch",
    )

    def __init__(
        self,
        receive: Receive,
        send: Send,
        watch: DisconnectWatch,
        timeout_ms: int,
        max_body_bytes: int,
        response_headers: Sequence[Header],
        respond: Respond | None = None,
    ) -> None:
        self.receive = receive
        self.send = send
        self.respond = respond
        self.watch = watch
        self.timeout_ms = timeout_ms
        self.max_body_bytes = max_body_bytes
        self.response_headers = response_headers
        self.bytes_in = 0
        self.bytes_out = 0
        self.status = CLIENT_CLOSED_REQUEST
        self.body_too_large = False
        self.body_done = False
        self.client_gone = False
        self.started_at = time.perf_counter()
        self.latency_ms = 0.0

    async def next_chunk(self) -> bytes | None:
        """The next piece of the client's body (maybe b""), None once it has all been read.

        Counts it against the limit (raises _BodyTooLarge) and raises _ClientGone when the client
        disconnects; once the body is consumed, receive() is free for the disconnect watch.
        """
        if self.body_done:
            return None
        message = await self.receive()
        if message["type"] == "http.disconnect":
            self.client_gone = True
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        self.bytes_in += len(chunk)
        if self.bytes_in > self.max_body_bytes:
            self.body_too_large = True
            raise _BodyTooLarge
        if not message.get("more_body", False):
            self.body_done = True
            self.watch.start()
        return chunk

    def mark_upstream_answered(self) -> None:
        self.latency_ms = (time.perf_counter() - self.started_at) * 1000

    def result(self, outcome: Outcome, error: str | None = None) -> ForwardResult:
        return ForwardResult(self.status, outcome, self.bytes_in, self.bytes_out, self.latency_ms, error)


# Called with (tenant uuid, route target, refusal) when the egress policy stops a forward.
EgressObserver = Callable[[str | None, str, EgressDenied], None]


class Forwarder:
    """The process's upstream clients: the lean pool for ``http://`` targets, aiohttp (created lazily
    in the running loop) for the rest (module docstring).

    Create one at import or start-up, call ``forward`` from any request of that loop, and
    ``await close()`` at shutdown (ASGI lifespan).

    With an ``egress`` policy, forwards for a tenant's route go through connections that enforce it
    (the lean pool's guarded keys; aiohttp's second session, whose connector is
    ``GuardedConnector``); platform routes (no tenant) use plain ones. Connections opened for a
    platform route are never reused for a tenant's. ``on_egress_refusal`` hears of every refusal
    (the runtime logs and counts them).
    """

    def __init__(
        self,
        *,
        limit: int = 1000,
        limit_per_host: int = 200,
        keepalive_timeout: float = 4.0,
        ttl_dns_cache: int = 10,
        read_timeout_ms: int | None = None,
        egress: EgressPolicy | None = None,
        on_egress_refusal: EgressObserver | None = None,
    ) -> None:
        """``limit`` and ``limit_per_host`` bound each client's connections in use (past them a
        request waits for one, within its timeout). ``keepalive_timeout`` (s) stays under the 5 s
        idle timeout of uvicorn and Node servers, so the pools drop an idle connection before the
        upstream does (reusing one the upstream is closing fails the request; only idempotent
        requests whose body is in memory are retried). ``ttl_dns_cache`` (s) is how long resolved
        addresses are reused. ``read_timeout_ms`` bounds the silence between response body chunks;
        None means each call's ``timeout_ms``."""
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._keepalive_timeout = keepalive_timeout
        self._ttl_dns_cache = ttl_dns_cache
        self._read_timeout_ms = read_timeout_ms
        self._egress = egress
        self._on_egress_refusal = on_egress_refusal
        self._upstream = UpstreamPool(
            limit=limit,
            limit_per_host=limit_per_host,
            keepalive_timeout=keepalive_timeout,
            ttl_dns_cache=ttl_dns_cache,
            egress=egress,
        )
        # Targets as the lean client takes them (None: aiohttp's), parsed once each.
        self._targets: dict[str, _PlainTarget | None] = {}
        # aiohttp's pools by "guarded": True for tenant routes under the egress policy.
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeouts: dict[int, aiohttp.ClientTimeout] = {}

    async def close(self) -> None:
        """Close the pools; a later ``forward`` opens new ones."""
        await self._upstream.close()
        sessions, self._sessions, self._loop = self._sessions, {}, None
        for session in sessions.values():
            await session.close()

    def connections_in_use(self) -> int:
        """Upstream connections checked out of the pools right now (0 when idle).

        aiohttp exposes no public counter; its connector's acquired set is what "checked out" means.
        """
        connectors = (session.connector for session in self._sessions.values())
        in_aiohttp = sum(
            len(connector._acquired) for connector in connectors if isinstance(connector, aiohttp.TCPConnector)
        )
        return self._upstream.in_use() + in_aiohttp

    async def forward(
        self,
        *,
        scope: MutableMapping[str, Any],
        receive: Receive,
        send: Send,
        target: str,
        upstream_path: str,
        timeout_ms: int,
        max_body_bytes: int,
        client_ip: str,
        extra_headers: Sequence[Header] = (),
        response_headers: Sequence[Header] = (),
        hidden_headers: frozenset[bytes] = frozenset(),
        tenant_uuid: str | None = None,
    ) -> ForwardResult:
        """Forward one HTTP request and stream the answer to the client; see the module docstring.

        ``upstream_path`` is the percent-encoded path to request (``RouteSpec.upstream_path`` of
        ``parse_path``'s result), sent as it is. ``extra_headers`` are added to the upstream request and
        ``response_headers`` to whatever the client gets, each replacing headers of the same name;
        ``hidden_headers`` (lower-case names) are not sent upstream.
        ``timeout_ms`` (> 0) bounds the time to the upstream's response headers. ``tenant_uuid`` is
        the route's owner: a tenant's route is held to the egress policy, a platform route (None) is not.
        """
        watch = DisconnectWatch(receive)
        exchange = _Exchange(receive, send, watch, timeout_ms, max_body_bytes, response_headers, scope.get(RESPOND_KEY))
        declared = declared_length(scope["headers"])
        if declared is not None and declared > max_body_bytes:
            # Refused before connecting: the upstream never sees a byte of it.
            error = f"declared Content-Length {declared} exceeds {max_body_bytes}"
            return await _answer_error(exchange, "body_too_large", error)

        guarded = self._egress is not None and tenant_uuid is not None
        body_follows = has_body(scope["headers"], declared)
        if not body_follows:
            watch.start()
        plain = self._targets[target] if target in self._targets else self._plain_target(target)
        headers = upstream_header_octets(scope, client_ip, extra_headers, hidden_headers)
        try:
            if plain is not None:
                return await self._exchange_lean(
                    plain, guarded, exchange, scope, upstream_path, headers, body_follows, declared
                )
            session = self._session_in_loop(guarded)
            body = _request_body(receive, exchange) if body_follows else None
            url = upstream_url(target, upstream_path, scope.get("query_string", b""))
            text_headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
            return await self._exchange(session, exchange, scope["method"], url, text_headers, body)
        except EgressDenied as denied:
            if self._on_egress_refusal is not None:
                self._on_egress_refusal(tenant_uuid, target, denied)
            return await _answer_error(exchange, "egress_denied", str(denied))
        except asyncio.CancelledError:
            # Our own watch cancelled us: swallow exactly that one cancellation. Any other (server
            # shutdown, the caller's own timeout) is still counted after uncancel() and propagates.
            task = asyncio.current_task()
            if watch.fired and task is not None and task.uncancel() == 0:
                return exchange.result("client_disconnect", "the client disconnected")
            raise
        finally:
            watch.stop()

    def _plain_target(self, target: str) -> _PlainTarget | None:
        plain = _plain_target(target)
        if len(self._targets) >= 4096:
            self._targets.clear()  # bounded: routes have a handful of targets each
        self._targets[target] = plain
        return plain

    async def _exchange_lean(
        self,
        target: _PlainTarget,
        guarded: bool,
        exchange: _Exchange,
        scope: MutableMapping[str, Any],
        upstream_path: str,
        headers: list[Header],
        body_follows: bool,
        declared: int | None,
    ) -> ForwardResult:
        """The lean client's exchange: send the request, then relay the response or answer the error."""
        loop = asyncio.get_running_loop()
        # timeout_ms bounds everything up to the response headers: connect, upload, wait.
        deadline = loop.time() + exchange.timeout_ms / 1000
        method: bytes = scope["method"].encode("latin-1")
        path = target.base_path + upstream_path.encode("latin-1")
        query: bytes = scope.get("query_string", b"")
        if query:
            path += b"?" + query
        framing = b""
        first: bytes | None = None
        chunked = body_follows and declared is None
        try:
            if body_follows:
                framing = CHUNKED_FRAMING if chunked else b""
                # The start of the body goes out with the head (all of it, for most bodies).
                async with asyncio.timeout_at(deadline):
                    first = await exchange.next_chunk()
            elif declared is None and method not in _NO_LENGTH_NEEDED:
                framing = ZERO_LENGTH_FRAMING
            head = request_head(method, path, target.host_header, headers, framing)
            conn = await self._upstream.exchange(
                host=target.host,
                port=target.port,
                guarded=guarded,
                method=method,
                head=head,
                body=first,
                more=None if exchange.body_done or not body_follows else exchange.next_chunk,
                chunked=chunked,
                deadline=deadline,
            )
        except (OSError, TimeoutError, _BodyTooLarge, _ClientGone) as exc:
            # The upstream's errors (UpstreamError is an OSError), or the body's own (the client
            # left, the body is too large): raised here directly, not wrapped as with aiohttp.
            exchange.mark_upstream_answered()
            return await _fail_before_response(exchange, exc)
        exchange.mark_upstream_answered()
        # An upstream that answered before reading the whole body leaves receive() to the watch.
        exchange.watch.start()
        try:
            read_timeout_s = (self._read_timeout_ms or exchange.timeout_ms) / 1000
            return await _relay_lean(conn, exchange, read_timeout_s)
        finally:
            # A response read to its end goes back to the pool when it allows; anything else (an
            # error, a cancellation mid-body) closes the connection instead of reusing it.
            self._upstream.release(conn)

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        exchange: _Exchange,
        method: str,
        url: URL,
        headers: list[tuple[str, str]],
        body: AsyncIterator[bytes] | None,
    ) -> ForwardResult:
        """aiohttp's exchange: send the request, then relay the response or answer the error."""
        try:
            # timeout_ms bounds everything up to the response headers: connect, upload, wait.
            async with asyncio.timeout(exchange.timeout_ms / 1000):
                upstream = await session.request(
                    method,
                    url,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=self._client_timeout(exchange.timeout_ms),
                )
        except _UPSTREAM_ERRORS as exc:
            exchange.mark_upstream_answered()
            return await _fail_before_response(exchange, exc)
        exchange.mark_upstream_answered()
        if (invalid := invalid_status(upstream.status)) is not None:  # the lean client's rule too
            upstream.close()
            return await _answer_error(exchange, "connect_error", invalid)
        try:
            return await _relay(upstream, exchange)
        finally:
            # A response read to its end goes back to the pool; anything else (an error, a
            # cancellation mid-body) closes the connection instead of reusing a half-read one.
            if upstream.content.at_eof():
                upstream.release()
            else:
                upstream.close()

    def _session_in_loop(self, guarded: bool) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._sessions and self._loop is not loop:
            # An aiohttp pool belongs to the loop that made it; sharing one fails in obscure ways.
            raise RuntimeError("this Forwarder's pool belongs to another event loop")
        session = self._sessions.get(guarded)
        if session is None or session.closed:
            session = self._sessions[guarded] = self._new_session(guarded)
            self._loop = loop
        return session

    def _new_session(self, guarded: bool) -> aiohttp.ClientSession:
        options: dict[str, Any] = {
            "limit": self._limit,
            "limit_per_host": self._limit_per_host,
            "ttl_dns_cache": self._ttl_dns_cache,
            "keepalive_timeout": self._keepalive_timeout,
        }
        connector = (
            GuardedConnector(self._egress, **options)
            if guarded and self._egress is not None
            else aiohttp.TCPConnector(**options)
        )
        return aiohttp.ClientSession(
            connector=connector,
            # Bodies pass byte for byte, with their Content-Encoding.
            auto_decompress=False,
            # Cookies belong to the client and the upstream, never to a pool shared by all clients.
            cookie_jar=aiohttp.DummyCookieJar(),
            # aiohttp would otherwise add its own User-Agent, Accept, Accept-Encoding (asking for a
            # gzip the client may not understand) and Content-Type to requests that had none.
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            # No overall limit (aiohttp's default is 5 min): a long download is fine while it moves.
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
            # Headers and target written as the client's octets (module docstring).
            request_class=ExactRequest,
        )

    def _client_timeout(self, timeout_ms: int) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(timeout_ms)
        if timeout is None:
            read_ms = self._read_timeout_ms or timeout_ms
            timeout = aiohttp.ClientTimeout(total=None, sock_read=read_ms / 1000)
            # Routes have a handful of distinct timeouts; bound the cache anyway.
            if len(self._timeouts) < 256:
                self._timeouts[timeout_ms] = timeout
        return timeout


# --- Request side ------------------------------------------------------------------------------


async def _request_body(receive: Receive, exchange: _Exchange) -> AsyncIterator[bytes]:
    """The client's body as aiohttp pulls it, counted against the limit as it goes.

    Raising here aborts the upstream request (aiohttp closes that connection); the flags on
    ``exchange`` tell the forwarder why.
    """
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            exchange.client_gone = True
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        exchange.bytes_in += len(chunk)
        if exchange.bytes_in > exchange.max_body_bytes:
            exchange.body_too_large = True
            raise _BodyTooLarge
        if chunk:
            yield chunk
    # The body is consumed: receive() is free for the disconnect watch now.
    exchange.watch.start()


# --- Response side -----------------------------------------------------------------------------


async def _relay(upstream: aiohttp.ClientResponse, exchange: _Exchange) -> ForwardResult:
    """Stream the upstream's response to the client, chunk by chunk as it arrives."""
    exchange.status = upstream.status
    headers = downstream_headers(upstream.raw_headers, exchange.response_headers)
    if not await _send_or_gone(
        exchange.send, {"type": "http.response.start", "status": upstream.status, "headers": headers}
    ):
        return exchange.result("client_disconnect", "the client disconnected")
    content = upstream.content
    while True:
        try:
            chunk = await content.readany()
        except _UPSTREAM_ERRORS as exc:
            # Too late for an error status: leave the response unfinished (module docstring).
            outcome: Outcome = "timeout" if isinstance(exc, TimeoutError) else "upstream_aborted"
            return exchange.result(outcome, _describe(exc))
        last = content.at_eof()
        if not await _pass_on(exchange, chunk, last):
            return exchange.result("client_disconnect", "the client disconnected")
        if last:
            return exchange.result("upstream_5xx" if upstream.status >= 500 else "ok")


async def _relay_lean(conn: UpstreamConnection, exchange: _Exchange, read_timeout_s: float) -> ForwardResult:
    """``_relay`` for the lean client: the body as it arrives, everything buffered at once. A
    response that has all arrived with its head (most do) is given in one call when the server
    offers one (``RESPOND_KEY``)."""
    status = exchange.status = conn.status
    headers = downstream_headers(conn.headers, exchange.response_headers)
    whole: bytes | None = None  # the body, taken whole, when `respond` declined it
    respond = exchange.respond
    if respond is not None and conn.ended:
        whole = conn.take()
        exchange.watch.stop()  # the response completes now (see _pass_on)
        if respond(status, headers, whole):
            exchange.bytes_out = len(whole)
            return exchange.result("upstream_5xx" if status >= 500 else "ok")
        # Declined (the client's socket is paused for back-pressure): as messages, below.
    if not await _send_or_gone(exchange.send, {"type": "http.response.start", "status": status, "headers": headers}):
        return exchange.result("client_disconnect", "the client disconnected")
    while True:
        if whole is not None:
            chunk, whole = whole, None
        else:
            try:
                chunk = conn.take() if conn.ready() else await conn.read(read_timeout_s)
            except (UpstreamError, TimeoutError) as exc:
                # Too late for an error status: leave the response unfinished (module docstring).
                outcome: Outcome = "timeout" if isinstance(exc, TimeoutError) else "upstream_aborted"
                return exchange.result(outcome, _describe(exc))
        last = conn.complete
        if not await _pass_on(exchange, chunk, last):
            return exchange.result("client_disconnect", "the client disconnected")
        if last:
            return exchange.result("upstream_5xx" if status >= 500 else "ok")


async def _pass_on(exchange: _Exchange, chunk: bytes, last: bool) -> bool:
    """Sends one chunk of the upstream's body to the client (``last``: the final one); False when
    the client has left."""
    if last:
        # Before the final message, whose completion uvicorn reports as a disconnect.
        exchange.watch.stop()
    exchange.bytes_out += len(chunk)
    if exchange.bytes_out > _WATCH_NOW_BYTES:
        exchange.watch.hurry()
    return await _send_or_gone(exchange.send, {"type": "http.response.body", "body": chunk, "more_body": not last})


async def _send_or_gone(send: Send, message: Message) -> bool:
    """send(), or False when the server reports the client gone by raising (uvicorn returns
    quietly and leaves it to the watch; other servers raise an OSError subclass)."""
    try:
        await send(message)
    except OSError:
        return False
    return True


async def _fail_before_response(exchange: _Exchange, exc: BaseException) -> ForwardResult:
    """Map a failure before the upstream answered to the client's JSON error (or to nothing, when
    the client is the one that left)."""
    if exchange.client_gone:
        return exchange.result("client_disconnect", "the client disconnected during the upload")
    if exchange.body_too_large:
        return await _answer_error(exchange, "body_too_large", f"request body passed {exchange.max_body_bytes} bytes")
    if isinstance(exc, TimeoutError):
        error = f"no response headers within {exchange.timeout_ms} ms ({_describe(exc)})"
        return await _answer_error(exchange, "timeout", error)
    return await _answer_error(exchange, "connect_error", _describe(exc))


async def _answer_error(exchange: _Exchange, outcome: Outcome, error: str) -> ForwardResult:
    """Send the spec's JSON error for ``outcome`` and return its result."""
    # The response is about to complete: stop watching first (see DisconnectWatch).
    exchange.watch.stop()
    status, code, message = _ERRORS[outcome]
    details: dict[str, int] | None = None
    if outcome == "body_too_large":
        details = {"max_body_bytes": exchange.max_body_bytes}
    elif outcome == "timeout":
        details = {"timeout_ms": exchange.timeout_ms}
    body = error_json(code, message, details)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)), *OWN_ANSWER_HEADERS]
    headers.extend(exchange.response_headers)
    exchange.status = status
    if await _send_or_gone(exchange.send, {"type": "http.response.start", "status": status, "headers": headers}):
        await _send_or_gone(exchange.send, {"type": "http.response.body", "body": body, "more_body": False})
        exchange.bytes_out = len(body)
    return exchange.result(outcome, error)


def _describe(exc: BaseException) -> str:
    """A short diagnostic for the request log: the exception's class, and its message if any."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
