"""The callgrind harness without valgrind: the command line, the rows' arithmetic (multiples of the
direct row, B/A of each pair), the section rendered, its figures read back by the next run for the
repeatability column, and written only with `--docs` when every answer was 2xx. The rows are built
by hand, as `bench.gateway_instructions.measure` makes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import gateway_ab as ab
from bench import gateway_instructions as gi
from bench.common import DOCS_PATH, BenchError
from bench.common import callgrind as cg
from bench.common.cli import markers
from bench.common.gitstate import CodeState
from bench.gateway.load import LoadResult
from bench.tests.tables import cells

HEAD = "9096aef" + "0" * 33
CHECKOUTS = [ab.Checkout("HEAD (9096aef)", HEAD, "commit 9096aef: x"), ab.Checkout("tree", None, "the working tree")]


def row(target: str, per_request: float, requests: int = 3_000, code: str = HEAD, non2xx: int = 0) -> gi.Measured:
    # 30 s loaded, an idle background of 1 M instructions per second: 30 M to take out.
    count = cg.Count(requests, int(per_request * requests + 30_000_000), 30.0, 10_000_000, 10.0)
    load = LoadResult(requests / 30, 30.0, 60.0, non2xx, 0, requests, 0.5, "wrk -t1 -c4 -d30s --latency URL")
    top = [cg.FunctionCost("_PyEval_EvalFrameDefault", "ceval.c", "/lib/libpython3.11.so.1.0", requests * 200_000)]
    groups = [cg.GroupCost("CPython eval loop", requests * 200_000, requests * 5_000_000, 1)]
    return gi.Measured(target, code, count, load, count.loaded_ir, top, groups)


def results(*rows: gi.Measured) -> gi.Results:
    return gi.Results(rows=list(rows), code=CodeState(HEAD, {}), seconds=400.0)


# Direct 250 k per request; HEAD 770 k; the tree (the same code) 771.54 k: B/A 1.002.
def three_rows() -> gi.Results:
    return results(row(gi.DIRECT, 250_000), row("HEAD (9096aef)", 770_000), row("tree", 771_540))


# --- the command line ---


def test_the_defaults_are_30_seconds_of_4_connections_and_nothing_written() -> None:
    given = gi.parse_args(["HEAD", "--tree"])

    assert (given.commits, given.tree) == (("HEAD",), True)
    assert (given.seconds, given.idle_seconds, given.connections) == (30.0, 30.0, 4)
    assert given.docs is None and given.recorded == DOCS_PATH
    assert given.database_url.endswith("/sentinel_instr")
    assert given.redis_url == "redis://127.0.0.1:6379/7"
    assert not given.breakdown and given.rate is None
    assert given.wait_minutes == 30.0 and gi.parse_args(["HEAD", "--wait-minutes", "0"]).wait_minutes == 0.0


def test_the_command_said_in_the_docs_makes_the_same_run(tmp_path: Path) -> None:
    argv = [
        "HEAD",
        "073fc0f",
        "--tree",
        "--requests-seconds",
        "20",
        "--connections",
        "8",
        "--rate",
        "50",
        "--breakdown",
    ]
    given = gi.parse_args([*argv, "--docs", "--docs-file", str(tmp_path / "b.md")])

    assert given.docs == given.recorded == tmp_path / "b.md"
    words = given.command().split()
    assert words[:3] == ["nice", "-n", "19"]
    assert gi.parse_args(words[6:]) == gi.parse_args(argv)


@pytest.mark.parametrize(
    "argv", [[], ["HEAD", "--requests-seconds", "0"], ["HEAD", "--connections", "0"], ["HEAD", "--rate", "0"]]
)
def test_a_run_without_a_checkout_or_with_an_empty_load_is_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        gi.parse_args(argv)


def test_the_checkouts_are_named_as_gateway_ab_names_them() -> None:
    plan = gi.parse_args(["HEAD", "HEAD", "--tree"])

    checkouts = ab.resolve_checkouts(plan.ab_plan(), tree=CodeState(HEAD, {}))

    short = (checkouts[0].commit or "")[:7]
    assert [c.label for c in checkouts] == [f"HEAD ({short})", f"HEAD ({short}) #2", "tree"]


# --- the arithmetic ---


def test_a_rows_multiple_of_the_direct_row_and_each_pairs_ratio() -> None:
    found = three_rows()

    assert gi.times_direct(found.rows[1], found) == pytest.approx(770_000 / 250_000)
    assert gi.pairs(found, ["HEAD (9096aef)", "tree"]) == [("HEAD (9096aef)", "tree", pytest.approx(1.002))]


def test_without_a_direct_row_there_is_no_multiple() -> None:
    found = results(row("tree", 770_000))

    assert gi.times_direct(found.rows[0], found) is None


def test_a_load_that_was_not_all_2xx_is_a_failure() -> None:
    failures: list[str] = []

    gi.check_clean(row("tree", 770_000, non2xx=3), failures)
    gi.check_clean(row("HEAD", 770_000), failures)

    assert len(failures) == 1 and failures[0].startswith("tree: 3000 requests, 3 non-2xx")


# --- the section ---


def render(found: gi.Results, previous: tuple[str, dict[str, float]] = ("", {})) -> str:
    plan = gi.parse_args(["HEAD", "--tree", "--breakdown"])
    return gi.render(plan, CHECKOUTS, found, previous)


def test_the_section_says_each_rows_figures_the_pair_and_the_command() -> None:
    section = render(three_rows())
    start, end = markers(gi.SECTION)

    assert section.startswith(start) and section.endswith(end)
    assert cells(section, "tree")[1:3] == ["3,000", "0"]
    assert cells(section, "tree")[-3:] == ["771.5", "3.086", "-"]
    assert "| HEAD (9096aef) | tree | 1.0020 |" in section
    assert "nice -n 19 .venv/bin/python -m bench.gateway_instructions HEAD --tree" in section
    assert "no kernel time" in section and "| `_PyEval_EvalFrameDefault` | libpython3.11.so.1.0 | 200.0 |" in section
    assert "| CPython eval loop | 1 | 200.0 |" in section


def test_the_next_run_compares_each_commit_with_the_figure_recorded_for_it(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n" + render(three_rows()) + "\n")

    date, figures = gi.recorded(docs)
    again = render(results(row(gi.DIRECT, 250_000), row("HEAD (9096aef)", 770_770)), (date, figures))

    # The tree ran the same commit as HEAD, from its own folder: recorded apart.
    assert figures == {f"direct@{HEAD}": 250_000.0, HEAD: 770_000.0, f"tree@{HEAD}": 771_540.0}
    assert cells(again, "HEAD (9096aef)")[-1] == "770.0 (+0.10 %)"
    assert cells(again, gi.DIRECT)[-1] == "250.0 (+0.00 %)"
    assert f"recorded {date}" in again


def test_uncommitted_code_is_compared_with_nothing() -> None:
    dirty = results(row("tree", 770_000, code=""))

    assert '"per_request": {}' in gi.data_line(dirty, "today")
    assert gi.against(dirty.rows[0], {HEAD: 770_000.0}) == "-"


def test_a_file_without_the_section_has_no_figures(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    assert gi.recorded(docs) == ("", {})
    docs.write_text("# Benchmarks\n\n<!-- bench:gateway-instructions:data {broken -->\n")
    assert gi.recorded(docs) == ("", {})


def test_the_section_is_written_only_with_docs_and_only_when_every_answer_was_2xx(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n")
    plan = gi.parse_args(["HEAD", "--docs", "--docs-file", str(docs)])
    printed = gi.parse_args(["HEAD", "--docs-file", str(docs)])

    gi.publish(printed, "section", three_rows())
    assert docs.read_text() == "# Benchmarks\n"
    failed = three_rows()
    failed.failures.append("tree: 3 non-2xx")
    with pytest.raises(BenchError):
        gi.publish(plan, "section", failed)
    start, end = markers(gi.SECTION)
    gi.publish(plan, f"{start}\nfigures\n{end}", three_rows())
    assert docs.read_text() == f"# Benchmarks\n\n{start}\nfigures\n{end}\n"
