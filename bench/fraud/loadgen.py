"""The transactions' load generator, run as a child process: ``python -m bench.fraud.loadgen``.

Open loop like ``bench.gateway.loadgen`` (requests start on a fixed schedule of `--rate`/s whatever
the answers do, so no coordinated omission; latency runs from each request's scheduled start), but
POSTs to `/transaction`: unique bodies (``fraud.chaos.TransactionMaker``, serialised before the
clock starts), the API key in `X-API-Key`, each answer read and counted scored or fail-open by
reason (``fraud.chaos.classify``). Prints one JSON line: rps, p50_ms, p99_ms, requests, non2xx,
errors, scored, fail_open {reason: n}, statuses {status: n} of the non-2xx.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import aiohttp
import uvloop

from fraud.chaos import TransactionMaker, classify, percentile


async def generate(url: str, api_key: str, rate: float, duration: float, connections: int) -> dict[str, Any]:
    make = TransactionMaker(uuid.uuid4().hex[:8])
    bodies = [json.dumps(make()).encode() for _ in range(max(1, round(rate * duration)))]
    latencies: list[float] = []
    kinds: Counter[str] = Counter()
    fail_open: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=30)
    timeout = aiohttp.ClientTimeout(total=5.0)
    last = 0.0

    async def one(body: bytes, scheduled: float) -> None:
        nonlocal last
        try:
            async with session.post(url, data=body) as response:
                status = response.status
                payload = await response.json(content_type=None) if status < 500 else None
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            kinds["error"] += 1
            return
        last = time.perf_counter()
        latencies.append(last - scheduled)
        kind, detail = classify(status, payload)
        kinds[kind] += 1
        if kind == "fail_open":
            fail_open[detail] += 1
        elif kind == "error":
            statuses[detail] += 1

    # The generator's own collector pauses (a 64 ms full collection was seen mid-run) would count
    # as Sentinel's latency, which runs from each request's scheduled start: none during the run.
    gc.collect()
    gc.freeze()
    gc.disable()
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
        pending: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        for i, body in enumerate(bodies):
            scheduled = start + i / rate
            if (delay := scheduled - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(body, scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending)
    gc.enable()
    wall = max(last - start, 1e-9)
    return {
        "rps": len(latencies) / wall,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "requests": len(bodies),
        "non2xx": sum(statuses.values()),
        "errors": kinds["error"] - sum(statuses.values()),
        "scored": kinds["scored"],
        "fail_open": dict(fail_open),
        "statuses": dict(statuses),
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fraud.loadgen")
    parser.add_argument("--url", required=True, help="…/transaction")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--connections", type=int, default=256, help="pool size (256)")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(generate(args.url, args.api_key, args.rate, args.duration, args.connections))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
