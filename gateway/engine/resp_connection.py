"""One pipelined Redis connection for ``RespClient`` (``gateway.engine.resp``): the asyncio protocol.

It parses replies with ``hiredis.Reader`` and resolves the oldest pending future for each (Redis
answers in order), writes what was queued in one event-loop iteration at once, and keeps one
watchdog timer for the oldest pending command instead of a timer per call. The guarantees it gives
callers are listed in ``gateway.engine.resp``; the errors raised to them are defined here.

This module is on the proxy's hot path: it must not import Django.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Final, cast

import hiredis

__all__ = ["Connection", "FailureObserver", "NoScriptError", "RedisUnavailable", "RespReplyError"]

# hiredis returns this from gets() when the buffer holds no complete reply. A private object, as
# False or None could be real replies.
_NOT_ENOUGH_DATA: Final = object()
# A watchdog that finds the oldest command overdue waits this long before failing the connection:
# if the event loop itself was blocked past the deadline, the reply may already sit unread in the
# socket, and uvloop runs timers before polling sockets in each iteration. A short call_later (not
# call_soon) guarantees one socket poll in between on both asyncio and uvloop.
_GRACE_S: Final = 0.002
# uvloop's timers and clock have millisecond resolution: a timer may fire up to 1 ms "early".
# Re-arming for less than that could spin, so such a command counts as due.
_CLOCK_SLACK_S: Final = 0.001


class RespReplyError(Exception):
    """Redis answered this one command with an error reply; ``str(exc)`` is its message.

    The connection is fine and other commands are unaffected.
    """


class NoScriptError(RespReplyError):
    """NOSCRIPT: EVALSHA of a script Redis does not have (restart, failover, SCRIPT FLUSH)."""


class RedisUnavailable(ConnectionError):
    """Redis could not be reached, did not answer in time, or dropped the connection.

    The command's outcome is unknown. While the client is marked down this is raised at once.
    """


def _reply_error(error: RespReplyError) -> RespReplyError:
    message = str(error.args[0]) if error.args else ""
    return NoScriptError(message) if message.startswith("NOSCRIPT") else error


# Called once per connection, as (the connection, why it failed, whether the client should be
# marked down), when it becomes unusable.
FailureObserver = Callable[["Connection", str, bool], None]


class Connection(asyncio.Protocol):
    """One Redis connection: a FIFO of pending futures, an outgoing buffer and a watchdog."""

    __slots__ = (
        "answered",
        "failed",
        "flush_scheduled",
        "loop",
        "lost",
        "on_failed",
        "out",
        "overdue",
        "pending",
        "reader",
        "timeout_s",
        "transport",
        "watchdog",
        "where",
    )

    def __init__(
        self, where: str, on_failed: FailureObserver, loop: asyncio.AbstractEventLoop, timeout_s: float
    ) -> None:
        """``where`` names the server in error messages (never the password); ``on_failed`` is told
        once, when the connection becomes unusable; ``timeout_s`` bounds the wait for each reply."""
        self.where = where
        self.on_failed = on_failed
        self.loop = loop
        self.timeout_s = timeout_s
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=RespReplyError, notEnoughData=_NOT_ENOUGH_DATA)
        # (future, loop time when queued), oldest first: the order Redis answers in.
        self.pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.watchdog: asyncio.TimerHandle | None = None
        self.overdue = False
        self.answered = False
        # Why this connection is unusable, once it is.
        self.failed: str | None = None
        self.lost: asyncio.Future[None] = loop.create_future()

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.answered = True
        reader = self.reader
        reader.feed(data)
        pending = self.pending
        try:
            reply = reader.gets()
            while reply is not _NOT_ENOUGH_DATA:
                future = pending.popleft()[0]
                # A caller that was cancelled left its future done: the reply is consumed anyway,
                # which keeps the replies after it matched to their callers.
                if not future.done():
                    if type(reply) is RespReplyError:
                        future.set_exception(_reply_error(reply))
                    else:
                        future.set_result(reply)
                reply = reader.gets()
        except IndexError:
            self.fail("Redis sent a reply to no command", down=True)
        except hiredis.ProtocolError as exc:
            self.fail(f"unreadable reply from Redis ({exc})", down=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.lost.done():
            self.lost.set_result(None)
        cause = f"{exc!r}" if exc is not None else "closed by the server"
        # A connection that never answered is not worth reconnecting to at once (a server that
        # accepts and hangs up, e.g. at maxclients): that marks the client down.
        self.fail(f"connection lost ({cause})", down=not self.answered)

    # --- used by RespClient -------------------------------------------------------------------

    def send(self, data: bytes) -> asyncio.Future[Any]:
        """Queues one packed command; the future gets its reply."""
        if self.failed is not None:
            raise RedisUnavailable(self.failed)
        loop = self.loop
        future = loop.create_future()
        self.pending.append((future, loop.time()))
        self.out.append(data)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            loop.call_soon(self.flush)
        if self.watchdog is None:
            self.watchdog = loop.call_later(self.timeout_s, self.check)
        return future

    def flush(self) -> None:
        """Writes everything queued in this loop iteration at once."""
        self.flush_scheduled = False
        out = self.out
        if not out or self.transport is None:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.transport.write(data)

    def check(self) -> None:
        """The watchdog: fails the connection when the oldest pending command is overdue.

        It stays armed while the connection is busy (re-armed for the oldest command's deadline)
        and disarms when it finds nothing pending, so a steady load costs one timer per
        ``timeout_s``, not one per call.
        """
        self.watchdog = None
        if self.failed is not None or not self.pending:
            self.overdue = False
            return
        now = self.loop.time()
        due = self.pending[0][1] + self.timeout_s
        if now + _CLOCK_SLACK_S < due:
            self.overdue = False
            self.watchdog = self.loop.call_later(due - now, self.check)
        elif not self.overdue:
            self.overdue = True
            self.watchdog = self.loop.call_later(_GRACE_S, self.check)
        else:
            self.fail(f"no reply within {self.timeout_s} s (timed out)", down=True)

    def fail(self, reason: str, *, down: bool) -> None:
        """Makes the connection unusable: every pending command gets ``RedisUnavailable``."""
        if self.failed is not None:
            return
        self.failed = reason = f"Redis at {self.where}: {reason}"
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        self.out.clear()
        if self.transport is not None:
            self.transport.abort()  # unsent commands are dropped: their callers are told they failed
        pending = self.pending
        while pending:
            future = pending.popleft()[0]
            if not future.done():
                # One exception per caller: a shared one would collect every caller's traceback.
                future.set_exception(RedisUnavailable(reason))
        self.on_failed(self, reason, down)
