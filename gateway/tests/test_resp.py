"""The gateway's own Redis client (gateway.engine.resp).

Against the real Redis (skipped when absent, failed when CI=true), each test under its own key
prefix, deleted afterwards; failure modes against small RESP servers of the test's own, running in
the test's event loop, that can hang, hang up, record what they receive and count connections.
No blind sleeps: everything waits on a condition with a deadline. "Fails fast" is counted, not
timed: connection attempts, connections accepted, and whether a call suspended at all; the only
clock readings left are lower bounds (a timeout is not taken early), and time limits per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import hiredis
import pytest
import redis

from gateway.engine.resp import NoScriptError, RedisUnavailable, RespClient, RespReplyError
from tests.support.net import free_port, tcp_relay
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis

CLOSE = b"<close the connection>"


@pytest.fixture
def redis_url() -> str:
    return require_redis()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix; its keys are deleted from databases 0 and 1 afterwards."""
    prefix = f"{key_prefix('resp')}:"
    yield prefix
    for db in (0, 1):
        client = redis.Redis.from_url(_with_db(redis_url, db))
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


async def until(predicate: Callable[[], Any], *, timeout: float, what: str) -> None:
    """Waits (without blocking the loop) until ``predicate()`` is truthy, or fails the test."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


async def timed(awaitable: Awaitable[Any]) -> tuple[BaseException | None, float]:
    """(the exception it raised or None, seconds it took). Used for lower bounds only: a loaded
    machine makes anything slower, never faster."""
    started = time.monotonic()
    try:
        await awaitable
    except Exception as exc:  # noqa: BLE001 - the caller asserts on it
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def at_once(call: Coroutine[Any, Any, Any]) -> BaseException | None:
    """Runs ``call`` one step without letting it wait: the exception it raised, None if it returned.

    Fails the test if the coroutine suspended (on a socket, a timer, another task): "at once"
    counted in event-loop steps, which a busy machine cannot stretch, instead of milliseconds.
    """
    try:
        call.send(None)
    except StopIteration:
        return None
    except Exception as exc:  # noqa: BLE001 - the caller asserts on it
        return exc
    call.close()
    pytest.fail("the call suspended: it waited on something instead of failing at once")


def connection_attempts() -> list[tuple[str, int]]:
    """From now on, every TCP connection the running event loop opens is appended (host, port)
    to the returned list, whether or not it succeeds."""
    loop = asyncio.get_running_loop()
    attempts: list[tuple[str, int]] = []
    original = loop.create_connection

    async def create_connection(protocol_factory: Any, host: Any = None, port: Any = None, **kwargs: Any) -> Any:
        attempts.append((host, port))
        return await original(protocol_factory, host, port, **kwargs)

    loop.create_connection = create_connection  # type: ignore[method-assign]
    return attempts


class FakeRedis:
    """A RESP server in the test's event loop. ``answer(command)`` returns the raw reply, None to
    never answer, or CLOSE to hang up. It records every command and counts connections."""

    def __init__(self, answer: Callable[[list[bytes]], bytes | None]) -> None:
        self.answer = answer
        self.commands: list[list[bytes]] = []
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> FakeRedis:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def send_to_clients(self, data: bytes) -> None:
        for writer in self._writers:
            writer.write(data)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    self.commands.append(command)
                    reply = self.answer(command)
                    if reply is CLOSE:
                        writer.transport.abort()
                        return
                    if reply is not None:
                        writer.write(reply)
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


def answer_everything(command: list[bytes]) -> bytes | None:
    """+OK to the handshake, +PONG to PING, ECHO echoes, anything else hangs."""
    name = command[0].upper()
    if name in (b"AUTH", b"SELECT"):
        return b"+OK\r\n"
    if name == b"PING":
        return b"+PONG\r\n"
    if name == b"ECHO":
        return b"$%d\r\n%s\r\n" % (len(command[1]), command[1])
    return None


# --- Commands and replies against the real Redis ---------------------------------------------


def test_replies_come_back_as_bytes_ints_lists_and_none(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        client = RespClient.from_url(redis_url)
        key, listed = prefix + "k", prefix + "list"
        assert await client.execute("SET", key, "caf\u00e9") == b"OK"
        assert await client.execute(b"GET", key) == "caf\u00e9".encode()
        assert await client.execute("GET", prefix + "missing") is None
        assert await client.execute("SET", key, 41) == b"OK"
        assert await client.execute("INCR", key) == 42
        assert await client.execute("INCRBYFLOAT", key, 0.5) == b"42.5"
        assert await client.execute("RPUSH", listed, "a", b"b", 3) == 3
        assert await client.execute("LRANGE", listed, 0, -1) == [b"a", b"b", b"3"]
        assert await client.execute("LRANGE", prefix + "missing", 0, -1) == []
        assert await client.execute("DEL", key, listed) == 2
        assert await client.ping() is True
        assert await client.publish(prefix + "channel", "hello") == 0
        await client.aclose()

    asyncio.run(scenario())


def test_two_thousand_concurrent_incrs_share_one_connection(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        client = RespClient.from_url(redis_url)
        key = prefix + "counter"
        replies = await asyncio.gather(*(client.execute("INCR", key) for _ in range(2000)))
        # Every caller got its own reply: Redis answers in order and each reply went to its caller
        assert sorted(replies) == list(range(1, 2001))
        assert await client.execute("GET", key) == b"2000"
        ids = await asyncio.gather(*(client.execute("CLIENT", "ID") for _ in range(50)))
        assert len(set(ids)) == 1
        await client.aclose()

    asyncio.run(scenario())


def test_an_error_reply_fails_only_its_own_call(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        client = RespClient.from_url(redis_url)
        key = prefix + "text"
        await client.execute("SET", key, "not a number")
        replies = await asyncio.gather(
            client.execute("PING"), client.execute("INCR", key), client.execute("GET", key), return_exceptions=True
        )
        assert replies[0] == b"PONG"
        assert isinstance(replies[1], RespReplyError)
        assert not isinstance(replies[1], NoScriptError)
        assert "not an integer" in str(replies[1])
        assert replies[2] == b"not a number"
        # The connection is still good
        assert await client.execute("APPEND", key, "!") == 13
        with pytest.raises(NoScriptError, match=r"^NOSCRIPT"):
            await client.execute("EVALSHA", "0" * 40, 0)
        await client.aclose()

    asyncio.run(scenario())


def test_pipeline_returns_error_replies_in_the_list(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        client = RespClient.from_url(redis_url)
        key = prefix + "p"
        assert await client.pipeline([]) == []
        replies = await client.pipeline([("SET", key, "x"), ("INCR", key), ("GET", key), ["GET", prefix + "none"]])
        assert replies[0] == b"OK"
        assert isinstance(replies[1], RespReplyError)
        assert replies[2:] == [b"x", None]
        # An error nested in an array reply (a Lua table holding one) is an instance too
        nested = await client.execute("EVAL", "return {1, redis.error_reply('ERR inner')}", 0)
        assert nested[0] == 1
        assert isinstance(nested[1], RespReplyError)
        assert str(nested[1]) == "ERR inner"
        await client.aclose()

    asyncio.run(scenario())


def test_evalsha_loads_a_script_redis_does_not_have(redis_url: str, prefix: str) -> None:
    import hashlib

    async def scenario() -> None:
        client = RespClient.from_url(redis_url)
        # A comment no other run shares: Redis cannot have this script cached yet
        script = f"-- {uuid.uuid4().hex}\nreturn {{KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}}"
        sha = hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()
        assert await client.execute("SCRIPT", "EXISTS", sha) == [0]
        key = prefix + "s"
        assert await client.evalsha(sha, script, [key], ["a", 41]) == [key.encode(), b"a", 42]
        assert await client.execute("SCRIPT", "EXISTS", sha) == [1]
        assert await client.evalsha(sha, script, (key,), (b"b", 1)) == [key.encode(), b"b", 2]
        # A script error is a reply error, not a reload loop
        failing = f"-- {uuid.uuid4().hex}\nreturn redis.call('INCR', KEYS[1])"
        failing_sha = hashlib.sha1(failing.encode(), usedforsecurity=False).hexdigest()
        await client.execute("SET", key, "text")
        with pytest.raises(RespReplyError, match="not an integer"):
            await client.evalsha(failing_sha, failing, [key], [])
        await client.aclose()

    asyncio.run(scenario())


def test_evalsha_sends_script_load_once_and_checks_the_sha() -> None:
    loaded: list[bytes] = []

    def answer(command: list[bytes]) -> bytes | None:
        if command[0] == b"EVALSHA":
            return b":7\r\n" if command[1] in loaded else b"-NOSCRIPT No matching script.\r\n"
        if command[:2] == [b"SCRIPT", b"LOAD"]:
            # Always reports the SHA of "return 7", whatever was sent
            loaded.append(b"a" * 40)
            return b"$40\r\n%s\r\n" % (b"a" * 40)
        return None

    async def scenario() -> None:
        server = await FakeRedis(answer).start()
        client = RespClient.from_url(server.url)
        assert await client.evalsha("a" * 40, "return 7", ["k"], [1]) == 7
        assert server.commands == [
            [b"EVALSHA", b"a" * 40, b"1", b"k", b"1"],
            [b"SCRIPT", b"LOAD", b"return 7"],  # never EVAL with the script inline
            [b"EVALSHA", b"a" * 40, b"1", b"k", b"1"],
        ]
        # A SCRIPT LOAD that reports another SHA is an error, not a NOSCRIPT loop
        server.commands.clear()
        with pytest.raises(RespReplyError, match=r"SCRIPT LOAD returned a+, expected c+"):
            await client.evalsha("c" * 40, "return 8", [], [])
        assert [command[0] for command in server.commands] == [b"EVALSHA", b"SCRIPT"]
        await client.aclose()
        await server.close()

    asyncio.run(scenario())


def test_the_database_in_the_url_is_selected(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        db0 = RespClient.from_url(_with_db(redis_url, 0))
        db1 = RespClient.from_url(_with_db(redis_url, 1))
        key = prefix + "where"
        await db1.execute("SET", key, "one")
        assert await db0.execute("GET", key) is None
        assert await db1.execute("GET", key) == b"one"
        await db0.aclose()
        await db1.aclose()

    asyncio.run(scenario())


def test_auth_and_select_go_first_when_the_url_asks() -> None:
    async def scenario() -> None:
        server = await FakeRedis(answer_everything).start()
        client = RespClient.from_url(f"redis://sentinel:s%40cret@127.0.0.1:{server.port}/3")
        assert await client.execute("PING") == b"PONG"
        assert server.commands == [[b"AUTH", b"sentinel", b"s@cret"], [b"SELECT", b"3"], [b"PING"]]
        assert "s@cret" not in repr(client)
        await client.aclose()

        server.commands.clear()
        client = RespClient.from_url(f"redis://:pw@127.0.0.1:{server.port}")
        assert await client.execute("PING") == b"PONG"
        assert server.commands == [[b"AUTH", b"pw"], [b"PING"]]
        await client.aclose()
        await server.close()

    asyncio.run(scenario())


def test_a_refused_auth_fails_the_connection_and_marks_it_down() -> None:
    def answer(command: list[bytes]) -> bytes | None:
        return b"-WRONGPASS invalid username-password pair\r\n" if command[0] == b"AUTH" else b"+PONG\r\n"

    async def scenario() -> None:
        server = await FakeRedis(answer).start()
        client = RespClient.from_url(f"redis://:wrong@127.0.0.1:{server.port}", down_for_s=5)
        with pytest.raises(RedisUnavailable, match="WRONGPASS"):
            await client.execute("PING")
        # No user command reached the server, and the client does not reconnect while down
        with pytest.raises(RedisUnavailable, match="marked down"):
            await client.execute("PING")
        assert server.commands == [[b"AUTH", b"wrong"]]
        assert server.connections == 1
        await client.aclose()
        await server.close()

    asyncio.run(scenario())


# --- Failing fast --------------------------------------------------------------------------------


@pytest.mark.timeout(15)
def test_a_refused_connection_fails_fast_and_then_without_connecting() -> None:
    async def scenario() -> None:
        attempts = connection_attempts()
        port = free_port()  # nothing listens here
        client = RespClient(host="127.0.0.1", port=port, down_for_s=1)
        error, _ = await timed(client.execute("PING"))
        assert isinstance(error, RedisUnavailable)
        assert isinstance(error, OSError)
        # Fast: the refusal itself, one attempt, not the connect timeout
        assert "ConnectionRefusedError" in str(error) and "timed out" not in str(error), error
        assert attempts == [("127.0.0.1", port)]
        # A server appears on that port, but the client is down: no connection is attempted
        server = await FakeRedis(answer_everything).start(port)
        for _ in range(20):
            error = at_once(client.execute("PING"))  # no socket work, no waiting
            assert isinstance(error, RedisUnavailable)
            assert "marked down" in str(error)
        assert server.connections == 0
        assert len(attempts) == 1
        # After down_for_s the next call connects
        replies: list[Any] = []

        async def try_ping() -> None:
            with contextlib.suppress(RedisUnavailable):
                replies.append(await client.execute("PING"))

        deadline = time.monotonic() + 5
        while not replies and time.monotonic() < deadline:
            await try_ping()
            await asyncio.sleep(0.01)
        assert replies == [b"PONG"]
        assert server.connections == 1
        assert len(attempts) == 2
        await client.aclose()
        await server.close()

    asyncio.run(scenario())


@pytest.mark.timeout(15)
def test_a_hung_server_costs_timeout_s_once_then_calls_fail_at_once() -> None:
    async def scenario() -> None:
        attempts = connection_attempts()
        server = await FakeRedis(lambda command: None).start()
        client = RespClient.from_url(server.url, timeout_s=0.2, down_for_s=5)
        started = time.monotonic()
        results = await asyncio.gather(*(client.execute("GET", f"k{i}") for i in range(10)), return_exceptions=True)
        took = time.monotonic() - started
        assert all(isinstance(result, RedisUnavailable) for result in results), results
        assert "timed out" in str(results[0])
        # One timeout taken for the ten: the same watchdog verdict, on the one connection they shared
        assert {str(result) for result in results} == {
            f"Redis at 127.0.0.1:{server.port}: no reply within 0.2 s (timed out)"
        }
        assert [command[0] for command in server.commands] == [b"GET"] * 10
        assert took >= 0.18  # not before timeout_s (uvloop timers have 1 ms resolution)
        for _ in range(20):
            error = at_once(client.execute("GET", "k"))  # no socket work, no waiting
            assert isinstance(error, RedisUnavailable)
            assert "marked down" in str(error)
        assert server.connections == 1
        assert len(attempts) == 1
        assert len(server.commands) == 10
        await client.aclose()

        # With a database to select, the unanswered SELECT is bounded by connect_timeout_s
        client = RespClient.from_url(server.url[:-1] + "1", timeout_s=5, connect_timeout_s=0.2, down_for_s=5)
        error, took = await timed(client.execute("GET", "k"))
        assert isinstance(error, RedisUnavailable)
        assert "timed out" in str(error)
        # connect_timeout_s's verdict (0.2 s), not timeout_s's (5 s)
        assert str(error).endswith("connect timed out"), error
        assert took >= 0.18  # not before connect_timeout_s (uvloop timers have 1 ms resolution)
        assert server.commands[-1] == [b"SELECT", b"1"]  # GET never went out
        error = at_once(client.execute("GET", "k"))  # no socket work, no waiting
        assert isinstance(error, RedisUnavailable)
        assert server.connections == 2
        assert len(attempts) == 2
        await client.aclose()
        await server.close()

    asyncio.run(scenario())


@pytest.mark.timeout(30)
def test_a_busy_healthy_connection_never_times_out(redis_url: str) -> None:
    async def scenario() -> None:
        # The watchdog re-arms for the oldest pending command; a steady flow of calls for several
        # timeout periods must not trip it.
        client = RespClient.from_url(redis_url, timeout_s=0.1)
        connection = await client.execute("CLIENT", "ID")
        deadline = time.monotonic() + 0.5

        async def worker() -> int:
            # Busy for five timeout periods and at least 20 calls each, however slow the machine:
            # the count is load generated, not a speed measured.
            calls = 0
            while calls < 20 or time.monotonic() < deadline:
                assert await client.execute("PING") == b"PONG"
                calls += 1
            return calls

        assert sum(await asyncio.gather(*(worker() for _ in range(8)))) > 100
        # Never timed out: a timeout drops the connection, and this is still the first one
        assert await client.execute("CLIENT", "ID") == connection
        await client.aclose()

    asyncio.run(scenario())


def test_the_client_recovers_when_redis_comes_back(redis_url: str) -> None:
    async def scenario(port: int, relay: Any) -> None:
        client = RespClient.from_url(f"redis://127.0.0.1:{port}/0", timeout_s=0.3, down_for_s=0.3)
        assert await client.execute("PING") == b"PONG"
        relay.cut()  # Redis "goes away": the connection drops and nothing listens
        error, _ = await timed(client.execute("PING"))
        assert isinstance(error, RedisUnavailable)
        error, _ = await timed(client.execute("PING"))
        assert isinstance(error, RedisUnavailable)
        relay.start()
        replies: list[Any] = []
        deadline = time.monotonic() + 3
        while not replies and time.monotonic() < deadline:
            with contextlib.suppress(RedisUnavailable):
                replies.append(await client.execute("PING"))
            await asyncio.sleep(0.01)
        assert replies == [b"PONG"]
        await client.aclose()

    parsed = urlsplit(redis_url)
    with tcp_relay(parsed.port or 6379) as relay:
        asyncio.run(scenario(relay.port, relay))


@pytest.mark.timeout(15)
def test_a_connection_closed_mid_flight_fails_its_calls_and_the_next_call_reconnects() -> None:
    def answer(command: list[bytes]) -> bytes | None:
        return CLOSE if command[0] == b"QUIT-NOW" else answer_everything(command)

    async def scenario() -> None:
        server = await FakeRedis(answer).start()
        client = RespClient.from_url(server.url, timeout_s=5, down_for_s=5)
        assert await client.execute("PING") == b"PONG"
        hanging = [asyncio.ensure_future(client.execute("BLPOP", "k", 0)) for _ in range(3)]
        await until(lambda: len(server.commands) == 4, timeout=2, what="the server to receive the calls")
        results = await asyncio.gather(*hanging, client.execute("QUIT-NOW"), return_exceptions=True)
        assert all(isinstance(result, RedisUnavailable) for result in results), results
        assert "connection lost" in str(results[0])
        # Each failed because the connection went, not by the 5 s timeout (whose message says so)
        assert all("connection lost" in str(result) and "timed out" not in str(result) for result in results)
        # That connection had answered before, so this is no reason to stay down
        assert await client.execute("PING") == b"PONG"
        assert server.connections == 2
        await client.aclose()
        await server.close()

    asyncio.run(scenario())


def test_a_server_that_hangs_up_at_once_marks_the_client_down() -> None:
    async def scenario() -> None:
        server = await FakeRedis(lambda command: CLOSE).start()
        client = RespClient.from_url(server.url, down_for_s=5)
        with pytest.raises(RedisUnavailable, match="connection lost"):
            await client.execute("PING")
        with pytest.raises(RedisUnavailable, match="marked down"):
            await client.execute("PING")
        assert server.connections == 1
        await client.aclose()
        await server.close()

    asyncio.run(scenario())


def test_a_cancelled_caller_does_not_shift_the_replies() -> None:
    held: list[list[bytes]] = []

    def answer(command: list[bytes]) -> bytes | None:
        held.append(command)
        return None

    async def scenario() -> None:
        server = await FakeRedis(answer).start()
        client = RespClient.from_url(server.url, timeout_s=5)
        first = asyncio.ensure_future(client.execute("ECHO", "one"))
        second = asyncio.ensure_future(client.execute("ECHO", "two"))
        await until(lambda: len(held) == 2, timeout=2, what="both commands to arrive")
        first.cancel()
        server.send_to_clients(b"$3\r\none\r\n$3\r\ntwo\r\n")
        assert await second == b"two"
        assert first.cancelled()
        await client.aclose()
        await server.close()

    asyncio.run(scenario())


def test_aclose_fails_pending_calls_and_is_idempotent(redis_url: str) -> None:
    async def scenario() -> None:
        server = await FakeRedis(lambda command: None).start()
        client = RespClient.from_url(server.url, timeout_s=5)
        pending = asyncio.ensure_future(client.execute("GET", "k"))
        await until(lambda: server.commands, timeout=2, what="the command to arrive")
        await client.aclose()
        with pytest.raises(RedisUnavailable, match="client closed"):
            await pending
        await client.aclose()
        await server.close()

        # A closed client connects again when used again
        client = RespClient.from_url(redis_url)
        await client.aclose()  # never connected: nothing to do
        assert await client.execute("PING") == b"PONG"
        await client.aclose()
        await client.aclose()
        assert await client.execute("PING") == b"PONG"
        await client.aclose()

    asyncio.run(scenario())


def test_a_client_moves_to_a_new_event_loop(redis_url: str) -> None:
    client = RespClient.from_url(redis_url)  # built outside any loop
    first = asyncio.run(client.execute("CLIENT", "ID"))
    second = asyncio.run(client.execute("CLIENT", "ID"))
    assert isinstance(first, int)
    assert isinstance(second, int)
    assert first != second  # a new connection on the new loop
    # The first loop's connection was dropped untouched (its transport belongs to a closed loop):
    # the garbage collector closes its socket, with a ResourceWarning that says so.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()

    asyncio.run(client.aclose())


# --- Arguments and URLs ----------------------------------------------------------------------


def test_urls_are_parsed_and_unsupported_ones_refused() -> None:
    assert repr(RespClient.from_url("redis://h.example:6380/2")) == "<RespClient h.example:6380 db=2>"
    assert repr(RespClient.from_url("redis://localhost")) == "<RespClient localhost:6379 db=0>"
    assert repr(RespClient.from_url("unix:///tmp/r.sock?db=4")) == "<RespClient unix:/tmp/r.sock db=4>"
    with pytest.raises(ValueError, match="TLS"):
        RespClient.from_url("rediss://h.example:6380/0")
    with pytest.raises(ValueError, match="scheme"):
        RespClient.from_url("http://h.example/0")
    with pytest.raises(ValueError, match="database"):
        RespClient.from_url("redis://h.example/zero")


def test_arguments_that_redis_cannot_take_are_refused_before_sending() -> None:
    import enum

    class Number(enum.IntEnum):
        SEVEN = 7

    async def scenario() -> None:
        server = await FakeRedis(answer_everything).start()
        client = RespClient.from_url(server.url)
        with pytest.raises(TypeError, match="bool"):
            await client.execute("SET", "k", True)
        with pytest.raises(TypeError, match="NoneType"):
            await client.execute("SET", "k", None)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="at least one"):
            await client.execute()
        assert server.connections == 0
        assert await client.execute("ECHO", Number.SEVEN) == b"7"
        assert await client.execute("ECHO", memoryview(b"mv")) == b"mv"
        await client.aclose()
        await server.close()

    asyncio.run(scenario())
