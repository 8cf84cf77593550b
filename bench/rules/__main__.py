"""`python -m bench.rules`: the three parts, the report printed, then written to the docs.

See the package's docstring for what is measured and how.
"""

from __future__ import annotations

from collections.abc import Sequence

import bench.rules
from bench.common import BenchError
from bench.common.cli import publish, run
from bench.common.gitstate import CodeState, check_unchanged, code_state
from bench.common.quiet import wait_for_benchmarks
from bench.rules.config import BATCH, OTHER_BENCHMARKS, PROG, parse_args
from bench.rules.evaluation import measure_evaluation, measure_windows
from bench.rules.ingest import IngestResult, measure_ingest
from bench.rules.report import render


def _check_figures(ingest: IngestResult, code: CodeState) -> None:
    """BenchError when the figures must not be written: ingest errors, events lost, or the code
    changed during the run."""
    if ingest.load.problems:
        raise BenchError("ingest errors, docs not written:\n  " + "\n  ".join(ingest.load.problems[:10]))
    if ingest.stored != ingest.load.accepted * BATCH:
        raise BenchError(f"{ingest.load.accepted * BATCH} events accepted but {ingest.stored} stored; docs not written")
    check_unchanged(code)


def main(argv: Sequence[str]) -> int:
    """Runs everything; 0 once the report is printed (and written unless `--quick`)."""
    plan = parse_args(argv, description=(bench.rules.__doc__ or "").split("\n\n")[0])
    code = code_state()
    wait_for_benchmarks(OTHER_BENCHMARKS, plan.wait_minutes)
    print("1. evaluation", flush=True)
    rows = measure_evaluation(plan)
    wait_for_benchmarks(OTHER_BENCHMARKS, plan.wait_minutes)
    print("2. windows", flush=True)
    windows = measure_windows(plan)
    wait_for_benchmarks(OTHER_BENCHMARKS, plan.wait_minutes)
    print("3. ingest", flush=True)
    ingest = measure_ingest(plan)
    section = render(plan, code, rows, windows, ingest)
    publish(plan.docs, "rules", section, quick=plan.quick, check=lambda: _check_figures(ingest, code))
    return 0


if __name__ == "__main__":
    run(main, PROG, "processes stopped, Redis keys deleted")
