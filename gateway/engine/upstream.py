"""A lean pooled HTTP/1.1 client for the forwarder's ``http://`` targets (issue 13, lever 2).

Why: aiohttp cost ~24 % of the web process's CPU per proxied request (docs/benchmarks.md, "Where a
proxied request's CPU goes"): URL objects, timeouts, request and response objects, a writer task,
stream readers. This client does only what the forwarder needs, on ``asyncio.Protocol`` and
``httptools`` (``gateway.engine.upstream_connection``), in the style of ``gateway.engine.resp``.

What it does
------------
* The request head is written from bytes as the caller built it (``request_head``): the request
  target exactly as given, Host, the header octets unchanged; head and a body already in memory go
  out in one write. A body of unknown length goes chunked; empty chunks are never written (a
  zero-size chunk would end the body).
* Responses are framed by Content-Length, chunked encoding (httptools hands over decoded chunks),
  or the connection's close (such a connection is not reused). Responses to HEAD, 204, 304 and 1xx
  have no body whatever their headers say; interim 1xx responses (100 Continue, 103 Early Hints)
  are skipped, a 101 nobody asked for is a malformed response.
* Back-pressure both ways: writes wait while the socket's buffer is over its high-water mark
  (``pause_writing``); reading pauses once ``HIGH_WATER`` body bytes wait for the caller.
* Keep-alive pool per (host, port, guarded): idle connections are reused newest first and closed
  after ``keepalive_timeout`` seconds. A connection is reused only after a complete response that
  allows it (HTTP/1.1 without ``Connection: close``, HTTP/1.0 with ``keep-alive``, not delimited by
  the close, nothing after it) and a request written to its end; anything else closes it.
* Limits: ``limit`` connections in use in all, ``limit_per_host`` per key; past them a request waits
  for a free one, within its deadline (as aiohttp's connector did).
* The stale keep-alive race (the upstream closed an idle connection as the request was written):
  a request that failed on a reused connection before any byte of the response is sent once more
  on a new connection when that is safe, i.e. its body is in memory (none, or one ASGI message)
  and its method is idempotent (RFC 9112 9.3.1; aiohttp and Go's net/http do the same).
* Guarded pools (tenants' routes under ``core.egress``): every address a host resolves to is
  checked with ``EgressPolicy.check_address`` before connecting and the connected peer again
  (``refusal``), as ``core.egress_aiohttp.GuardedConnector`` does; refusals raise EgressDenied.
* DNS answers are cached for ``ttl_dns_cache`` seconds. A name's addresses are tried with happy
  eyeballs (RFC 8305, ``aiohappyeyeballs`` as aiohttp does): the next one 0.25 s into an attempt
  that has not connected.

Not done (the forwarder keeps aiohttp for these): TLS (``https://`` targets), proxies, targets with
user information, HTTP/2, request pipelining, upgrades (WebSocket through the proxy).

Errors raised: ``ConnectError`` (no connection), ``UpstreamClosed`` (closed or reset before the
response ended), ``MalformedResponse`` (not HTTP/1.1), all ``UpstreamError`` (a ConnectionError);
``TimeoutError`` past a deadline; ``EgressDenied``; ``ValueError`` for a control character in the
head. The caller's own exceptions from its body source pass through unchanged.

Plain asyncio, no Django.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import aiohappyeyeballs

from core.egress import EgressDenied, EgressPolicy
from gateway.engine.rewrites import Header, count_controls
from gateway.engine.upstream_connection import (
    DONE,
    HEAD,
    ConnectError,
    MalformedResponse,
    UpstreamClosed,
    UpstreamConnection,
    UpstreamError,
    invalid_status,
)

__all__ = [
    "CHUNKED_FRAMING",
    "ZERO_LENGTH_FRAMING",
    "ConnectError",
    "MalformedResponse",
    "UpstreamClosed",
    "UpstreamConnection",
    "UpstreamError",
    "UpstreamPool",
    "invalid_status",
    "request_head",
]

# The next chunk of a request body, or None at its end (the caller's body source).
NextChunk = Callable[[], Awaitable[bytes | None]]
Key = tuple[str, int, bool]
# One getaddrinfo answer: (family, type, proto, canonname, sockaddr).
AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]
# aiohttp's default happy_eyeballs_delay (RFC 8305 recommends 250 ms).
_HAPPY_EYEBALLS_S: Final = 0.25

# RFC 9110 9.2.2, as aiohttp's IDEMPOTENT_METHODS: the requests a client may send again.
_IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
# ``request_head``'s framing lines: a body of unknown length, and no body on a method that has one.
CHUNKED_FRAMING: Final = b"transfer-encoding: chunked\r\n"
ZERO_LENGTH_FRAMING: Final = b"content-length: 0\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"


def request_head(method: bytes, target: bytes, host: bytes, headers: Sequence[Header], framing: bytes = b"") -> bytes:
    """The HTTP/1.1 request head: ``method target HTTP/1.1``, Host, ``headers`` as given (octets,
    in order), then ``framing`` (a ready header line such as ``transfer-encoding: chunked\\r\\n``).

    Raises ValueError when the method, the target or any name or value holds a control character
    other than HTAB (header injection); the ASGI server has refused such requests already, so this
    is a last guard.
    """
    parts = [method, b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    # The even places hold the method, the target, Host, and every name and value: none may hold a
    # control other than HTAB (RFC 9110 5.5, RFC 9112 4); a CR or LF would start a header of its own.
    if count_controls(b"".join(parts[::2])):
        raise ValueError("Forbidden control character detected in headers. Potential header injection attack.")
    parts.append(framing)
    parts.append(b"\r\n")
    return b"".join(parts)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


class _HostSlots:
    """A key's idle connections (newest last) and how many of its connections are in use."""

    __slots__ = ("idle", "in_use")

    def __init__(self) -> None:
        self.idle: list[UpstreamConnection] = []
        self.in_use = 0


