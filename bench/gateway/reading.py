""" "Reading the figures": the report's closing bullets, each said only when its figures exist —
issue 13's goals met or not (CPU per request against the direct row's, with and without the
request log; the p50 added at half load; p99 at saturation against the one recorded before), the
rate, two processes against one, Sentinel against nginx, the profile's headline, the latency added
on one connection, tracing, the request log and an earlier commit against tracing off, and the
rows that other processes disturbed despite the retries."""

from __future__ import annotations

import statistics

from bench.common.markdown import NONE, count, ms
from bench.gateway.config import (
    EARLIER_GOAL_RPS_PER_PROCESS,
    GOAL_ADDED_P50_MS,
    GOAL_CPU_TIMES_DIRECT,
    OTHER_LIMIT,
    P99_BEFORE_COMMIT,
    P99_BEFORE_CONNECTIONS,
    P99_BEFORE_DIRECT_MS,
    P99_BEFORE_MS,
)
from bench.gateway.figures import direct_us, find_row, say, us_per_request, variant_summary
from bench.gateway.measure import Results, Row
from bench.gateway.profile import Profile
from bench.gateway.variants import NO_LOG, OFF


def _verdict(ok: bool) -> str:
    return say("verdict.met" if ok else "verdict.not_met")


def _times(ratio: float) -> str:
    return f"{ratio:.2f}"


def cpu_goal(results: Results, one: Row) -> list[str]:
    """The CPU goal: one process's server CPU µs per request at most `GOAL_CPU_TIMES_DIRECT` times
    the direct row's of the same run, judged on the ratio as written (2 decimals); nothing without
    a direct row."""
    direct = direct_us(results.saturation)
    if direct is None or not one.load.rps:
        return []
    sentinel = us_per_request(one)
    ratio = sentinel / direct
    return [
        say(
            "reading.cpu",
            goal=f"{GOAL_CPU_TIMES_DIRECT:g}",
            verdict=_verdict(float(_times(ratio)) <= GOAL_CPU_TIMES_DIRECT),
            us=count(sentinel),
            direct_us=count(direct),
            times=_times(ratio),
        )
    ]


def request_log(results: Results) -> list[str]:
    """CPU per request with and without the request log (the variants' `tracing off` and
    `tracing off, request log off`, means over the rounds), each as a multiple of the saturation
    phase's direct row; nothing when either is missing."""
    summary = dict(variant_summary(results.variants))
    on, off, direct = summary.get(OFF), summary.get(NO_LOG), direct_us(results.saturation)
    if on is None or off is None or direct is None:
        return []
    rounds = max(row.round for row in results.variants)
    return [
        say(
            "reading.request_log",
            rounds=rounds,
            plural="s" if rounds > 1 else "",
            on=OFF,
            on_us=count(on.us),
            on_times=_times(on.us / direct),
            off=NO_LOG,
            off_us=count(off.us),
            off_times=_times(off.us / direct),
            log_us=f"{on.us - off.us:+,.0f}",
            log_times=f"{(on.us - off.us) / direct:+.2f}",
        )
    ]


def rate(one: Row) -> str:
    """One process's rate and CPU, and its share of an earlier issue's throughput goal (no
    verdict: issue 13 judges the CPU ratio instead)."""
    per_req = us_per_request(one)
    # Below 0.9 core the process was not the bound: say what a whole core would give.
    headroom = say("reading.headroom", rps=count(1e6 / per_req)) if one.cores["srv"] < 0.9 else ""
    return say(
        "reading.rate",
        goal=count(EARLIER_GOAL_RPS_PER_PROCESS),
        rps=count(one.load.rps),
        percent=f"{100 * one.load.rps / EARLIER_GOAL_RPS_PER_PROCESS:.0f}",
        cores=f"{one.cores['srv']:.2f}",
        us=count(per_req),
        headroom=headroom,
    )


