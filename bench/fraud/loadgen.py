"""The transactions' load generator, run as a child process: ``python -m bench.fraud.loadgen``.

Open loop: request i leaves at start + i/`--rate` whatever the answers do, and its latency runs
from that scheduled start (no coordinated omission: a wait for a free connection counts). It POSTs
unique bodies (``fraud.chaos.TransactionMaker``, serialised before the clock starts) to
`/transaction` with the API key in `X-API-Key`; each answer is counted scored or fail-open by
reason (``fraud.chaos.classify``). A request unanswered 5 s after its scheduled start, or whose
connection closes or breaks first, is an error (and the connection is replaced). Prints one JSON
line: rps, p50_ms, p99_ms, requests, non2xx, errors, scored, fail_open {reason: n}, statuses
{detail: n} of the answers classify calls errors (`HTTP 503`, `unreadable answer`).

Lean, because on the bench's two cores the CPU it uses is taken from the processes it measures:
uvloop; keep-alive HTTP/1.1 connections on `asyncio.Protocol`, opened as needed up to
`--connections`, one request at a time each; each request's bytes built before the clock starts;
answers parsed by httptools, their JSON read only after the last one; the schedule kept by a
timerfd (`metronome`). Against the aiohttp generator it replaced (before 2026-12-01), each run
under `nice -n 19` against a trivial uvicorn app (httptools, uvloop) answering a fixed scored 201
of 393 bytes, ``python -m bench.fraud.loadgen --url http://127.0.0.1:<port>/transaction --api-key k
--rate <rate> --duration 10``, 6 runs of each, on this 2-core box while other tests and
benchmarks ran (load average 2.5 to 4):

| rate | generator | cores while it runs | CPU µs per request then | CPU s of the run | p50 ms |
|---:|---|---:|---:|---:|---:|
| 500/s | aiohttp | 0.19-0.27 | 390-540 | 2.4-3.3 | 0.95-2.2 |
| 500/s | this one | 0.056-0.071 | 110-140 | 1.1-1.4 | 0.27-0.37 |
| 1000/s | aiohttp | 0.23-0.44 | 230-440 | 2.8-4.9 | 0.8-26 |
| 1000/s | this one | 0.11-0.15 | 110-150 | 1.6-2.6 | 0.29-0.35 |

"While it runs": utime + stime from /proc/<pid>/stat, 2 s to 9 s after its start; "of the run":
wait4's, as bench.common.processes.run_timed reads it, which adds ~0.3 s of start-up either way
(mostly importing aiohttp, which fraud.chaos imports), the bodies (~25 µs each) and reading the
answers (~12 µs each). What is left while it runs is mostly waking up, ~2.7 times per request
(its time, the answer's head, and its body, which uvicorn writes apart): on this VM a wake-up
costs ~50 µs of CPU, even for an empty uvloop timer. p99 was the other processes' doing (4 to
88 ms for this one, 8 to 760 ms for the old): no floor to quote from that box.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any, Final, cast
from urllib.parse import urlsplit

import httptools
import uvloop

from fraud.chaos import TransactionMaker, classify, percentile

# A request unanswered this long after its scheduled start is given up and counted in errors.
TIMEOUT_S: Final = 5.0
# How often requests are checked against TIMEOUT_S: one is given up at most this late.
SWEEP_S: Final = 0.1
# timerfd_create(2)'s clock (perf_counter's, time.get_clock_info says) and timerfd_settime(2)'s
# flag for an absolute first expiration.
CLOCK_MONOTONIC: Final = 1
TFD_TIMER_ABSTIME: Final = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def metronome(start_ns: int, period_ns: int) -> int:
    """A non-blocking timerfd that expires at `start_ns` (perf_counter_ns's clock) and every
    `period_ns` after; a read of it gives the expirations since the last read (8 bytes).

    The requests' schedule, not uvloop's timers: those count whole milliseconds from a clock read
    at the start of a loop iteration, rounded down, so they fire up to a millisecond early (a
    wake-up for nothing) or late (added to every latency): p50 1.1-1.3 ms at 500/s against the
    module docstring's trivial server, 0.30-0.31 ms with this clock. Python 3.11's os has no
    timerfd_create (3.13 has): libc's, through ctypes.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    fd: int = libc.timerfd_create(CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "timerfd_create")
    spec = _Itimerspec(_Timespec(*divmod(period_ns, 10**9)), _Timespec(*divmod(start_ns, 10**9)))
    if libc.timerfd_settime(fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
        errno = ctypes.get_errno()
        os.close(fd)
        raise OSError(errno, "timerfd_settime")
    return fd


def request_head(url: str, api_key: str) -> tuple[str, int, bytes]:
    """(host, port, the request's bytes up to its Content-Length value) of a POST to `url`."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"--url must be an http:// URL, not {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = (
        f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nX-API-Key: {api_key}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    )
    return parts.hostname, parts.port or 80, head.encode("ascii")


class OpenLoop:
    """One run: `requests[i]` (its bytes) sent at `start + i / rate` on a free connection, or on a
    new one while there are fewer than `connections`, or else once one is free. Each answer's
    time (perf_counter s), status and body are kept for `figures`, read after the run."""

    def __init__(self, host: str, port: int, requests: list[bytes], rate: float, connections: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.host, self.port = host, port
        self.requests = requests
        self.rate = rate
        self.limit = connections
        self.answered_at = [0.0] * len(requests)  # 0.0: not answered (an error)
        self.statuses = [0] * len(requests)
        self.bodies = [b""] * len(requests)
        self.errors = 0
        self.outstanding = len(requests)
        self.start = 0.0  # perf_counter s
        self.period = 1 / rate  # s between two requests
        self.clock = -1  # the metronome's timerfd while requests are left to send
        self.next = 0  # the next request to send
        self.idle: list[Connection] = []  # a stack: the fewest connections stay warm
        self.busy: set[Connection] = set()
        self.waiting: deque[int] = deque()  # requests due, waiting for a connection
        self.connecting = 0
        self.tasks: set[asyncio.Task[None]] = set()  # the connections being opened (held, not collected)
        self.finished = self.loop.create_future()
        self.sweeper: asyncio.TimerHandle | None = None

    def scheduled(self, i: int) -> float:
        return self.start + i * self.period

    async def run(self) -> None:
        # The period in whole nanoseconds: request i leaves at start + i/rate to within i/2 ns.
        period_ns = max(1, round(1e9 / self.rate))
        start_ns = time.perf_counter_ns()
        self.start, self.period = start_ns / 1e9, period_ns / 1e9
        self.clock = metronome(start_ns, period_ns)
        self.loop.add_reader(self.clock, self.tick)
        self.sweeper = self.loop.call_later(SWEEP_S, self.sweep)
        try:
            await self.finished
        finally:
            self.sweeper.cancel()
            self.stop_clock()
            for connection in [*self.idle, *self.busy]:
                connection.transport.abort()

    def tick(self) -> None:
        """Sends the requests due since the last tick (more than one when the loop was late)."""
        try:
            due = int.from_bytes(os.read(self.clock, 8), sys.byteorder)
        except BlockingIOError:  # woken for nothing
            return
        for _ in range(min(due, len(self.requests) - self.next)):
            self.submit(self.next)
            self.next += 1
        if self.next == len(self.requests):
            self.stop_clock()

    def stop_clock(self) -> None:
        if self.clock >= 0:
            self.loop.remove_reader(self.clock)
            os.close(self.clock)
            self.clock = -1

    def submit(self, i: int) -> None:
        if self.idle:
            self.idle.pop().send(i)
        else:
            self.waiting.append(i)
            self.grow()

    def grow(self) -> None:
        """Opens a connection for each waiting request that none being opened will take, within
        the pool's size."""
        while len(self.waiting) > self.connecting and len(self.idle) + len(self.busy) + self.connecting < self.limit:
            self.connecting += 1
            task = self.loop.create_task(self.connect())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def connect(self) -> None:
        try:
            _, connection = await self.loop.create_connection(lambda: Connection(self), self.host, self.port)
        except OSError:
            self.connecting -= 1
            if self.waiting:  # the request it was opened for
                self.fail(self.waiting.popleft())
            return
        self.connecting -= 1
        self.free(connection)

    def free(self, connection: Connection) -> None:
        """`connection` takes the oldest waiting request, or idles."""
        self.busy.discard(connection)
        if self.waiting:
            connection.send(self.waiting.popleft())
        else:
            self.idle.append(connection)

    def lost(self, connection: Connection) -> None:
        """`connection` closed: out of the pool, and replaced if requests wait."""
        self.busy.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)
        self.grow()

    def answered(self, i: int, status: int, body: bytes) -> None:
        self.answered_at[i] = time.perf_counter()
        self.statuses[i] = status
        self.bodies[i] = body
        self.settle()

    def fail(self, i: int) -> None:
        self.errors += 1
        self.settle()

    def settle(self) -> None:
        self.outstanding -= 1
        if not self.outstanding:
            self.finished.set_result(None)

    def sweep(self) -> None:
        """Gives up the requests TIMEOUT_S past their start: waiting ones, and those in flight
        with their connection (which cannot be reused while an answer may still come)."""
        expired = time.perf_counter() - TIMEOUT_S
        while self.waiting and self.scheduled(self.waiting[0]) <= expired:
            self.fail(self.waiting.popleft())
        for connection in [c for c in self.busy if c.index >= 0 and self.scheduled(c.index) <= expired]:
            connection.transport.abort()  # its connection_lost fails the request
        self.sweeper = self.loop.call_later(SWEEP_S, self.sweep)


class UnaskedAnswer(Exception):
    """An answer began on a connection with no request in flight."""


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of an `OpenLoop`, one request at a time (no pipelining),
    answers parsed by httptools (which calls the `on_*` methods). When it closes or breaks, or
    answers what was not asked, the request it carries is an error."""

    transport: asyncio.Transport

    def __init__(self, pool: OpenLoop) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.index = -1  # the request in flight; -1 when none
        self.body: list[bytes] = []
        self.reuse: bool | None = None  # once an answer is whole: whether the server keeps the connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def send(self, i: int) -> None:
        self.index = i
        self.pool.busy.add(self)
        self.transport.write(self.pool.requests[i])

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            # Not HTTP, or an answer nobody asked for (UnaskedAnswer): nothing on it can be trusted.
            self.transport.abort()  # its connection_lost fails the request in flight, if any
            return
        # The next request only once this data is parsed: what follows an answer in it is not its.
        if self.reuse is not None:
            if self.reuse:
                self.pool.free(self)
            else:
                self.pool.busy.discard(self)
                self.transport.close()
            self.reuse = None

    def on_message_begin(self) -> None:
        if self.index < 0:
            raise UnaskedAnswer  # httptools raises it as an HttpParserCallbackError

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        i, self.index = self.index, -1
        body = b"".join(self.body)
        self.body.clear()
        self.reuse = self.parser.should_keep_alive()
        self.pool.answered(i, self.parser.get_status_code(), body)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.index >= 0:
            i, self.index = self.index, -1
            self.pool.fail(i)
        self.pool.lost(self)


def figures(pool: OpenLoop) -> dict[str, Any]:
    """The JSON line of a finished run; 2xx bodies are read as JSON here, after the clock."""
    latencies: list[float] = []
    kinds: Counter[str] = Counter()
    fail_open: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for i, answered_at in enumerate(pool.answered_at):
        if not answered_at:
            continue
        latencies.append(answered_at - pool.scheduled(i))
        status = pool.statuses[i]
        kind, detail = classify(status, _json(pool.bodies[i]) if 200 <= status < 300 else None)
        kinds[kind] += 1
        if kind == "fail_open":
            fail_open[detail] += 1
        elif kind == "error":
            statuses[detail] += 1
    wall = max(max(pool.answered_at) - pool.start, 1e-9)
    return {
        "rps": len(latencies) / wall,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "requests": len(pool.requests),
        "non2xx": sum(statuses.values()),
        "errors": pool.errors,
        "scored": kinds["scored"],
        "fail_open": dict(fail_open),
        "statuses": dict(statuses),
    }


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # classify calls it an unreadable answer
        return None


async def generate(url: str, api_key: str, rate: float, duration: float, connections: int) -> dict[str, Any]:
    host, port, head = request_head(url, api_key)
    make = TransactionMaker(uuid.uuid4().hex[:8])
    bodies = [json.dumps(make()).encode() for _ in range(max(1, round(rate * duration)))]
    requests = [b"%s%d\r\n\r\n%s" % (head, len(body), body) for body in bodies]
    pool = OpenLoop(host, port, requests, rate, connections)
    # The generator's own collector pauses (a 64 ms full collection was seen mid-run) would count
    # as Sentinel's latency, which runs from each request's scheduled start: none during the run.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        await pool.run()
    finally:
        gc.enable()
    return figures(pool)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fraud.loadgen")
    parser.add_argument("--url", required=True, help="http://…/transaction")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--connections", type=int, default=256, help="pool size (256)")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.connections < 1:
        parser.error("--rate and --duration must be > 0, --connections >= 1")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(generate(args.url, args.api_key, args.rate, args.duration, args.connections))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
