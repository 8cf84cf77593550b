"""CPU accounting, through psutil: who used how many cores while a run went on.

A snapshot holds every user-space process's CPU seconds (user + system) and parent, and the whole
box's busy time; two snapshots give, for each measured process tree (the server under test, the
upstream, Redis), cores = CPU seconds / wall seconds. Processes this benchmark did not start are
`other`: the box's busy time less interrupts (our own network traffic), less ours. Kernel threads
(kthreadd, pid 2, and its children) are the kernel's share of `box` and are left out of `other`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil

KTHREADD = 2


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds, parent and name of every user-space process, and the box's busy seconds (all
    CPUs; `interrupts` is the irq and softirq part of it, which no process is charged for)."""

    at: float
    seconds: dict[int, float]
    parents: dict[int, int]
    names: dict[int, str]
    box: float
    interrupts: float


def _box_seconds() -> tuple[float, float]:
    """(busy, interrupt) seconds of all CPUs; busy is every non-idle second (guest time is inside
    user time)."""
    t = psutil.cpu_times()
    interrupts = t.irq + t.softirq
    return t.user + t.nice + t.system + interrupts + t.steal, interrupts


def cpu_snapshot() -> CpuSnapshot:
    """Every process's CPU time now (processes that exit while it is taken are skipped)."""
    seconds: dict[int, float] = {}
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for proc in psutil.process_iter(["ppid", "name", "cpu_times"]):
        info = proc.info
        if info["cpu_times"] is None or proc.pid == KTHREADD or info["ppid"] == KTHREADD:
            continue
        seconds[proc.pid] = info["cpu_times"].user + info["cpu_times"].system
        parents[proc.pid] = info["ppid"]
        names[proc.pid] = info["name"] or "?"
    return CpuSnapshot(time.monotonic(), seconds, parents, names, *_box_seconds())


def process_tree(root: int, *snapshots: CpuSnapshot) -> set[int]:
    """`root` and its descendants in any of the snapshots (a uvicorn worker may come and go)."""
    children: dict[int, set[int]] = {}
    for snapshot in snapshots:
        for pid, parent in snapshot.parents.items():
            children.setdefault(parent, set()).add(pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


@dataclass(frozen=True)
class CpuUse:
    """Cores per measured tree (`srv`, `upstream`, `redis`), `gen` (the load generator), `other`
    and `box`; `others` names the busiest processes not ours, with their cores."""

    cores: dict[str, float]
    others: list[tuple[str, float]]


def cpu_between(before: CpuSnapshot, after: CpuSnapshot, roots: dict[str, int], gen_cpu_s: float = 0.0) -> CpuUse:
    """CPU use between two snapshots, in cores, per tree of `roots` (column name -> root pid).

    `gen_cpu_s` is the load generator's CPU seconds: it ran (and was reaped) in between, so
    neither snapshot saw it.
    """
    wall = after.at - before.at

    def used(pids: set[int] | list[int]) -> float:
        # A process born in between counts from zero; one that exited is lost to both snapshots.
        total = sum(max(0.0, after.seconds[pid] - before.seconds.get(pid, 0.0)) for pid in pids if pid in after.seconds)
        return total / wall

    cores = {"gen": gen_cpu_s / wall}
    ours = process_tree(os.getpid(), before, after)
    for name, root in roots.items():
        tree = process_tree(root, before, after)
        ours |= tree
        cores[name] = used(tree)
    cores["box"] = (after.box - before.box) / wall
    # Everything not ours, processes that came and went in between included (a test suite's
    # short-lived children): the box, less interrupts, less ours.
    interrupts = (after.interrupts - before.interrupts) / wall
    cores["other"] = max(0.0, cores["box"] - interrupts - used(ours) - cores["gen"])
    others = sorted(((used([pid]), pid) for pid in after.seconds if pid not in ours), reverse=True)
    named = [(f"{after.names[pid]}[{pid}]", value) for value, pid in others[:3] if value >= 0.01]
    return CpuUse(cores, named)


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


def thread_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) per thread of `pid`, by thread id."""
    return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}


def local_pid(pid: int) -> int | None:
    """`pid` when such a process runs on this machine (a server's reported pid), else None."""
    return pid if pid and psutil.pid_exists(pid) else None
