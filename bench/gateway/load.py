"""Driving a URL: wrk for the closed loops when installed (else ``loadgen.py``), ``loadgen.py``
for the open loop; both read into a `LoadResult` with the generator's own CPU seconds."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass

from bench.common import BenchError
from bench.common.processes import run_timed
from bench.gateway.config import secs


@dataclass(frozen=True)
class LoadResult:
    """One run: req/s, latency percentiles (ms), failures, requests, the generator's CPU seconds,
    and the command as the report shows it (the token hidden)."""

    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    requests: int
    gen_cpu_s: float
    command: str


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _wrk_ms(text: str, percent: str) -> float:
    match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.MULTILINE)
    if match is None:
        raise BenchError(f"no {percent}% latency in wrk's output:\n{text}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(text: str, cpu_s: float, command: str) -> LoadResult:
    """wrk's `--latency` report; BenchError when it is not one."""
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
    """Drives a URL with the bench user's token: wrk (`wrk` its path) or the Python generator."""

    wrk: str | None
    jwt: str

    def closed(self, url: str, *, connections: int, duration: float) -> LoadResult:
        """`connections` connections, each sending as soon as answered, for `duration` s."""
        if self.wrk is None:
            return self._python(url, ["--connections", str(connections)], duration)
        # --latency only adds the percentiles to the report; warm-ups are parsed and discarded too.
        args = [self.wrk, f"-t{min(2, connections)}", f"-c{connections}", f"-d{secs(duration)}s", "--latency"]
        args += ["-H", f"Authorization: Bearer {self.jwt}", url]
        shown = " ".join([*args[1:-3], '-H "Authorization: Bearer $JWT"', url])
        text, cpu = run_timed(args, timeout=duration + 60)
        return parse_wrk(text, cpu, f"wrk {shown}")

    def open(self, url: str, *, rate: float, duration: float) -> LoadResult:
        """Requests started at `rate` per second for `duration` s, whatever the answers do."""
        return self._python(url, ["--rate", f"{rate:.0f}"], duration)

    def _python(self, url: str, mode: list[str], duration: float) -> LoadResult:
        args = [sys.executable, "-m", "bench.gateway.loadgen", "--url", url, *mode]
        args += ["--duration", secs(duration), "--jwt", self.jwt]
        text, cpu = run_timed(args, timeout=duration + 120)
        data = json.loads(text.strip().splitlines()[-1])
        shown = " ".join(["python -m bench.gateway.loadgen", *mode, "--duration", secs(duration), url])
        return LoadResult(**data, gen_cpu_s=cpu, command=shown)
