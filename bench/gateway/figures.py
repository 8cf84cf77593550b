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


def cores(row: Row, name: str) -> str:
    """A row's cores in column `name`, or an empty cell."""
    return f"{row.cores[name]:.2f}" if name in row.cores else NONE


def us_per_request(row: Row) -> float:
    """The server's CPU µs per request in a row."""
    return row.cores["srv"] / row.load.rps * 1e6


def find_row(rows: list[Row], target: str, processes: str | None = None) -> Row | None:
    """The first row of `target` (with `processes`, when given)."""
    return next((r for r in rows if r.target == target and processes in (None, r.processes)), None)


@dataclass(frozen=True)
class VariantFigures:
    """A configuration's figures over its rounds: mean req/s, mean server CPU µs per request, and
    the spread of its rates, (max - min) / mean."""

    rps: float
    us: float
    spread: float


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
        summary.append((name, VariantFigures(mean, us, (max(rates) - min(rates)) / mean)))
    return summary
