"""A minimal, fast asyncio Redis client for the gateway's hot path.

Why the gateway has its own client rather than redis-py's asyncio one (CPU per call, retries): the
figures and how they were measured are in docs/engine.md.

How
---
* ONE connection per client (per event loop), every caller multiplexed over it with pipelining:
  Redis answers in order, so ``data_received`` resolves the oldest pending future for each reply
  that ``hiredis.Reader`` parses (the connection is ``gateway.engine.resp_connection``).
* Commands are packed by ``hiredis.pack_command`` (C) and appended to an outgoing buffer that is
  flushed once per event-loop iteration (``loop.call_soon``): 100 concurrent callers cost one
  ``transport.write``.
* No timer per call: each pending command carries its send time, and one watchdog
  (``loop.call_later``) looks at the oldest one.

Guarantees
----------
* A caller never waits longer than about ``timeout_s`` for a reply, nor ``connect_timeout_s`` for a
  connection (plus one event-loop iteration: see ``resp_connection.Connection.check``).
* Any failure to reach Redis raises ``RedisUnavailable`` (a ``ConnectionError``, hence an
  ``OSError``), meaning "outcome unknown": the command may or may not have run. Nothing is ever
  retried on its own (a retried EVALSHA could take a rate-limit slot twice); the one exception is
  ``evalsha`` re-sending after a NOSCRIPT reply, when Redis ran nothing.
* A timeout fails every pending command and drops the connection, since later replies could no
  longer be matched to their callers. After a timeout or a failed connect the client is "down" for
  ``down_for_s``: calls raise ``RedisUnavailable`` at once without touching a socket, so a hung
  Redis costs ``timeout_s`` once and not on every request; the first call after that reconnects.
  A connection the server closes fails its pending commands; the next call reconnects at once
  (the client goes down only if that connection never answered anything, e.g. a server that
  accepts and hangs up).
* An error reply (``-ERR ...``) raises ``RespReplyError`` for that call only; the connection
  stays usable. ``NoScriptError`` is the NOSCRIPT case.
* AUTH (when the URL has a password) and SELECT (db other than 0) go out in one write right after
  connecting, and the connection takes commands only once both succeeded: one extra round trip
  per connect, so that a refused SELECT can never let commands run in database 0. Their failure
  fails the connect (``RedisUnavailable``, client marked down).
* Replies are RESP2 as hiredis gives them: bulk and status strings as ``bytes`` (``+OK`` is
  ``b"OK"``), integers as ``int``, arrays as lists, nil as ``None``; an error nested in an array
  is a ``RespReplyError`` instance in the list.

Threads and loops: a client is used from ONE event loop at a time and is not thread-safe. It may
be built outside any loop; it connects on first use. Called from a different running loop than its
connection's (tests calling ``asyncio.run`` repeatedly), it forgets the old connection without
touching it (its transport belongs to the other loop; the garbage collector closes its socket)
and opens a new one. ``aclose()`` is idempotent, and a closed client reconnects if used again.

Not supported: RESP3, Redis Cluster, Sentinel, TLS (``rediss://``), receiving pub/sub messages
(``publish`` is fine), blocking commands longer than ``timeout_s``, MULTI/EXEC across concurrent
callers (they share the connection: use a Lua script).

This module is on the proxy's hot path: it must not import Django.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from gateway.engine.resp_connection import Connection, NoScriptError, RedisUnavailable, RespReplyError

__all__ = [
    "Arg",
    "NoScriptError",
    "RedisUnavailable",
    "RespClient",
    "RespReplyError",
    "gateway_redis_client",
    "pack_evalsha",
]

Arg: TypeAlias = bytes | str | int | float | memoryview

# hiredis' stub types the argument as a 1-tuple; it takes a tuple of any length.
_pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command
_running_loop = asyncio.get_running_loop


def _encode(args: tuple[Any, ...]) -> bytes:
    """RESP2 for one command, by hiredis in C; a slower path converts unusual argument types."""
    if not args:
        # "*0\r\n" gets no reply at all, which would shift every later reply by one.
        raise ValueError("a Redis command needs at least one argument")
    try:
        return _pack(args)
    except TypeError:
        return _pack(tuple(_coerce(arg) for arg in args))


def pack_evalsha(sha: str, keys: Sequence[Arg], args: Sequence[Arg]) -> bytes:
    """The RESP2 bytes of ``EVALSHA sha len(keys) *keys *args`` (``RespClient.evalsha_packed``).
    Raises TypeError for an argument Redis cannot take (as ``execute``)."""
    return _encode((b"EVALSHA", sha, len(keys), *keys, *args))


def _coerce(value: object) -> bytes | str | int | float:
    # bool is refused like redis-py does: True would be sent as "True", not 1.
    if isinstance(value, bool) or not isinstance(value, bytes | bytearray | memoryview | str | int | float):
        raise TypeError(f"cannot send {type(value).__name__} {value!r} to Redis: use bytes, str, int or float")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return str(value)  # a str subclass
    if isinstance(value, int):
        return int(value)  # an IntEnum and the like
    return float(value)


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Marks a connect attempt's exception as seen, so one whose callers all left logs nothing."""
    if not task.cancelled():
        task.exception()


