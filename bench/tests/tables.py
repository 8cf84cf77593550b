"""Reading the markdown tables the bench scripts write, for their tests."""

from __future__ import annotations


def cells(table: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first`."""
    for line in table.splitlines():
        found = [cell.strip() for cell in line.strip("|").split("|")]
        if found[0] == first:
            return found
    raise AssertionError(f"no row {first!r} in\n{table}")
