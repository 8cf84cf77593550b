"""`python -m bench.logpipe`: the request log's cost, in rows per second written and in gateway
throughput, on PostgreSQL.

1. Rows per second into the partitioned `observability_requestlog` (six indexes), 1,000-row
   batches: the writer's COPY (text format, with its ledger row) against the ORM's `bulk_create`
   (the SQLite path, here on PostgreSQL so both meet the same table).
2. The gateway's throughput with the request log on and off, in the same run: one web process
   (`manage.py serve`, production mode) in front of the mock upstream, driven by wrk with 64
   keep-alive connections; `REQUEST_LOG_ENABLED` alternates between rounds (on, off, off, on,
   ...), so drift on a shared machine falls on both sides. With the log on, the rows written
   after the process stopped must cover every request wrk counted, or the figures are refused.

The figures go to docs/benchmarks.md (section `logpipe`) unless `--quick`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import DEFAULT_REDIS_URL, DOCS_PATH, BenchError
from bench.common.cli import markers, publish, run
from bench.common.gitstate import CodeState, check_unchanged, code_state
from bench.common.markdown import count, machine, table, utc_now
from bench.common.processes import answers, start_service, stop_service, wait_serving
from bench.common.quiet import wait_for_benchmarks
from bench.common.scratch import delete_keys, manage, recreate_database, redis_client, server_env
from bench.gateway.config import TENANT_LIMITS
from bench.gateway.load import Load
from bench.gateway.tools import find_tools
from tests.support.net import free_port

PROG = "python -m bench.logpipe"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/sentinel_bench_logpipe"
KEY_PREFIX = "bench-logpipe"
OTHER_BENCHMARKS = ("bench.gateway", "bench.rules")
BATCH_ROWS = 1000
CONNECTIONS = 64


@dataclass(frozen=True)
class Plan:
    rows: int
    seconds: float
    rounds: int
    quick: bool
    database_url: str
    redis_url: str
    docs: Path

    def command(self) -> str:
        return PROG if not self.quick else f"{PROG} --quick"


@dataclass
class Results:
    copy_rows_s: list[float] = field(default_factory=list)
    orm_rows_s: list[float] = field(default_factory=list)
    rps: dict[bool, list[float]] = field(default_factory=lambda: {True: [], False: []})
    unlogged: list[str] = field(default_factory=list)  # requests wrk counted that found no row


def parse_args(argv: Sequence[str]) -> Plan:
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows written per method (100,000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each throughput run (10)")
    parser.add_argument("--rounds", type=int, default=3, help="on/off pairs of throughput runs (3)")
    parser.add_argument("--quick", action="store_true", help="smoke test: short runs, docs/benchmarks.md untouched")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="scratch database (dropped and created)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help=f"Redis; keys under {KEY_PREFIX}-<random>")
    parser.add_argument("--docs", type=Path, default=DOCS_PATH, help="markdown file to update")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    return Plan(
        rows=5_000 if quick else args.rows,
        seconds=2.0 if quick else args.seconds,
        rounds=1 if quick else args.rounds,
        quick=quick,
        database_url=args.database_url,
        redis_url=args.redis_url,
        docs=args.docs,
    )


# --- 1. rows per second ------------------------------------------------------------------------


def measure_rows(plan: Plan, env: dict[str, str], results: Results) -> None:
    """COPY and bulk_create, twice each, alternating, on this process's own Django setup."""
    os.environ.update(env)
    import django

    django.setup()
    from observability.models import RequestLog

    rows = sample_rows(plan.rows)
    for _ in range(2):
        results.copy_rows_s.append(timed_rows(rows, copy_rows))
        results.orm_rows_s.append(timed_rows(rows[: max(BATCH_ROWS, plan.rows // 5)], orm_rows))
    RequestLog.objects.all().delete()


def sample_rows(total: int) -> list[tuple[object, ...]]:
    from gateway.engine.proxy import RequestRecord
    from observability.request_log.rows import record_row

    now = time.time()
    return [
        record_row(
            RequestRecord(
                correlation_id=uuid.uuid4().hex, trace_id=uuid.uuid4().hex, route="/proxy/", tenant_key="bench",
                tier="vital", method="GET", path=f"/proxy/items/{n}", status=200, decision="forwarded",
                latency_ms=0.8, upstream="http://127.0.0.1:8080", upstream_latency_ms=0.4, client_ip="127.0.0.1",
                user_agent="wrk", arrived_at=now + n / 10_000, route_id=1, principal="1",
            )
        )
        for n in range(total)
    ]  # fmt: skip


def timed_rows(rows: list[tuple[object, ...]], write: object) -> float:
    started = time.perf_counter()
    write(rows)  # type: ignore[operator]
    return len(rows) / (time.perf_counter() - started)


def copy_rows(rows: list[tuple[object, ...]]) -> None:
    import asyncio

    from django.conf import settings

    from core.db import postgres_connect_kwargs
    from observability.request_log.backends import PostgresBackend

    async def write_all() -> None:
        backend = PostgresBackend(
            postgres_connect_kwargs(settings.DATABASES["default"], application_name="sentinel-request-log")
        )
        await backend.prepare(sorted({row[0].date() for row in rows}))  # type: ignore[attr-defined]
        for start in range(0, len(rows), BATCH_ROWS):
            await backend.write(uuid.uuid4(), rows[start : start + BATCH_ROWS])
        await backend.close()

    asyncio.run(write_all())


def orm_rows(rows: list[tuple[object, ...]]) -> None:
    from observability.services import request_log_rows_insert

    for start in range(0, len(rows), BATCH_ROWS):
        request_log_rows_insert(rows=rows[start : start + BATCH_ROWS])


# --- 2. gateway throughput with the log on and off ------------------------------------------------


def measure_throughput(plan: Plan, env: dict[str, str], load: Load, tmp: Path, results: Results) -> None:
    from observability.models import RequestLog

    upstream_port = free_port()
    upstream = start_service(
        "upstream", [sys.executable, "-m", "gateway.mock_upstream", "--port", str(upstream_port)], env=env, logdir=tmp
    )
    try:
        wait_serving(lambda: answers(upstream_port, "/health"), what="the mock upstream", service=upstream)
        jwt = json.loads(
            manage(["bench_setup", "--upstream", f"http://127.0.0.1:{upstream_port}", "--limits",
                    json.dumps(TENANT_LIMITS)], env).strip().splitlines()[-1]
        )["jwt"]  # fmt: skip
        load = Load(load.wrk, jwt)
        for round_ in range(plan.rounds):
            for logged in (True, False) if round_ % 2 == 0 else (False, True):
                before = RequestLog.objects.count()
                requests = one_run(plan, env, load, tmp, logged, results)
                written = RequestLog.objects.count() - before
                if logged and written < requests:
                    results.unlogged.append(f"round {round_ + 1}: {requests} requests, {written} rows")
    finally:
        stop_service(upstream)


def one_run(plan: Plan, env: dict[str, str], load: Load, tmp: Path, logged: bool, results: Results) -> int:
    """One web process with the log on or off: a warm-up, then the measured run; returns the
    requests wrk counted in both (the process is stopped, so its queue is written, before this
    returns)."""
    port = free_port()
    args = [sys.executable, "manage.py", "serve", "--port", str(port)]
    service = start_service("web", args, env={**env, "REQUEST_LOG_ENABLED": str(logged).lower()}, logdir=tmp)
    try:
        wait_serving(
            lambda: answers(port, "/proxy/health", {"Authorization": f"Bearer {load.jwt}"}),
            what="the web process",
            service=service,
        )
        url = f"http://127.0.0.1:{port}/proxy/health"
        warm = load.closed(url, connections=CONNECTIONS, duration=max(1.0, plan.seconds / 5))
        measured = load.closed(url, connections=CONNECTIONS, duration=plan.seconds)
        if measured.non2xx or measured.socket_errors:
            raise BenchError(f"{measured.non2xx} non-2xx and {measured.socket_errors} socket errors: {measured}")
        results.rps[logged].append(measured.rps)
        print(f"   log {'on ' if logged else 'off'}: {measured.rps:,.0f} req/s", flush=True)
        return warm.requests + measured.requests
    finally:
        stop_service(service, grace=30)


# --- report ---------------------------------------------------------------------------------------


def render(plan: Plan, code: CodeState, results: Results) -> str:
    start, end = markers("logpipe")
    box = machine()
    on, off = statistics.median(results.rps[True]), statistics.median(results.rps[False])
    cost = 100 * (off - on) / off
    rows_table = table(
        ["writer", "rows/s (best of 2)", "runs"],
        [
            ["COPY (text) + ledger, psycopg 3", count(max(results.copy_rows_s)),
             ", ".join(count(v) for v in results.copy_rows_s)],
            ["`bulk_create` (the SQLite path)", count(max(results.orm_rows_s)),
             ", ".join(count(v) for v in results.orm_rows_s)],
        ],
    )  # fmt: skip
    rps_table = table(
        ["request log", "req/s (median)", "runs"],
        [
            ["off", count(off), ", ".join(count(v) for v in results.rps[False])],
            ["on", count(on), ", ".join(count(v) for v in results.rps[True])],
        ],
    )
    return "\n".join(
        [
            start,
            "## Request log pipeline (`python -m bench.logpipe`)",
            "",
            f"{utc_now()}, {code.describe()}, {box['nproc']} cores ({box['cpu']}), Python {box['python']}; "
            f"`{plan.command()}`.",
            "",
            f"Rows written into the partitioned `observability_requestlog` in {BATCH_ROWS:,}-row batches "
            f"({count(plan.rows)} rows for COPY, a fifth of that for `bulk_create`):",
            "",
            rows_table,
            "",
            f"Gateway throughput, one web process, wrk with {CONNECTIONS} keep-alive connections for "
            f"{plan.seconds:g} s a run, {plan.rounds} on/off pairs alternating; every request of the "
            "'on' runs was found in the log after the process stopped:",
            "",
            rps_table,
            "",
            f"The request log costs **{cost:.1f} %** of the proxy's throughput (goal: under 5 %; "
            f"COPY writes {max(results.copy_rows_s) / max(results.orm_rows_s):.1f} times the rows of `bulk_create`).",
            end,
        ]
    )


def main(argv: Sequence[str]) -> int:
    plan = parse_args(argv)
    code = code_state()
    tools = find_tools()
    prefix = f"{KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    env = server_env(
        database_url=plan.database_url, redis_url=plan.redis_url, key_prefix=prefix, secret_key=uuid.uuid4().hex * 2
    )
    results = Results()
    wait_for_benchmarks(OTHER_BENCHMARKS, 20.0)
    recreate_database(plan.database_url)
    try:
        manage(["migrate", "--noinput"], env)
        print("1. rows per second", flush=True)
        measure_rows(plan, env, results)
        print("2. gateway throughput, request log on and off", flush=True)
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sentinel-bench-")))
            measure_throughput(plan, env, Load(tools.wrk, ""), tmp, results)
    finally:
        from django.db import connections

        connections.close_all()
        delete_keys(redis_client(plan.redis_url), f"{prefix}*")
        recreate_database(plan.database_url, create=False)

    def check() -> None:
        if results.unlogged:
            raise BenchError("requests missing from the log: " + "; ".join(results.unlogged))
        check_unchanged(code)

    publish(plan.docs, "logpipe", render(plan, code, results), quick=plan.quick, check=check)
    return 0


if __name__ == "__main__":
    run(main, PROG, "processes stopped, scratch database dropped")
