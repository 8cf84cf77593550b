"""Checks in the worker: specs loaded from rows, reports written back, the state machine.

A worker process runs every batch it is handed on ONE long-lived event loop (a thread of its own,
``CheckPipeline``) with one ``CheckRunner``: the Celery task that hands a batch over returns at
once, so no worker slot waits while slow targets time out, and checks of every batch share one
concurrency bound (``CHECK_CONCURRENCY``). Reports are written by one writer thread, many per
transaction (``reports_write``): a handful of statements per batch, none per check.

``reports_write`` does, in one transaction, for a batch of (claim, report):

* ``CheckResult`` rows (one bulk INSERT);
* the hourly and daily ``MonitorRollup`` rows: one ``INSERT … ON CONFLICT DO UPDATE`` adding the
  batch's counts, the same SQL on PostgreSQL and SQLite;
* each monitor's run state (``last_*``, the counters in a row, ``cert_expires_at``) and the release
  of its claim, in one UPDATE … FROM (VALUES …) that only touches a row still holding the
  writer's own claim (a lapsed claim taken over by another dispatch is that dispatch's);
* the state machine (``state_next``): a change is a conditional UPDATE on the old state
  (healthchecks' ``WHERE id = ? AND state = old``: an operator's pause in between wins) and, for
  each row it changed, one ``Flip``. The flips' ids are returned, for alerts once committed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from monitors import metrics
from monitors.maintenance import monitors_in_maintenance
from monitors.models import CheckOutcome, CheckResult, Flip, Monitor, MonitorRollup, MonitorState, RollupPeriod
from monitors.scheduler import Claim

if TYPE_CHECKING:
    from monitors.engine.runner import CheckRunner
    from monitors.engine.spec import CheckReport, CheckSpec

__all__ = ["CheckPipeline", "RunState", "claims_release", "history_prune", "reports_write", "specs_load", "state_next"]

logger = logging.getLogger(__name__)


# --- specs -------------------------------------------------------------------------------------


def specs_load(claims: Sequence[Claim]) -> list[CheckSpec]:
    """The ``CheckSpec`` of each claimed monitor that is still enabled, due at its claim's due
    time; one query. A monitor paused or deleted since its claim is left out (its claim lapses).
    A stored expected-status list the engine refuses (the API validates it; a row edited by hand
    may not be) falls back to the default 200-299."""
    from monitors.engine.spec import CheckSpec, parse_expected_status

    due = {claim.monitor_id: claim.due_at.timestamp() for claim in claims}
    specs: list[CheckSpec] = []
    for row in Monitor.objects.filter(pk__in=due, enabled=True).values(
        "id", "version", "kind", "target", "method", "headers", "body", "expected_status", "keyword",
        "keyword_absent", "max_latency_ms", "conditions", "follow_redirects", "verify_tls", "timeout_seconds",
    ):  # fmt: skip
        try:
            expected = parse_expected_status(row["expected_status"] or [])
        except (TypeError, ValueError):
            expected = parse_expected_status([])
        headers = row["headers"] if isinstance(row["headers"], dict) else {}
        specs.append(
            CheckSpec(
                monitor_id=row["id"],
                version=row["version"],
                kind=row["kind"],
                target=row["target"],
                method=row["method"],
                headers=tuple((str(name), str(value)) for name, value in headers.items()),
                body=row["body"].encode(),
                expected_status=expected,
                keyword=row["keyword"],
                keyword_absent=row["keyword_absent"],
                max_latency_ms=float(row["max_latency_ms"]) if row["max_latency_ms"] is not None else None,
                conditions=row["conditions"],
                follow_redirects=row["follow_redirects"],
                verify_tls=row["verify_tls"],
                timeout_seconds=row["timeout_seconds"],
                due_at=due[row["id"]],
            )
        )
    return specs


def claims_release(claims: Iterable[Claim]) -> int:
    """Releases ``claims`` whose check will not run, each only if the monitor still holds that
    very claim (a lapsed claim taken again is another's); returns how many were released. One
    query per claim: this is for the rare monitor paused or deleted between claim and run."""
    released = 0
    for claim in claims:
        released += Monitor.objects.filter(pk=claim.monitor_id, claimed_until=claim.claimed_until).update(
            claimed_until=None
        )
    return released


# --- the state machine -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunState:
    """What the state machine reads and writes of a monitor: its state and the counters in a row."""

    state: str
    failures: int  # consecutive failed checks
    successes: int  # consecutive successful checks


def state_next(
    current: RunState,
    outcome: str,
    *,
    failure_threshold: int,
    success_threshold: int,
    in_maintenance: bool,
    enabled: bool = True,
) -> RunState:
    """The state after one check's ``outcome`` ("up" / "down"), Gatus-style thresholds:

    * the counters: a success adds one to ``successes`` and zeroes ``failures``, and conversely;
    * ``up`` or ``unknown`` → ``down`` once ``failures`` reaches ``failure_threshold``; ``down`` or
      ``unknown`` → ``up`` once ``successes`` reaches ``success_threshold`` (exactly at it);
    * inside a maintenance window the state is ``maintenance`` (the counters still count); when
      the window has closed the state follows the counters: ``down`` or ``up`` if one reached its
      threshold, else ``unknown``;
    * a paused monitor (``enabled`` False: a check in flight when the operator paused it) keeps
      its state and its counters, which the pause cleared; ``paused`` on an enabled monitor
      follows the counters like ``unknown``.

    Thresholds below 1 count as 1.
    """
    if not enabled:
        return current
    failures, successes = (0, current.successes + 1) if outcome == CheckOutcome.UP else (current.failures + 1, 0)
    failed = failures >= max(1, failure_threshold)
    recovered = successes >= max(1, success_threshold)
    state = current.state
    if in_maintenance:
        state = MonitorState.MAINTENANCE
    elif state in (MonitorState.MAINTENANCE, MonitorState.PAUSED, MonitorState.UNKNOWN):
        state = MonitorState.DOWN if failed else MonitorState.UP if recovered else MonitorState.UNKNOWN
    elif state == MonitorState.UP and failed:
        state = MonitorState.DOWN
    elif state == MonitorState.DOWN and recovered:
        state = MonitorState.UP
    return RunState(state=str(state), failures=failures, successes=successes)


# --- writing reports ---------------------------------------------------------------------------


def _epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _values(columns: Sequence[tuple[str, str]], rows: Sequence[Sequence[object]]) -> tuple[str, list[Any]]:
    """``WITH v(cols) AS (VALUES …)`` for ``rows``, and its parameters. On PostgreSQL each value
    is cast to its column's type (an untyped parameter would be text); SQLite needs no cast."""
    adapt = connection.ops.adapt_datetimefield_value
    postgres = connection.vendor == "postgresql"
    cell = [f"CAST(%s AS {kind})" if postgres else "%s" for _, kind in columns]
    row_sql = "(" + ", ".join(cell) + ")"
    params: list[Any] = []
    for row in rows:
        params.extend(adapt(value) if isinstance(value, datetime) else value for value in row)
    names = ", ".join(name for name, _ in columns)
    return f"WITH v({names}) AS (VALUES {', '.join([row_sql] * len(rows))})", params


_RUN_STATE_COLUMNS = (
    ("id", "bigint"),
    ("claim", "timestamptz"),
    ("failures", "integer"),
    ("successes", "integer"),
    ("checked_at", "timestamptz"),
    ("outcome", "text"),
    ("reason", "text"),
    ("latency", "double precision"),
    ("cert", "timestamptz"),
)
_RUN_STATE_UPDATE = """
UPDATE monitors_monitor
SET consecutive_failures = v.failures,
    consecutive_successes = v.successes,
    last_checked_at = v.checked_at,
    last_outcome = v.outcome,
    last_reason = v.reason,
    last_latency_ms = v.latency,
    cert_expires_at = COALESCE(v.cert, monitors_monitor.cert_expires_at),
    claimed_until = NULL
FROM v
WHERE monitors_monitor.id = v.id AND monitors_monitor.claimed_until = v.claim
"""
_STATE_COLUMNS = (("id", "bigint"), ("old", "text"), ("new", "text"))
_STATE_UPDATE = """
UPDATE monitors_monitor
SET state = v.new, state_changed_at = %s
FROM v
WHERE monitors_monitor.id = v.id AND monitors_monitor.state = v.old
RETURNING monitors_monitor.id
"""
_ROLLUP_UPSERT = """
INSERT INTO monitors_monitorrollup
    (monitor_id, period, bucket, checks, failures, latency_count, latency_sum_ms, latency_max_ms)
VALUES {rows}
ON CONFLICT (monitor_id, period, bucket) DO UPDATE SET
    checks = monitors_monitorrollup.checks + excluded.checks,
    failures = monitors_monitorrollup.failures + excluded.failures,
    latency_count = monitors_monitorrollup.latency_count + excluded.latency_count,
    latency_sum_ms = monitors_monitorrollup.latency_sum_ms + excluded.latency_sum_ms,
    latency_max_ms = CASE WHEN excluded.latency_max_ms > monitors_monitorrollup.latency_max_ms
                          THEN excluded.latency_max_ms ELSE monitors_monitorrollup.latency_max_ms END
"""


def rollups_add(reports: Iterable[CheckReport]) -> int:
    """Adds ``reports`` to their monitors' hourly and daily roll-ups (UTC hour and day of
    ``started_at``) in one ``INSERT … ON CONFLICT DO UPDATE``: checks, failures, and the count,
    sum and maximum of the latencies measured, in milliseconds (a check without a latency, e.g. a
    timeout, counts in none of the three). Returns the number of roll-up rows written."""
    counts: dict[tuple[int, str, datetime], list[float]] = {}
    for report in reports:
        started = _epoch(report.started_at)
        hour = started.replace(minute=0, second=0, microsecond=0)
        latency = report.latency_ms
        for period, bucket in ((RollupPeriod.HOUR.value, hour), (RollupPeriod.DAY.value, hour.replace(hour=0))):
            row = counts.setdefault((report.monitor_id, period, bucket), [0, 0, 0, 0.0, 0.0])
            row[0] += 1
            row[1] += report.outcome != CheckOutcome.UP
            if latency is not None:
                row[2] += 1
                row[3] += latency
                row[4] = max(row[4], latency)
    if not counts:
        return 0
    adapt = connection.ops.adapt_datetimefield_value
    params: list[Any] = []
    # A fixed order: two writers upserting overlapping rows lock them in the same order.
    for (monitor_id, period, bucket), (checks, failures, measured, total, top) in sorted(counts.items()):
        params.extend((monitor_id, period, adapt(bucket), int(checks), int(failures), int(measured), total, top))
    rows = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(counts))
    with connection.cursor() as cursor:
        cursor.execute(_ROLLUP_UPSERT.format(rows=rows), params)
    return len(counts)


