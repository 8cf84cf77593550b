"""`python -m bench.gateway`: the whole run, its report printed, then written to the docs.

See the package's docstring for what is measured and how.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bench.gateway
from bench.gateway.config import BenchError, parse_args
from bench.gateway.gitstate import code_state
from bench.gateway.measure import Results, run_all
from bench.gateway.report import render, write_docs
from bench.gateway.tools import find_tools

PROG = "python -m bench.gateway"


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so that every `finally` stops what it started


def _check_figures(results: Results) -> None:
    """BenchError when the figures must not be written: Sentinel answered errors, or the code
    changed during the run."""
    if results.failures:
        raise BenchError(
            "Sentinel answered errors, so these figures do not measure the proxy (docs not written):\n  "
            + "\n  ".join(results.failures)
        )
    if results.code is not None and code_state(since=results.code.commit) != results.code:
        raise BenchError(
            f"the code changed during the run (since {results.code.describe()}): the rows may measure two versions "
            "of it, so docs were not written; run again"
        )


def main(argv: Sequence[str]) -> int:
    """Runs everything; 0 once the report is printed (and written unless `--quick`)."""
    plan = parse_args(argv, description=(bench.gateway.__doc__ or "").split("\n\n")[0])
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    tools = find_tools()
    if tools.missing:
        print(f"note: not found: {', '.join(tools.missing)} (run `make bench-tools`); going on without", flush=True)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sentinel-bench-")))
        results = run_all(plan, tools, stack, tmp)
    section = render(plan, results, tools)
    print("\n" + section)
    _check_figures(results)
    if plan.quick:
        print(f"\n--quick: {plan.docs} left as it was.")
    else:
        write_docs(plan.docs, section)
        print(f"\nwritten to {plan.docs}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; processes stopped, scratch data dropped", file=sys.stderr)
        sys.exit(130)
