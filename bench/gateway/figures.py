"""How the report writes figures (numbers, rows looked up, Markdown tables) and the sentences of
``sentences.md.tmpl`` that they fill in; shared by ``report.py`` and ``reading.py``."""

from __future__ import annotations

from pathlib import Path
from string import Template

from bench.gateway.measure import Row

SENTENCES_PATH = Path(__file__).with_name("sentences.md.tmpl")
NONE = "-"  # an empty cell


def load_sentences(path: Path = SENTENCES_PATH) -> dict[str, Template]:
    """The `[name]` blocks of the sentences file, each a Template (text less the blank lines around)."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            current = blocks.setdefault(line[1:-1], [])
        elif current is not None:
            current.append(line)
    return {name: Template("\n".join(lines).strip("\n")) for name, lines in blocks.items()}


SENTENCES = load_sentences()


def say(name: str, **figures: object) -> str:
    """The sentence `name` with its figures filled in; KeyError when one is missing."""
    return SENTENCES[name].substitute(figures)


def ms(value: float) -> str:
    """Milliseconds: 3 decimals below 10, 1 above."""
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def count(value: float) -> str:
    """A whole number with thousands separators: `3,474`."""
    return f"{value:,.0f}"


def cores(row: Row, name: str) -> str:
    """A row's cores in column `name`, or an empty cell."""
    return f"{row.cores[name]:.2f}" if name in row.cores else NONE


def us_per_request(row: Row) -> float:
    """The server's CPU µs per request in a row."""
    return row.cores["srv"] / row.load.rps * 1e6


def find_row(rows: list[Row], target: str, processes: str | None = None) -> Row | None:
    """The first row of `target` (with `processes`, when given)."""
    return next((r for r in rows if r.target == target and processes in (None, r.processes)), None)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, the first column left-aligned and the others right-aligned."""
    align = ["---" if i == 0 else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
