"""The gateway benchmark's report from given figures: issue 13's CPU ratio to the direct row (the
`times direct` columns and the goal's verdict), CPU with and without the request log, the added-p50
and p99 goals, and the README's summary written between its markers. No run here: the rows are
built by hand, as `bench.gateway.measure` records them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.common import DOCS_PATH, BenchError
from bench.common.cli import markers
from bench.gateway import __main__ as entry
from bench.gateway.config import (
    GOAL_ADDED_P50_MS,
    GOAL_CPU_TIMES_DIRECT,
    P99_BEFORE_MS,
    README_PATH,
    Plan,
    parse_args,
)
from bench.gateway.figures import TIMES_DIRECT
from bench.gateway.load import LoadResult
from bench.gateway.measure import Results, Row, VariantRow
from bench.gateway.reading import cpu_goal, latency, p99, rate, reading, request_log
from bench.gateway.report import SUMMARY_NAME, render, render_summary, saturation_table, variants_tables
from bench.gateway.tools import Tools
from bench.gateway.variants import DEFAULT, NO_LOG, OFF
from bench.tests.tables import cells

X = "\N{MULTIPLICATION SIGN}"


def load(rps: float, p50: float = 5.0, p99: float = 50.0) -> LoadResult:
    return LoadResult(rps, p50, p99, 0, 0, int(rps * 10), 0.1, "wrk -t2 -c64 -d10s --latency URL")


def row(target: str, processes: str, rps: float, srv_cores: float, p99_ms: float = 50.0) -> Row:
    cores = {"srv": srv_cores, "upstream": 0.3, "redis": 0.2, "gen": 0.1, "other": 0.0, "box": 1.5}
    return Row(target, processes, load(rps, p99=p99_ms), cores, [])


def header(table: str) -> list[str]:
    return [cell.strip() for cell in table.splitlines()[0].strip("|").split("|")]


# direct: 1.0 core for 10,000 req/s = 100 µs per request; sentinel 1: 0.9 core for 5,000 = 180 µs
# (1.80x, the goal exactly); sentinel 2: 1.2 cores for 4,000 = 300 µs (3.00x).
def results(sentinel_rps: float = 5_000, variants: bool = True) -> Results:
    given = Results(
        saturation=[
            row("direct", "1", 10_000, 1.0, p99_ms=9.0),
            row("nginx", "1 worker", 9_000, 0.36),
            row("sentinel", "1", sentinel_rps, 0.9, p99_ms=60.0),
            row("sentinel", "2", 4_000, 1.2),
        ],
        half=[row("direct", "1", 2_500, 0.3), row("sentinel", "1", 2_500, 0.5)],
        half_rate=2_500,
    )
    given.half[0] = Row("direct", "1", load(2_500, p50=0.7), given.half[0].cores, [])
    given.half[1] = Row("sentinel", "1", load(2_500, p50=1.1), given.half[1].cores, [])
    if variants:
        # Two rounds: tracing off at 200 and 220 µs (mean 210), request log off at 150 and 170
        # (mean 160), every trace far above.
        for number, (on_cores, off_cores) in enumerate(((1.0, 0.75), (1.1, 0.85)), start=1):
            given.variants += [
                VariantRow(number, 1.5, row(OFF, "1", 5_000, on_cores, p99_ms=70.0)),
                VariantRow(number, 1.5, row(DEFAULT, "1", 5_000, 1.2)),
                VariantRow(number, 1.5, row(NO_LOG, "1", 5_000, off_cores, p99_ms=60.0)),
            ]
    return given


def plan(tmp_path: Path, **changes: object) -> Plan:
    fields: dict[str, object] = {
        "duration": 10.0,
        "warmup": 3.0,
        "single_duration": 5.0,
        "connections": 64,
        "profile_seconds": 8.0,
        "quick": False,
        "retries": 2,
        "variants": True,
        "rounds": 2,
        "baseline": None,
        "database_url": "postgres://unused",
        "redis_url": "redis://unused",
        "docs": tmp_path / "benchmarks.md",
        "readme": tmp_path / "README.md",
    }
    return Plan(**{**fields, **changes})  # type: ignore[arg-type]


def test_the_saturation_table_gives_each_rows_cpu_per_request_as_a_multiple_of_the_direct_rows() -> None:
    table = saturation_table(results().saturation)

    assert header(table)[-2:] == ["srv CPU µs/req", TIMES_DIRECT]
    assert cells(table, "direct")[-2:] == ["100", "1.00"]
    assert cells(table, "nginx")[-2:] == ["40", "0.40"]
    sentinel = [line for line in table.splitlines() if line.startswith("| sentinel")]
    assert [line.rstrip(" |").rsplit("|", 2)[1:] for line in sentinel] == [[" 180 ", " 1.80"], [" 300 ", " 3.00"]]


def test_without_a_direct_row_the_multiples_are_empty_cells() -> None:
    rows = [row("sentinel", "1", 5_000, 0.9)]

    assert cells(saturation_table(rows), "sentinel")[-2:] == ["180", "-"]
    assert "| - |" in variants_tables(results().variants, None)


def test_the_variants_tables_read_each_configuration_against_the_saturation_phases_direct_row() -> None:
    given = results()

    runs, means = variants_tables(given.variants, 100.0).split("\n\n")

    assert header(runs)[-1] == TIMES_DIRECT
    assert [cells(line, "1")[-2:] for line in runs.splitlines() if line.startswith("| 1 |")] == [
        ["200", "2.00"],
        ["240", "2.40"],
        ["150", "1.50"],
    ]
    assert header(means)[-1] == TIMES_DIRECT
    assert cells(means, OFF)[-1] == "2.10"
    assert cells(means, NO_LOG)[-1] == "1.60"


# 4,990 req/s: 180.4 µs, 1.804x, written and judged as 1.80.
@pytest.mark.parametrize(
    ("rps", "verdict", "ratio"),
    [(5_000, "**met**", "1.80"), (4_990, "**met**", "1.80"), (4_900, "**not met**", "1.84")],
)
def test_the_cpu_goal_is_met_at_most_at_its_multiple_of_the_direct_rows(rps: float, verdict: str, ratio: str) -> None:
    given = results(sentinel_rps=rps)

    [sentence] = cpu_goal(given, given.saturation[2])

    assert f"≤ {GOAL_CPU_TIMES_DIRECT:g}{X}" in sentence
    assert f": {verdict}." in sentence
    assert f"the mock upstream serving the load generator directly 100 µs: {ratio}{X}" in sentence


def test_no_cpu_verdict_without_a_direct_row() -> None:
    given = results()
    given.saturation = given.saturation[2:]

    assert cpu_goal(given, given.saturation[0]) == []


def test_the_request_logs_cost_is_said_with_both_configurations_cpu_and_multiples() -> None:
    [sentence] = request_log(results())

    assert "mean of 2 rounds" in sentence
    assert f"`{OFF}` 210 µs of CPU per request (2.10{X})" in sentence
    assert f"`{NO_LOG}` 160 µs (1.60{X})" in sentence
    assert f"the request log's share is +50 µs per request (+0.50{X} the direct row's)" in sentence


def test_no_request_log_bullet_without_the_configurations_phase() -> None:
    assert request_log(results(variants=False)) == []


@pytest.mark.parametrize(("sentinel_p50", "verdict"), [(1.1, "**met**"), (1.3, "**not met**")])
def test_the_latency_goal_is_under_half_a_millisecond_added_at_half_load(sentinel_p50: float, verdict: str) -> None:
    given = results()
    given.half[1] = Row("sentinel", "1", load(2_500, p50=sentinel_p50), given.half[1].cores, [])

    [sentence] = latency(given)

    assert GOAL_ADDED_P50_MS == 0.5
    assert sentence.startswith(f"- Latency goal, < 0.5 ms added at p50 at half load: {verdict} at 2,500 req/s")


@pytest.mark.parametrize(
    ("p99_ms", "verdict"), [(P99_BEFORE_MS, "**met**"), (70.94, "**met**"), (P99_BEFORE_MS + 0.1, "**not met**")]
)
def test_p99_at_saturation_is_judged_against_the_one_recorded_before_the_issue(p99_ms: float, verdict: str) -> None:
    one = row("sentinel", "1", 5_000, 0.9, p99_ms=p99_ms)

    [sentence] = p99(results(), one, 64)

    assert f"goal no worse than before issue 13: {verdict}, a loose comparison" in sentence
    assert "against 70.9 ms recorded at commit b6d424a" in sentence
    assert "9.000 ms now against 9.260 ms then" in sentence


def test_p99_is_not_judged_at_another_number_of_connections() -> None:
    one = row("sentinel", "1", 5_000, 0.9, p99_ms=10.0)

    [sentence] = p99(results(), one, 32)

    assert "not judged, 32 connections now against 64" in sentence
    assert "met" not in sentence


def test_the_rate_is_a_figure_beside_the_earlier_goal_without_a_verdict() -> None:
    sentence = rate(results().saturation[2])

    assert "One process served 5,000 req/s using 0.90 core, 180 µs of CPU per request" in sentence
    assert "an earlier issue's goal, 3,000 req/s per process, no longer judged: 167 % of it" in sentence
    assert "met" not in sentence


def test_the_reading_opens_with_the_issues_goals() -> None:
    lines = reading(results(), nproc=2, generator="wrk", connections=64)

    assert [line.split(",", 1)[0] for line in lines[:4]] == [
        "- CPU goal",
        "- With and without the request log (the configurations phase",
        "- Latency goal",
        "- p99 at saturation",
    ]
    assert lines[4].startswith("- One process served")


def test_the_whole_report_renders_the_multiples_and_the_goals(tmp_path: Path) -> None:
    section = render(plan(tmp_path), results(), Tools(wrk="/usr/bin/wrk"))

    assert section.startswith("<!-- bench:gateway:start -->")
    tables = [line for line in section.splitlines() if line.startswith("| ") and TIMES_DIRECT in line]
    assert len(tables) == 3  # the saturation table's header, the variants' runs and their means
    assert f"`{TIMES_DIRECT}` that as a multiple of the direct row's (issue 13's goal: at most 1.8" in section
    assert f"- CPU goal, server CPU per proxied request ≤ 1.8{X}" in section
    assert "--retries 2 --rounds 2`" in section


def test_the_readme_summary_has_the_direct_nginx_and_sentinel_rows_with_and_without_the_request_log(
    tmp_path: Path,
) -> None:
    summary = render_summary(plan(tmp_path), results())

    start, end = markers(SUMMARY_NAME)
    assert summary.startswith(start) and summary.endswith(end)
    assert "`.venv/bin/python -m bench.gateway --duration 10 --connections 64 --retries 2 --rounds 2`" in summary
    table = next(part for part in summary.split("\n\n") if part.startswith("| target"))
    assert header(table) == ["target", "configuration", "rps", "srv CPU µs/req", TIMES_DIRECT, "p99 ms"]
    assert cells(table, "direct")[2:] == ["10,000", "100", "1.00", "9.000"]
    assert cells(table, "nginx")[2:] == ["9,000", "40", "0.40", "50.0"]
    sentinel = [line for line in table.splitlines() if line.startswith("| sentinel")]
    assert [line.split(" | ")[1:] for line in sentinel] == [
        ["1 process, every check on, the request log included", "5,000", "180", "1.80", "60.0 |"],
        [f"1 process, `{OFF}`: mean of 2 rounds", "5,000", "210", "2.10", "70.0 |"],
        [f"1 process, `{NO_LOG}`: mean of 2 rounds", "5,000", "160", "1.60", "60.0 |"],
    ]
    assert "- CPU goal" in summary and "- Latency goal" in summary and "- p99 at saturation" in summary


def test_the_summary_replaces_the_readmes_section_and_leaves_the_rest(tmp_path: Path) -> None:
    start, end = markers(SUMMARY_NAME)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{start}\nold figures\n{end}\n\nafter\n")
    given = plan(tmp_path)

    entry._check_readme(given)
    entry._publish_summary(given, render_summary(given, results()))

    text = readme.read_text()
    assert "old figures" not in text
    assert text.startswith("# Title\n\nbefore\n\n" + start)
    assert text.endswith(end + "\n\nafter\n")
    assert "| direct | the mock upstream alone | 10,000 |" in text


def test_a_quick_run_leaves_the_readme_as_it_was(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("no section here\n")
    given = plan(tmp_path, quick=True)

    entry._check_readme(given)
    entry._publish_summary(given, render_summary(given, results()))

    assert readme.read_text() == "no section here\n"


def test_a_readme_without_the_section_is_refused_before_the_run(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# Title\n")

    with pytest.raises(BenchError, match=r"no <!-- bench:gateway-summary:start --> \.\.\. "):
        entry._check_readme(plan(tmp_path))


def test_the_repositorys_readme_has_the_section_the_recorded_run_writes() -> None:
    text = README_PATH.read_text()

    start, end = markers(SUMMARY_NAME)
    assert text.count(start) == 1 and text.count(end) == 1
    assert text.index(start) < text.index(end)


def test_the_readme_is_written_with_the_default_docs_only_unless_named(tmp_path: Path) -> None:
    assert parse_args([], "d").readme == README_PATH
    assert parse_args(["--docs", str(tmp_path / "x.md")], "d").readme is None
    named = tmp_path / "R.md"
    assert parse_args(["--docs", str(tmp_path / "x.md"), "--readme", str(named)], "d").readme == named
    assert parse_args([], "d").docs == DOCS_PATH
