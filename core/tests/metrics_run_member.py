"""A process of a metrics run, for ``test_prometheus_runs``: ``python -m core.tests.metrics_run_member DIR``.

Joins the run of DIR (``core.prometheus.run_join``), writes a file of its own there as a metrics
process would, prints ``started <bool> <file>`` and stays in the run until its stdin closes.
Plain Python: the run's lock needs no Django.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from core.prometheus import run_join


def main() -> None:
    directory = Path(sys.argv[1])
    started = run_join(directory)
    own = directory / f"counter_member-{os.getpid()}.db"
    own.write_bytes(b"\0" * 8)
    print(f"started {started} {own.name}", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
