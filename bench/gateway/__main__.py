"""`python -m bench.gateway`: the whole run, its report printed, then written to the docs.

See the package's docstring for what is measured and how.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from pathlib import Path

import bench.gateway
from bench.common import BenchError
from bench.common.cli import markers, publish, run, write_section
from bench.common.gitstate import check_unchanged
from bench.gateway.config import Plan, parse_args
from bench.gateway.measure import Results, run_all
from bench.gateway.report import SUMMARY_NAME, render, render_summary
from bench.gateway.tools import find_tools


def _check_figures(results: Results) -> None:
    """BenchError when the figures must not be written: Sentinel answered errors, or the code
    changed during the run."""
    if results.failures:
        raise BenchError(
            "Sentinel answered errors, so these figures do not measure the proxy (docs not written):\n  "
            + "\n  ".join(results.failures)
        )
    if results.code is not None:
        check_unchanged(results.code)


def _check_readme(plan: Plan) -> None:
    """BenchError, before anything runs, when the README to update has no summary section: the
    summary replaces one, it is not appended to a README."""
    if plan.readme is None or plan.quick:
        return
    text = plan.readme.read_text() if plan.readme.exists() else ""
    if not all(mark in text for mark in markers(SUMMARY_NAME)):
        start, end = markers(SUMMARY_NAME)
        raise BenchError(f"{plan.readme} has no {start} ... {end} section to write the summary in")


def _publish_summary(plan: Plan, summary: str) -> None:
    """Prints the README's summary, and writes it where `plan.readme` says unless `--quick`."""
    print("\n" + summary)
    if plan.quick or plan.readme is None:
        print(f"\nsummary not written ({'--quick' if plan.quick else '--docs given without --readme'})")
    else:
        write_section(plan.readme, SUMMARY_NAME, summary)
        print(f"\nsummary written to {plan.readme}")


def main(argv: Sequence[str]) -> int:
    """Runs everything; 0 once the report and the README's summary are printed (and written
    unless `--quick`)."""
    plan = parse_args(argv, description=(bench.gateway.__doc__ or "").split("\n\n")[0])
    _check_readme(plan)
    tools = find_tools()
    if tools.missing:
        print(f"note: not found: {', '.join(tools.missing)} (run `make bench-tools`); going on without", flush=True)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sentinel-bench-")))
        results = run_all(plan, tools, stack, tmp)
    section = render(plan, results, tools)
    publish(plan.docs, "gateway", section, quick=plan.quick, check=lambda: _check_figures(results))
    _publish_summary(plan, render_summary(plan, results))
    return 0


if __name__ == "__main__":
    run(main, "python -m bench.gateway", "processes stopped, scratch data dropped")
