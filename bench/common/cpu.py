"""CPU accounting, through psutil: who used how many cores while a run went on.

A snapshot holds every user-space process's CPU seconds (user + system), the CPU seconds of the
children it has reaped, its parent and name, and the whole box's busy time. Two snapshots give
cores = CPU seconds / wall seconds for each measured group: a process tree (the server under test,
the upstream) or every process of a name (PostgreSQL, whose backends come and go). A process's
share between the snapshots is its own CPU plus that of the children it reaped meanwhile, so an
exited PostgreSQL backend counts in the postmaster's, and a load generator this process ran to
completion in this process's. Processes this benchmark did not start are `other`: the box's busy
time less interrupts (our own network traffic), less ours. Kernel threads (kthreadd, pid 2, and
its children) are the kernel's share of `box` and are left out of `other`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

KTHREADD = 2


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds (its own, and its reaped children's), parent and name of every user-space
    process, and the box's busy seconds (all CPUs; `interrupts` is the irq and softirq part of it,
    which no process is charged for)."""

    at: float
    seconds: dict[int, float]
    reaped: dict[int, float]
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
    reaped: dict[int, float] = {}
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for proc in psutil.process_iter(["ppid", "name", "cpu_times"]):
        info = proc.info
        times = info["cpu_times"]
        if times is None or proc.pid == KTHREADD or info["ppid"] == KTHREADD:
            continue
        seconds[proc.pid] = times.user + times.system
        reaped[proc.pid] = times.children_user + times.children_system
        parents[proc.pid] = info["ppid"]
        names[proc.pid] = info["name"] or "?"
    return CpuSnapshot(time.monotonic(), seconds, reaped, parents, names, *_box_seconds())


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
    """Cores per measured group, `bench` (this process alone, its children left out), `gen` (the
    load generator), `other` and `box`, over `wall` seconds; `others` names the busiest processes
    not ours, with their cores."""

    cores: dict[str, float]
    others: list[tuple[str, float]]
    wall: float

    def seconds(self, name: str) -> float:
        """CPU seconds of group `name` over the run."""
        return self.cores[name] * self.wall


def cpu_between(
    before: CpuSnapshot,
    after: CpuSnapshot,
    roots: dict[str, int],
    gen_cpu_s: float = 0.0,
    named: dict[str, str] | None = None,
) -> CpuUse:
    """CPU use between two snapshots, in cores, per tree of `roots` (column name -> root pid) and
    per process name of `named` (column name -> process name, e.g. `postgres`).

    `gen_cpu_s` is the load generator's CPU seconds (from wait4): this process reaped it in
    between, so it is already in ours; it is only reported, as `gen`.
    """
    wall = after.at - before.at

    def used(pids: Iterable[int]) -> float:
        # A process born in between counts from zero; one that exited is in what its parent reaped.
        total = 0.0
        for pid in pids:
            if pid in after.seconds:
                was = before.seconds.get(pid, 0.0) + before.reaped.get(pid, 0.0)
                total += max(0.0, after.seconds[pid] + after.reaped[pid] - was)
        return total / wall

    me = os.getpid()
    cores = {"gen": gen_cpu_s / wall, "bench": (after.seconds[me] - before.seconds[me]) / wall}
    groups = {name: process_tree(root, before, after) for name, root in roots.items()}
    for column, comm in (named or {}).items():
        groups[column] = {pid for pid, name in after.names.items() if name == comm}
    ours = process_tree(me, before, after).union(*groups.values())
    cores |= {name: used(pids) for name, pids in groups.items()}
    cores["box"] = (after.box - before.box) / wall
    # Everything not ours, processes that came and went in between included (a test suite's
    # short-lived children): the box, less interrupts, less ours.
    interrupts = (after.interrupts - before.interrupts) / wall
    cores["other"] = max(0.0, cores["box"] - interrupts - used(ours))
    others = sorted(((used([pid]), pid) for pid in after.seconds if pid not in ours), reverse=True)
    busiest = [(f"{after.names[pid]}[{pid}]", value) for value, pid in others[:3] if value >= 0.01]
    return CpuUse(cores, busiest, wall)


def thread_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) per thread of `pid`, by thread id."""
    return {t.id: t.user_time + t.system_time for t in psutil.Process(pid).threads()}


def local_pid(pid: int) -> int | None:
    """`pid` when such a process runs on this machine (a server's reported pid), else None."""
    return pid if pid and psutil.pid_exists(pid) else None
