"""Models of the observability app. The request log, incidents and the rest come with its issue."""

from __future__ import annotations

from django.db import models


class Heartbeat(models.Model):
    """The last time a background process proved it was alive (the worker, through beat).

    Kept in the database rather than the cache because in embedded mode the cache is per process,
    and `/health` in the web process must see what the worker wrote.
    """

    name = models.CharField(max_length=64, primary_key=True)
    last_seen = models.DateTimeField()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_seen:%Y-%m-%d %H:%M:%S}"
