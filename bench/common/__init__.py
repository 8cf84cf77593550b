"""What the benchmarks (``python -m bench.gateway``, ``python -m bench.rules``) share.

- ``processes``: servers started and stopped (`Service`), children run to completion with their
  CPU seconds (`run_timed`), waiting until a server answers;
- ``cpu``: CPU accounting through psutil, in cores per process tree or per process name;
- ``quiet``: waiting for a quiet machine (by CPU, or until no other benchmark runs);
- ``scratch``: the bench database and Redis keys, Sentinel's environment, ``manage.py``;
- ``gitstate``: the code a run measured;
- ``markdown``: figures, tables, the machine, and report templates (``string.Template``);
- ``callgrind``: a server under callgrind, its instruction counts and callgrind_annotate's table;
- ``cli``: a run's frame (SIGTERM, errors, exit codes) and its section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS_PATH = REPO / "docs" / "benchmarks.md"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class BenchError(Exception):
    """A step failed; the message says which and why."""
