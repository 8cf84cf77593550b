"""What Sentinel's front door costs a request that passes it (issue 8 items 2, 3, 6).

Run: ``.venv/bin/python bench/frontdoor.py`` (a few seconds, one core, no services needed).

Measures, in this process, with uvloop:

1. the HTTP protocol: uvicorn's ``HttpToolsProtocol`` against Sentinel's ``SentinelHttpProtocol``
   (limits, `check_head`, JSON refusals), each fed the same keep-alive GET (a browser-like head
   of 9 headers) on one connection and answering from a trivial ASGI app; CPU µs per request,
   best of several interleaved rounds (the machine is shared: the least disturbed figure);
2. `parse_path` on an ordinary path and on one with escapes, and `check_head` alone, µs per call.

The gateway's whole cost per proxied request is ~331 µs of CPU (docs/benchmarks.md); the lead's
`python -m bench.gateway` run gives the end-to-end figure.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvloop
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.engine.requestcheck import check_head
from gateway.engine.routes import parse_path
from gateway.http_server import SentinelHttpProtocol

REQUEST = (
    b"GET /proxy/orders/42?expand=items HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench/1.0\r\n"
    b"Accept: application/json\r\nAccept-Encoding: gzip, deflate\r\nAuthorization: Bearer " + b"x" * 180 + b"\r\n"
    b"X-Correlation-Id: 0123456789abcdef0123456789abcdef\r\n"
    b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
    b"Cookie: a=b; c=d\r\nConnection: keep-alive\r\n\r\n"
)
REQUESTS_PER_ROUND = 20_000
ROUNDS = 7


async def trivial_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class _Transport(asyncio.Transport):
    """Collects what the protocol writes; counts complete responses."""

    def __init__(self) -> None:
        super().__init__()
        self.responses = 0
        self.done = asyncio.Event()
        self.expected = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if bytes(data).endswith(b"ok"):
            self.responses += 1
            if self.responses == self.expected:
                self.done.set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def protocol_round(protocol_class: type[HttpToolsProtocol]) -> float:
    """CPU µs per request through `protocol_class`, from the request bytes to the response written."""
    config = Config(app=trivial_app, lifespan="off", log_config=None, access_log=False, server_header=False)
    config.load()
    state = ServerState()
    protocol = protocol_class(config=config, server_state=state, app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    transport.expected = REQUESTS_PER_ROUND
    started = time.process_time()  # CPU time: other processes on a shared machine do not count
    for _ in range(REQUESTS_PER_ROUND):
        protocol.data_received(REQUEST)
        await asyncio.sleep(0)  # the application's task answers
        await asyncio.sleep(0)
    await asyncio.wait_for(transport.done.wait(), 60)
    elapsed = time.process_time() - started
    protocol.connection_lost(None)
    return elapsed / REQUESTS_PER_ROUND * 1e6


def main() -> None:
    uvloop.install()
    print(f"python {sys.version.split()[0]}, pid {os.getpid()}, {REQUESTS_PER_ROUND} requests x {ROUNDS} rounds")
    results: dict[str, list[float]] = {"uvicorn HttpToolsProtocol": [], "SentinelHttpProtocol": []}
    for _ in range(ROUNDS):  # interleaved, so a noisy neighbour hits both alike
        results["uvicorn HttpToolsProtocol"].append(asyncio.run(protocol_round(HttpToolsProtocol)))
        results["SentinelHttpProtocol"].append(asyncio.run(protocol_round(SentinelHttpProtocol)))
    for name, figures in results.items():
        print(f"{name:28} {min(figures):7.2f} µs/request (best of {ROUNDS}; median {sorted(figures)[ROUNDS // 2]:.2f})")
    extra = min(results["SentinelHttpProtocol"]) - min(results["uvicorn HttpToolsProtocol"])
    print(f"{'difference':28} {extra:+7.2f} µs/request")

    headers = [
        (name.lower(), value) for name, _, value in (line.partition(b": ") for line in REQUEST.split(b"\r\n")[1:-2])
    ]
    calls = 200_000
    for label, statement in [
        ("parse_path('/proxy/orders/42')", lambda: parse_path("/proxy/orders/42")),
        ("parse_path(escaped, //)", lambda: parse_path("/proxy//caf%C3%A9/a%3Db/.well-known")),
        ("check_head(9 headers)", lambda: check_head(http_version="1.1", target=b"/proxy/orders/42", headers=headers)),
    ]:
        best = min(timeit.repeat(statement, number=calls, repeat=5)) / calls * 1e6
        print(f"{label:40} {best:6.2f} µs/call")


if __name__ == "__main__":
    main()
