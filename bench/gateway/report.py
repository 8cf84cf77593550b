"""The report: a run's figures rendered into ``report.md.tmpl`` (tables, the profile, the
sentences of ``sentences.md.tmpl`` that the figures call for), the gateway's section of
``docs/benchmarks.md`` (written by ``bench.common.cli.publish``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from bench.common.markdown import NONE, count, fill, machine, ms, table, utc_now
from bench.common.scratch import DROPPED_SETTINGS
from bench.gateway.config import (
    GOAL_CPU_TIMES_DIRECT,
    KEY_PREFIX,
    OTHER_LIMIT,
    TENANT_LIMITS,
    WARMUP_ROUNDS,
    Plan,
    secs,
)
from bench.gateway.figures import (
    TIMES_DIRECT,
    cores,
    direct_us,
    find_row,
    say,
    times,
    times_cell,
    us_per_request,
    variant_summary,
)
from bench.gateway.measure import Results, Row, VariantRow
from bench.gateway.profile import Profile
from bench.gateway.reading import cpu_goal, latency, p99, reading
from bench.gateway.tools import Tools, versions
from bench.gateway.variants import NO_LOG, OFF

TEMPLATE_PATH = Path(__file__).with_name("report.md.tmpl")
# The README's performance figures (between `<!-- bench:gateway-summary:start/end -->`).
SUMMARY_PATH = Path(__file__).with_name("summary.md.tmpl")
SUMMARY_NAME = "gateway-summary"


def _cpu_cells(row: Row, direct: float | None) -> list[str]:
    """A row's `srv CPU µs/req` and `TIMES_DIRECT` cells (empty when it served nothing)."""
    if not row.load.rps:
        return [NONE, NONE]
    us = us_per_request(row)
    return [count(us), times_cell(times(us, direct))]


def saturation_table(rows: list[Row]) -> str:
    """Closed-loop rows: rate, latency, failures, cores per column, the server's µs/request and
    that as a multiple of the direct row's (`TIMES_DIRECT`)."""
    headers = ["target", "processes", "rps", "p50 ms", "p99 ms", "non-2xx", "srv cores", "upstream cores"]
    headers += ["redis cores", "wrk cores", "other cores", "box cores", "srv CPU µs/req", TIMES_DIRECT]
    direct = direct_us(rows)
    body = []
    for row in rows:
        load = row.load
        body.append([row.target, row.processes, count(load.rps), ms(load.p50_ms), ms(load.p99_ms)])
        body[-1].append(str(load.non2xx + load.socket_errors))
        body[-1] += [cores(row, name) for name in ("srv", "upstream", "redis", "gen", "other", "box")]
        body[-1] += _cpu_cells(row, direct)
    return table(headers, body)


def latency_table(rows: list[Row], gen_label: str) -> str:
    """Rows of one-connection or half-load runs, with the p50 each adds over the direct call."""
    direct = find_row(rows, "direct")
    headers = ["target", "processes", "rps", "p50 ms", "p99 ms", "added p50 ms", "non-2xx"]
    headers += ["srv cores", f"{gen_label} cores", "other cores"]
    body = []
    for row in rows:
        added = NONE if direct is None or row is direct else ms(row.load.p50_ms - direct.load.p50_ms)
        non2xx = str(row.load.non2xx + row.load.socket_errors)
        body.append([row.target, row.processes, count(row.load.rps), ms(row.load.p50_ms), ms(row.load.p99_ms)])
        body[-1] += [added, non2xx, cores(row, "srv"), cores(row, "gen"), cores(row, "other")]
    return table(headers, body)


def variants_tables(rows: list[VariantRow], direct: float | None) -> str:
    """Every run of the variants phase in the order it ran, then each configuration over its
    rounds; `TIMES_DIRECT` against `direct`, the direct row's CPU µs per request in the saturation
    phase of the same run (None: no such row, empty cells)."""
    if not rows:
        return say("variants.skipped")
    headers = ["round", "configuration", "rps", "p50 ms", "p99 ms", "non-2xx", "srv cores", "sink cores"]
    headers += ["other cores", "box cores", "load avg (1 min)", "srv CPU µs/req", TIMES_DIRECT]
    body = []
    for run in rows:
        row, load = run.row, run.row.load
        body.append([str(run.round), row.target, count(load.rps), ms(load.p50_ms), ms(load.p99_ms)])
        body[-1] += [str(load.non2xx + load.socket_errors), cores(row, "srv"), cores(row, "sink")]
        body[-1] += [cores(row, "other"), cores(row, "box"), f"{run.load_average:.2f}"]
        body[-1] += _cpu_cells(row, direct)
    summary = variant_summary(rows)
    off = dict(summary).get(OFF)
    means = []
    for name, figures in summary:
        change = f"{100 * (figures.rps / off.rps - 1):+.1f} %" if off else NONE
        added = f"{figures.us - off.us:+,.0f}" if off else NONE
        means.append([name, count(figures.rps), f"{100 * figures.spread:.1f} %", change, count(figures.us), added])
        means[-1].append(times_cell(times(figures.us, direct)))
    headers_means = ["configuration", "rps (mean)", "rps spread", "rps vs tracing off", "srv CPU µs/req (mean)"]
    headers_means += ["µs/req vs tracing off", TIMES_DIRECT]
    return table(headers, body) + "\n\n" + table(headers_means, means)


