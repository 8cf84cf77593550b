"""The workers' heartbeat, which `/health` reads."""

from __future__ import annotations

from datetime import datetime

from observability.models import Heartbeat

WORKER_HEARTBEAT = "worker"


def heartbeat_record(*, name: str = WORKER_HEARTBEAT, at: datetime) -> Heartbeat:
    heartbeat, _ = Heartbeat.objects.update_or_create(name=name, defaults={"last_seen": at})
    return heartbeat
