"""`python -m bench.monitors`: can one worker keep 10,000 HTTP monitors on time?

Issue 11's goal: 10,000 HTTP monitors at a 60 s interval against a local server, one worker
process on this 2-core machine, every check on time (p99 scheduling lag under 1 s).

The run, on PostgreSQL and Redis (production mode), every process as the Procfile starts it:

1. A scratch database, migrated; one tenant; `--monitors` http monitors of the mock upstream's
   `/health`, their first due times spread evenly over one interval (a fleet created over time
   has no common phase; all due at once would measure a thundering herd, not a steady state).
   They are written with `bulk_create`: 10,000 calls of `monitor_create`, each resolving its target
   for the egress check, would only slow the set-up, and the set-up is not what is measured.
2. The mock upstream, one Celery beat and ONE Celery worker (the Procfile's line, its default
   concurrency), with `EGRESS_ALLOW_LOOPBACK=true` since the monitors' target is 127.0.0.1.
   The monitors are created `up`, as a settled fleet (see `create_monitors`).
3. WARMUP_INTERVALS interval of warm-up, then `--intervals` intervals measured. Over the measured window:
   checks per second, the scheduling lag (a check's start minus its due time, `CheckResult.lag_ms`,
   written by the worker) at p50/p99/max, checks that never ran (expected from the due times minus
   results), the worker's CPU per check (its whole process tree, psutil), beat's and PostgreSQL's
   CPU, and the rows written per second (PostgreSQL's own counters, `pg_stat_user_tables`,
   inserts + updates + deletes of Sentinel's tables).

The figures go to docs/benchmarks.md (section `monitors`) unless `--quick`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import DEFAULT_REDIS_URL, DOCS_PATH, BenchError
from bench.common.cli import markers, publish, run
from bench.common.cpu import CpuUse, cpu_between, cpu_snapshot
from bench.common.gitstate import CodeState, check_unchanged, code_state
from bench.common.markdown import count, machine, ms, table, us, utc_now
from bench.common.processes import Service, answers, start_service, stop_service, wait_serving
from bench.common.quiet import wait_for_benchmarks
from bench.common.scratch import delete_keys, manage, recreate_database, redis_client, server_env
from tests.support.net import free_port

PROG = "python -m bench.monitors"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/sentinel_bench_monitors"
KEY_PREFIX = "bench-monitors"
OTHER_BENCHMARKS = ("bench.gateway", "bench.rules", "bench.logpipe")
# The goal of issue 11, in milliseconds.
LAG_P99_GOAL_MS = 1000.0
# One interval of warm-up: every monitor has been checked once before the window opens.
WARMUP_INTERVALS = 1


@dataclass(frozen=True)
class Plan:
    monitors: int
    interval: int
    intervals: int
    quick: bool
    database_url: str
    redis_url: str
    docs: Path

    def command(self) -> str:
        if self.quick:
            return f"{PROG} --quick"
        return f"{PROG} --monitors {self.monitors} --interval {self.interval} --intervals {self.intervals}"


@dataclass
class Results:
    window_s: float = 0.0
    checks: int = 0
    expected: int = 0
    up: int = 0
    lag_ms: dict[str, float] = field(default_factory=dict)
    late_over_1s: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)
    rows_written: dict[str, int] = field(default_factory=dict)
    cpu: CpuUse | None = None


def parse_args(argv: Sequence[str]) -> Plan:
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--monitors", type=int, default=10_000, help="http monitors (10,000)")
    parser.add_argument("--interval", type=int, default=60, help="their interval in seconds (60; at least 10)")
    parser.add_argument("--intervals", type=int, default=3, help="intervals measured after the warm-up (3)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 500 monitors at 10 s, docs untouched")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="scratch database (dropped and created)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help=f"Redis; keys under {KEY_PREFIX}-<random>")
    parser.add_argument("--docs", type=Path, default=DOCS_PATH, help="markdown file to update")
    args = parser.parse_args(argv)
    if args.interval < 10:
        parser.error("--interval: monitors check at most every 10 s (SPEC 5)")
    quick = bool(args.quick)
    return Plan(
        monitors=500 if quick else args.monitors,
        interval=10 if quick else args.interval,
        intervals=2 if quick else args.intervals,
        quick=quick,
        database_url=args.database_url,
        redis_url=args.redis_url,
        docs=args.docs,
    )


# --- set-up ----------------------------------------------------------------------------------------


def django_setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


def create_monitors(plan: Plan, target: str, first_due: float) -> None:
    """One tenant and `plan.monitors` http monitors of `target`, the first due times spread evenly
    over [first_due, first_due + interval)."""
    from datetime import UTC, datetime

    from accounts.services import tenant_create
    from monitors.models import Monitor

    tenant = tenant_create(name="Bench monitors", slug="bench-monitors")
    step = plan.interval / plan.monitors
    Monitor.objects.bulk_create(
        (
            Monitor(
                tenant=tenant,
                name=f"bench-{n:05d}",
                kind="http",
                target=target,
                interval_seconds=plan.interval,
                timeout_seconds=min(10.0, plan.interval / 2),
                next_due_at=datetime.fromtimestamp(first_due + n * step, tz=UTC),
                # Settled, as in a fleet that has run for a while: a new monitor is `unknown` until
                # its second check flips it up, and 10,000 such flips at once (each a task and a
                # `monitor.up` event to evaluate) are a one-off burst, not the steady state measured.
                state="up",
                consecutive_successes=2,
            )
            for n in range(plan.monitors)
        ),
        batch_size=1000,
    )


def rows_written() -> dict[str, int]:
    """Rows inserted + updated + deleted so far, per table of this database (PostgreSQL's counters)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables")
        return {name: int(total) for name, total in cursor.fetchall()}


# --- the measured window -----------------------------------------------------------------------------


def measure(plan: Plan, services: dict[str, Service], first_due: float, results: Results) -> None:
    """Waits out WARMUP_INTERVALS intervals, then measures `plan.intervals` intervals."""
    start = first_due + WARMUP_INTERVALS * plan.interval
    wait_until_clock(start, services)
    rows_before, cpu_before = rows_written(), cpu_snapshot()
    end = start + plan.intervals * plan.interval
    wait_until_clock(end, services)
    # Checks due just before `end` finish within their timeout; their rows land after it.
    time.sleep(min(10.0, plan.interval / 2))
    cpu_after, rows_after = cpu_snapshot(), rows_written()
    results.window_s = end - start
    results.cpu = cpu_between(
        cpu_before,
        cpu_after,
        {name: service.pid for name, service in services.items()},
        named={"postgres": "postgres", "redis": "redis-server"},
    )
    results.rows_written = {
        name: rows_after.get(name, 0) - rows_before.get(name, 0)
        for name in rows_after
        if rows_after.get(name, 0) - rows_before.get(name, 0) > 0
    }
    read_checks(plan, start, end, results)


def wait_until_clock(moment: float, services: dict[str, Service]) -> None:
    """Sleeps until the wall clock reaches `moment`, failing early if a process died."""
    while (left := moment - time.time()) > 0:
        for service in services.values():
            if service.process.poll() is not None:
                raise BenchError(f"{service.name} exited ({service.process.returncode}):\n{service.tail()}")
        time.sleep(min(left, 1.0))


def read_checks(plan: Plan, start: float, end: float, results: Results) -> None:
    """Figures of the checks DUE in [start, end), computed by PostgreSQL (percentile_cont)."""
    from django.db import connection

    due_from = "to_timestamp(%s)"
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT count(*),
                   count(*) FILTER (WHERE outcome = 'up'),
                   count(*) FILTER (WHERE lag_ms > 1000),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY lag_ms),
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY lag_ms),
                   max(lag_ms),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
                   percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)
            FROM monitors_checkresult
            WHERE checked_at - make_interval(secs => coalesce(lag_ms, 0) / 1000.0) >= {due_from}
              AND checked_at - make_interval(secs => coalesce(lag_ms, 0) / 1000.0) < {due_from}
            """,  # noqa: S608 - no user input; the placeholders are psycopg's
            [start, end],
        )
        checks, up, late, lag50, lag99, lagmax, lat50, lat99 = cursor.fetchone()
    results.checks, results.up, results.late_over_1s = int(checks), int(up), int(late)
    results.lag_ms = {"p50": float(lag50 or 0), "p99": float(lag99 or 0), "max": float(lagmax or 0)}
    results.latency_ms = {"p50": float(lat50 or 0), "p99": float(lat99 or 0)}
    # Every monitor is due once per interval and the phases are spread evenly.
    results.expected = plan.monitors * plan.intervals


# --- report ---------------------------------------------------------------------------------------------


def render(plan: Plan, code: CodeState, results: Results) -> str:
    start, end = markers("monitors")
    box = machine()
    cpu = results.cpu
    assert cpu is not None
    per_check_us = cpu.seconds("worker") / max(results.checks, 1) * 1e6
    rate = results.checks / results.window_s
    missing = max(0, results.expected - results.checks)
    rows_s = sum(results.rows_written.values()) / results.window_s
    on_time = results.lag_ms["p99"] < LAG_P99_GOAL_MS and missing == 0
    figures = table(
        ["figure", "value"],
        [
            ["monitors, interval", f"{count(plan.monitors)}, every {plan.interval} s"],
            ["checks due in the window", count(results.expected)],
            ["checks run (up)", f"{count(results.checks)} ({count(results.up)})"],
            ["checks that never ran", count(missing)],
            ["checks per second", f"{rate:,.1f}"],
            ["scheduling lag p50 / p99 / max (ms)",
             f"{ms(results.lag_ms['p50'])} / {ms(results.lag_ms['p99'])} / {ms(results.lag_ms['max'])}"],
            ["checks started over 1 s late", count(results.late_over_1s)],
            ["target latency p50 / p99 (ms)", f"{ms(results.latency_ms['p50'])} / {ms(results.latency_ms['p99'])}"],
            ["worker CPU per check (µs)", us(per_check_us)],
            ["rows written per second", f"{rows_s:,.0f}"],
        ],
    )  # fmt: skip
    cores = table(
        ["process", "cores"],
        [
            [name, f"{cpu.cores.get(name, 0.0):.2f}"]
            for name in ("worker", "beat", "upstream", "postgres", "redis", "box")
        ],
    )
    writes = table(
        ["table", "rows/s"],
        [
            [name, f"{n / results.window_s:,.1f}"]
            for name, n in sorted(results.rows_written.items(), key=lambda i: -i[1])
        ],
    )
    verdict = (
        f"**Goal met**: every due check ran and the p99 lag is {ms(results.lag_ms['p99'])} ms (goal under 1 s)."
        if on_time
        else f"**Goal not met**: p99 lag {ms(results.lag_ms['p99'])} ms, {count(missing)} checks never ran (goal: "
        "p99 under 1 s, none missed)."
    )
    return "\n".join(
        [
            start,
            "## Monitors: scheduling 10,000 checks with one worker (`python -m bench.monitors`)",
            "",
            f"{utc_now()}, {code.describe()}, {box['nproc']} cores ({box['cpu']}), Python {box['python']}; "
            f"`{plan.command()}`. PostgreSQL and Redis, one Celery beat and one Celery worker as the Procfile "
            f"starts them, monitors of the mock upstream's `/health` with their first due times spread over one "
            f"interval and created `up` (settled, as a fleet that has run for a while); {WARMUP_INTERVALS} interval "
            f"of warm-up, then {plan.intervals} measured ({results.window_s:.0f} s).",
            "",
            figures,
            "",
            verdict,
            "",
            "CPU over the window (cores; `box` is the whole machine):",
            "",
            cores,
            "",
            "Rows written (PostgreSQL's `pg_stat_user_tables`: inserts, updates and deletes):",
            "",
            writes,
            end,
        ]
    )


def main(argv: Sequence[str]) -> int:
    plan = parse_args(argv)
    code = code_state()
    prefix = f"{KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    env = server_env(
        database_url=plan.database_url,
        redis_url=plan.redis_url,
        key_prefix=prefix,
        secret_key=uuid.uuid4().hex * 2,
        EGRESS_ALLOW_LOOPBACK="true",
    )
    results = Results()
    wait_for_benchmarks(OTHER_BENCHMARKS, 20.0)
    recreate_database(plan.database_url)
    services: dict[str, Service] = {}
    try:
        manage(["migrate", "--noinput"], env)
        django_setup(env)
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sentinel-bench-")))
            upstream_port = free_port()
            services["upstream"] = start_service(
                "upstream",
                [sys.executable, "-m", "gateway.mock_upstream", "--port", str(upstream_port)],
                env=env,
                logdir=tmp,
            )
            wait_serving(
                lambda: answers(upstream_port, "/health"), what="the mock upstream", service=services["upstream"]
            )
            # Monitors start due 15 s from now: the worker and beat are up by then.
            first_due = time.time() + 15.0
            print(f"1. {count(plan.monitors)} monitors at {plan.interval} s", flush=True)
            create_monitors(plan, f"http://127.0.0.1:{upstream_port}/health", first_due)
            print("2. one worker and one beat", flush=True)
            services["worker"] = start_service("worker", worker_command(), env=env, logdir=tmp)
            services["beat"] = start_service("beat", beat_command(tmp), env=env, logdir=tmp)
            print(f"3. {WARMUP_INTERVALS} interval of warm-up, then {plan.intervals} measured", flush=True)
            measure(plan, services, first_due, results)
    finally:
        for service in services.values():
            stop_service(service, grace=20)
        from django.db import connections

        connections.close_all()
        delete_keys(redis_client(plan.redis_url), f"{prefix}*")
        recreate_database(plan.database_url, create=False)

    def check() -> None:
        if results.checks == 0:
            raise BenchError("no check ran in the measured window: see the worker's and beat's logs")
        check_unchanged(code)

    publish(plan.docs, "monitors", render(plan, code, results), quick=plan.quick, check=check)
    return 0


def worker_command() -> list[str]:
    """The Procfile's worker line, its default concurrency included."""
    celery = str(Path(sys.executable).with_name("celery"))
    return [celery, "-A", "sentinel_site", "worker", "--loglevel", "warning", "--concurrency", "2",
            "-n", f"bench-worker-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle"]  # fmt: skip


def beat_command(tmp: Path) -> list[str]:
    celery = str(Path(sys.executable).with_name("celery"))
    return [celery, "-A", "sentinel_site", "beat", "--loglevel", "warning",
            "--schedule", str(tmp / "celerybeat-schedule"), "--pidfile", str(tmp / "beat.pid")]  # fmt: skip


if __name__ == "__main__":
    run(main, PROG, "processes stopped, scratch database dropped")
