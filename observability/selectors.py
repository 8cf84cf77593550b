"""Reads of the observability app."""

from __future__ import annotations

from datetime import datetime

from observability.models import Heartbeat
from observability.services import WORKER_HEARTBEAT


def heartbeat_last(*, name: str = WORKER_HEARTBEAT) -> datetime | None:
    return Heartbeat.objects.filter(name=name).values_list("last_seen", flat=True).first()
