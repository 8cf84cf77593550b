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
from bench.common.cli import publish, run
from bench.common.gitstate import check_unchanged
from bench.gateway.config import parse_args
from bench.gateway.measure import Results, run_all
from bench.gateway.report import render
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


def main(argv: Sequence[str]) -> int:
    """Runs everything; 0 once the report is printed (and written unless `--quick`)."""
    plan = parse_args(argv, description=(bench.gateway.__doc__ or "").split("\n\n")[0])
    tools = find_tools()
    if tools.missing:
        print(f"note: not found: {', '.join(tools.missing)} (run `make bench-tools`); going on without", flush=True)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sentinel-bench-")))
        results = run_all(plan, tools, stack, tmp)
    section = render(plan, results, tools)
    publish(plan.docs, "gateway", section, quick=plan.quick, check=lambda: _check_figures(results))
    return 0


if __name__ == "__main__":
    run(main, "python -m bench.gateway", "processes stopped, scratch data dropped")
