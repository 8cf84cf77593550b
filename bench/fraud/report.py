"""The section of docs/benchmarks.md: the figures of each part and the verdicts against the goals."""

from __future__ import annotations

from bench.common.cli import markers
from bench.common.gitstate import CodeState
from bench.common.markdown import NONE, count, machine, ms, table, us, utc_now
from bench.fraud.brain import BrainFigures
from bench.fraud.config import GOAL_FAIL_OPEN_P99_MS, GOAL_P99_MS, GOAL_RATE, Plan
from bench.fraud.web import LoadFigures, WebFigures

CPU_COLUMNS = ("web", "brain", "postgres", "redis", "gen", "box")


def _load_rows(name: str, figures: LoadFigures | None) -> list[str]:
    if figures is None:
        return [name, *[NONE] * 7]
    r = figures.result
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["fail_open"].items())) or "0"
    return [
        name,
        f"{figures.rate:,.0f}",
        f"{r['rps']:,.0f}",
        ms(r["p50_ms"]),
        ms(r["p99_ms"]),
        count(r["non2xx"] + r["errors"]),
        count(r["scored"]),
        reasons,
    ]


def _cpu_rows(web: WebFigures) -> list[list[str]]:
    rows = []
    for name, figures in (("end to end", web.e2e), ("fail-open", web.fail_open)):
        if figures is not None and figures.cpu is not None:
            cores = figures.cpu.cores
            rows.append([name, *(f"{cores.get(column, 0.0):.2f}" for column in CPU_COLUMNS)])
    return rows


def verdicts(web: WebFigures) -> list[str]:
    lines = []
    if web.e2e is not None:
        ok = web.e2e.rate >= GOAL_RATE and web.e2e.p99_ms < GOAL_P99_MS and web.e2e.clean
        lines.append(
            f"**End to end: goal {'met' if ok else 'not met'}**: p99 {ms(web.e2e.p99_ms)} ms at "
            f"{web.e2e.rate:,.0f} tx/s, {web.e2e.fail_open} failed open (goal: p99 under {GOAL_P99_MS:g} ms at "
            f"{GOAL_RATE:g} tx/s, every one scored)."
        )
    if web.search:
        passing = [run.rate for run in web.search if run.p99_ms < GOAL_P99_MS and run.clean]
        best = f"{max(passing):,.0f} tx/s" if passing else f"below {web.search[0].rate:,.0f} tx/s"
        lines.append(f"Highest rate with p99 under {GOAL_P99_MS:g} ms, every one scored: **{best}**.")
    if web.fail_open is not None:
        ok = web.fail_open.p99_ms < GOAL_FAIL_OPEN_P99_MS and web.fail_open.result["non2xx"] == 0
        lines.append(
            f"**Fail-open: goal {'met' if ok else 'not met'}**: p99 {ms(web.fail_open.p99_ms)} ms with the brain "
            f"stopped (goal under {GOAL_FAIL_OPEN_P99_MS:g} ms)."
        )
    return lines


def render(plan: Plan, code: CodeState, brain: BrainFigures | None, web: WebFigures) -> str:
    start, end = markers("fraud")
    box = machine()
    parts = [
        start,
        "## Fraud: scoring transactions (`python -m bench.fraud`)",
        "",
        f"{utc_now()}, {code.describe()}, {box['nproc']} cores ({box['cpu']}), Python {box['python']}; "
        f"`{plan.command()}`. The brain {'(the scripted stand-in) ' if plan.fake_brain else ''}as "
        "`manage.py run_brain` starts it, fault injection off.",
    ]
    if brain is not None:
        parts += [
            "",
            f"(a) The brain alone: one grpc.aio channel, {brain.concurrency} Score calls in flight, "
            f"{plan.brain_duration:g} s.",
            "",
            table(
                ["figure", "value"],
                [
                    ["scores per second", f"{brain.scores / brain.wall:,.0f}"],
                    ["latency p50 / p99 (ms)", f"{ms(brain.p50_ms)} / {ms(brain.p99_ms)}"],
                    ["brain CPU per score (µs)", us(brain.cpu_us)],
                    ["brain cores", f"{brain.brain_cores:.2f}"],
                    ["failed calls", count(brain.failed)],
                ],
            ),
        ]
    if web.e2e is not None or web.fail_open is not None:
        rows = [_load_rows("end to end", web.e2e), _load_rows("fail-open (brain stopped)", web.fail_open)]
        rows += [_load_rows(f"search {run.rate:,.0f}/s", run) for run in web.search]
        parts += [
            "",
            "(b, c) `POST /transaction` on one web process (`manage.py serve`, PostgreSQL and Redis), unique "
            f"transactions on a fixed schedule (open loop), {plan.warmup:g} s of warm-up then {plan.duration:g} s "
            "measured; (c) with the brain stopped and the breaker opened by the warm-up. Latency from each "
            "request's scheduled start.",
            "",
            table(["run", "tx/s sent", "answered/s", "p50 ms", "p99 ms", "errors", "scored", "fail-open"], rows),
            "",
            *[line + "\n" for line in verdicts(web)],
            "CPU over the measured window (cores; `gen` is the load generator, `box` the whole machine):",
            "",
            table(["run", *CPU_COLUMNS], _cpu_rows(web)),
        ]
    parts.append(end)
    return "\n".join(parts)