def summary_table(results: Results) -> str:
    """The README's rows: direct, nginx and Sentinel (1 process) of the saturation phase, then
    Sentinel with and without the request log in the configurations phase (means over the rounds):
    rate, server CPU µs per request, that as a multiple of the direct row's, p99."""
    direct = direct_us(results.saturation)
    headers = ["target", "configuration", "rps", "srv CPU µs/req", TIMES_DIRECT, "p99 ms"]
    body = []
    for target, processes, label in (
        ("direct", None, "the mock upstream alone"),
        ("nginx", None, "1 worker, in front of the mock"),
        ("sentinel", "1", "1 process, every check on, the request log included"),
    ):
        row = find_row(results.saturation, target, processes)
        if row is not None:
            body.append([target, label, count(row.load.rps), *_cpu_cells(row, direct), ms(row.load.p99_ms)])
    summary = dict(variant_summary(results.variants))
    rounds = max((run.round for run in results.variants), default=0)
    for name in (OFF, NO_LOG):
        figures = summary.get(name)
        if figures is not None:
            label = f"1 process, `{name}`: mean of {rounds} round{'s' if rounds > 1 else ''}"
            cells = [count(figures.us), times_cell(times(figures.us, direct))]
            body.append(["sentinel", label, count(figures.rps), *cells, ms(figures.p99_ms)])
    return table(headers, body, left=2)


def render_summary(plan: Plan, results: Results) -> str:
    """The README's section, markers included: the run's command, the summary table, and the
    goals' bullets of the reading (CPU, added p50, p99)."""
    one = find_row(results.saturation, "sentinel", "1")
    bullets = cpu_goal(results, one) if one else []
    bullets += latency(results)
    bullets += p99(results, one, plan.connections) if one else []
    command = f".venv/bin/python -m bench.gateway --duration {secs(plan.duration)} --connections {plan.connections}"
    figures = {
        "command": f"{command} --retries {plan.retries}{_options(plan)}",
        "date": utc_now(),
        "commit": results.code.describe() if results.code else "?",
        "nproc": os.cpu_count() or 1,
        "connections": plan.connections,
        "table": summary_table(results),
        "reading": "\n".join(bullets),
    }
    return fill(SUMMARY_PATH, figures)


def _options(plan: Plan) -> str:
    """The command line's options after `--retries`: the configurations phase's."""
    options = " --no-variants" if not plan.variants else f" --rounds {plan.rounds}"
    return options + (f" --baseline {plan.baseline}" if plan.baseline and plan.variants else "")


def profile_section(profile: Profile | None, top: int = 10) -> str:
    """The profile's sentence and its three tables: own time by library, the `top` frames by own
    time, the engine's frames inclusively; or why there is none."""
    if profile is None or profile.skipped:
        return say("profile.skipped", reason=profile.skipped if profile else "no profile was taken")
    samples, us = profile.samples, profile.us_per_request
    total = samples.total
    if total == 0:
        return say("profile.empty")

    def shares(header: str, rows: list[tuple[str, int]], cell: Callable[[str], str] = str) -> str:
        body = [[cell(name), f"{100 * n / total:.1f} %", count(us * n / total)] for name, n in rows]
        return table([header, "share", "µs/request"], body)

    def code(frame: str) -> str:
        return f"`{frame}`"

    return say(
        "profile",
        samples=count(total),
        rps=count(profile.rps),
        main_s=f"{profile.main_s:.1f}",
        requests=count(profile.requests),
        us_per_request=count(us),
        others_s=f"{profile.others_s:.2f}",
        other_samples=count(samples.other_threads),
        areas_table=shares("own time, by library", samples.own_by_area().most_common()),
        top=top,
        frames_table=shares("frame", samples.own_by_frame().most_common(top), code),
        inclusive_table=shares("frame", samples.inclusive_engine().most_common(10), code),
    )


def _commands(plan: Plan, results: Results, tools: Tools) -> dict[str, str]:
    def first(rows: list[Row]) -> str:
        return rows[0].load.command if rows else "?"

    return {
        "generator": "wrk" if tools.wrk else "the Python generator",
        "saturation_command": first(results.saturation),
        "single_command": first(results.single),
        "half_command": first(results.half),
    }


def render(plan: Plan, results: Results, tools: Tools) -> str:
    """The whole marked section, markers included."""
    nproc = os.cpu_count() or 1
    figures = {
        **machine(),
        **_commands(plan, results, tools),
        "date": utc_now(),
        "commit": results.code.describe() if results.code else "?",
        "versions": "; ".join(versions(tools)),
        "tenant_limits": str(TENANT_LIMITS),
        "dropped_settings": ", ".join(f"`{name}`" for name in DROPPED_SETTINGS),
        "notes": "".join(f"\n{say('note.' + name)}\n" for name in tools.missing),
        "duration": secs(plan.duration),
        "connections": plan.connections,
        "retries": plan.retries,
        "key_prefix": KEY_PREFIX,
        "warmup": secs(plan.warmup),
        "warmup_rounds": WARMUP_ROUNDS,
        "profile_seconds": secs(plan.profile_seconds),
        "other_limit": f"{OTHER_LIMIT:g}",
        "cpu_goal": f"{GOAL_CPU_TIMES_DIRECT:g}",
        "saturation_table": saturation_table(results.saturation),
        "single_duration": secs(plan.single_duration),
        "single_table": latency_table(results.single, "wrk" if tools.wrk else "gen"),
        "half_rate": count(results.half_rate),
        "half_table": latency_table(results.half, "gen"),
        "profile": profile_section(results.profile),
        "rounds": plan.rounds,
        "options": _options(plan),
        "variants_tables": variants_tables(results.variants, direct_us(results.saturation)),
        "reading": "\n".join(reading(results, nproc, "wrk" if tools.wrk else "Python", plan.connections)),
    }
    return fill(TEMPLATE_PATH, figures)
