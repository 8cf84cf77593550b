"""The runs, in order, and what each records.

Each target (direct, nginx, Sentinel x1, Sentinel x2) gets warm-up rounds until its rate is steady,
a measured closed-loop run at `--connections` and a one-connection run; Sentinel x1 is then driven,
with the direct call and nginx, at half its measured rate by the open-loop generator, and profiled
under load; then one process in each configuration of `bench.gateway.variants` (tracing, request
log, an earlier commit), in interleaved rounds. Every measured run records the CPU (cores) of the
process trees taking part, and is run again (up to `--retries` times, once the machine is quiet)
when processes not ours took more than `OTHER_LIMIT` core meanwhile: the machine is shared.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common.cpu import cpu_between, cpu_snapshot, local_pid
from bench.common.gitstate import CodeState, code_state
from bench.common.processes import Service
from bench.common.quiet import wait_quiet
from bench.common.scratch import recreate_database, redis_client
from bench.gateway.config import OTHER_LIMIT, WARMUP_ROUNDS, Plan
from bench.gateway.load import Load, LoadResult
from bench.gateway.profile import Profile, profile_sentinel
from bench.gateway.servers import (
    delete_bench_keys,
    prepare_data,
    sentinel,
    sentinel_env,
    start_reference_servers,
)
from bench.gateway.tools import Tools
from tests.support.net import free_port


@dataclass(frozen=True)
class Row:
    """One measured run of a target: its load figures and cores per column."""

    target: str
    processes: str
    load: LoadResult
    cores: dict[str, float]
    others: list[tuple[str, float]]  # the busiest processes this benchmark did not start


@dataclass(frozen=True)
class VariantRow:
    """One measured run of a configuration of the variants phase (`bench.gateway.variants`): its
    round (1-based) and the machine's 1-minute load average just before it."""

    round: int
    load_average: float
    row: Row


@dataclass
class Results:
    """Every row of the three tables, the half-load rate (req/s), the profile, the code measured
    and the failures that make the figures meaningless."""

    saturation: list[Row] = field(default_factory=list)
    single: list[Row] = field(default_factory=list)
    half: list[Row] = field(default_factory=list)
    variants: list[VariantRow] = field(default_factory=list)
    half_rate: float = 0.0
    profile: Profile | None = None
    code: CodeState | None = None  # what the servers were started from
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """A URL to load, the process trees measured while it is (column -> root pid)."""

    name: str
    processes: str
    url: str
    roots: dict[str, int]
    must_be_clean: bool = False  # non-2xx or socket errors invalidate the figures


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