class RespClient:
    """An asyncio Redis client over one pipelined connection (see the module docstring).

    Build it with ``from_url`` (or the constructor); it connects on first use.
    """

    __slots__ = (
        "_attempt",
        "_conn",
        "_connect_timeout_s",
        "_db",
        "_down_for_s",
        "_down_reason",
        "_down_until",
        "_epoch",
        "_handshake",
        "_host",
        "_path",
        "_port",
        "_timeout_s",
        "_where",
    )

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        *,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 0.5,
        connect_timeout_s: float = 0.5,
        down_for_s: float = 1.0,
    ) -> None:
        if timeout_s <= 0 or connect_timeout_s <= 0:
            raise ValueError("timeout_s and connect_timeout_s must be > 0")
        if down_for_s < 0:
            raise ValueError("down_for_s must be >= 0")
        if db < 0:
            raise ValueError(f"db must be >= 0, got {db}")
        self._host = host
        self._port = port
        self._path = path
        self._db = db
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._down_for_s = down_for_s
        # Never the password: this goes into error messages and logs.
        self._where = f"unix:{path}" if path is not None else f"{host}:{port}"
        # Sent in one write right after connecting; a connection is handed out only once they
        # succeeded (a failed SELECT must not let commands run in database 0).
        handshake: list[bytes] = []
        if password:
            auth = ("AUTH", username, password) if username else ("AUTH", password)
            handshake.append(_encode(auth))
        if db:
            handshake.append(_encode(("SELECT", db)))
        self._handshake = tuple(handshake)
        self._conn: Connection | None = None
        self._attempt: asyncio.Task[Connection] | None = None
        self._epoch = 0  # bumped by aclose(), so a connect attempt it outlived is discarded
        self._down_until = 0.0  # time.monotonic(): loop.time() differs between loops
        self._down_reason = ""

    @classmethod
    def from_url(
        cls, url: str, *, timeout_s: float = 0.5, connect_timeout_s: float = 0.5, down_for_s: float = 1.0
    ) -> RespClient:
        """``redis://[[user]:password@]host[:port][/db]`` or ``unix:///path.sock[?db=N&password=...]``.

        ``rediss://`` (TLS) raises ValueError: this client has no TLS.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "rediss":
            raise ValueError("rediss:// (TLS) is not supported by RespClient; use redis-py for a TLS connection")
        if scheme not in ("redis", "unix"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r} (expected redis:// or unix://)")
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        username = unquote(parts.username) if parts.username else query.get("username") or None
        password = unquote(parts.password) if parts.password else query.get("password") or None
        path_db = parts.path.strip("/") if scheme == "redis" else ""
        db_text = query.get("db") or path_db or "0"
        try:
            db = int(db_text)
        except ValueError:
            raise ValueError(f"invalid Redis database {db_text!r} in URL") from None
        options: dict[str, Any] = {
            "db": db,
            "username": username,
            "password": password,
            "timeout_s": timeout_s,
            "connect_timeout_s": connect_timeout_s,
            "down_for_s": down_for_s,
        }
        if scheme == "unix":
            if not parts.path:
                raise ValueError("a unix:// Redis URL needs a socket path")
            return cls(path=parts.path, **options)
        return cls(parts.hostname or "localhost", parts.port or 6379, **options)

    def __repr__(self) -> str:
        return f"<RespClient {self._where} db={self._db}>"

    # --- commands -----------------------------------------------------------------------------

    async def execute(self, *args: Arg) -> Any:
        """Sends one command and returns its reply.

        Raises ``RespReplyError`` for an error reply and ``RedisUnavailable`` when Redis cannot
        be reached or does not answer within ``timeout_s``.
        """
        return await self._send(_encode(args))

    async def evalsha(self, sha: str, script: str, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """EVALSHA; when Redis lacks the script, SCRIPT LOAD it and EVALSHA once more.

        ``sha`` must be the SHA1 of ``script`` (checked against what SCRIPT LOAD returns).
        """
        return await self.evalsha_packed(pack_evalsha(sha, keys, args), sha, script)

    async def evalsha_packed(self, command: bytes, sha: str, script: str) -> Any:
        """``evalsha`` of a command already encoded by ``pack_evalsha(sha, ...)``: for a caller
        that sends the same command many times and keeps its bytes (``gateway.engine.gate``).
        Raises as ``execute``."""
        conn = self._conn
        if conn is None or conn.loop is not _running_loop():
            conn = await self._connection()
        try:
            return await conn.send(command)
        except NoScriptError:
            # Nothing ran, so sending again cannot count anything twice.
            loaded = await self.script_load(script)
            if loaded != sha.lower():
                raise RespReplyError(f"SCRIPT LOAD returned {loaded}, expected {sha}") from None
            return await self._send(command)

    async def _send(self, data: bytes) -> Any:
        """``execute`` for an encoded command."""
        conn = self._conn
        if conn is None or conn.loop is not _running_loop():
            conn = await self._connection()
        return await conn.send(data)

    async def script_load(self, script: str) -> str:
        """SCRIPT LOAD; the script's SHA1 as Redis reports it (lowercase hex)."""
        reply = await self.execute(b"SCRIPT", b"LOAD", script)
        return bytes(reply).decode("ascii")

    async def publish(self, channel: Arg, message: Arg) -> int:
        """PUBLISH; the number of subscribers that received it."""
        return int(await self.execute(b"PUBLISH", channel, message))

    async def ping(self) -> bool:
        return bool(await self.execute(b"PING") == b"PONG")

    async def pipeline(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Sends several commands in one write; their replies in order.

        An error reply is returned as a ``RespReplyError`` in the list, not raised; a connection
        failure raises ``RedisUnavailable``. Not a transaction: other callers' commands may run
        between these.
        """
        if not commands:
            return []
        packed = [_encode(tuple(command)) for command in commands]
        conn = self._conn
        if conn is None or conn.loop is not _running_loop():
            conn = await self._connection()
        futures = [conn.send(data) for data in packed]
        replies: list[Any] = []
        try:
            for future in futures:
                try:
                    replies.append(await future)
                except RespReplyError as exc:
                    replies.append(exc)
        except BaseException:
            # Cancelled or disconnected: leave no future whose exception nobody retrieves.
            for future in futures:
                if not future.done():
                    future.cancel()
                elif not future.cancelled():
                    future.exception()
            raise
        return replies

    async def aclose(self) -> None:
        """Closes the connection; pending commands fail with ``RedisUnavailable``. Idempotent.

        The client may be used again afterwards: the next call connects anew.
        """
        self._epoch += 1
        self._attempt = None  # a connect in progress finishes, sees the epoch changed and closes
        conn, self._conn = self._conn, None
        if conn is None:
            return
        loop = _running_loop()
        if conn.loop is not loop:
            return  # another loop's transport: not ours to touch from here
        conn.fail("client closed", down=False)
        # Let the transport finish closing, so the loop does not end with an open socket.
        await asyncio.wait([conn.lost], timeout=self._connect_timeout_s)

    # --- connection management ----------------------------------------------------------------

    async def _connection(self) -> Connection:
        """The slow path of every command: connect (once, shared by all callers) or fail fast."""
        loop = _running_loop()
        conn = self._conn
        if conn is not None:
            if conn.loop is loop:
                return conn
            # Made on another event loop (an earlier asyncio.run): its transport can only be used
            # or closed from that loop. Forget it; the garbage collector closes its socket.
            self._conn = None
        if self._down_until and time.monotonic() < self._down_until:
            raise RedisUnavailable(self._down_reason)
        attempt = self._attempt
        if attempt is None or attempt.get_loop() is not loop:
            attempt = self._attempt = loop.create_task(self._open(loop, self._epoch))
            attempt.add_done_callback(_retrieve)
        try:
            # shield: a caller that gives up must not cancel the attempt the others wait for.
            return await asyncio.shield(attempt)
        except RedisUnavailable as exc:
            # Each caller its own exception (the attempt's is shared by every waiter).
            raise RedisUnavailable(str(exc)) from exc.__cause__

    async def _open(self, loop: asyncio.AbstractEventLoop, epoch: int) -> Connection:
        conn = Connection(self._where, self._connection_failed, loop, self._timeout_s)
        handshake: list[asyncio.Future[Any]] = []
        try:
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    if self._path is None:
                        await loop.create_connection(lambda: conn, self._host, self._port)
                    else:
                        await loop.create_unix_connection(lambda: conn, self._path)
                    handshake = [conn.send(command) for command in self._handshake]
                    for future in handshake:
                        await future
            finally:
                if self._attempt is asyncio.current_task():
                    self._attempt = None
        except (OSError, TimeoutError, RespReplyError) as exc:
            reason = f"cannot connect ({exc!r})" if not isinstance(exc, TimeoutError) else "connect timed out"
            if isinstance(exc, RespReplyError):
                reason = f"connection setup refused ({exc})"
            self._close_attempt(conn, handshake, reason)
            self._mark_down(reason)
            raise RedisUnavailable(f"Redis at {self._where}: {reason}") from exc
        except BaseException:
            self._close_attempt(conn, handshake, "connect cancelled")
            raise
        if epoch != self._epoch:
            self._close_attempt(conn, handshake, "client closed")
            raise RedisUnavailable(f"Redis at {self._where}: client closed while connecting")
        self._conn = conn
        self._down_until = 0.0
        return conn

    def _close_attempt(self, conn: Connection, handshake: list[asyncio.Future[Any]], reason: str) -> None:
        # down=False: the caller decides whether this failure marks the client down.
        conn.fail(reason, down=False)
        for future in handshake:
            if future.done() and not future.cancelled():
                future.exception()

    def _connection_failed(self, conn: Connection, reason: str, down: bool) -> None:
        """Called by a connection that just became unusable."""
        if self._conn is conn:
            self._conn = None
        if down:
            self._mark_down(reason)

    def _mark_down(self, reason: str) -> None:
        if self._down_for_s <= 0:
            return
        self._down_until = time.monotonic() + self._down_for_s
        self._down_reason = f"Redis at {self._where} is marked down for {self._down_for_s} s after: {reason}"


def gateway_redis_client(url: str, *, timeout_s: float = 0.5, down_for_s: float = 1.0) -> RespClient:
    """The Redis client every part of the gateway shares the settings of: the rate limiter, the
    breaker, the fleet's pressure exchange and the runtime. A ``RespClient`` that fails fast (no
    retries, replies within ``timeout_s`` seconds, the same bound on connecting) and, after a
    failure, answers "unavailable" at once for ``down_for_s`` seconds instead of making every
    request wait out a hung Redis. Raises ValueError for a URL ``RespClient.from_url`` refuses.

    Why not redis-py (its CPU per call, and its retries by default, which could make a retried
    EVALSHA take a rate-limit slot twice): docs/engine.md.
    """
    return RespClient.from_url(url, timeout_s=timeout_s, connect_timeout_s=timeout_s, down_for_s=down_for_s)
