"""Gateway overhead: Sentinel's proxy against a direct call and against nginx (SPEC 8).

Run from the repository root, on an otherwise idle machine (3 to 5 minutes)::

    .venv/bin/python bench/gateway.py [--duration 10] [--connections 64] [--quick]

What it does, in order:

1. Installs ``wrk`` and ``nginx-light`` with apt when they are missing (with no apt, a Python
   closed-loop generator on aiohttp stands in for wrk and the nginx rows are skipped) and ``py-spy``
   into the virtualenv for the profile (a dev tool, not in the requirements; no py-spy, no profile).
2. Recreates the scratch database ``sentinel_bench`` on the local PostgreSQL, migrates it, and
   creates through Sentinel's services a ``vital`` tenant whose limits are so high that every
   limiter checks but none refuses, a user of it, and the route ``/proxy/`` (auth ``jwt``) to the
   mock upstream; mints the user's JWT. Redis keys live under ``CACHE_KEY_PREFIX=sentinel-bench``.
3. Starts on free ports: the mock upstream, nginx in front of it (1 worker, keep-alive pool), and
   ``manage.py serve`` in production mode (PostgreSQL + Redis) with 1, then 2 web processes.
4. For each target (direct, nginx, Sentinel x1, Sentinel x2): warm-up rounds of 3 s until the rate
   is steady, then ``wrk -t2 -c64 -d10s --latency``, with the CPU of every process tree that takes
   part (from /proc), of wrk (from wait4) and of the whole box (from /proc/stat); then one
   ``-t1 -c1 -d5s`` run for the latency of one hop without queueing. Sentinel x1 is also driven at half its
   measured rate by an open-loop generator (wrk cannot pace), like the direct call and nginx, for
   the latency it adds below saturation; and profiled under load with ``py-spy record``.
5. Prints the tables and writes them between ``<!-- bench:gateway:start -->`` and
   ``<!-- bench:gateway:end -->`` in ``docs/benchmarks.md`` (other sections stay as they are).
   ``--quick`` is a smoke test: short runs, nothing written.

Every process it starts is stopped at the end (SIGTERM, then SIGKILL), as are the scratch database
and Redis keys dropped. It exits non-zero with a message when something fails, and when Sentinel
answers anything but 2xx (the figures would not measure the proxy then).

CPU columns are in cores (CPU seconds / wall seconds): ``srv`` is the server under test,
``upstream`` the mock behind it, ``redis`` the Redis server, ``gen`` the load generator, ``other``
the processes this script did not start, ``box`` all busy CPU. Everything shares the machine's
cores: when ``box`` nears the core count, the generator and the upstream are taking CPU from the
server. On a shared machine, a run during which ``other`` exceeds 0.1 core is measured again once
the machine is quiet (``--retries``, 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
DOCS_PATH = REPO / "docs" / "benchmarks.md"
MARK_START = "<!-- bench:gateway:start -->"
MARK_END = "<!-- bench:gateway:end -->"
KEY_PREFIX = "sentinel-bench"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/sentinel_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The gateway issue's goals: proxied req/s per web process with every check on, and the p50
# latency added at half that load.
GOAL_RPS_PER_PROCESS = 3000
GOAL_ADDED_P50_MS = 1.0
# Warm-up rounds of `--warmup` seconds at most, until the rate is steady.
WARMUP_ROUNDS = 5
# A run during which processes this script did not start used more CPU than this is measured again.
OTHER_LIMIT = 0.10

# The bench tenant's overrides: high enough that the local bucket, the distributed window and the
# tier scaling all run their checks and never refuse. The window is 1 s so that the sliding log in
# Redis (one ZSET member per admitted request) holds about one second of traffic, as a tenant with
# a per-second limit would, instead of a minute's worth of members.
TENANT_LIMITS = {
    "burst_capacity": 1_000_000_000,
    "refill_rate": 1e9,
    "window_ms": 1000,
    "base_rate_limit": 1_000_000_000,
}

# Run once in `manage.py shell -c` with the production environment: a tenant, a user, the route,
# and the user's access token on the last line of stdout.
SETUP_CODE = """
import json, os
from accounts.api.serializers import TokenSerializer
from accounts.models import Role, User
from accounts.services import membership_add, tenant_create
from gateway.services import route_create

spec = json.loads(os.environ["BENCH_SETUP"])
tenant = tenant_create(name="Bench", slug="bench", tier="vital", **spec["limits"])
user = User.objects.create_user(username="bench", email="bench@example.com", password=None)
membership_add(tenant=tenant, user=user, role=Role.MEMBER)
route_create(
    tenant=None, name="Bench proxy", path_prefix="/proxy/", targets=[spec["upstream"]],
    auth_mode="jwt", strip_prefix=True,
)
print(json.dumps({"jwt": str(TokenSerializer.get_token(User.objects.get(pk=user.pk)).access_token)}))
"""


class BenchError(Exception):
    """A step failed; the message says which and why."""


# --- Configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How long and how hard each run is."""

    duration: float
    warmup: float
    single_duration: float
    connections: int
    profile_seconds: float
    quick: bool
    retries: int
    database_url: str
    redis_url: str
    docs: Path


@dataclass
class Tools:
    wrk: str | None = None
    nginx: str | None = None
    py_spy: str | None = None
    notes: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str]) -> Plan:
    parser = argparse.ArgumentParser(prog="bench/gateway.py", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each measured run (10)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections of the saturation runs (64)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 3 s runs, docs/benchmarks.md untouched")
    parser.add_argument("--retries", type=int, default=2, help="re-runs of a run that other processes disturbed (2)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="scratch database (dropped and created)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help=f"Redis; keys under {KEY_PREFIX}:")
    parser.add_argument("--docs", type=Path, default=DOCS_PATH, help="markdown file to update")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.connections < 2:
        parser.error("--duration must be > 0 and --connections >= 2")
    quick = bool(args.quick)
    return Plan(
        duration=3.0 if quick else args.duration,
        warmup=1.0 if quick else 3.0,
        single_duration=2.0 if quick else 5.0,
        connections=args.connections,
        profile_seconds=3.0 if quick else 8.0,
        quick=quick,
        retries=max(0, args.retries),
        database_url=args.database_url,
        redis_url=args.redis_url,
        docs=args.docs,
    )


# --- Tools --------------------------------------------------------------------------------------


def _which(name: str) -> str | None:
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run([*prefix, "apt-get", *args], capture_output=True, text=True, env=env, timeout=900)


def install_debian_tools(tools: Tools) -> None:
    """wrk and nginx-light from apt, when missing (apt-get update only if the first try fails)."""
    if _which("wrk") and _which("nginx"):
        return
    print("installing wrk and nginx-light with apt-get ...", flush=True)
    command = ("install", "-y", "--no-install-recommends", "wrk", "nginx-light")
    try:
        result = _apt(*command)
        if result.returncode != 0:
            _apt("update")
            result = _apt(*command)
        failure = result.stderr.strip().splitlines()[-1:] if result.returncode != 0 else []
    except (OSError, subprocess.TimeoutExpired) as exc:
        failure = [repr(exc)]
    if failure:
        tools.notes.append(f"apt-get install failed ({failure[0]})")


def install_py_spy(tools: Tools) -> None:
    """py-spy into the virtualenv for the profile; a dev tool, deliberately not in requirements."""
    path = Path(sys.executable).parent / "py-spy"
    if not path.exists():
        print("installing py-spy into the virtualenv (pip) ...", flush=True)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], capture_output=True, text=True
        )
        if result.returncode != 0:
            tools.notes.append(f"pip install py-spy failed: {result.stderr.strip()[-200:]}; no profile")
    tools.py_spy = str(path) if path.exists() else None