def check_clean(target: Target, result: LoadResult, failures: list[str]) -> None:
    """Adds to `failures` a run of a target that must answer 2xx and did not always."""
    if target.must_be_clean and (result.non2xx or result.socket_errors):
        failures.append(
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


def round_run(plan: Plan, load: Load, target: Target, number: int) -> VariantRow:
    """One run of round `number` of an interleaved phase: a warm-up of `plan.warmup` seconds (the
    server was idle while the others were loaded), the 1-minute load average, then the measured
    closed-loop run at `plan.connections` for `plan.duration` seconds."""
    load.closed(target.url, connections=plan.connections, duration=plan.warmup)
    load_average = os.getloadavg()[0]
    run = functools.partial(load.closed, target.url, connections=plan.connections, duration=plan.duration)
    return VariantRow(number, load_average, measured(plan, target, run))


def run_target(plan: Plan, load: Load, target: Target, results: Results) -> Row:
    """Warm-up, the measured closed-loop run, then the single-connection run; the first's row."""
    print(f"-> {target.name} ({target.processes}): {target.url}", flush=True)
    warm_up(plan, load, target.url)
    row = measured(plan, target, lambda: load.closed(target.url, connections=plan.connections, duration=plan.duration))
    results.saturation.append(row)
    check_clean(target, row.load, results.failures)
    print(f"   {row.load.rps:,.0f} req/s, p50 {row.load.p50_ms:.3g} ms, p99 {row.load.p99_ms:.3g} ms", flush=True)
    single = measured(plan, target, lambda: load.closed(target.url, connections=1, duration=plan.single_duration))
    results.single.append(single)
    check_clean(target, single.load, results.failures)
    return row


def run_half_load(plan: Plan, load: Load, target: Target, rate: float, results: Results) -> None:
    """The open-loop generator at `rate` req/s: a short warm-up, then the measured run."""
    print(f"-> half load, {rate:,.0f} req/s: {target.name} ({target.processes})", flush=True)
    load.open(target.url, rate=rate, duration=plan.warmup)
    row = measured(plan, target, lambda: load.open(target.url, rate=rate, duration=plan.duration))
    results.half.append(row)
    check_clean(target, row.load, results.failures)
    print(f"   p50 {row.load.p50_ms:.3g} ms, p99 {row.load.p99_ms:.3g} ms", flush=True)


def below_saturation(
    plan: Plan, tools: Tools, load: Load, targets: list[Target], row: Row, service: Service, tmp: Path, results: Results
) -> None:
    """Sentinel x1's extras: every target at half its maximum rate, then its profile under load."""
    results.half_rate = row.load.rps / 2
    for target in targets:
        run_half_load(plan, load, target, results.half_rate, results)
    print("-> profile of Sentinel (1 process) under load, py-spy", flush=True)
    results.profile = profile_sentinel(plan, tools.py_spy, load, service, targets[-1].url, tmp)


@dataclass(frozen=True)
class Bench:
    """What every Sentinel run shares: the load, the servers' secret key, the bench user's token,
    the reference process trees (upstream, Redis), where logs go and what stops the servers."""

    plan: Plan
    load: Load
    secret_key: str
    jwt: str
    roots: dict[str, int]
    tmp: Path
    stack: contextlib.ExitStack


def run_all(plan: Plan, tools: Tools, stack: contextlib.ExitStack, tmp: Path) -> Results:
    """Every run; whatever it starts is stopped, and the scratch data dropped, when `stack` closes."""
    results = Results(code=code_state())
    secret_key = secrets.token_urlsafe(50)
    client = redis_client(plan.redis_url)
    delete_bench_keys(client)
    stack.callback(delete_bench_keys, client)
    upstream_port = free_port()
    stack.callback(recreate_database, plan.database_url, create=False)
    print("waiting for a quiet machine (other processes under 0.1 core) ...", flush=True)
    if not wait_quiet(OTHER_LIMIT):
        print("   still busy after 120 s: measuring anyway, disturbed runs will be retried", flush=True)
    print("preparing the scratch database and the bench tenant ...", flush=True)
    env = sentinel_env(plan, secret_key)
    jwt = prepare_data(plan.database_url, env, f"http://127.0.0.1:{upstream_port}")
    servers = start_reference_servers(stack, tools, tmp, env, upstream_port)
    load = Load(tools.wrk, jwt)
    redis_pid = local_pid(int(client.info("server").get("process_id", 0)))
    redis_roots = {"redis": redis_pid} if redis_pid else {}
    upstream = servers.upstream.pid
    references = [Target("direct", "1", f"http://127.0.0.1:{upstream_port}/", {"srv": upstream, **redis_roots})]
    if servers.nginx is not None:
        roots = {"srv": servers.nginx.pid, "upstream": upstream, **redis_roots}
        references.append(Target("nginx", "1 worker", f"http://127.0.0.1:{servers.nginx_port}/", roots))
    for target in references:
        run_target(plan, load, target, results)
    for workers in (1, 2):
        with sentinel(plan, secret_key, workers, jwt, tmp) as (service, port):
            roots = {"srv": service.pid, "upstream": upstream, **redis_roots}
            target = Target("sentinel", str(workers), f"http://127.0.0.1:{port}/proxy/", roots, must_be_clean=True)
            row = run_target(plan, load, target, results)
            if workers == 1:
                below_saturation(plan, tools, load, [*references, target], row, service, tmp, results)
        if workers == 1 and plan.variants:
            from bench.gateway.variants import run_variants  # it builds on this module

            bench = Bench(plan, load, secret_key, jwt, {"upstream": upstream, **redis_roots}, tmp, stack)
            run_variants(bench, f"http://127.0.0.1:{upstream_port}", plan.rounds, plan.baseline, results)
    return results
