"""Sentinel's benchmarks, run from the repository root; figures go to ``docs/benchmarks.md``.

``python -m bench.gateway`` and ``python -m bench.rules`` (packages sharing ``bench/common/``), and
``python bench/frontdoor.py``.
"""