def prepare_tools() -> Tools:
    tools = Tools()
    install_debian_tools(tools)
    tools.wrk, tools.nginx = _which("wrk"), _which("nginx")
    if tools.wrk is None:
        tools.notes.append(
            "wrk unavailable: the closed-loop runs use this script's Python generator (aiohttp, keep-alive, "
            "one request at a time per connection), which costs about 100 µs of CPU per request itself and so "
            "bounds the direct and nginx rows"
        )
    if tools.nginx is None:
        tools.notes.append("nginx unavailable: no nginx reference rows")
    install_py_spy(tools)
    return tools


def tool_version(args: list[str]) -> str:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    text = (result.stdout + result.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


# --- Processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """A process this script started; its output goes to `log`."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def start_service(name: str, args: list[str], *, env: dict[str, str], logdir: Path) -> Service:
    log = logdir / f"{name}.log"
    with log.open("wb") as out:
        # Its own session, so a SIGKILL fallback reaches the children (uvicorn's workers) too.
        process = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Service(name, process, log)


def stop_service(service: Service, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL to its process group after `grace` seconds."""
    process = service.process
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    # Children that outlived their parent (a uvicorn worker) are still in its process group; while
    # any is, the kernel does not hand the group's id to another process.
    if _group_alive(process.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        fields = _stat_fields(f"/proc/{entry.name}/stat") if entry.name.isdigit() else []
        if len(fields) > 2 and fields[2] == str(pgid):  # pgrp: stat field 5
            return True
    return False


def http_status(port: int, path: str, headers: dict[str, str] | None = None) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def wait_for(check: Callable[[], bool], *, what: str, service: Service, timeout: float = 60.0) -> None:
    """Polls `check` until true; fails with the service's log if it dies or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise BenchError(
                f"{service.name} exited ({service.process.returncode}) while waiting for {what}:\n{service.tail()}"
            )
        try:
            if check():
                return
        except OSError as exc:
            last_error = repr(exc)
        time.sleep(0.1)
    raise BenchError(f"timed out after {timeout:.0f}s waiting for {what} {last_error}\n{service.tail()}")


def answers(port: int, path: str, headers: dict[str, str] | None = None, times: int = 1) -> bool:
    """`times` consecutive 200s, each on a new connection (with several workers, each may get one)."""
    return all(http_status(port, path, headers) == 200 for _ in range(times))


# --- CPU accounting (/proc) ---------------------------------------------------------------------


def _stat_fields(path: str) -> list[str]:
    """Fields of a /proc stat file after the command name (state first); [] if it is gone."""
    try:
        raw = Path(path).read_text()
    except OSError:
        return []
    return raw[raw.rindex(")") + 2 :].split()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def box_ticks() -> tuple[int, int]:
    """(busy, interrupt) ticks of all CPUs: busy is every non-idle tick (guest time is inside user
    time), interrupt the irq and softirq part of it, which no process is charged for."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    return user + nice + system + irq + softirq + steal, irq + softirq


@dataclass(frozen=True)
class CpuSnapshot:
    """utime + stime (clock ticks) of every user-space process, their parents, and the box's ticks."""

    at: float
    ticks: dict[int, int]
    parents: dict[int, int]
    box: int
    interrupts: int


def cpu_snapshot() -> CpuSnapshot:
    ticks: dict[int, int] = {}
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(f"/proc/{entry.name}/stat")
        # Kernel threads (kthreadd, pid 2, and its children) are the kernel's share of `box`.
        if not fields or entry.name == "2" or fields[1] == "2":
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime, stime: stat fields 14 and 15
    return CpuSnapshot(time.monotonic(), ticks, parents, *box_ticks())


def _tree(root: int, *snapshots: CpuSnapshot) -> set[int]:
    """`root` and its descendants in any of the snapshots (a uvicorn worker may come and go)."""
    children: dict[int, set[int]] = {}
    for snapshot in snapshots:
        for pid, parent in snapshot.parents.items():
            children.setdefault(parent, set()).add(pid)
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


@dataclass(frozen=True)
class CpuUse:
    """Cores per measured tree (`srv`, `upstream`, `redis`) and `gen` (the load generator); `other`,
    everything else on the box except interrupts (the busiest such processes named); `box`."""

    cores: dict[str, float]
    others: list[tuple[str, float]]


def cpu_between(before: CpuSnapshot, after: CpuSnapshot, roots: dict[str, int], gen_cpu_s: float = 0.0) -> CpuUse:
    """CPU use between two snapshots; `gen_cpu_s` is the load generator's, which ran (and was
    reaped) in between, so neither snapshot saw it."""
    wall = after.at - before.at

    def used(pids: set[int] | list[int]) -> float:
        # A process born in between counts from zero; one that exited is lost to both snapshots.
        ticks = sum(max(0, after.ticks[pid] - before.ticks.get(pid, 0)) for pid in pids if pid in after.ticks)
        return ticks / CLK_TCK / wall

    cores = {"gen": gen_cpu_s / wall}
    ours = _tree(os.getpid(), before, after)
    for name, root in roots.items():
        tree = _tree(root, before, after)
        ours |= tree
        cores[name] = used(tree)
    cores["box"] = (after.box - before.box) / CLK_TCK / wall
    # Everything not ours, processes that came and went in between included (a test suite's
    # short-lived children): the box, less interrupts (our own network traffic), less ours.
    interrupts = (after.interrupts - before.interrupts) / CLK_TCK / wall
    cores["other"] = max(0.0, cores["box"] - interrupts - used(ours) - cores["gen"])
    others = sorted(((used([pid]), pid) for pid in after.ticks if pid not in ours), reverse=True)
    return CpuUse(cores, [(f"{_comm(pid)}[{pid}]", value) for value, pid in others[:3] if value >= 0.01])


# --- Load generation ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadResult:
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    requests: int
    gen_cpu_s: float
    command: str


def run_timed(args: list[str], timeout: float) -> tuple[str, float]:
    """Runs a child to completion; (its output, its CPU seconds from wait4's rusage)."""
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        try:
            while True:
                # wait4 rather than Popen.wait: it returns the child's own resource usage.
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
                if pid:
                    process.returncode = os.waitstatus_to_exitcode(status)
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"{args[0]} ran past {timeout:.0f}s")
                time.sleep(0.05)
        finally:
            if process.returncode is None:
                process.kill()
                process.wait()
        out.seek(0)
        text = out.read().decode(errors="replace")
    if process.returncode != 0:
        raise BenchError(f"{' '.join(args[:3])} ... failed ({process.returncode}):\n{text[-2000:]}")
    return text, usage.ru_utime + usage.ru_stime


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _wrk_ms(text: str, percent: str) -> float:
    match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)
    if match is None:
        raise BenchError(f"no {percent}% latency in wrk's output:\n{text}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(text: str, cpu_s: float, command: str) -> LoadResult:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.MULTILINE)
    total = re.search(r"^\s+(\d+) requests in", text, re.MULTILINE)
    if rps is None or total is None:
        raise BenchError(f"unexpected wrk output:\n{text}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return LoadResult(
        rps=float(rps.group(1)),
        p50_ms=_wrk_ms(text, "50"),
        p99_ms=_wrk_ms(text, "99"),
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        requests=int(total.group(1)),
        gen_cpu_s=cpu_s,
        command=command,
    )


@dataclass(frozen=True)
class Load:
    """Drives a URL: wrk for closed loops when installed, this script's generator otherwise."""

    wrk: str | None
    jwt: str

    def closed(self, url: str, *, connections: int, duration: float) -> LoadResult:
        threads = min(2, connections)
        if self.wrk is None:
            return self._python(url, ["--connections", str(connections)], duration)
        # --latency only adds the percentiles to the report; warm-ups are parsed and discarded too.
        args = [self.wrk, f"-t{threads}", f"-c{connections}", f"-d{_secs(duration)}s", "--latency"]
        args += ["-H", f"Authorization: Bearer {self.jwt}", url]
        shown = " ".join([*args[1:-3], '-H "Authorization: Bearer $JWT"', url])
        text, cpu = run_timed(args, timeout=duration + 60)
        return parse_wrk(text, cpu, f"wrk {shown}")

    def open(self, url: str, *, rate: float, duration: float) -> LoadResult:
        return self._python(url, ["--rate", f"{rate:.0f}"], duration)

    def _python(self, url: str, mode: list[str], duration: float) -> LoadResult:
        args = [sys.executable, str(Path(__file__).resolve()), "_loadgen", "--url", url, *mode]
        args += ["--duration", _secs(duration), "--jwt", self.jwt]
        text, cpu = run_timed(args, timeout=duration + 120)
        data = json.loads(text.strip().splitlines()[-1])
        shown = " ".join(["bench/gateway.py _loadgen", *mode, "--duration", _secs(duration), url])
        return LoadResult(**data, gen_cpu_s=cpu, command=shown)


def _secs(seconds: float) -> str:
    return f"{seconds:g}"


# --- The Python load generator (`bench/gateway.py _loadgen ...`, run as a child process) ---------


@dataclass
class _LoadSamples:
    latencies: list[float] = field(default_factory=list)
    non2xx: int = 0
    errors: int = 0
    first: float = 0.0
    last: float = 0.0


async def _one_request(session: Any, url: str, samples: _LoadSamples) -> None:
    import aiohttp

    sent = time.perf_counter()
    try:
        async with session.get(url) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, OSError, TimeoutError):
        samples.errors += 1
        return
    done = time.perf_counter()
    samples.latencies.append(done - sent)
    samples.last = done
    if not 200 <= status < 300:
        samples.non2xx += 1


