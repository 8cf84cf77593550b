"""Sentinel's benchmarks, run from the repository root; figures go to ``docs/benchmarks.md``.

``python -m bench.gateway`` (a package), ``python bench/rules.py`` and ``python bench/frontdoor.py``.
"""
