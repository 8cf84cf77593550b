"""How the gateway's report writes its rows (cores, CPU per request, rows looked up), and the
sentences of ``sentences.md.tmpl`` that they fill in; shared by ``report.py`` and ``reading.py``.
Numbers and tables are written as every benchmark writes them (``bench.common.markdown``)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from bench.common.markdown import NONE, Sentences
from bench.gateway.measure import Row, VariantRow

SENTENCES = Sentences(Path(__file__).with_name("sentences.md.tmpl"))
say = SENTENCES.say
# The column of CPU per request as a multiple of the direct row's (the mock upstream alone).
TIMES_DIRECT = "\N{MULTIPLICATION SIGN} direct"


def cores(row: Row, name: str) -> str:
    """A row's cores in column `name`, or an empty cell."""
    return f"{row.cores[name]:.2f}" if name in row.cores else NONE


def us_per_request(row: Row) -> float:
    """The server's CPU µs per request in a row."""
    return row.cores["srv"] / row.load.rps * 1e6


def times(us: float, direct_us: float | None) -> float | None:
    """`us` (CPU µs per request) as a multiple of the direct row's, or None without that row (or
    when it served nothing)."""
    return us / direct_us if direct_us else None


def times_cell(ratio: float | None) -> str:
    """A `TIMES_DIRECT` cell: `1.83`, or an empty cell."""
    return NONE if ratio is None else f"{ratio:.2f}"


def direct_us(rows: list[Row]) -> float | None:
    """The direct row's server CPU µs per request (the mock upstream serving the load generator
    itself): the unit of every `TIMES_DIRECT` figure; None when there is no direct row or it served
    nothing."""
    direct = find_row(rows, "direct")
    return us_per_request(direct) if direct is not None and direct.load.rps else None


def find_row(rows: list[Row], target: str, processes: str | None = None) -> Row | None:
    """The first row of `target` (with `processes`, when given)."""
    return next((r for r in rows if r.target == target and processes in (None, r.processes)), None)


@dataclass(frozen=True)
class VariantFigures:
    """A configuration's figures over its rounds: mean req/s, mean server CPU µs per request, the
    spread of its rates, (max - min) / mean, and the mean of its p99s (ms)."""

    rps: float
    us: float
    spread: float
    p99_ms: float


def variant_summary(rows: list[VariantRow]) -> list[tuple[str, VariantFigures]]:
    """Each configuration's figures over its rounds, in the order the rounds ran them."""
    names = list(dict.fromkeys(row.row.target for row in rows))
    summary = []
    for name in names:
        runs = [row.row for row in rows if row.row.target == name and row.row.load.rps]
        if not runs:
            continue
        rates = [run.load.rps for run in runs]
        mean = statistics.fmean(rates)
        us = statistics.fmean(us_per_request(run) for run in runs)
        p99 = statistics.fmean(run.load.p99_ms for run in runs)
        summary.append((name, VariantFigures(mean, us, (max(rates) - min(rates)) / mean, p99)))
    return summary