def p99(results: Results, one: Row, connections: int) -> list[str]:
    """One process's p99 at saturation against the one recorded before issue 13
    (`P99_BEFORE_MS` at `P99_BEFORE_COMMIT`), judged as written (`ms`) and only at the same number
    of connections."""
    written = ms(one.load.p99_ms)
    figures = {
        "connections": connections,
        "p99": written,
        "before": ms(P99_BEFORE_MS),
        "commit": P99_BEFORE_COMMIT,
    }
    if connections != P99_BEFORE_CONNECTIONS:
        return [say("reading.p99.other_load", before_connections=P99_BEFORE_CONNECTIONS, **figures)]
    direct = find_row(results.saturation, "direct")
    return [
        say(
            "reading.p99",
            verdict=_verdict(float(written) <= P99_BEFORE_MS),
            direct_p99=ms(direct.load.p99_ms) if direct is not None else NONE,
            before_direct=ms(P99_BEFORE_DIRECT_MS),
            **figures,
        )
    ]


def two_processes(two: Row, one: Row | None, nproc: int, generator: str) -> str:
    """Two processes against one, and whether the box, not the gateway, was the bound."""
    versus_one = say("reading.two.versus_one", ratio=f"{two.load.rps / one.load.rps:.2f}") if one else ""
    saturated = ""
    # Within 0.15 core of every core busy: the generator, upstream and Redis share the server's cores.
    if two.cores["box"] >= nproc - 0.15:
        saturated = say(
            "reading.two.saturated",
            generator=generator,
            gen=f"{two.cores['gen']:.2f}",
            upstream=f"{two.cores.get('upstream', 0):.2f}",
            redis=f"{two.cores.get('redis', 0):.2f}",
        )
    return say(
        "reading.two",
        rps=count(two.load.rps),
        per_process=count(two.load.rps / 2),
        versus_one=versus_one,
        cores=f"{two.cores['srv']:.2f}",
        box=f"{two.cores['box']:.2f}",
        nproc=nproc,
        saturated=saturated,
    )


def reference(results: Results, one: Row) -> list[str]:
    """How Sentinel's CPU per request compares with nginx's."""
    nginx, direct = find_row(results.saturation, "nginx"), find_row(results.saturation, "direct")
    if nginx is None or direct is None or not nginx.load.rps:
        return []
    nginx_us, sentinel_us = us_per_request(nginx), us_per_request(one)
    return [
        say(
            "reading.reference",
            nginx_rps=count(nginx.load.rps),
            direct_rps=count(direct.load.rps),
            upstream=f"{nginx.cores.get('upstream', 0):.2f}",
            nginx_us=count(nginx_us),
            sentinel_us=count(sentinel_us),
            times=count(sentinel_us / nginx_us),
        )
    ]


def profile_headline(profile: Profile | None) -> list[str]:
    """The libraries' shares of own time, and the costliest function (its comprehensions and
    generators included)."""
    if profile is None or not profile.samples.total:
        return []
    samples, us = profile.samples, profile.us_per_request
    total = samples.total
    shares = ", ".join(f"{name} {100 * n / total:.0f} %" for name, n in samples.own_by_area().most_common())
    frame, n = samples.own_by_function().most_common(1)[0]
    return [
        say(
            "reading.profile",
            us=count(us),
            shares=shares,
            frame=frame,
            percent=f"{100 * n / total:.0f}",
            frame_us=count(us * n / total),
        )
    ]


def _added_p50(rows: list[Row], processes: str | None = None) -> tuple[Row, Row, float] | None:
    """Sentinel's row (of `processes`), the direct call's, and the p50 Sentinel adds (ms); None
    when either row is missing."""
    sentinel, direct = find_row(rows, "sentinel", processes), find_row(rows, "direct")
    if sentinel is None or direct is None:
        return None
    return sentinel, direct, sentinel.load.p50_ms - direct.load.p50_ms


