"""`python -m bench.fraud`: the parts asked for, the report printed, then written to the docs.

See the package's docstring for what is measured and how.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import bench.fraud
from bench.common import BenchError
from bench.common.cli import publish, run
from bench.common.gitstate import check_unchanged, code_state
from bench.common.processes import Service, stop_service
from bench.common.quiet import wait_for_benchmarks
from bench.common.scratch import delete_keys, manage, recreate_database, redis_client, server_env
from bench.fraud.brain import BrainFigures, measure_brain, start_brain
from bench.fraud.config import GOAL_P99_MS, GOAL_RATE, KEY_PREFIX, OTHER_BENCHMARKS, PROG, SEARCH_STEP, parse_args
from bench.fraud.report import render
from bench.fraud.web import WebFigures, create_tenant_key, django_setup, measured, search, start_web


def main(argv: Sequence[str]) -> int:
    plan = parse_args(argv, description=(bench.fraud.__doc__ or "").split("\n\n")[0])
    code = code_state()
    web_parts = {"e2e", "fail-open"} & set(plan.parts)
    prefix = f"{KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    env = server_env(
        database_url=plan.database_url, redis_url=plan.redis_url, key_prefix=prefix, secret_key=uuid.uuid4().hex * 2
    )
    brain_figures: BrainFigures | None = None
    web = WebFigures()
    services: dict[str, Service] = {}
    wait_for_benchmarks(OTHER_BENCHMARKS, 20.0)
    if web_parts:
        redis_client(plan.redis_url)  # BenchError now rather than after the brain started
        recreate_database(plan.database_url)
    try:
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sentinel-bench-")))
            print("1. the brain" + (" (the scripted stand-in)" if plan.fake_brain else ""), flush=True)
            services["brain"], address = start_brain(plan, env, tmp)
            if "brain" in plan.parts:
                print(f"   (a) Score at {plan.concurrency} in flight for {plan.brain_duration:g} s", flush=True)
                brain_figures = measure_brain(plan, services["brain"], address)
            if web_parts:
                print("2. scratch database, bench tenant and key, one web process", flush=True)
                manage(["migrate", "--noinput"], env)
                django_setup(env)
                api_key = create_tenant_key()
                services["web"], port = start_web(env, address, api_key, tmp)
                roots = {"web": services["web"].pid, "brain": services["brain"].pid}
                if "e2e" in plan.parts:
                    print(f"   (b) {plan.rate:g} tx/s for {plan.duration:g} s", flush=True)
                    web.e2e = measured(plan, port, api_key, plan.rate, roots)
                    if plan.search and web.e2e.p99_ms < GOAL_P99_MS and web.e2e.clean:
                        print("   the highest rate with p99 under 35 ms:", flush=True)
                        web.search = search(plan, port, api_key, max(plan.rate, GOAL_RATE) + SEARCH_STEP)
                if "fail-open" in plan.parts:
                    print(f"   (c) the brain stopped; {plan.rate:g} tx/s for {plan.duration:g} s", flush=True)
                    stop_service(services.pop("brain"))
                    web.fail_open = measured(plan, port, api_key, plan.rate, {"web": services["web"].pid})
    finally:
        for service in services.values():
            stop_service(service)
        if web_parts:
            from django.db import connections

            connections.close_all()
            delete_keys(redis_client(plan.redis_url), f"{prefix}*")
            recreate_database(plan.database_url, create=False)

    def check() -> None:
        if web.e2e is not None and (web.e2e.result["non2xx"] or web.e2e.result["errors"]):
            raise BenchError(f"Sentinel answered errors end to end ({web.e2e.result}): figures not written")
        check_unchanged(code)

    publish(plan.docs, "fraud", render(plan, code, brain_figures, web), quick=plan.quick, check=check)
    return 0


if __name__ == "__main__":
    run(main, PROG, "processes stopped, scratch database dropped")
