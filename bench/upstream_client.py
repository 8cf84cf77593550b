"""CPU per forwarded request: the lean upstream client (gateway.engine.upstream) against aiohttp, in one run.

    python -m bench.upstream_client [--requests 20000] [--concurrency 16] [--rounds 3]

One process drives ``Forwarder.forward`` directly (uvloop, a minimal ASGI scope, receive and send:
no HTTP server, no Django) against the mock upstream (``python -m gateway.mock_upstream``, its own
process, so its CPU is not counted). Each round runs every case once with each client, the clients
taking turns, and reads this process's CPU time (``time.process_time``) around the case: what the
forwarder, its client and the event loop cost per request. The machine's speed drifts, so compare
the two clients within a round; the spread across rounds says how far to trust a figure.

Cases: ``GET /echo`` (a small JSON answer, the gateway bench's request), ``POST /echo`` with a
1 KiB body, ``GET /bytes/65536`` (a 64 KiB download).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

import uvloop

from bench.common.processes import answers, start_service, stop_service, wait_serving
from gateway.engine.forwarder import Forwarder
from tests.support.net import free_port

# What a typical API client sends (curl-like, with a bearer token the proxy would hide).
_HEADERS = [
    (b"host", b"gw.example"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"application/json"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"x-request-id", b"0af7651916cd43dd8448eb211c80319c"),
    (b"authorization", b"Bearer abc.def.ghi"),
]
# What the proxy adds: the correlation id and the trace context.
_EXTRA = [(b"x-correlation-id", b"cid"), (b"traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01")]
_BODY = b"x" * 1024
CASES: dict[str, tuple[str, str, bytes]] = {
    "GET /echo": ("GET", "/echo", b""),
    "POST /echo 1 KiB": ("POST", "/echo", _BODY),
    "GET /bytes/65536": ("GET", "/bytes/65536", b""),
}


async def _drive(forwarder: Forwarder, target: str, case: tuple[str, str, bytes], n: int, concurrency: int) -> int:
    """n forwards, ``concurrency`` at a time; returns how many were not "ok"."""
    method, path, body = case
    headers = list(_HEADERS)
    if body:
        headers.append((b"content-length", b"%d" % len(body)))
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
    }
    never = asyncio.Event()
    failures = 0

    async def worker(count: int) -> None:
        nonlocal failures
        for _ in range(count):
            sent = False

            async def receive() -> dict[str, Any]:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await never.wait()  # the client never leaves
                return {"type": "http.disconnect"}

            async def send(message: MutableMapping[str, Any]) -> None:
                return None

            result = await forwarder.forward(
                scope=scope,
                receive=receive,
                send=send,
                target=target,
                upstream_path=path,
                timeout_ms=10_000,
                max_body_bytes=1 << 20,
                client_ip="127.0.0.1",
                extra_headers=_EXTRA,
                response_headers=[(b"x-correlation-id", b"cid")],
                hidden_headers=frozenset({b"authorization"}),
            )
            if result.outcome != "ok":
                failures += 1

    share, extra = divmod(n, concurrency)
    await asyncio.gather(*(worker(share + (1 if i < extra else 0)) for i in range(concurrency)))
    return failures


async def _measure(target: str, requests: int, concurrency: int, rounds: int) -> dict[tuple[str, str], list[float]]:
    lean, legacy = Forwarder(), Forwarder()
    legacy._targets[target] = None  # aiohttp for this http:// target, as before the lean client
    clients = {"lean": lean, "aiohttp": legacy}
    figures: dict[tuple[str, str], list[float]] = {}
    for forwarder in clients.values():  # warm up: connections, code paths
        for case in CASES.values():
            await _drive(forwarder, target, case, 500, concurrency)
    for _ in range(rounds):
        for name, case in CASES.items():
            for client, forwarder in clients.items():
                started = time.process_time()
                failures = await _drive(forwarder, target, case, requests, concurrency)
                cpu = time.process_time() - started
                if failures:
                    raise SystemExit(f"{client} {name}: {failures} requests failed")
                figures.setdefault((name, client), []).append(cpu / requests * 1e6)
    for forwarder in clients.values():
        await forwarder.close()
    return figures


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.upstream_client", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per case, client and round (20000)")
    parser.add_argument("--concurrency", type=int, default=16, help="forwards in flight at once (16)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the clients taking turns (3)")
    args = parser.parse_args(argv)
    port = free_port()
    with tempfile.TemporaryDirectory() as logs:
        mock = start_service(
            "mock", [sys.executable, "-m", "gateway.mock_upstream", "--port", str(port)], env={}, logdir=Path(logs)
        )
        try:
            wait_serving(lambda: answers(port, "/health"), what="the mock upstream", service=mock)
            figures = uvloop.run(_measure(f"http://127.0.0.1:{port}", args.requests, args.concurrency, args.rounds))
        finally:
            stop_service(mock)
    print(
        f"CPU µs per forwarded request in this process ({args.requests} requests x {args.rounds} rounds, "
        f"{args.concurrency} in flight)"
    )
    print("| case | aiohttp | lean | lean / aiohttp |")
    print("|---|---|---|---|")
    for name in CASES:
        old, new = figures[(name, "aiohttp")], figures[(name, "lean")]
        ratios = [n / o for n, o in zip(new, old, strict=True)]
        print(
            f"| {name} | {statistics.median(old):.0f} ({min(old):.0f}-{max(old):.0f}) "
            f"| {statistics.median(new):.0f} ({min(new):.0f}-{max(new):.0f}) "
            f"| {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