async def _closed_loop(session: Any, url: str, connections: int, duration: float, samples: _LoadSamples) -> None:
    """`connections` workers, each sending its next request as soon as the previous one is answered."""
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        while time.perf_counter() < deadline:
            await _one_request(session, url, samples)

    await asyncio.gather(*(worker() for _ in range(connections)))


async def _open_loop(session: Any, url: str, rate: float, duration: float, samples: _LoadSamples) -> None:
    """Requests started on a fixed schedule, whatever the answers do (no coordinated omission).

    Latency runs from the moment a request starts (pool wait included). The event loop's timers
    have millisecond resolution, so requests leave in small bunches around their scheduled time.
    """
    interval = 1.0 / rate
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    for i in range(max(1, round(rate * duration))):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(_one_request(session, url, samples))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _generate(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    samples = _LoadSamples()
    connector = aiohttp.TCPConnector(limit=args.connections, keepalive_timeout=30)
    headers = {"Authorization": f"Bearer {args.jwt}"}
    timeout = aiohttp.ClientTimeout(total=2.0)  # wrk's socket timeout
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
        samples.first = time.perf_counter()
        if args.rate:
            await _open_loop(session, args.url, args.rate, args.duration, samples)
        else:
            await _closed_loop(session, args.url, args.connections, args.duration, samples)
    wall = max(samples.last - samples.first, 1e-9)
    return {
        "rps": len(samples.latencies) / wall,
        "p50_ms": _percentile(samples.latencies, 0.50) * 1000,
        "p99_ms": _percentile(samples.latencies, 0.99) * 1000,
        "non2xx": samples.non2xx,
        "socket_errors": samples.errors,
        "requests": len(samples.latencies),
    }


def loadgen_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench/gateway.py _loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--jwt", required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--connections", type=int, default=64, help="closed loop: workers; open loop: pool size")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s on a fixed schedule (open loop)")
    args = parser.parse_args(argv)
    try:
        import uvloop  # requirements.txt has it; a bare asyncio loop also works, slower
    except ImportError:
        result = asyncio.run(_generate(args))
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(_generate(args))
    print(json.dumps(result))
    return 0


# --- Scratch database, Redis and the Sentinel environment ---------------------------------------


def _admin_url(database_url: str) -> tuple[str, str]:
    """(URL of the server's `postgres` database, name of the scratch database)."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise BenchError(f"scratch database name {name!r}: use lower-case letters, digits and _")
    return urlunsplit(parts._replace(path="/postgres")), name


def recreate_database(database_url: str, *, create: bool = True) -> None:
    import psycopg
    from psycopg import sql

    admin, name = _admin_url(database_url)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            if create:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise BenchError(f"PostgreSQL at {admin}: {exc}") from exc


def redis_client(redis_url: str) -> Any:
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BenchError(f"Redis at {redis_url}: {exc}") from exc
    return client


def delete_bench_keys(client: Any) -> int:
    """Every key under the bench prefix, and none other (the same Redis may serve a real Sentinel)."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{KEY_PREFIX}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def redis_pid(client: Any) -> int | None:
    """The Redis server's pid when it runs on this machine (for its CPU column)."""
    pid = int(client.info("server").get("process_id", 0))
    return pid if pid and Path(f"/proc/{pid}/stat").exists() else None


