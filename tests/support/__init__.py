"""Helpers shared by the test suite and the benchmarks: ports, waiting, real processes.

Nothing here is imported by production code; ``docs/architecture.md`` draws that wall.
"""
