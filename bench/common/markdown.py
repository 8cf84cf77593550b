"""How the reports write: numbers, Markdown tables, the machine they ran on, and their prose, kept
in template files (``string.Template``: ``$name`` filled in, a literal dollar written ``$$``).

A report has a main template (the whole section) and a sentences file: ``[name]`` blocks, each
said only when its figures call for it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
from pathlib import Path
from string import Template

NONE = "-"  # an empty cell


def count(value: float) -> str:
    """A whole number with thousands separators: `3,474`."""
    return f"{value:,.0f}"


def ms(value: float) -> str:
    """Milliseconds: 3 decimals below 10, 1 above."""
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def us(value: float) -> str:
    """Microseconds: 2 decimals below 10, 1 below 100, none above."""
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def table(headers: list[str], rows: list[list[str]], left: int = 1) -> str:
    """A Markdown table, its first `left` columns left-aligned and the others right-aligned."""
    align = ["---" if i < left else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> dict[str, str]:
    """`nproc`, `cpu` (the model, from /proc/cpuinfo: psutil does not name it), `kernel`, `python`."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def utc_now() -> str:
    """The time a report is recorded: `2026-11-23 15:12 UTC`."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def fill(path: Path, figures: dict[str, object]) -> str:
    """The template at `path` with `figures` filled in, less trailing newlines; KeyError when one
    is missing."""
    return Template(path.read_text()).substitute(figures).rstrip("\n")


class Sentences:
    """The `[name]` blocks of a sentences file, each a Template (its text less the blank lines
    around it). Lines before the first block are comments."""

    def __init__(self, path: Path) -> None:
        blocks: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in path.read_text().splitlines():
            if line.startswith("[") and line.endswith("]"):
                current = blocks.setdefault(line[1:-1], [])
            elif current is not None:
                current.append(line)
        self.blocks = {name: Template("\n".join(lines).strip("\n")) for name, lines in blocks.items()}

    def say(self, name: str, **figures: object) -> str:
        """The sentence `name` with its figures filled in; KeyError when one is missing."""
        return self.blocks[name].substitute(figures)
