"""The gateway A/B harness without its load: the command line, the checkouts (labels, a commit
extracted), the order of a round, the summary's arithmetic on given figures (medians over the
rounds, multiples of each round's direct row, the per-round ratios of a pair), the section rendered
and written only with `--docs`. The rows are built by hand, as `bench.gateway.measure` records
them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench import gateway_ab as ab
from bench.common import DOCS_PATH, REPO, BenchError
from bench.common.cli import markers
from bench.common.gitstate import CodeState, commit_of
from bench.gateway.config import DEFAULT_DATABASE_URL
from bench.gateway.load import LoadResult
from bench.gateway.measure import Row, VariantRow
from bench.gateway.tools import Tools
from bench.gateway.variants import extract_commit
from bench.tests.tables import cells

A, B = "154044e", "HEAD (40ba491)"


def run(number: int, target: str, rps: float, srv_cores: float, non2xx: int = 0) -> VariantRow:
    load = LoadResult(rps, 5.0, 20.0, non2xx, 0, int(rps * 5), 0.1, "wrk -t2 -c64 -d5s --latency URL")
    cores = {"srv": srv_cores, "upstream": 0.3, "redis": 0.2, "gen": 0.1, "other": 0.01, "box": 1.6}
    return VariantRow(number, 1.5, Row(target, "1", load, cores, []))


# Three rounds. direct: 50, 60, 40 µs per request. A: 300, 330, 240 µs. B: 150, 180, 120 µs, so
# B/A per round 0.5, 0.545, 0.5, and A's multiples of the direct row 6.0, 5.5, 6.0.
def three_rounds() -> list[VariantRow]:
    runs = []
    for number, (direct_us, a_us, b_us) in enumerate(((50, 300, 150), (60, 330, 180), (40, 240, 120)), start=1):
        runs.append(run(number, ab.DIRECT, 20_000, 20_000 * direct_us / 1e6))
        runs.append(run(number, A, 3_000, 3_000 * a_us / 1e6))
        runs.append(run(number, B, 5_000, 5_000 * b_us / 1e6))
    return runs


# --- the command line ---


def test_the_defaults_are_five_rounds_of_five_seconds_at_64_connections_and_nothing_written() -> None:
    given = ab.parse_args(["HEAD", "073fc0f"])

    assert given.commits == ("HEAD", "073fc0f")
    assert not given.tree and not given.profile
    assert given.rounds == 5
    assert given.run.duration == 5.0
    assert given.run.connections == 64
    assert given.run.database_url == DEFAULT_DATABASE_URL
    assert given.docs is None


def test_options_may_come_between_the_commits_and_docs_go_where_docs_file_says(tmp_path: Path) -> None:
    given = ab.parse_args(["HEAD", "--tree", "073fc0f", "--rounds", "2", "--seconds", "3", "--profile", "--docs"])

    assert given.commits == ("HEAD", "073fc0f")
    assert given.tree and given.profile
    assert (given.rounds, given.run.duration) == (2, 3.0)
    assert given.docs == DOCS_PATH
    assert ab.parse_args(["--tree", "--docs", "--docs-file", str(tmp_path / "b.md")]).docs == tmp_path / "b.md"


@pytest.mark.parametrize(
    "argv", [[], ["HEAD", "--rounds", "0"], ["HEAD", "--seconds", "0"], ["HEAD", "--connections", "1"]]
)
def test_a_run_without_a_checkout_or_with_an_empty_measure_is_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        ab.parse_args(argv)


def test_the_command_said_in_the_docs_makes_the_same_run() -> None:
    given = ab.parse_args(["HEAD", "073fc0f", "--tree", "--rounds", "2", "--seconds", "3", "--profile"])

    command = given.command()

    assert command.startswith(".venv/bin/python -m bench.gateway_ab HEAD 073fc0f --tree ")
    assert ab.parse_args(command.split()[3:]) == given


# --- the checkouts ---


def test_a_commit_named_by_its_hash_is_labelled_by_it_and_one_named_otherwise_by_both() -> None:
    commit = "073fc0f5fc5232cde4de0ae8da313dab2cb3dc17"

    assert ab.label("073fc0f", commit) == "073fc0f"
    assert ab.label("073FC0F5FC52", commit) == "073fc0f"
    assert ab.label("HEAD", commit) == "HEAD (073fc0f)"


def test_a_commit_named_twice_is_measured_twice_under_two_labels() -> None:
    assert ab.unique(["073fc0f", "HEAD (073fc0f)", "073fc0f", "073fc0f"]) == [
        "073fc0f",
        "HEAD (073fc0f)",
        "073fc0f #2",
        "073fc0f #3",
    ]


def test_the_checkouts_are_the_commits_in_the_order_named_then_the_tree() -> None:
    head, subject = commit_of("HEAD")
    tree = CodeState(head, {"gateway/engine/proxy.py": "abc"})

    checkouts = ab.resolve_checkouts(ab.parse_args(["HEAD", head[:7], "--tree"]), tree)

    assert [c.label for c in checkouts] == [f"HEAD ({head[:7]})", head[:7], ab.TREE]
    assert [c.commit for c in checkouts] == [head, head, None]
    assert checkouts[0].about.startswith(f"commit {head[:7]}: {subject[:40]}")
    assert len(checkouts[0].about) <= len("commit 1234567: ") + ab.SUBJECT_WIDTH
    assert checkouts[2].about == f"the working tree at {head[:7]} with uncommitted changes to gateway/engine/proxy.py"


def test_an_unknown_commit_fails_before_anything_starts() -> None:
    with pytest.raises(BenchError, match="no commit 'no-such-commit'"):
        ab.resolve_checkouts(ab.parse_args(["HEAD", "no-such-commit"]))


def test_a_commit_is_extracted_with_the_grpc_stubs_git_archive_lacks(tmp_path: Path) -> None:
    extract_commit("HEAD", tmp_path / "head")

    assert (tmp_path / "head" / "manage.py").read_bytes() == (REPO / "manage.py").read_bytes()
    assert (tmp_path / "head" / "fraud" / "protos" / "fraud_pb2_grpc.py").exists()
    with pytest.raises(BenchError, match="git archive no-such-commit"):
        extract_commit("no-such-commit", tmp_path / "nothing")


def test_each_round_runs_the_checkouts_in_an_order_rotated_by_one() -> None:
    order = ["a", "b", "c"]

    assert [ab.rotated(order, number) for number in (1, 2, 3, 4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]
    assert ab.rotated([], 2) == []


# --- the summary's arithmetic ---


def test_each_target_gets_its_median_over_the_rounds_and_its_rounds_multiple_of_the_direct_row() -> None:
    direct, a, b = ab.summarise(three_rounds(), [ab.DIRECT, A, B])

    assert direct.rounds == 3
    assert (direct.us, direct.us_min, direct.us_max) == pytest.approx((50, 40, 60))
    assert direct.times_direct == pytest.approx(1.0)
    assert (a.us, a.us_min, a.us_max, a.rps) == pytest.approx((300, 240, 330, 3_000))
    # 6.0, 5.5, 6.0: the median of the rounds' multiples, not 300 / 50 from the medians.
    assert a.times_direct == pytest.approx(6.0)
    assert b.us == pytest.approx(150)
    assert b.times_direct == pytest.approx(3.0)


def test_a_pairs_ratio_is_the_median_of_its_ratios_within_each_round() -> None:
    [pair] = ab.pairs(three_rounds(), [A, B])

    assert (pair.a, pair.b, pair.rounds) == (A, B, 3)
    assert pair.ratio == pytest.approx(0.5)
    assert (pair.low, pair.high) == (pytest.approx(0.5), pytest.approx(180 / 330))


def test_a_run_that_served_nothing_is_left_out_and_a_round_without_a_direct_row_has_no_multiple() -> None:
    runs = [r for r in three_rounds() if not (r.round == 3 and r.row.target == ab.DIRECT)]
    runs.append(run(4, A, 0, 0.9))
    runs.append(run(4, B, 5_000, 5_000 * 100 / 1e6))

    summaries = {s.target: s for s in ab.summarise(runs, [ab.DIRECT, A, B])}
    [pair] = ab.pairs(runs, [A, B])

    assert summaries[A].rounds == 3
    assert summaries[A].times_direct == pytest.approx(5.75)  # rounds 1 and 2 only
    assert summaries[B].rounds == 4
    assert pair.rounds == 3


def test_three_checkouts_make_three_pairs_each_a_later_one_over_an_earlier_one() -> None:
    runs = three_rounds() + [run(n, "C", 4_000, 4_000 * 200 / 1e6) for n in (1, 2, 3)]

    assert [(p.a, p.b) for p in ab.pairs(runs, [A, B, "C"])] == [(A, B), (A, "C"), (B, "C")]


# --- rendering and writing ---


def test_the_tables_give_every_run_against_its_rounds_direct_row_and_the_summary() -> None:
    runs = three_rounds()

    every = ab.runs_table(runs)
    summary = ab.summary_table(ab.summarise(runs, [ab.DIRECT, A, B]))
    pairs = ab.pairs_table(ab.pairs(runs, [A, B]))

    assert [line.split("|")[-3:-1] for line in every.splitlines() if line.startswith("| 2 | 154044e")] == [
        [" 330 ", " 5.50 "]
    ]
    assert cells(summary, A)[1:] == ["3", "300", "240-330", "6.00", "3,000"]
    assert cells(summary, ab.DIRECT)[4] == "1.00"
    assert cells(pairs, A)[1:] == [B, "3", "0.500", "0.500-0.545"]


def section(tmp_path: Path, failures: list[str] | None = None) -> tuple[ab.Plan, ab.Results, str]:
    given = ab.parse_args([A, "HEAD", "--rounds", "3", "--docs", "--docs-file", str(tmp_path / "benchmarks.md")])
    checkouts = [ab.Checkout(A, "1" * 40, "commit 154044e: before"), ab.Checkout(B, "2" * 40, "commit 40ba491: after")]
    results = ab.Results(runs=three_rounds(), failures=failures or [], code=CodeState("3" * 40, {}))
    return given, results, ab.render(given, checkouts, results, Tools(wrk="/nonexistent/wrk"))


def test_the_section_says_its_title_command_checkouts_and_figures_between_its_markers(tmp_path: Path) -> None:
    _, _, text = section(tmp_path)

    start, end = markers(ab.SECTION)
    assert text.startswith(start + "\n## " + ab.TITLE)
    assert text.endswith(end)
    assert "by `.venv/bin/python -m bench.gateway_ab 154044e HEAD --rounds 3 --seconds 5 " in text
    assert "the harness at 3333333" in text
    assert "- `HEAD (40ba491)`: commit 40ba491: after" in text
    assert "| 154044e | HEAD (40ba491) | 3 | 0.500 | 0.500-0.545 |" in text
    assert "$" not in text


def test_the_section_is_written_only_with_docs_and_beside_the_other_sections(tmp_path: Path) -> None:
    given, results, text = section(tmp_path)
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\n<!-- bench:gateway:start -->\nkept\n<!-- bench:gateway:end -->\n")

    ab.publish(dataclasses.replace(given, docs=None), text, results)
    assert ab.SECTION not in docs.read_text()

    ab.publish(given, text, results)
    written = docs.read_text()
    assert "<!-- bench:gateway:start -->\nkept\n<!-- bench:gateway:end -->" in written
    assert text in written


def test_the_section_says_how_many_runs_other_processes_disturbed() -> None:
    runs = three_rounds()
    runs[1] = run(1, A, 3_000, 0.9)
    runs[1].row.cores["other"] = 0.62

    assert ab.disturbed(three_rounds(), 2).endswith("up to 2 times (`--retries`); none was left so.")
    assert ab.disturbed(runs, 0) == (
        "A run during which they took over 0.1 core was not run again (`--retries`); 1 of 9 were left so, "
        "up to 0.62 core: read these figures as noisy."
    )


def test_figures_with_errors_are_printed_but_not_written(tmp_path: Path) -> None:
    given, results, text = section(tmp_path, failures=["HEAD (40ba491): 3 non-2xx and 0 socket errors in `wrk`"])

    assert "- **failed**: HEAD (40ba491): 3 non-2xx" in text
    with pytest.raises(BenchError, match="answered errors"):
        ab.publish(given, text, results)
    assert not (tmp_path / "benchmarks.md").exists()
