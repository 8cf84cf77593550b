"""Where a proxied request's CPU goes: ``py-spy record`` on the 1-process server under load.

py-spy samples every thread's stack 200 times a second (raw, collapsed format); only the event-loop
(main) thread's stacks are kept: py-spy also counts idle thread-pool workers as busy while they wait
for a CPU. The event-loop thread's own CPU seconds (psutil, per thread) divided by the requests
served during the recording give its µs per request, shared out by the samples: own time (where a
stack ends) by library and by frame, and the gateway engine's frames inclusively.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import REPO
from bench.common.cpu import thread_seconds
from bench.common.processes import Service
from bench.gateway.config import Plan, secs
from bench.gateway.load import Load

_STDLIB = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*)\)$")
# The per-request metrics (`on_complete`): prometheus_client's multiprocess values, the observers
# the gateway and observability declare, and the process identifier prometheus_client asks for on
# every update (core/prometheus.py).
_METRICS_PREFIXES = ("prometheus_client/", "observability/", "gateway/metrics.py", "core/prometheus.py")
_METRICS = f"Prometheus metrics ({', '.join(_METRICS_PREFIXES)})"
# uvicorn and Sentinel's protocol class and response cycle, which replace parts of it.
_HTTP_SERVER = "HTTP server (uvicorn/, gateway/http_server.py)"
# First match wins: the Redis client is Sentinel's own code, but listed apart from the rest of the
# engine (its time includes hiredis' C parser and packer, and the socket writes it makes).
AREAS = (
    ("gateway/engine/resp", "Redis client (gateway/engine/resp.py, hiredis)"),
    ("gateway/engine/", "Sentinel's gateway engine"),
    ("aiohttp/", "aiohttp (client to the upstream)"),
    *((prefix, _METRICS) for prefix in _METRICS_PREFIXES),
    ("redis/", "redis-py"),
    ("uvicorn/", _HTTP_SERVER),
    ("gateway/http_server", _HTTP_SERVER),
    ("jwt/", "PyJWT"),
    ("asyncio/", "asyncio and uvloop (event loop, sockets)"),
)


def short_frame(frame: str) -> str:
    """`handle (/work/main/gateway/engine/proxy.py)` → `handle (gateway/engine/proxy.py)`."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", _STDLIB, f"{REPO}/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match.group('func')} ({path})"


def area(frame: str) -> str:
    """The library a (shortened) frame belongs to, by its file's path; `other`."""
    path = frame.rpartition("(")[2]
    return next((name for prefix, name in AREAS if path.startswith(prefix)), "other")


@dataclass
class Samples:
    """Stacks of the event-loop thread (frames root first, sample count), and the samples of the
    other threads, which are left out."""

    stacks: list[tuple[list[str], int]] = field(default_factory=list)
    other_threads: int = 0

    @property
    def total(self) -> int:
        return sum(count for _, count in self.stacks)

    def own_by_frame(self) -> Counter[str]:
        """Samples by the frame a stack ends in."""
        own: Counter[str] = Counter()
        for frames, count in self.stacks:
            own[frames[-1]] += count
        return own

    def own_by_area(self) -> Counter[str]:
        """Samples by the library of the frame a stack ends in."""
        areas: Counter[str] = Counter()
        for frame, count in self.own_by_frame().items():
            areas[area(frame)] += count
        return areas

    def inclusive_engine(self) -> Counter[str]:
        """Samples by gateway-engine frame anywhere in the stack (each counted once a stack)."""
        inclusive: Counter[str] = Counter()
        for frames, count in self.stacks:
            for frame in set(frames):
                if "gateway/engine/" in frame:
                    inclusive[frame] += count
        return inclusive

    def own_by_function(self) -> Counter[str]:
        """Own samples by function, its comprehensions and generators (nested code objects) included."""
        functions: Counter[str] = Counter()
        for frames, count in self.stacks:
            func, _, place = frames[-1].partition(" (")
            functions[f"{func.split('.<locals>')[0]} ({place}"] += count
        return functions


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
        samples.stacks.append(([short_frame(frame) for frame in frames], int(count_text)))
    return samples


@dataclass(frozen=True)
class Profile:
    """A recording: its samples, the load during it (req/s, requests) and the event-loop thread's
    and the other threads' CPU seconds; or, when there is none, why (`skipped`)."""

    samples: Samples = field(default_factory=Samples)
    rps: float = 0.0
    requests: int = 0
    main_s: float = 0.0
    others_s: float = 0.0
    skipped: str = ""

    @property
    def us_per_request(self) -> float:
        return self.main_s / max(self.requests, 1) * 1e6


def profile_sentinel(plan: Plan, py_spy: str | None, load: Load, service: Service, url: str, tmp: Path) -> Profile:
    """py-spy record on the 1-process server while wrk (or the Python generator) loads `url`."""
    if py_spy is None:
        return Profile(skipped="py-spy is not installed (see the notes)")
    out = tmp / "profile.txt"
    args = [py_spy, "record", "--pid", str(service.pid), "--duration", secs(plan.profile_seconds)]
    args += ["--rate", "200", "--format", "raw", "--nolineno", "--threads", "--output", str(out)]
    before = thread_seconds(service.pid)
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
        return Profile(skipped=f"py-spy could not record the web process ({message[-300:]})")
    after = thread_seconds(service.pid)
    used = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    main_s = used.get(service.pid, 0.0)
    others_s = sum(seconds for tid, seconds in used.items() if tid != service.pid)
    samples = parse_raw_profile(out.read_text())
    return Profile(samples, result.rps, result.requests, main_s, others_s)
