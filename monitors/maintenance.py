"""Maintenance windows: which monitors are inside one at a given time (issue 11; filled by the alerts part)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime


def monitors_in_maintenance(*, monitors: Iterable[tuple[int, int]], now: datetime) -> set[int]:
    """The ids of `monitors` ((monitor_id, tenant_id) pairs) inside an open maintenance window at
    `now` (aware UTC): a window of the monitor itself or of its whole tenant. One query."""
    return set()