def latency(results: Results) -> list[str]:
    """The latency goal at half load, against the direct call at the same rate."""
    found = _added_p50(results.half)
    if found is None:
        return []
    sentinel, direct, added = found
    return [
        say(
            "reading.latency",
            goal=f"{GOAL_ADDED_P50_MS:g}",
            verdict=_verdict(added < GOAL_ADDED_P50_MS),
            rate=count(results.half_rate),
            sentinel_p50=ms(sentinel.load.p50_ms),
            direct_p50=ms(direct.load.p50_ms),
            added=ms(added),
            sentinel_p99=ms(sentinel.load.p99_ms),
        )
    ]


def single(results: Results) -> list[str]:
    """What Sentinel (and nginx) add at p50 on one connection."""
    found = _added_p50(results.single, "1")
    if found is None:
        return []
    _, direct, added = found
    nginx = find_row(results.single, "nginx")
    nginx_part = say("reading.single.nginx", added=ms(nginx.load.p50_ms - direct.load.p50_ms)) if nginx else ""
    return [say("reading.single", added=ms(added), nginx=nginx_part)]


def variants(results: Results) -> list[str]:
    """Each configuration of the variants phase against tracing off, by the mean over the rounds,
    with the rounds' spread as the noise to read the differences against."""
    summary = dict(variant_summary(results.variants))
    off = summary.get(OFF)
    if off is None:
        return []
    lines = []
    for name, figures in summary.items():
        if name == OFF:
            continue
        key = "reading.variant.baseline" if name.startswith("commit ") else "reading.variant"
        lines.append(
            say(
                key,
                config=name,
                commit=name.rsplit(" ", 1)[-1],
                rps=count(figures.rps),
                off_rps=count(off.rps),
                change=f"{100 * (figures.rps / off.rps - 1):+.1f}",
                us=count(figures.us),
                off_us=count(off.us),
                added_us=f"{figures.us - off.us:+,.0f}",
                now_change=f"{100 * (off.rps / figures.rps - 1):+.1f}",
                now_added_us=f"{off.us - figures.us:+,.0f}",
            )
        )
    spreads = [figures.spread for figures in summary.values()]
    averages = [row.load_average for row in results.variants]
    lines.append(
        say(
            "reading.variant.noise",
            rounds=max(row.round for row in results.variants),
            spread_max=f"{100 * max(spreads):.1f}",
            spread_median=f"{100 * statistics.median(spreads):.1f}",
            load_min=f"{min(averages):.2f}",
            load_max=f"{max(averages):.2f}",
        )
    )
    return lines


def disturbed(results: Results) -> list[str]:
    """The rows other processes disturbed beyond `OTHER_LIMIT` despite the retries."""
    runs = [("saturation", results.saturation), ("one connection", results.single), ("half load", results.half)]
    found = [
        f"{kind}: {row.target} x{row.processes} ({', '.join(name for name, _ in row.others)})"
        for kind, rows in runs
        for row in rows
        if row.cores["other"] > OTHER_LIMIT
    ]
    return [say("reading.disturbed", limit=f"{OTHER_LIMIT:g}", runs="; ".join(found))] if found else []


def reading(results: Results, nproc: int, generator: str, connections: int) -> list[str]:
    """Every bullet whose figures exist, in the report's order: issue 13's goals first (CPU, the
    request log, latency, p99); `connections` is the saturation runs' number of connections."""
    one = find_row(results.saturation, "sentinel", "1")
    two = find_row(results.saturation, "sentinel", "2")
    lines = cpu_goal(results, one) if one is not None else []
    lines += request_log(results)
    lines += latency(results)
    lines += p99(results, one, connections) if one is not None else []
    lines += [rate(one)] if one is not None else []
    if two is not None:
        lines.append(two_processes(two, one, nproc, generator))
    lines += reference(results, one) if one is not None else []
    lines += profile_headline(results.profile)
    lines += single(results)
    lines += variants(results)
    return lines + disturbed(results)
