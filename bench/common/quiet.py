"""Waiting for a quiet machine before measuring: the benchmarks share its cores with whatever else
runs. Two ways: until processes not ours use little CPU for a second (`wait_quiet`), or until no
other benchmark runs (`wait_for_benchmarks`: wrk, or another ``python -m bench.<name>`` between its
wrk runs).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence

import psutil

from bench.common import BenchError
from bench.common.cpu import cpu_between, cpu_snapshot


def wait_quiet(limit: float, timeout: float = 120.0) -> bool:
    """Waits (up to `timeout` s) for a second in which processes not ours use at most `limit` core;
    False when none came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_snapshot()
        time.sleep(1.0)
        if cpu_between(before, cpu_snapshot(), {}).cores["other"] <= limit:
            return True
    return False


def _runs_module(cmdline: list[str], module: str) -> bool:
    """`python ... -m <module>` or one of its submodules (the gateway's load generator)."""
    return any(
        flag == "-m" and (arg == module or arg.startswith(module + ".")) for flag, arg in itertools.pairwise(cmdline)
    )


def busy_benchmarks(modules: Sequence[str]) -> list[str]:
    """The benchmarks running now, each with its pids: `wrk`, and each of `modules` run with
    `python -m`: `['wrk (pid 12)', 'bench.gateway (pid 10, 14)']`."""
    found: dict[str, list[int]] = {}
    # This process and its ancestors: a wrapper such as `timeout 900 python -m bench.x` names the
    # module too, and is not another benchmark.
    ours = {os.getpid(), *(parent.pid for parent in psutil.Process().parents())}
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.pid in ours:
            continue
        cmdline = proc.info["cmdline"] or []
        names = ["wrk"] if proc.info["name"] == "wrk" else []
        for name in names + [module for module in modules if _runs_module(cmdline, module)]:
            found.setdefault(name, []).append(proc.pid)
    return [f"{name} (pid {', '.join(map(str, sorted(pids)))})" for name, pids in found.items()]


def wait_for_benchmarks(modules: Sequence[str], wait_minutes: float) -> float:
    """Polls every 5 s until `busy_benchmarks(modules)` finds none; the seconds waited. BenchError
    after `wait_minutes`."""
    started = time.monotonic()
    deadline = started + wait_minutes * 60
    announced = False
    while busy := busy_benchmarks(modules):
        if time.monotonic() > deadline:
            raise BenchError(f"the machine stayed busy for {wait_minutes:g} minutes: {', '.join(busy)}")
        if not announced:
            print(f"waiting for another benchmark to finish: {', '.join(busy)} ...", flush=True)
            announced = True
        time.sleep(5)
    waited = time.monotonic() - started
    if announced:
        print(f"quiet after {waited:.0f} s", flush=True)
    return waited