def reports_write(items: Sequence[tuple[Claim, CheckReport]], *, now: datetime | None = None) -> list[int]:
    """Writes a batch of finished checks in one transaction (see the module docstring) and
    returns the ids of the flips it created, for ``flips_alert_enqueue`` once committed.

    ``now`` (aware UTC, default the current time) is the flips' time and the instant maintenance
    windows are looked up at (one ``monitors_in_maintenance`` call per batch). A report whose
    monitor is gone is dropped; one whose claim is no longer the writer's (it lapsed and another
    dispatch took the monitor) is recorded as a result and in the roll-ups but leaves the run
    state and the state machine to the claim's holder. Counts ``sentinel_checks_total`` and
    ``sentinel_latency_seconds`` once per report, after the commit.
    """
    if not items:
        return []
    now = now or timezone.now()
    ordered = sorted(items, key=lambda item: (item[1].started_at, item[1].monitor_id))
    ids = sorted({claim.monitor_id for claim, _ in ordered})
    flip_ids: list[int] = []
    with transaction.atomic():
        # Locked in id order (PostgreSQL), so an operator's pause waits for this batch, or this
        # batch for it, never both for each other.
        rows = {
            row["id"]: row
            for row in Monitor.objects.select_for_update()
            .filter(pk__in=ids)
            .order_by("pk")
            .values(
                "id", "tenant_id", "state", "enabled", "consecutive_failures", "consecutive_successes",
                "failure_threshold", "success_threshold", "claimed_until",
            )
        }  # fmt: skip
        kept = [(claim, report) for claim, report in ordered if claim.monitor_id in rows]
        if not kept:
            return []
        maintenance = monitors_in_maintenance(monitors=[(pk, row["tenant_id"]) for pk, row in rows.items()], now=now)
        CheckResult.objects.bulk_create(
            CheckResult(
                monitor_id=report.monitor_id,
                checked_at=_epoch(report.started_at),
                outcome=report.outcome,
                status_code=report.status_code,
                latency_ms=report.latency_ms,
                reason=report.reason[:500],
                failed_condition=report.failed_condition[:500],
                cert_expiry_days=report.cert_expiry_days,
                lag_ms=report.lag_ms,
            )
            for _, report in kept
        )
        rollups_add(report for _, report in kept)

        run_rows: dict[int, tuple[object, ...]] = {}
        changes: dict[int, tuple[str, str, str]] = {}  # id -> (old, new, reason)
        current: dict[int, RunState] = {}
        for claim, report in kept:
            row = rows[claim.monitor_id]
            if row["claimed_until"] != claim.claimed_until:
                continue
            before = current.get(
                claim.monitor_id,
                RunState(row["state"], row["consecutive_failures"], row["consecutive_successes"]),
            )
            after = state_next(
                before,
                report.outcome,
                failure_threshold=row["failure_threshold"],
                success_threshold=row["success_threshold"],
                in_maintenance=claim.monitor_id in maintenance,
                enabled=row["enabled"],
            )
            current[claim.monitor_id] = after
            if after.state != row["state"]:
                changes[claim.monitor_id] = (row["state"], after.state, report.reason[:500])
            else:
                changes.pop(claim.monitor_id, None)
            cert = _epoch(report.cert_expires_at) if report.cert_expires_at is not None else None
            run_rows[claim.monitor_id] = (
                claim.monitor_id, claim.claimed_until, after.failures, after.successes,
                _epoch(report.started_at), report.outcome, report.reason[:500], report.latency_ms, cert,
            )  # fmt: skip
        if run_rows:
            cte, params = _values(_RUN_STATE_COLUMNS, list(run_rows.values()))
            with connection.cursor() as cursor:
                cursor.execute(f"{cte} {_RUN_STATE_UPDATE}", params)
        if changes:
            cte, params = _values(_STATE_COLUMNS, [(pk, old, new) for pk, (old, new, _) in sorted(changes.items())])
            with connection.cursor() as cursor:
                cursor.execute(f"{cte} {_STATE_UPDATE}", [*params, connection.ops.adapt_datetimefield_value(now)])
                changed = sorted(pk for (pk,) in cursor.fetchall())
            flips = Flip.objects.bulk_create(
                Flip(
                    tenant_id=rows[pk]["tenant_id"],
                    monitor_id=pk,
                    created_at=now,
                    old_state=changes[pk][0],
                    new_state=changes[pk][1],
                    reason=changes[pk][2],
                )
                for pk in changed
            )
            flip_ids = [flip.pk for flip in flips]
    for _, report in kept:
        metrics.checks.labels(outcome=report.outcome).inc()
        if report.latency_ms is not None:
            metrics.check_latency.observe(report.latency_ms / 1000.0)
    return flip_ids


