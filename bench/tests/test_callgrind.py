"""Reading callgrind's files and the arithmetic of a count, on fixtures: a dump's header and
callgrind_annotate's function table (`fixtures/`, cut down from a real run's, the figures round)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.common import BenchError
from bench.common import callgrind as cg

FIXTURES = Path(__file__).with_name("fixtures")
ANNOTATED = (FIXTURES / "callgrind_annotate.txt").read_text()


def test_a_dumps_total_is_its_summary_line() -> None:
    assert cg.dump_total((FIXTURES / "callgrind_dump.txt").read_text()) == 2_785_000_000
    assert cg.dump_total("events: Ir\ntotals: 12\n") == 12


def test_a_dump_without_a_total_is_refused() -> None:
    with pytest.raises(BenchError):
        cg.dump_total("events: Ir\n")


def test_the_annotated_total_and_functions_are_read_costliest_first() -> None:
    annotated = cg.parse_annotate(ANNOTATED)

    assert annotated.total == 1_000_000
    first = annotated.functions[0]
    assert (first.name, first.ir) == ("_PyEval_EvalFrameDefault", 300_000)
    assert first.obj.endswith("libpython3.11.so.1.0")
    assert [f.ir for f in annotated.functions] == sorted((f.ir for f in annotated.functions), reverse=True)


def test_a_functions_recursion_levels_and_inlined_rows_are_summed_into_one() -> None:
    # _PyEval_Vector: 12,000 inlined from a header (no object named) + 8,000 in ceval.c.
    functions = {f.name: f for f in cg.parse_annotate(ANNOTATED).functions}

    assert functions["_PyEval_Vector"].ir == 20_000
    assert functions["_PyEval_Vector"].obj.endswith("libpython3.11.so.1.0")
    assert "_PyEval_EvalFrameDefault'2" not in functions
    assert functions["0x0000000004936718"].obj == "???"
    assert sum(f.ir for f in functions.values()) == 784_000  # every row of the table, each once


def test_annotate_output_without_a_program_total_is_refused() -> None:
    with pytest.raises(BenchError):
        cg.parse_annotate("Ir  file:function\n10 (100.0%)  a.c:f [x.so]\n")


def test_the_groups_sum_their_functions_own_instructions() -> None:
    own = cg.parse_annotate(ANNOTATED)

    costs = {g.name: g for g in cg.group_costs(own, None)}

    assert costs["CPython eval loop"].own == 300_000  # not _PyEval_Vector
    assert costs["uvloop/libuv"].own == 110_000
    assert costs["httptools/llhttp"].own == 70_000
    assert costs["hiredis"].own == 20_000
    assert costs["psycopg/libpq"].own == 15_000
    assert costs["re (sre_*)"].own == 90_000
    assert costs["malloc/free"].own == 150_000  # CPython's obmalloc and libc's malloc
    assert costs["cyclic GC"].own == 4_000
    assert all(g.inclusive == 0 for g in costs.values())


def test_a_groups_inclusive_figure_is_its_costliest_functions() -> None:
    own = cg.parse_annotate(ANNOTATED)
    inclusive = cg.parse_annotate(ANNOTATED.replace("60,000 ( 6.00%)", "900,000 (90.00%)"))

    costs = {g.name: g for g in cg.group_costs(own, inclusive)}

    assert costs["uvloop/libuv"].inclusive == 900_000
    assert costs["uvloop/libuv"].functions == 2


def test_instructions_per_request_less_the_idle_background() -> None:
    # The run by hand at c5bf950: 2.785 G for 3,480 requests in 30 s, idle 0.104 G per 30 s.
    count = cg.Count(
        requests=3_480, loaded_ir=2_785_000_000, loaded_seconds=30.0, idle_ir=104_000_000, idle_seconds=30.0
    )

    assert count.idle_rate == pytest.approx(104_000_000 / 30)
    assert count.background == pytest.approx(104_000_000)
    assert count.per_request == pytest.approx((2_785_000_000 - 104_000_000) / 3_480)
    assert round(count.per_request / 1e3) == 770


def test_the_background_scales_with_the_loaded_seconds_not_the_idle_ones() -> None:
    count = cg.Count(requests=100, loaded_ir=1_000_000, loaded_seconds=20.0, idle_ir=10_000, idle_seconds=10.0)

    assert count.background == 20_000
    assert count.per_request == 9_800


def test_a_count_of_no_request_or_no_idle_time_divides_by_nothing() -> None:
    assert cg.Count(0, 1_000, 1.0, 10, 1.0).per_request == 0.0
    assert cg.Count(10, 1_000, 1.0, 10, 0.0).idle_rate == 0.0
    assert cg.ratio(1.0, 0.0) is None
    assert cg.ratio(3.0, 2.0) == 1.5


def test_the_dumps_of_a_process_are_its_numbered_files(tmp_path: Path) -> None:
    out = tmp_path / "srv.callgrind"
    for name in ("srv.callgrind", "srv.callgrind.1", "srv.callgrind.2", "srv.callgrind.log", "other.callgrind.1"):
        (tmp_path / name).write_text("")

    assert cg.dumps(out) == {tmp_path / "srv.callgrind.1", tmp_path / "srv.callgrind.2"}


def test_the_server_runs_under_callgrind_with_instrumentation_off(tmp_path: Path) -> None:
    args = cg.valgrind_args(tmp_path / "out", ["python", "manage.py", "serve"])

    assert args[:3] == ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    assert f"--callgrind-out-file={tmp_path / 'out'}" in args
    assert args[-3:] == ["python", "manage.py", "serve"]
    assert not any(arg.startswith("--collect-atstart") for arg in args)