def sentinel_env(plan: Plan, secret_key: str, workers: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    # Settings of the caller's shell that would change what is measured.
    for name in ("DJANGO_DEBUG", "JWT_SIGNING_KEY", "GATEWAY_FORCED_PRESSURE", "ENABLE_TRACING"):
        env.pop(name, None)
    env.update(
        {
            "DATABASE_URL": plan.database_url,
            "REDIS_URL": plan.redis_url,
            "SECRET_KEY": secret_key,
            "CACHE_KEY_PREFIX": KEY_PREFIX,
            "LOG_LEVEL": "warning",
            "WEB_CONCURRENCY": str(workers),
            # The token is minted once; it must outlive the whole run.
            "JWT_ACCESS_MINUTES": "240",
            "DJANGO_SETTINGS_MODULE": "sentinel_site.settings",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def manage(args: list[str], env: dict[str, str], *, extra_env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env={**env, **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        raise BenchError(f"manage.py {args[0]} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return result.stdout


def prepare_data(plan: Plan, env: dict[str, str], upstream_url: str) -> str:
    """Scratch database, migrations, tenant + user + route; returns the user's access token."""
    recreate_database(plan.database_url)
    manage(["migrate", "--noinput"], env)
    setup = json.dumps({"limits": TENANT_LIMITS, "upstream": upstream_url})
    output = manage(["shell", "-c", SETUP_CODE], env, extra_env={"BENCH_SETUP": setup})
    return str(json.loads(output.strip().splitlines()[-1])["jwt"])


# --- Servers ------------------------------------------------------------------------------------


def nginx_config(tmp: Path, port: int, upstream_port: int) -> Path:
    """1 worker, keep-alive both ways, no access log; everything it writes stays in `tmp`."""
    user = ""
    if os.geteuid() == 0:
        # A root master would switch its worker to `nobody`; keep the worker as the current user.
        user = f"user {pwd.getpwuid(os.getuid()).pw_name};"
    temp_paths = "\n".join(
        f"    {kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp_paths}
    keepalive_requests 1000000;
    keepalive_timeout 65;
    upstream mock {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    )
    return conf


@dataclass
class Servers:
    upstream: Service
    upstream_port: int
    nginx: Service | None
    nginx_port: int


def start_reference_servers(
    stack: contextlib.ExitStack, tools: Tools, tmp: Path, env: dict[str, str], upstream_port: int
) -> Servers:
    upstream = start_service(
        "upstream", [sys.executable, "-m", "gateway.mock_upstream", "--port", str(upstream_port)], env=env, logdir=tmp
    )
    stack.callback(stop_service, upstream)
    wait_for(lambda: answers(upstream_port, "/health"), what="the mock upstream", service=upstream)
    nginx, nginx_port = None, free_port()
    if tools.nginx:
        conf = nginx_config(tmp, nginx_port, upstream_port)
        args = [tools.nginx, "-p", str(tmp), "-e", str(tmp / "nginx-error.log"), "-c", str(conf)]
        nginx = start_service("nginx", args, env=env, logdir=tmp)
        stack.callback(stop_service, nginx)
        wait_for(lambda: answers(nginx_port, "/"), what="nginx", service=nginx)
    return Servers(upstream, upstream_port, nginx, nginx_port)


@contextlib.contextmanager
def sentinel(plan: Plan, secret_key: str, workers: int, jwt: str, tmp: Path) -> Iterator[tuple[Service, int]]:
    """`manage.py serve` with `workers` processes, up and serving the bench route."""
    port = free_port()
    env = sentinel_env(plan, secret_key, workers)
    service = start_service(
        f"sentinel-{workers}", [sys.executable, "manage.py", "serve", "--port", str(port)], env=env, logdir=tmp
    )
    try:
        auth = {"Authorization": f"Bearer {jwt}"}
        # The route is in the table once /proxy/ answers 200 from the mock (before: Django's 404).
        wait_for(
            lambda: answers(port, "/proxy/", auth, times=5 * workers),
            what=f"Sentinel ({workers} process(es)) to proxy /proxy/",
            service=service,
        )
        yield service, port
    finally:
        stop_service(service)


# --- Measurements -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    target: str
    processes: str
    load: LoadResult
    cores: dict[str, float]
    others: list[tuple[str, float]]  # the busiest processes this script did not start


@dataclass
class Results:
    saturation: list[Row] = field(default_factory=list)
    single: list[Row] = field(default_factory=list)
    half: list[Row] = field(default_factory=list)
    half_rate: float = 0.0
    profile: list[str] = field(default_factory=list)
    profile_headline: str = ""
    code: CodeState | None = None  # what the servers were started from
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    name: str
    processes: str
    url: str
    roots: dict[str, int]  # CPU columns: process trees measured during the run
    must_be_clean: bool = False  # non-2xx or socket errors invalidate the figures


def wait_quiet(limit: float, timeout: float = 120.0) -> bool:
    """Waits (up to `timeout`) for a second in which processes not ours use at most `limit` core."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_snapshot()
        time.sleep(1.0)
        if cpu_between(before, cpu_snapshot(), {}).cores["other"] <= limit:
            return True
    return False


def measured(plan: Plan, target: Target, run: Callable[[], LoadResult]) -> Row:
    """One measured run with its CPU use; run again (up to `plan.retries` times) when other
    processes took more than `OTHER_LIMIT` core meanwhile (the VM is shared)."""
    for attempt in range(plan.retries + 1):
        before = cpu_snapshot()
        result = run()
        use = cpu_between(before, cpu_snapshot(), target.roots, result.gen_cpu_s)
        row = Row(target.name, target.processes, result, use.cores, use.others)
        if use.cores["other"] <= OTHER_LIMIT or attempt == plan.retries:
            return row
        busiest = ", ".join(f"{name} {cores:.2f}" for name, cores in use.others)
        print(f"   disturbed ({use.cores['other']:.2f} core elsewhere: {busiest}); again when quiet", flush=True)
        wait_quiet(OTHER_LIMIT)
    raise AssertionError("unreachable")


def _check_clean(target: Target, result: LoadResult, results: Results) -> None:
    if target.must_be_clean and (result.non2xx or result.socket_errors):
        results.failures.append(
            f"{target.name} ({target.processes}): {result.non2xx} non-2xx and {result.socket_errors} socket "
            f"errors in `{result.command}`"
        )


def warm_up(plan: Plan, load: Load, url: str) -> None:
    """Closed-loop runs of `plan.warmup` seconds until two in a row agree within 5 % (at most
    `WARMUP_ROUNDS`): the steady state, once pools, caches and rolling windows have filled (Sentinel's
    pressure gauge keeps up to 4,096 samples of the last 10 s; once, its cost grew as they filled)."""
    rates: list[float] = []
    for _ in range(WARMUP_ROUNDS):
        rates.append(load.closed(url, connections=plan.connections, duration=plan.warmup).rps)
        if len(rates) >= 2 and abs(rates[-1] - rates[-2]) <= 0.05 * rates[-2]:
            break
    print(f"   warm-up: {' -> '.join(f'{rate:,.0f}' for rate in rates)} req/s", flush=True)


def run_target(plan: Plan, load: Load, target: Target, results: Results) -> Row:
    """Warm-up, the measured closed-loop run, then the single-connection run."""
    print(f"-> {target.name} ({target.processes}): {target.url}", flush=True)
    warm_up(plan, load, target.url)
    row = measured(plan, target, lambda: load.closed(target.url, connections=plan.connections, duration=plan.duration))
    results.saturation.append(row)
    _check_clean(target, row.load, results)
    print(f"   {row.load.rps:,.0f} req/s, p50 {row.load.p50_ms:.3g} ms, p99 {row.load.p99_ms:.3g} ms", flush=True)
    single = measured(plan, target, lambda: load.closed(target.url, connections=1, duration=plan.single_duration))
    results.single.append(single)
    _check_clean(target, single.load, results)
    return row


def run_half_load(plan: Plan, load: Load, target: Target, rate: float, results: Results) -> None:
    """The open-loop generator at `rate` req/s: a short warm-up, then the measured run."""
    print(f"-> half load, {rate:,.0f} req/s: {target.name} ({target.processes})", flush=True)
    load.open(target.url, rate=rate, duration=plan.warmup)
    row = measured(plan, target, lambda: load.open(target.url, rate=rate, duration=plan.duration))
    results.half.append(row)
    _check_clean(target, row.load, results)
    print(f"   p50 {row.load.p50_ms:.3g} ms, p99 {row.load.p99_ms:.3g} ms", flush=True)


# --- Profile (py-spy) ---------------------------------------------------------------------------


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*)\)$")


def _short_frame(frame: str) -> str:
    """`handle (/work/main/gateway/engine/proxy.py)` → `handle (gateway/engine/proxy.py)`."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "lib/python3.11/", f"{REPO}/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({path})"


# The per-request metrics (`on_complete`): prometheus_client's multiprocess values, Sentinel's
# `request_observe`, and the process identifier prometheus_client asks for on every update.
_METRICS = "Prometheus metrics (prometheus_client, observability/, prometheus_setup.py)"
# First match wins: the Redis client is Sentinel's own code, but listed apart from the rest of the
# engine (its time includes hiredis' C parser and packer, and the socket writes it makes).
_AREAS = (
    ("gateway/engine/resp.py", "Redis client (gateway/engine/resp.py, hiredis)"),
    ("gateway/engine/", "Sentinel's gateway engine"),
    ("aiohttp/", "aiohttp (client to the upstream)"),
    *((prefix, _METRICS) for prefix in ("prometheus_client/", "observability/", "sentinel_site/prometheus_setup.py")),
    ("redis/", "redis-py"),
    ("uvicorn/", "uvicorn (HTTP server)"),
    ("jwt/", "PyJWT"),
    ("asyncio/", "asyncio and uvloop (event loop, sockets)"),
)


def _area(frame: str) -> str:
    path = frame.rpartition("(")[2]
    return next((name for prefix, name in _AREAS if path.startswith(prefix)), "other")


@dataclass
class Samples:
    """Stacks of the event-loop thread, from py-spy's raw (collapsed) output."""

    stacks: list[tuple[list[str], int]] = field(default_factory=list)
    other_threads: int = 0

    @property
    def total(self) -> int:
        return sum(count for _, count in self.stacks)


def parse_raw_profile(raw: str) -> Samples:
    """Lines `thread (tid): name;frame;frame;... count`; only the main (event-loop) thread's are kept."""
    samples = Samples()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        thread, *frames = stack.split(";")
        if "MainThread" not in thread:
            samples.other_threads += int(count_text)
            continue
        samples.stacks.append(([_short_frame(frame) for frame in frames], int(count_text)))
    return samples


def _share(count: int, total: int, us_per_request: float) -> str:
    return f"| {100 * count / total:.1f} % | {us_per_request * count / total:,.0f} |"


def summarise_profile(samples: Samples, us_per_request: float, top: int = 10) -> list[str]:
    """Markdown: own time by area, the `top` frames by own time, the engine's steps inclusively."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in samples.stacks:
        own[frames[-1]] += count
        for frame in set(frames):
            if "gateway/engine/" in frame:
                inclusive[frame] += count
    total = samples.total
    if total == 0:
        return ["py-spy recorded no samples of the event-loop thread."]
    areas: Counter[str] = Counter()
    for frame, count in own.items():
        areas[_area(frame)] += count
    lines = ["| own time, by library | share | µs/request |", "|---|---:|---:|"]
    lines += [f"| {area} {_share(n, total, us_per_request)}" for area, n in areas.most_common()]
    lines += ["", f"Top {top} frames by own time:", "", "| frame | share | µs/request |", "|---|---:|---:|"]
    lines += [f"| `{frame}` {_share(n, total, us_per_request)}" for frame, n in own.most_common(top)]
    lines += ["", "The gateway engine's frames by inclusive time (the frame and all it calls):", ""]
    lines += ["| frame | share | µs/request |", "|---|---:|---:|"]
    lines += [f"| `{frame}` {_share(n, total, us_per_request)}" for frame, n in inclusive.most_common(10)]
    return lines


def profile_headline(samples: Samples, us_per_request: float) -> str:
    """One sentence for the reading: the libraries' shares, and the costliest function (its own time
    plus that of its comprehensions and generators, which run as nested code objects)."""
    total = samples.total
    if not total:
        return ""
    areas: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    for frames, count in samples.stacks:
        areas[_area(frames[-1])] += count
        func, _, place = frames[-1].partition(" (")
        functions[f"{func.split('.<locals>')[0]} ({place}"] += count
    shares = ", ".join(f"{area} {100 * n / total:.0f} %" for area, n in areas.most_common())
    frame, count = functions.most_common(1)[0]
    return (
        f"- Where a request's {us_per_request:,.0f} µs of event-loop CPU go (profile, own time): {shares}. The "
        f"costliest single function is `{frame}`, {100 * count / total:.0f} % (about "
        f"{us_per_request * count / total:,.0f} µs per request)."
    )


def thread_ticks(pid: int) -> dict[int, int]:
    """utime + stime per thread of `pid`."""
    ticks = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = _stat_fields(f"{task}/stat")
        if fields:
            ticks[int(task.name)] = int(fields[11]) + int(fields[12])
    return ticks


def profile_sentinel(
    plan: Plan, tools: Tools, load: Load, service: Service, url: str, tmp: Path
) -> tuple[list[str], str]:
    """py-spy record on the 1-process server while wrk (or the Python generator) loads it: the
    markdown lines, and a sentence on the biggest cost for the reading of the figures."""
    if tools.py_spy is None:
        return ["Skipped: py-spy is not installed (see the notes)."], ""
    out = tmp / "profile.txt"
    args = [tools.py_spy, "record", "--pid", str(service.pid), "--duration", _secs(plan.profile_seconds)]
    args += ["--rate", "200", "--format", "raw", "--nolineno", "--threads", "--output", str(out)]
    before = thread_ticks(service.pid)
    with tempfile.TemporaryFile() as log:
        spy = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            # The load outlasts the recording: py-spy stops after its duration on its own.
            result = load.closed(url, connections=plan.connections, duration=plan.profile_seconds + 2)
            spy.wait(timeout=30)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
        log.seek(0)
        message = log.read().decode(errors="replace").strip()
    if spy.returncode != 0 or not out.exists():
        return [f"Skipped: py-spy could not record the web process ({message[-300:]})."], ""
    after = thread_ticks(service.pid)
    used = {tid: after[tid] - before.get(tid, 0) for tid in after}
    main_s = used.get(service.pid, 0) / CLK_TCK
    others_s = sum(ticks for tid, ticks in used.items() if tid != service.pid) / CLK_TCK
    samples = parse_raw_profile(out.read_text())
    us_per_request = main_s / max(result.requests, 1) * 1e6
    head = [
        f"{samples.total:,} samples of the event-loop thread at {result.rps:,.0f} req/s; that thread used "
        f"{main_s:.1f} s of CPU for {result.requests:,} requests, {us_per_request:,.0f} µs each (the other "
        f"threads: {others_s:.2f} s). py-spy also counted {samples.other_threads:,} samples in the other threads "
        "(idle thread-pool workers it takes for busy while they wait for a CPU): left out.",
        "",
    ]
    return head + summarise_profile(samples, us_per_request), profile_headline(samples, us_per_request)


# --- The whole run ------------------------------------------------------------------------------


def run_all(plan: Plan, tools: Tools, stack: contextlib.ExitStack, tmp: Path) -> Results:
    results = Results(code=code_state())
    secret_key = secrets.token_urlsafe(50)
    env = sentinel_env(plan, secret_key)
    client = redis_client(plan.redis_url)
    delete_bench_keys(client)
    stack.callback(delete_bench_keys, client)
    upstream_port = free_port()
    stack.callback(recreate_database, plan.database_url, create=False)
    print("waiting for a quiet machine (other processes under 0.1 core) ...", flush=True)
    if not wait_quiet(OTHER_LIMIT):
        print("   still busy after 120 s: measuring anyway, disturbed runs will be retried", flush=True)
    print("preparing the scratch database and the bench tenant ...", flush=True)
    jwt = prepare_data(plan, env, f"http://127.0.0.1:{upstream_port}")
    servers = start_reference_servers(stack, tools, tmp, env, upstream_port)
    load = Load(tools.wrk, jwt)
    redis_roots = {"redis": pid} if (pid := redis_pid(client)) else {}
    upstream = servers.upstream.pid

    direct = Target("direct", "1", f"http://127.0.0.1:{upstream_port}/", {"srv": upstream, **redis_roots})
    run_target(plan, load, direct, results)
    nginx_target = None
    if servers.nginx is not None:
        roots = {"srv": servers.nginx.pid, "upstream": upstream, **redis_roots}
        nginx_target = Target("nginx", "1 worker", f"http://127.0.0.1:{servers.nginx_port}/", roots)
        run_target(plan, load, nginx_target, results)

    references = [t for t in (direct, nginx_target) if t is not None]
    for workers in (1, 2):
        with sentinel(plan, secret_key, workers, jwt, tmp) as (service, port):
            roots = {"srv": service.pid, "upstream": upstream, **redis_roots}
            url = f"http://127.0.0.1:{port}/proxy/"
            target = Target("sentinel", str(workers), url, roots, must_be_clean=True)
            row = run_target(plan, load, target, results)
            if workers == 1:
                below_saturation(plan, tools, load, [*references, target], row, service, tmp, results)
    return results


def below_saturation(
    plan: Plan, tools: Tools, load: Load, targets: list[Target], row: Row, service: Service, tmp: Path, results: Results
) -> None:
    """Sentinel x1's extras: every target at half its maximum rate, then its profile under load."""
    results.half_rate = row.load.rps / 2
    for target in targets:
        run_half_load(plan, load, target, results.half_rate, results)
    print("-> profile of Sentinel (1 process) under load, py-spy", flush=True)
    url = targets[-1].url
    results.profile, results.profile_headline = profile_sentinel(plan, tools, load, service, url, tmp)


# --- Report -------------------------------------------------------------------------------------


def table(headers: list[str], rows: list[list[str]]) -> str:
    align = ["---" if i == 0 else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


NONE = "-"  # an empty cell


def _ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _cores(row: Row, name: str) -> str:
    return f"{row.cores[name]:.2f}" if name in row.cores else NONE


def _direct(rows: list[Row]) -> Row | None:
    return next((row for row in rows if row.target == "direct"), None)


def _find(rows: list[Row], target: str, processes: str | None = None) -> Row | None:
    return next((r for r in rows if r.target == target and processes in (None, r.processes)), None)


def saturation_table(rows: list[Row]) -> str:
    headers = ["target", "processes", "rps", "p50 ms", "p99 ms", "non-2xx", "srv cores", "upstream cores"]
    headers += ["redis cores", "wrk cores", "other cores", "box cores", "srv CPU µs/req"]
    body = [
        [
            row.target,
            row.processes,
            f"{row.load.rps:,.0f}",
            _ms(row.load.p50_ms),
            _ms(row.load.p99_ms),
            f"{row.load.non2xx + row.load.socket_errors}",
            _cores(row, "srv"),
            _cores(row, "upstream"),
            _cores(row, "redis"),
            _cores(row, "gen"),
            _cores(row, "other"),
            _cores(row, "box"),
            f"{row.cores['srv'] / row.load.rps * 1e6:,.0f}" if row.load.rps else NONE,
        ]
        for row in rows
    ]
    return table(headers, body)


def latency_table(rows: list[Row], gen_label: str) -> str:
    """Rows of one-connection or half-load runs, with the p50 each adds over the direct call."""
    direct = _direct(rows)
    headers = ["target", "processes", "rps", "p50 ms", "p99 ms", "added p50 ms", "non-2xx"]
    headers += ["srv cores", f"{gen_label} cores", "other cores"]
    body = []
    for row in rows:
        added = NONE if direct is None or row is direct else _ms(row.load.p50_ms - direct.load.p50_ms)
        non2xx = f"{row.load.non2xx + row.load.socket_errors}"
        body.append([row.target, row.processes, f"{row.load.rps:,.0f}", _ms(row.load.p50_ms), _ms(row.load.p99_ms)])
        body[-1] += [added, non2xx, _cores(row, "srv"), _cores(row, "gen"), _cores(row, "other")]
    return table(headers, body)


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def reading(results: Results, cores: int) -> list[str]:
    """The paragraph that says what the figures mean, from the figures."""
    lines: list[str] = []
    one = _find(results.saturation, "sentinel", "1")
    two = _find(results.saturation, "sentinel", "2")
    if one is not None:
        per_req = one.cores["srv"] / one.load.rps * 1e6
        text = (
            f"- Throughput goal, ≥ {GOAL_RPS_PER_PROCESS:,} proxied req/s per web process with every check on: "
            f"{_verdict(one.load.rps >= GOAL_RPS_PER_PROCESS)}. One process served {one.load.rps:,.0f} req/s "
            f"({100 * one.load.rps / GOAL_RPS_PER_PROCESS:.0f} % of the goal) using {one.cores['srv']:.2f} core, "
            f"i.e. {per_req:,.0f} µs of CPU per request"
        )
        if one.cores["srv"] < 0.9:
            text += f"; with a whole core to itself it would reach about {1e6 / per_req:,.0f} req/s"
        lines.append(text + ".")
    if two is not None:
        lines.append(_two_processes(two, one, cores))
    lines += _reference_lines(results, one)
    if results.profile_headline:
        lines.append(results.profile_headline)
    half_one = _find(results.half, "sentinel")
    half_direct = _direct(results.half)
    if half_one is not None and half_direct is not None:
        added = half_one.load.p50_ms - half_direct.load.p50_ms
        lines.append(
            f"- Latency goal, < {GOAL_ADDED_P50_MS:g} ms added at p50 at half load: "
            f"{_verdict(added < GOAL_ADDED_P50_MS)} "
            f"at the load reached ({results.half_rate:,.0f} req/s, half of one process's maximum): p50 "
            f"{_ms(half_one.load.p50_ms)} ms through Sentinel against {_ms(half_direct.load.p50_ms)} ms direct, "
            f"+{_ms(added)} ms (p99 {_ms(half_one.load.p99_ms)} ms)."
        )
        if one is not None and one.load.rps < GOAL_RPS_PER_PROCESS:
            lines.append(
                f"  The goal's own operating point, {GOAL_RPS_PER_PROCESS // 2:,} req/s, is beyond what one "
                "process sustains, so it could not be measured there."
            )
    single_one = _find(results.single, "sentinel", "1")
    single_direct = _direct(results.single)
    if single_one is not None and single_direct is not None:
        lines.append(
            "- One connection, no queueing: Sentinel adds "
            f"{_ms(single_one.load.p50_ms - single_direct.load.p50_ms)} ms at p50 over the direct call"
            + (
                f", nginx {_ms(nginx.load.p50_ms - single_direct.load.p50_ms)} ms."
                if (nginx := _find(results.single, "nginx"))
                else "."
            )
        )
    runs = [("saturation", results.saturation), ("one connection", results.single), ("half load", results.half)]
    disturbed = [
        f"{kind}: {row.target} x{row.processes} ({', '.join(name for name, _ in row.others)})"
        for kind, rows in runs
        for row in rows
        if row.cores["other"] > OTHER_LIMIT
    ]
    if disturbed:
        lines.append(
            f"- Disturbed despite the retries by processes this script did not start (`other cores` over "
            f"{OTHER_LIMIT:g}): {'; '.join(disturbed)}. Those rows are less reliable."
        )
    return lines


def _reference_lines(results: Results, one: Row | None) -> list[str]:
    """How Sentinel's CPU per request compares with nginx's, and what bounds the reference rows."""
    nginx, direct = _find(results.saturation, "nginx"), _direct(results.saturation)
    if one is None or nginx is None or direct is None or not nginx.load.rps:
        return []
    nginx_us = nginx.cores["srv"] / nginx.load.rps * 1e6
    sentinel_us = one.cores["srv"] / one.load.rps * 1e6
    return [
        f"- nginx proxies at the mock upstream's pace ({nginx.load.rps:,.0f} req/s against {direct.load.rps:,.0f} "
        f"direct; the one-process mock is the bound at {nginx.cores.get('upstream', 0):.2f} core) for "
        f"{nginx_us:,.0f} µs of CPU per request; Sentinel spends {sentinel_us:,.0f} µs, "
        f"{sentinel_us / nginx_us:,.0f} times as much."
    ]


def _two_processes(two: Row, one: Row | None, cores: int) -> str:
    text = f"- Two processes served {two.load.rps:,.0f} req/s ({two.load.rps / 2:,.0f} per process"
    if one is not None:
        text += f", {two.load.rps / one.load.rps:.2f}x one process"
    text += f") using {two.cores['srv']:.2f} cores, with the box at {two.cores['box']:.2f} of {cores}"
    if two.cores["box"] >= cores - 0.15:
        return text + (
            f": saturated. wrk ({two.cores['gen']:.2f}), the mock upstream ({two.cores.get('upstream', 0):.2f}) "
            f"and Redis ({two.cores.get('redis', 0):.2f}) take their CPU from the same cores, so this row "
            "measures the machine more than the gateway."
        )
    return text + "."


def machine() -> dict[str, str]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


@dataclass(frozen=True)
class CodeState:
    """The code the servers run: a commit, and the files that differ from it (path -> content hash).
    This benchmark's own files, docs and tests are left out: they change nothing the servers load."""

    commit: str
    dirty: dict[str, str]

    def describe(self) -> str:
        return self.commit[:7] + (f" with uncommitted changes to {', '.join(sorted(self.dirty))}" if self.dirty else "")


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _served(path: str) -> bool:
    return not (path.startswith(("bench/", "docs/")) or "/tests/" in path or path.endswith(".md"))


def code_state(since: str | None = None) -> CodeState:
    """HEAD (or `since`) and the served files of the working tree that differ from it."""
    commit = since or _git("rev-parse", "HEAD").strip()
    changed = _git("diff", "--name-only", commit).splitlines()
    changed += _git("ls-files", "--others", "--exclude-standard").splitlines()
    dirty = {}
    for path in filter(_served, changed):
        file = REPO / path
        dirty[path] = hashlib.sha1(file.read_bytes(), usedforsecurity=False).hexdigest() if file.exists() else ""
    return CodeState(commit, dirty)


def commands_section(plan: Plan, results: Results, tools: Tools) -> list[str]:
    sat = results.saturation[0].load.command if results.saturation else "?"
    single = results.single[0].load.command if results.single else "?"
    half = results.half[0].load.command if results.half else "?"
    generator = "wrk" if tools.wrk else "the Python generator"
    return [
        f"- whole run: `.venv/bin/python bench/gateway.py --duration {_secs(plan.duration)} "
        f"--connections {plan.connections} --retries {plan.retries}`",
        "- mock upstream: `python -m gateway.mock_upstream --port P` (aiohttp, 1 process; echoes the request as JSON)",
        "- nginx: `nginx -p TMP -e TMP/nginx-error.log -c TMP/nginx.conf` with `worker_processes 1`, "
        '`access_log off`, `upstream { keepalive 128; }`, `proxy_http_version 1.1`, `Connection ""`',
        f"- Sentinel: `WEB_CONCURRENCY=1|2 LOG_LEVEL=warning CACHE_KEY_PREFIX={KEY_PREFIX} DATABASE_URL=… "
        "REDIS_URL=… SECRET_KEY=… python manage.py serve --port S` (production mode)",
        f"- each saturation row: warm-up with {generator} in rounds of {_secs(plan.warmup)} s until two in a row "
        f"agree within 5 % (at most {WARMUP_ROUNDS}), then `{sat}`",
        f"- each one-connection row: `{single}`",
        f"- half load (open loop, fixed rate, latency from each request's start): `{half}` after a "
        f"{_secs(plan.warmup)} s warm-up at the same rate",
        "- profile: `py-spy record --pid <web pid> --duration "
        f"{_secs(plan.profile_seconds)} --rate 200 --format raw --nolineno --threads` under the saturation load",
    ]


def render(plan: Plan, results: Results, tools: Tools) -> str:
    info = machine()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = [tool_version([tools.wrk, "-v"]) if tools.wrk else "wrk: not installed"]
    versions.append(tool_version([tools.nginx, "-v"]) if tools.nginx else "nginx: not installed")
    parts = [
        MARK_START,
        "## Gateway overhead (`bench/gateway.py`)",
        "",
        f"Recorded {date} at commit {results.code.describe() if results.code else '?'}.",
        f"Machine: {info['nproc']} vCPU ({info['cpu']}), Linux {info['kernel']}, Python {info['python']}; "
        f"{'; '.join(versions)}. The load generator, the servers, Redis and PostgreSQL all share these "
        "cores: read the CPU columns (cores = CPU seconds / wall seconds, from /proc) before the rates.",
        "",
        "What runs: the mock upstream; nginx as a reverse proxy in front of it (the reference); Sentinel in "
        "production mode (PostgreSQL, Redis) in front of it. A Sentinel request goes through everything: JWT "
        "verified, the local token bucket, the sliding-window limit in Redis (one EVALSHA), the circuit breaker "
        "in Redis (acquire and record, two EVALSHAs), the forwarder's pooled aiohttp client, and the metrics "
        "recorded per request (`on_complete`: Prometheus multiprocess files). The Redis calls go through "
        "`gateway/engine/resp.py` (one pipelined connection per process, hiredis, no timer per call), as does "
        "the fleet pressure exchange on each refresh tick. The bench tenant is "
        f"`vital` with overrides {TENANT_LIMITS}, so every limiter checks and none refuses. Not measured: the "
        "request log (SPEC 3, database rows), which is not built yet.",
        *[f"\nNote: {note}." for note in tools.notes],
        "",
        "### Commands",
        "",
        *commands_section(plan, results, tools),
        "",
        f"### Saturation: closed loop, {plan.connections} connections, {_secs(plan.duration)} s",
        "",
        "p50 under a closed loop is mostly queueing (about connections / rps). `srv` is the server under test "
        "(for the direct row, the mock itself), `srv CPU µs/req` its CPU per request; `other` is processes "
        f"this script did not start (a run with more than {OTHER_LIMIT:g} core there is measured again, up to "
        f"{plan.retries} times); `box` minus the processes is mostly the kernel's network work.",
        "",
        saturation_table(results.saturation),
        "",
        f"### One connection (no queueing), {_secs(plan.single_duration)} s",
        "",
        latency_table(results.single, "wrk" if tools.wrk else "gen"),
        "",
        f"### Half load: {results.half_rate:,.0f} req/s, half of Sentinel's 1-process maximum (open loop)",
        "",
        "Every target at the same fixed rate from the Python open-loop generator; the generator's own delays "
        "are in every row alike, so the added p50 is the figure to read.",
        "",
        latency_table(results.half, "gen"),
        "",
        "### Where a proxied request's CPU goes (Sentinel, 1 process, py-spy)",
        "",
        "Own time is where a sampled stack ends; µs/request is that share of the event-loop thread's CPU per "
        "request. C code (uvloop's loop and sockets, httptools, hiredis) and the kernel's work for a syscall "
        "count as the Python frame that called them: the event loop's own work shows as `Runner.run`.",
        "",
        *results.profile,
        "",
        "### Reading the figures",
        "",
        *reading(results, os.cpu_count() or 1),
        MARK_END,
    ]
    return "\n".join(parts)


def write_docs(path: Path, section: str) -> None:
    """Replaces the marked section, or appends it; the rest of the file stays as it was."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nFigures recorded by the scripts in `bench/`.\n"
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(MARK_END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --- Entry point --------------------------------------------------------------------------------


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so that every `finally` stops what it started


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["_loadgen"]:
        return loadgen_main(argv[1:])
    plan = parse_args(argv)
    if not Path("/proc/stat").exists():
        raise BenchError("needs Linux /proc for the CPU columns")
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    tools = prepare_tools()
    for note in tools.notes:
        print(f"note: {note}", flush=True)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sentinel-bench-")))
        results = run_all(plan, tools, stack, tmp)
    section = render(plan, results, tools)
    print("\n" + section)
    if results.failures:
        raise BenchError(
            "Sentinel answered errors, so these figures do not measure the proxy (docs not written):\n  "
            + "\n  ".join(results.failures)
        )
    if results.code is not None and code_state(since=results.code.commit) != results.code:
        raise BenchError(
            f"the code changed during the run (since {results.code.describe()}): the rows may measure two versions "
            "of it, so docs were not written; run again"
        )
    if plan.quick:
        print(f"\n--quick: {plan.docs} left as it was.")
    else:
        write_docs(plan.docs, section)
        print(f"\nwritten to {plan.docs}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as error:
        print(f"bench/gateway.py: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench/gateway.py: interrupted; processes stopped, scratch data dropped", file=sys.stderr)
        sys.exit(130)
