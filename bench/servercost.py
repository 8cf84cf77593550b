"""CPU per request of the web process's HTTP server alone, at saturation (issue 13, lever 1).

Run: ``.venv/bin/python -m bench.servercost [--servers uvicorn,sentinel,...] [--rounds 3]``
(about 8 s per server and round; needs wrk; no database or Redis).

Each server serves `bench.servercost:app` (a 200 with a 20-byte body, content-length set) on
127.0.0.1 in one process; wrk loads it (``wrk -t1 -c32 -d5s``, after a 2 s warm-up), and the
server's CPU (user + system seconds of its process tree, from psutil, workers included) divided
by wrk's request count is its CPU per request. Rounds are interleaved (server A, B, ... then A,
B, ... again) so a drift of the shared machine shows as a spread, not as a difference.

Servers (``--servers``, comma-separated):

* ``uvicorn``: uvicorn's own ``HttpToolsProtocol``, uvloop, the flags of ``manage.py serve``;
* ``sentinel``: the same with ``gateway.http_server:SentinelHttpProtocol`` (what serve runs);
* ``baseline``: ``sentinel`` from the checkout ``--baseline DIR`` (say ``git archive C | tar -x
  -C DIR``: the protocol class of commit C), the app and the bench from this one;
* ``granian``, ``granian-rust-tasks``, ``granian-asyncio``: granian's ASGI interface, 1 worker,
  with uvloop (asyncio tasks / granian's Rust tasks) or the stdlib loop; granian must be
  importable: pass ``--granian-path DIR`` (a ``pip install --target DIR granian==2.8.9``), it is
  not one of Sentinel's requirements.

``--app sentinel`` serves ``sentinel_site.asgi:application`` instead, with the environment the
caller gives (production mode needs DATABASE_URL, REDIS_URL, SECRET_KEY ...), and ``--url`` and
``--header`` name what wrk asks for: the proxy path with the bench's JWT, say.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
BODY = b"0123456789abcdefghij"  # 20 bytes


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A 200 with a 20-byte text body; answers lifespan events so every server can start it."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"20")],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


_UVICORN = (
    "import uvicorn; uvicorn.run({target!r}, host='127.0.0.1', port={port}, loop='uvloop', http={http!r}, "
    "ws='websockets-sansio', log_config=None, access_log=False, lifespan='on', server_header=False, "
    "date_header=False, proxy_headers=False)"
)


_BASELINE = (
    "import sys, runpy; sys.path[:0] = [{baseline!r}]; "
    "app = runpy.run_path({here!r})['app'] if {trivial!r} else {target!r}; "
)


def server_command(kind: str, target: str, port: int, baseline: str = "") -> list[str]:
    """The command line that serves `target` (``module:attribute``) on `port` with server `kind`."""
    py = sys.executable
    if kind in ("uvicorn", "sentinel"):
        http = "httptools" if kind == "uvicorn" else "gateway.http_server:SentinelHttpProtocol"
        return [py, "-c", _UVICORN.format(target=target, port=port, http=http)]
    if kind == "baseline":
        # The baseline's packages first on the path; the trivial app from this file, run by path
        # so that the baseline's own bench package (without this module) is not in the way.
        trivial = target == "bench.servercost:app"
        prologue = _BASELINE.format(baseline=baseline, here=__file__, trivial=trivial, target=target)
        run = _UVICORN.replace("{target!r}", "app").format(port=port, http="gateway.http_server:SentinelHttpProtocol")
        return [py, "-c", prologue + run]
    granian = [py, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port)]
    granian += ["--workers", "1", "--http", "1", "--log-level", "warning", "--no-access-log"]
    options = {
        "granian": ["--loop", "uvloop"],
        "granian-rust-tasks": ["--loop", "uvloop", "--task-impl", "rust"],
        "granian-asyncio": ["--loop", "asyncio"],
    }
    if kind not in options:
        raise SystemExit(f"unknown server {kind!r}")
    return granian + options[kind] + [target]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listened on {port} within {deadline_s} s")


def tree_cpu(root: psutil.Process) -> float:
    """User + system seconds of `root` and its live descendants."""
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def wrk(url: str, seconds: int, connections: int, headers: list[str]) -> tuple[int, int, str]:
    """(requests, non-2xx-3xx responses, wrk's output) of one wrk run."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    match = re.search(r"(\d+) requests in", out)
    if match is None:
        raise SystemExit(f"wrk said:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return int(match.group(1)), int(bad.group(1)) if bad else 0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--servers", default="uvicorn,sentinel")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--granian-path", default=os.environ.get("GRANIAN_PATH", ""))
    parser.add_argument("--baseline", default="", help="a checkout whose gateway/http_server.py `baseline` runs")
    parser.add_argument("--app", choices=["trivial", "sentinel"], default="trivial")
    parser.add_argument("--path", default="/", help="what wrk asks for")
    parser.add_argument("--header", action="append", default=[], help="a header wrk sends (repeatable)")
    parser.add_argument(
        "--external",
        action="append",
        default=[],
        metavar="NAME=PID:PORT",
        help="also load a server already running (the mock upstream, as the yardstick), at /",
    )
    args = parser.parse_args()
    target = "bench.servercost:app" if args.app == "trivial" else "sentinel_site.asgi:application"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), args.granian_path, env.get("PYTHONPATH", "")) if p)
    servers = [s for s in args.servers.split(",") if s]
    external: dict[str, tuple[int, int]] = {}
    for spec in args.external:
        name, _, where = spec.partition("=")
        pid, _, port = where.partition(":")
        external[name] = (int(pid), int(port))
    servers += list(external)
    figures: dict[str, list[float]] = {s: [] for s in servers}
    rps: dict[str, list[float]] = {s: [] for s in servers}
    running: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        for kind in servers:
            if kind in external:
                continue
            port = free_port()
            command = server_command(kind, target, port, args.baseline)
            proc = subprocess.Popen(command, cwd=args.baseline if kind == "baseline" else ROOT, env=env)
            wait_port(port, proc)
            running[kind] = (proc, port)
        for round_ in range(1, args.rounds + 1):
            for kind in servers:
                if kind in external:
                    pid, port = external[kind]
                    url = f"http://127.0.0.1:{port}/"
                else:
                    proc, port = running[kind]
                    pid, url = proc.pid, f"http://127.0.0.1:{port}{args.path}"
                wrk(url, 2, args.connections, args.header)  # warm-up
                root = psutil.Process(pid)
                before, t0 = tree_cpu(root), time.monotonic()
                requests, bad, _ = wrk(url, args.seconds, args.connections, args.header)
                cpu, wall = tree_cpu(root) - before, time.monotonic() - t0
                us = cpu / requests * 1e6
                figures[kind].append(us)
                rps[kind].append(requests / wall)
                print(
                    f"round {round_} {kind:20} {requests / wall:9,.0f} req/s  {cpu / wall:4.2f} cores  "
                    f"{us:6.1f} µs/req  non-2xx {bad}",
                    flush=True,
                )
    finally:
        for proc, _ in running.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in running.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    print("\nserver               median µs/req  (min-max)        median req/s")
    for kind in servers:
        runs = figures[kind]
        low, high, rate = min(runs), max(runs), statistics.median(rps[kind])
        print(f"{kind:20} {statistics.median(runs):8.1f}       ({low:.1f}-{high:.1f})   {rate:10,.0f}")


if __name__ == "__main__":
    main()