class UpstreamPool:
    """Pooled HTTP/1.1 connections to upstreams, for one event loop (module docstring).

    Build it anywhere; it binds to the loop of its first request. ``exchange`` sends a request and
    returns the connection with its response head; the caller reads the body from it and hands it
    back with ``release`` (to reuse when it may) or ``discard``. ``close()`` closes every connection.
    """

    def __init__(
        self,
        *,
        limit: int = 1000,
        limit_per_host: int = 200,
        keepalive_timeout: float = 4.0,
        ttl_dns_cache: float = 10.0,
        egress: EgressPolicy | None = None,
    ) -> None:
        """``limit`` and ``limit_per_host`` bound the connections in use (a request past them
        waits); ``keepalive_timeout`` (s) is how long an idle connection is kept (the Forwarder's
        4 s, under the 5 s idle timeout of uvicorn and Node servers); ``ttl_dns_cache`` (s) how long
        a host's addresses are reused; ``egress`` the policy of guarded requests (None: no guard)."""
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._keepalive_timeout = keepalive_timeout
        self._ttl_dns_cache = ttl_dns_cache
        self._egress = egress
        self._hosts: dict[Key, _HostSlots] = {}
        self._busy: set[UpstreamConnection] = set()
        # Connections in use or being made: what the limits count.
        self._taken = 0
        # Bumped by close(): a connect begun before it must not touch the new counts.
        self._epoch = 0
        self._waiters: deque[tuple[Key, asyncio.Future[None]]] = deque()
        self._dns: dict[tuple[str, int], tuple[float, list[AddrInfo]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- public -------------------------------------------------------------------------------------

    def in_use(self) -> int:
        """Connections checked out right now (0 when idle)."""
        return len(self._busy)

    def idle(self) -> int:
        """Idle connections kept for reuse."""
        return sum(len(slots.idle) for slots in self._hosts.values())

    async def close(self) -> None:
        """Closes every connection, idle or in use; the pool can be used again afterwards."""
        for slots in self._hosts.values():
            for conn in slots.idle:
                conn.abort()
        for conn in self._busy:
            conn.abort()
        self._hosts.clear()
        self._busy.clear()
        self._taken = 0
        self._epoch += 1  # connections being made meanwhile are closed when they arrive
        self._dns.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._loop = None

    async def exchange(
        self,
        *,
        host: str,
        port: int,
        guarded: bool,
        method: bytes,
        head: bytes,
        body: bytes | None,
        more: NextChunk | None,
        chunked: bool,
        deadline: float,
    ) -> UpstreamConnection:
        """Sends one request and waits for its final response head; returns the connection, in
        use, with ``status`` and ``headers`` set and the body to be read (``take``/``read``).

        ``head`` is ``request_head``'s bytes; ``body`` the start of the body (or all of it when
        ``more`` is None), None for no body; ``more`` gives the rest chunk by chunk; ``chunked``
        frames the body in chunks (the head must say so). ``deadline`` (``loop.time()`` seconds)
        bounds waiting for a free connection, connecting, writing and waiting for the head.

        Raises ConnectError (no connection), UpstreamClosed (closed or reset before the head, after
        the one retry the module docstring allows), MalformedResponse, TimeoutError at the deadline,
        EgressDenied (guarded only, before any byte is sent), and whatever ``more`` raises,
        unchanged. The connection is closed on any failure and never returned.
        """
        replayable = more is None and method in _IDEMPOTENT
        first = head
        if body:
            first = head + (_chunk(body) if chunked else body)
        if more is None and chunked:
            first += _LAST_CHUNK
        key = (host, port, guarded)
        while True:
            conn = await self._acquire(key, deadline)
            reused = conn.served > 0
            try:
                conn.begin(head_only=method == b"HEAD")
                conn.write(first)
                if more is not None:
                    await _upload(conn, more, chunked, deadline)
                await conn.response_head(deadline)
            except UpstreamClosed:
                self.discard(conn)
                if reused and replayable and not conn.answered:
                    replayable = False  # once
                    continue
                raise
            except BaseException:
                self.discard(conn)
                raise
            return conn

    def release(self, conn: UpstreamConnection) -> None:
        """Hands a connection back: kept for reuse when its response was complete and allows it,
        closed otherwise. Idempotent."""
        if conn not in self._busy:
            conn.abort()  # released already, or the pool was closed meanwhile
            return
        self._busy.remove(conn)
        slots = self._hosts.get(conn.key)
        if slots is not None:
            slots.in_use -= 1
        self._taken -= 1
        if conn.state == DONE and conn.reusable and conn.body == [] and conn.usable() and slots is not None:
            conn.release_idle()
            slots.idle.append(conn)
            if self._sweeper is None:
                self._sweeper = conn.loop.call_later(self._keepalive_timeout, self._sweep)
        else:
            conn.abort()
        if self._waiters:
            self._wake_waiter()

    def discard(self, conn: UpstreamConnection) -> None:
        """Closes a checked-out connection for good."""
        conn.abort()
        self.release(conn)

    # --- acquiring ------------------------------------------------------------------------------

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and (self._busy or self.idle()):
                # Transports belong to the loop that made them; sharing them fails in obscure ways.
                raise RuntimeError("this UpstreamPool's connections belong to another event loop")
            self._loop = loop
        return loop

    async def _acquire(self, key: Key, deadline: float) -> UpstreamConnection:
        loop = self._bind()
        slots = self._hosts.get(key)
        if slots is None:
            slots = self._hosts[key] = _HostSlots()
        while True:
            conn = self._reuse(slots, loop.time())
            if conn is not None:
                return conn
            if self._taken < self._limit and slots.in_use < self._limit_per_host:
                break
            # Wait for a connection to be handed back: it may come back idle, or free a slot.
            await self._wait_for_slot(key, deadline)
        slots.in_use += 1
        self._taken += 1
        epoch = self._epoch
        try:
            conn = await self._connect(key, deadline)
        except BaseException:
            if epoch == self._epoch:  # else close() has reset the counts
                slots.in_use -= 1
                self._taken -= 1
                if self._waiters:
                    self._wake_waiter()
            raise
        if epoch != self._epoch:
            conn.abort()
            raise UpstreamClosed("the pool was closed while connecting")
        self._busy.add(conn)
        return conn

    def _reuse(self, slots: _HostSlots, now: float) -> UpstreamConnection | None:
        """The newest idle connection still fit for use, checked out; None when there is none."""
        idle = slots.idle
        while idle:
            conn = idle.pop()
            if conn.usable() and now - conn.idle_since < self._keepalive_timeout:
                slots.in_use += 1
                self._taken += 1
                self._busy.add(conn)
                return conn
            conn.abort()
        return None

    async def _wait_for_slot(self, key: Key, deadline: float) -> None:
        """Waits until a connection of ``key`` is handed back or a slot frees (TimeoutError at
        ``deadline``)."""
        waiter = asyncio.get_running_loop().create_future()
        entry = (key, waiter)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._wake_waiter()  # woken but leaving: pass the turn on
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(entry)

    def _wake_waiter(self) -> None:
        """Wakes the oldest waiter that may go on now: one whose key has an idle connection, or
        room for a new one (it checks again when it runs)."""
        room = self._taken < self._limit
        for key, waiter in self._waiters:
            if waiter.done():
                continue
            slots = self._hosts.get(key)
            if slots is None or slots.idle or (room and slots.in_use < self._limit_per_host):
                waiter.set_result(None)
                return

    async def _connect(self, key: Key, deadline: float) -> UpstreamConnection:
        """A new connection: resolve, judge every address (guarded), connect with happy eyeballs,
        judge the peer (guarded)."""
        host, port, guarded = key
        loop = asyncio.get_running_loop()
        policy = self._egress if guarded else None
        target = f"{host}:{port}"
        async with asyncio.timeout_at(deadline):
            infos = await self._resolve(host, port)
            if policy is not None:
                for info in infos:
                    policy.check_address(str(info[4][0]), target=target)
            try:
                # As aiohttp's connector: the next address is tried 0.25 s into an attempt that has
                # not connected, so a black-holed address (broken IPv6, say) does not eat the timeout.
                sock = await aiohappyeyeballs.start_connection(infos, happy_eyeballs_delay=_HAPPY_EYEBALLS_S)
            except OSError as exc:
                raise ConnectError(f"Cannot connect to host {target} ({exc})") from exc
            transport, conn = await loop.create_connection(lambda: UpstreamConnection(loop, key), sock=sock)
            if policy is not None:
                _check_peer(policy, transport, target)
            return conn

    async def _resolve(self, host: str, port: int) -> list[AddrInfo]:
        """The host's addresses (getaddrinfo's answers: an IP literal is not looked up), from the
        cache when it has them. Raises ConnectError when the name does not resolve."""
        loop = asyncio.get_running_loop()
        cached = self._dns.get((host, port))
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        try:
            infos: list[AddrInfo] = list(await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            raise ConnectError(f"Cannot connect to host {host}:{port} ({exc})") from exc
        if not infos:
            raise ConnectError(f"Cannot connect to host {host}:{port} (no address)")
        if len(self._dns) >= 1024:
            self._dns.clear()  # bounded: targets are a handful of hosts
        self._dns[(host, port)] = (loop.time() + self._ttl_dns_cache, infos)
        return infos

    def _sweep(self) -> None:
        """Closes idle connections past ``keepalive_timeout`` (and any that broke while idle);
        re-arms for the oldest one left."""
        self._sweeper = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        oldest: float | None = None
        for slots in self._hosts.values():
            kept = []
            for conn in slots.idle:
                if conn.usable() and now - conn.idle_since < self._keepalive_timeout:
                    kept.append(conn)
                    oldest = conn.idle_since if oldest is None else min(oldest, conn.idle_since)
                else:
                    conn.abort()
            slots.idle = kept
        if oldest is not None:
            self._sweeper = loop.call_at(oldest + self._keepalive_timeout, self._sweep)


async def _upload(conn: UpstreamConnection, more: NextChunk, chunked: bool, deadline: float) -> None:
    """Streams the rest of a request body; stops early (and marks the connection not reusable)
    when the response head arrives first. Each chunk waits for the socket to take the last."""
    async with asyncio.timeout_at(deadline):
        while True:
            await conn.drain(deadline)
            if conn.state != HEAD:
                conn.reusable = False  # answered before the body was sent: the body is cut short
                return
            chunk = await more()
            if chunk is None:
                if chunked:
                    conn.write(_LAST_CHUNK)
                return
            if chunk:
                conn.write(_chunk(chunk) if chunked else chunk)


def _check_peer(policy: EgressPolicy, transport: asyncio.Transport, target: str) -> None:
    """The connected peer must pass the policy too; the transport is closed when it does not."""
    peer = transport.get_extra_info("peername")
    rule = policy.refusal(str(peer[0])) if peer else "an address the socket does not report"
    if rule is not None:
        transport.abort()
        raise EgressDenied(target=target, address=str(peer[0]) if peer else None, rule=rule)
