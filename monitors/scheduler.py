"""The dispatcher's claim: which monitors' checks run next, each exactly once (issue 11 item 3).

One conditional UPDATE takes the enabled monitors due within a short lookahead whose claim is
empty or lapsed, and for each:

* sets ``claimed_until`` = due time + ``timeout_seconds`` + a margin (``CLAIM_MARGIN_SECONDS``):
  while it holds, no other dispatch (another beat, another worker) claims the monitor again, so
  a check that overruns its interval is not started twice; once it passes, the claim has lapsed
  (a worker killed mid-check) and the monitor is claimed again, so nothing stays stuck;
* advances ``next_due_at`` by whole intervals from the PREVIOUS due time, never from when a check
  ran or finished, so the schedule does not drift. After an outage (the due time is several
  intervals past) it skips to the first due time in the future: the check runs once, for the
  latest slot missed, never as a burst of every missed one.

The check's due time is the new ``next_due_at`` minus one interval: the old due time when it was
not yet past, else the latest slot before now.

On PostgreSQL the rows are taken with ``FOR UPDATE SKIP LOCKED`` in a CTE, so concurrent
dispatchers claim disjoint sets without waiting on each other, and the UPDATE returns what it
claimed. On SQLite a write transaction holds the database's single write lock from ``BEGIN
IMMEDIATE`` (the site's ``transaction_mode``), so dispatchers run one after the other: inside it
one SELECT reads the due rows and one ``executemany`` UPDATE writes their claims (SQLite's
RETURNING cannot return the old due time, and its date arithmetic on Django's text timestamps is
not exact to the microsecond).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction

from monitors.models import Monitor

__all__ = ["Claim", "monitors_claim"]

_CLAIM_POSTGRESQL = """
WITH due AS (
    SELECT id FROM monitors_monitor
    WHERE enabled AND next_due_at <= %(horizon)s AND (claimed_until IS NULL OR claimed_until <= %(now)s)
    ORDER BY next_due_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), advanced AS (
    SELECT m.id,
           m.next_due_at + make_interval(secs => m.interval_seconds * GREATEST(
               1, FLOOR(EXTRACT(EPOCH FROM (%(now)s - m.next_due_at)) / m.interval_seconds) + 1
           )) AS next_due_at
    FROM monitors_monitor m JOIN due ON due.id = m.id
)
UPDATE monitors_monitor m
SET next_due_at = advanced.next_due_at,
    claimed_until = advanced.next_due_at - make_interval(secs => m.interval_seconds)
                    + make_interval(secs => m.timeout_seconds + %(margin)s)
FROM advanced
WHERE m.id = advanced.id
RETURNING m.id, m.next_due_at, m.interval_seconds, m.claimed_until
"""

# SQLite keeps Django's datetimes as text; the new values are computed in Python, exactly to the
# microsecond, and written in Django's own format so that text comparisons hold.
_CLAIM_SQLITE = """
UPDATE monitors_monitor
SET next_due_at = %(next_due)s, claimed_until = %(claimed_until)s
WHERE id = %(id)s
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """A claimed check: run ``monitor_id``'s check at ``due_at`` (aware UTC); the claim is the
    worker's until ``claimed_until`` (aware UTC), and only a writer holding that exact value may
    release it."""

    monitor_id: int
    due_at: datetime
    claimed_until: datetime

    def as_message(self) -> list[object]:
        """``[monitor_id, due_at as epoch seconds, claimed_until in ISO 8601]``: JSON for the
        task message; the ISO text keeps the microseconds the release compares."""
        return [self.monitor_id, self.due_at.timestamp(), self.claimed_until.isoformat()]

    @classmethod
    def from_message(cls, message: list[object] | tuple[object, ...]) -> Claim:
        """The inverse of ``as_message``; raises ValueError / TypeError for a malformed message."""
        monitor_id, due_at, claimed_until = message
        return cls(
            monitor_id=int(str(monitor_id)),
            due_at=datetime.fromtimestamp(float(str(due_at)), tz=UTC),
            claimed_until=datetime.fromisoformat(str(claimed_until)),
        )


def monitors_claim(*, now: datetime, lookahead_seconds: float, margin_seconds: float, limit: int) -> list[Claim]:
    """Claims up to ``limit`` enabled monitors due by ``now + lookahead_seconds`` and not claimed
    (or whose claim lapsed at or before ``now``, aware UTC), in due order; returns the claims.

    ``margin_seconds`` is added to each check's due time and timeout to make its claim's end
    (defaults: settings ``SENTINEL_MONITORS`` CLAIM_MARGIN_SECONDS, DISPATCH_LOOKAHEAD_SECONDS,
    DISPATCH_MAX_CLAIMS, read by the dispatch task). Paused monitors are never claimed.
    """
    horizon = now + timedelta(seconds=lookahead_seconds)
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                _CLAIM_POSTGRESQL, {"now": now, "horizon": horizon, "limit": limit, "margin": margin_seconds}
            )
            rows = cursor.fetchall()
        claims = [
            Claim(monitor_id=pk, due_at=next_due - timedelta(seconds=interval), claimed_until=until)
            for pk, next_due, interval, until in rows
        ]
    else:
        claims = _claim_sqlite(now=now, horizon=horizon, margin_seconds=margin_seconds, limit=limit)
    claims.sort(key=lambda claim: claim.due_at)
    return claims


def _claim_sqlite(*, now: datetime, horizon: datetime, margin_seconds: float, limit: int) -> list[Claim]:
    """SQLite: the due rows read and rewritten inside one write transaction (``BEGIN IMMEDIATE``
    holds the database's write lock from the start, so no other dispatcher reads them meanwhile)."""
    adapt = connection.ops.adapt_datetimefield_value
    with transaction.atomic():
        rows = list(
            Monitor.objects.filter(enabled=True, next_due_at__lte=horizon)
            .exclude(claimed_until__gt=now)
            .order_by("next_due_at")
            .values_list("id", "next_due_at", "interval_seconds", "timeout_seconds")[:limit]
        )
        claims: list[Claim] = []
        params: list[dict[str, Any]] = []
        for pk, due, interval, timeout in rows:
            late = (now - due).total_seconds()
            steps = max(1, int(late // interval) + 1)
            next_due = due + timedelta(seconds=interval * steps)
            due_at = next_due - timedelta(seconds=interval)
            until = due_at + timedelta(seconds=timeout + margin_seconds)
            claims.append(Claim(monitor_id=pk, due_at=due_at, claimed_until=until))
            params.append({"id": pk, "next_due": adapt(next_due), "claimed_until": adapt(until)})
        if params:
            with connection.cursor() as cursor:
                cursor.executemany(_CLAIM_SQLITE, params)
    return claims
