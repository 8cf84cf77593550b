"""Where the web process's CPU goes per request, HTTP server first (issue 13, lever 1).

Run: ``.venv/bin/python -m bench.serverprofile --kind sentinel|baseline [--baseline DIR]
[--app trivial|sentinel] [--path P] [--header H]`` (about 20 s; needs wrk and py-spy).

Starts one server as `bench.servercost` does, loads it with ``wrk -t1 -c32`` for 12 s, and
records it meanwhile with ``py-spy record --rate 250 --format raw --nolineno`` for 8 s; then
prints own time by library (`bench.gateway.profile.AREAS`) and the top frames, as shares of the
event-loop thread's samples and as µs per request (that share of the process's CPU per request,
user + system from psutil, over the recording's requests).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from bench.gateway.profile import parse_raw_profile
from bench.servercost import ROOT, free_port, server_command, tree_cpu, wait_port, wrk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", default="sentinel")
    parser.add_argument("--baseline", default="")
    parser.add_argument("--app", choices=["trivial", "sentinel"], default="trivial")
    parser.add_argument("--path", default="/")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    target = "bench.servercost:app" if args.app == "trivial" else "sentinel_site.asgi:application"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    port = free_port()
    command = server_command(args.kind, target, port, args.baseline)
    proc = subprocess.Popen(command, cwd=args.baseline if args.kind == "baseline" else ROOT, env=env)
    try:
        wait_port(port, proc)
        url = f"http://127.0.0.1:{port}{args.path}"
        wrk(url, 3, 32, args.header)  # warm-up
        result: dict[str, int] = {}
        load = threading.Thread(target=lambda: result.update(requests=wrk(url, 12, 32, args.header)[0]))
        load.start()
        time.sleep(2)  # the recording starts inside the load, whose rate is then steady
        root = psutil.Process(proc.pid)
        before = tree_cpu(root)
        with tempfile.NamedTemporaryFile(suffix=".txt") as raw:
            spy = [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(proc.pid), "--duration", "8"]
            spy += ["--rate", "250", "--format", "raw", "--nolineno", "--threads", "--output", raw.name]
            subprocess.run(spy, check=True, capture_output=True)
            cpu = tree_cpu(root) - before
            load.join()
            text = Path(raw.name).read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    if args.kind == "baseline":  # its files, named as this checkout's so that they group alike
        text = text.replace(str(Path(args.baseline).resolve()), str(ROOT))
    samples = parse_raw_profile(text)
    # The recording covers 8 of wrk's 12 s: its requests are taken as 8/12 of wrk's count.
    requests = result["requests"] * 8 / 12
    us = cpu / requests * 1e6
    total = samples.total
    print(f"{args.kind}: {total} samples, {requests:,.0f} requests, {us:.1f} µs CPU/request (whole process)")
    print("\n| own time, by library | share | µs/request |\n|---|---:|---:|")
    for name, count in samples.own_by_area().most_common():
        print(f"| {name} | {count / total:.1%} | {count / total * us:.1f} |")
    print("\n| frame | share | µs/request |\n|---|---:|---:|")
    for frame, count in samples.own_by_frame().most_common(args.top):
        print(f"| `{frame}` | {count / total:.1%} | {count / total * us:.1f} |")


if __name__ == "__main__":
    main()
