"""Parts (b) and (c): one web process in production mode with the brain, then without it.

The data: a scratch PostgreSQL database, migrated, and a bench tenant with an API key of scope
`transactions:write`, made through `accounts.services` in this process (Django set up on the
bench's environment, as bench.monitors does).
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import BenchError
from bench.common.cpu import CpuUse, cpu_between, cpu_snapshot
from bench.common.processes import Service, http_status, run_timed, start_service, stop_service, wait_serving
from bench.fraud.config import GOAL_P99_MS, SEARCH_MAX_RATE, SEARCH_SECONDS, SEARCH_STEP, WEB_ADMISSION_ENV, Plan
from tests.support.net import free_port

# The generator's own timeout plus margin: a run that lasts longer than this is stuck.
LOADGEN_SLACK_S = 60.0


@dataclass
class LoadFigures:
    """One load run of `bench.fraud.loadgen` (its JSON), with the CPU use over it."""

    rate: float
    result: dict[str, Any]
    cpu: CpuUse | None = None

    @property
    def p99_ms(self) -> float:
        return float(self.result["p99_ms"])

    @property
    def fail_open(self) -> int:
        return sum(self.result["fail_open"].values())

    @property
    def clean(self) -> bool:
        """Every answer a 2xx, none failed open: the brain scored them all."""
        return not (self.result["non2xx"] or self.result["errors"] or self.fail_open)


@dataclass
class WebFigures:
    e2e: LoadFigures | None = None
    search: list[LoadFigures] = field(default_factory=list)
    fail_open: LoadFigures | None = None


def django_setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


def create_tenant_key() -> str:
    """The bench tenant and its API key (scope transactions:write), through the services."""
    from accounts.models import Scope
    from accounts.services import api_key_create, tenant_create

    tenant = tenant_create(name="Bench fraud", slug="bench-fraud")
    _, key = api_key_create(tenant=tenant, name="bench", scopes=[Scope.TRANSACTIONS_WRITE.value])
    return str(key)


def probe(port: int, api_key: str) -> None:
    """One transaction, which must be answered 201 and scored; BenchError saying what is missing."""
    body = json.dumps(
        {"transaction_id": "bench-probe", "amount": 12.5, "currency": "EUR", "user_id": "bench-user"}
    ).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
        conn.request("POST", "/transaction", body=body, headers=headers)
        response = conn.getresponse()
        status, text = response.status, response.read().decode(errors="replace")
    finally:
        conn.close()
    if status == 404:
        raise BenchError("POST /transaction answered 404: the fraud fast path (fraud.engine) is not merged yet")
    if status != 201:
        raise BenchError(f"POST /transaction answered {status}: {text[:500]}")
    if not json.loads(text).get("scored"):
        raise BenchError(f"POST /transaction was not scored with the brain running: {text[:500]}")


def start_web(env: dict[str, str], brain_address: str, api_key: str, logdir: Path) -> tuple[Service, int]:
    """`manage.py serve` (one process) calling the brain at `brain_address`, answering transactions."""
    port = free_port()
    args = [sys.executable, "manage.py", "serve", "--port", str(port)]
    web_env = {**env, "FRAUD_BRAIN_ADDRESS": brain_address, **WEB_ADMISSION_ENV}
    web = start_service("web", args, env=web_env, logdir=logdir)

    def up() -> bool:
        http_status(port, "/health")  # OSError until it listens
        return True

    try:
        wait_serving(up, what="the web process", service=web)
        probe(port, api_key)
    except BaseException:
        stop_service(web)  # not yet the caller's to stop
        raise
    return web, port


def load(port: int, api_key: str, rate: float, duration: float) -> tuple[dict[str, Any], float]:
    """One run of the generator: (its figures, its CPU seconds)."""
    args = [sys.executable, "-m", "bench.fraud.loadgen", "--url", f"http://127.0.0.1:{port}/transaction",
            "--api-key", api_key, "--rate", f"{rate:g}", "--duration", f"{duration:g}"]  # fmt: skip
    output, cpu_s = run_timed(args, timeout=duration + LOADGEN_SLACK_S)
    return json.loads(output.strip().splitlines()[-1]), cpu_s


def measured(plan: Plan, port: int, api_key: str, rate: float, roots: dict[str, int]) -> LoadFigures:
    """A warm-up of `plan.warmup` s, then `plan.duration` s measured with the CPU of `roots`,
    PostgreSQL and Redis."""
    load(port, api_key, rate, plan.warmup)
    before = cpu_snapshot()
    result, gen_cpu_s = load(port, api_key, rate, plan.duration)
    cpu = cpu_between(
        before, cpu_snapshot(), roots, gen_cpu_s=gen_cpu_s, named={"postgres": "postgres", "redis": "redis-server"}
    )
    return LoadFigures(rate, result, cpu)


def search(plan: Plan, port: int, api_key: str, start_rate: float) -> list[LoadFigures]:
    """Rates from `start_rate` up by SEARCH_STEP, SEARCH_SECONDS each, until p99 reaches the goal or
    an answer is not a clean scored 2xx."""
    runs: list[LoadFigures] = []
    rate = start_rate
    while rate <= SEARCH_MAX_RATE:
        result, _ = load(port, api_key, rate, SEARCH_SECONDS)
        figures = LoadFigures(rate, result)
        runs.append(figures)
        print(f"   {rate:,.0f}/s: p99 {figures.p99_ms:.1f} ms, fail-open {figures.fail_open}", flush=True)
        if figures.p99_ms >= GOAL_P99_MS or not figures.clean:
            break
        rate += SEARCH_STEP
    return runs
