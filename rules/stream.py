"""Events from a Redis stream (SPEC 4: "a Redis stream consumer (consumer group, acknowledged
after processing)"). Run by `manage.py consume_events`, its own Procfile line.

Producers append entries with two fields: `tenant` (the tenant's uuid or slug) and `event` (one
JSON object or a list of up to 1,000), e.g. `XADD sentinel:events * tenant acme event '{...}'`.

Nothing accepted is lost: an entry is acknowledged only after its events are committed and their
evaluation queued. A consumer that dies before acknowledging leaves the entry pending; it takes
its own pending entries back when it restarts, and any consumer claims entries another left idle
for `claim_idle_ms`. A redelivered entry is recognised by its id (`Event.source_ref`) and not
stored twice. An entry that can never be stored (bad JSON, unknown tenant) is moved to the
dead-letter stream `<stream>:dead` with the reason, then acknowledged, so it cannot block the rest.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import redis

from accounts.models import Tenant
from core.errors import DomainError
from rules import services
from rules.models import EventSource

logger = logging.getLogger("sentinel.rules.stream")

GROUP = "sentinel-rules"


class PoisonEntry(Exception):
    """An entry that will never be storable, whatever the retries."""


@dataclass
class StreamConsumer:
    client: redis.Redis
    stream: str
    consumer: str = ""
    batch: int = 100
    block_ms: int = 5000
    claim_idle_ms: int = 60_000

    def __post_init__(self) -> None:
        self.consumer = self.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.dead_letters = f"{self.stream}:dead"

    def ensure_group(self) -> None:
        """Creates the group reading from the stream's beginning: entries added before the first
        consumer ever ran are read too."""
        try:
            self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def step(self) -> int:
        """One round: this consumer's own pending entries, then entries others left idle, then new
        ones (blocking up to `block_ms`). Returns how many entries were handled."""
        handled = self._handle(self._read("0", block=False))  # ours, left by a previous life
        _, claimed, _ = self.client.xautoclaim(
            self.stream, GROUP, self.consumer, min_idle_time=self.claim_idle_ms, start_id="0-0", count=self.batch
        )
        handled += self._handle(claimed)
        if handled:
            return handled
        return self._handle(self._read(">", block=True))

    def _read(self, start: str, *, block: bool) -> list[tuple[bytes, dict[bytes, bytes]]]:
        reply = self.client.xreadgroup(
            GROUP, self.consumer, {self.stream: start}, count=self.batch, block=self.block_ms if block else None
        )
        return [entry for _, entries in reply or [] for entry in entries]

    def _handle(self, entries: list[Any]) -> int:
        for entry_id, fields in entries:
            if fields is None:  # trimmed from the stream while pending: nothing left to store
                self.client.xack(self.stream, GROUP, entry_id)
                continue
            entry = entry_id.decode()
            try:
                stored = self.store(entry, fields)
            except PoisonEntry as exc:
                logger.warning("stream entry %s refused: %s", entry, exc)
                self.client.xadd(self.dead_letters, {**fields, b"error": str(exc).encode(), b"entry": entry_id})
            else:
                logger.debug("stream entry %s: %d events stored", entry, stored)
            # Only now: the events are committed (or the entry is parked in the dead letters).
            self.client.xack(self.stream, GROUP, entry_id)
        return len(entries)

    def store(self, entry: str, fields: dict[bytes, bytes]) -> int:
        """Stores one entry's events through ``event_ingest``; returns how many (0 when the entry
        was stored before). Raises PoisonEntry, with the reason, for an entry that never can be."""
        tenant = self._tenant(fields.get(b"tenant", b""))
        payloads = self._payloads(fields.get(b"event", b""))
        try:
            return len(
                services.event_ingest(tenant=tenant, payloads=payloads, source=EventSource.STREAM, source_ref=entry)
            )
        except DomainError as exc:
            raise PoisonEntry(exc.message) from None

    @staticmethod
    def _tenant(raw: bytes) -> Tenant:
        reference = raw.decode(errors="replace").strip()
        tenant = Tenant.objects.by_reference(reference).filter(active=True).first() if reference else None
        if tenant is None:
            raise PoisonEntry(f"no active tenant {reference[:64]!r}")
        return tenant

    @staticmethod
    def _payloads(raw: bytes) -> list[Any]:
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise PoisonEntry("`event` is not JSON") from None
        # One event or a list: `event_ingest` checks them (count, each event) and raises
        # EventInvalid, which `store` parks as poison like any other refusal.
        return data if isinstance(data, list) else [data]