# --- the worker's pipeline ---------------------------------------------------------------------


class CheckPipeline:
    """One worker process's checks: an event-loop thread that runs every batch handed over with
    one ``CheckRunner`` (``concurrency`` checks in flight at most, each started at its due time),
    and a writer thread that writes finished reports with ``reports_write`` when ``write_rows``
    wait or the oldest has waited ``flush_seconds``, then calls ``on_flips`` with the flips'
    ids after the commit.

    A failed write is logged and its reports dropped: their claims lapse and the checks run again
    at their next due time, as after a worker crash. ``runner_factory`` builds the runner inside
    the loop thread (the runner's session belongs to that loop).
    """

    def __init__(
        self,
        *,
        runner_factory: Callable[[], CheckRunner],
        write_rows: int,
        flush_seconds: float,
        on_flips: Callable[[list[int]], None],
    ) -> None:
        self.pid = os.getpid()
        self._runner_factory = runner_factory
        self._write_rows = write_rows
        self._flush_seconds = flush_seconds
        self._on_flips = on_flips
        self._reports: queue.Queue[tuple[Claim, CheckReport] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._in_flight = 0  # reports expected and not yet written
        self._idle = threading.Condition(self._lock)
        self._loop = asyncio.new_event_loop()
        self._runner: CheckRunner | None = None
        ready = threading.Event()
        self._loop_thread = threading.Thread(
            target=self._loop_main, args=(ready,), name="monitors-checks-loop", daemon=True
        )
        self._writer_thread = threading.Thread(target=self._writer_main, name="monitors-checks-writer", daemon=True)
        self._loop_thread.start()
        self._writer_thread.start()
        ready.wait()

    def _loop_main(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._runner = self._runner_factory()
        ready.set()
        self._loop.run_forever()

    def submit(self, claims: Sequence[Claim]) -> int:
        """Loads the claimed monitors' specs (one query, in the caller's thread) and hands them to
        the loop; returns at once with the number of checks handed over. The claims of monitors
        paused or deleted since they were claimed are released (``claims_release``)."""
        specs = specs_load(claims)
        loaded = {spec.monitor_id for spec in specs}
        claims_release([claim for claim in claims if claim.monitor_id not in loaded])
        if not specs:
            return 0
        by_id = {claim.monitor_id: claim for claim in claims}
        with self._lock:
            self._in_flight += len(specs)
        asyncio.run_coroutine_threadsafe(self._run(specs, by_id), self._loop)
        return len(specs)

    async def _run(self, specs: list[CheckSpec], claims: dict[int, Claim]) -> None:
        assert self._runner is not None
        done: set[int] = set()

        def report(result: CheckReport) -> None:
            done.add(result.monitor_id)
            self._reports.put((claims[result.monitor_id], result))

        try:
            await self._runner.run_batch(specs, on_report=report)
        except Exception:
            logger.exception("monitors: a batch of %d checks failed", len(specs))
        finally:
            missing = len(specs) - len(done)
            if missing:
                self._written(missing)

    def _written(self, count: int) -> None:
        with self._idle:
            self._in_flight -= count
            if self._in_flight <= 0:
                self._idle.notify_all()

    def _writer_main(self) -> None:
        while True:
            first = self._reports.get()
            if first is None:
                # The writer's connection is its thread's own: nobody else can close it.
                connection.close()
                return
            batch = [first]
            deadline = time.monotonic() + self._flush_seconds
            while len(batch) < self._write_rows:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._reports.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is None:
                    self._reports.put(None)
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[tuple[Claim, CheckReport]]) -> None:
        try:
            close_old_connections()
            flip_ids = reports_write(batch)
        except Exception:
            logger.exception("monitors: writing %d check reports failed; their claims will lapse", len(batch))
            connection.close()
            flip_ids = []
        finally:
            self._written(len(batch))
        if flip_ids:
            try:
                self._on_flips(flip_ids)
            except Exception:
                logger.exception("monitors: queueing alerts for flips %s failed", flip_ids)

    def drain(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds until every check handed over is written; True if so."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._in_flight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Drains for up to ``timeout`` seconds, then stops both threads and closes the runner."""
        self.drain(timeout)
        self._reports.put(None)
        self._writer_thread.join(timeout=5)
        if self._runner is not None:
            runner = self._runner
            future = asyncio.run_coroutine_threadsafe(runner.aclose(), self._loop)
            try:
                future.result(timeout=5)
            except Exception:
                logger.exception("monitors: closing the check runner failed")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)


# --- retention ---------------------------------------------------------------------------------


def history_prune(*, now: datetime, batch_rows: int | None = None) -> dict[str, int]:
    """Deletes ``CheckResult`` rows older than CHECK_RESULT_RETENTION_DAYS, hourly roll-ups older
    than ROLLUP_HOURLY_RETENTION_DAYS and daily ones older than ROLLUP_DAILY_RETENTION_DAYS
    (settings ``SENTINEL_MONITORS``) before ``now`` (aware UTC), ``batch_rows`` rows a statement
    (default RETENTION_BATCH_ROWS), each statement its own short transaction. Returns the rows
    deleted: ``{"results": n, "hourly": n, "daily": n}``."""
    from core.conf import sentinel_settings

    conf = sentinel_settings.monitors
    size = batch_rows or conf.RETENTION_BATCH_ROWS
    targets = {
        "results": (CheckResult.objects.filter(checked_at__lt=now - timedelta(days=conf.CHECK_RESULT_RETENTION_DAYS))),
        "hourly": MonitorRollup.objects.filter(
            period=RollupPeriod.HOUR, bucket__lt=now - timedelta(days=conf.ROLLUP_HOURLY_RETENTION_DAYS)
        ),
        "daily": MonitorRollup.objects.filter(
            period=RollupPeriod.DAY, bucket__lt=now - timedelta(days=conf.ROLLUP_DAILY_RETENTION_DAYS)
        ),
    }
    deleted: dict[str, int] = {}
    for name, old in targets.items():
        total = 0
        while True:
            ids = list(old.order_by("pk").values_list("pk", flat=True)[:size])
            if not ids:
                break
            count, _ = old.model._default_manager.filter(pk__in=ids).delete()
            total += count
            if len(ids) < size:
                break
        deleted[name] = total
    return deleted
