"""Monitors and maintenance windows: create, change, pause, resume, check now, delete (SPEC 5).

Every write of a monitor, whichever door it comes through (the API, the admin, a command), goes
through here, so every door refuses the same bad input the same way: a ``DomainError`` (400,
``validation_error`` with ``{field: [why]}``; ``invalid_condition`` with the line and column of a
condition that does not compile; ``egress_denied`` for a target the egress policy refuses) or a
``Conflict`` (409) for a name the tenant already uses. Run state (``state``, counters,
``last_*``) is the scheduler's and the state machine's; only pause and resume set it here.
"""

from __future__ import annotations

import string
import zoneinfo
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import Tenant
from core.db import unique_or_conflict
from core.egress import EgressDenied
from core.egress_django import egress_policy, egress_refusal_record
from core.errors import Conflict, DomainError
from monitors.engine.spec import CONDITION_NAMES, http_target_problem, parse_expected_status, split_tcp_target
from monitors.models import (
    DEFAULT_TIMEOUT_SECONDS,
    MIN_INTERVAL_SECONDS,
    Flip,
    MaintenanceWindow,
    Monitor,
    MonitorKind,
    MonitorState,
    Recurrence,
)
from rules.dsl import DslError, DslSyntaxError, compile_condition
from rules.models import NotificationChannel

# --- bounds (SPEC 7: bodies, headers and timeouts bounded) -----------------------------------------

# A day: a monitor checked less often than daily is not watching anything.
MAX_INTERVAL_SECONDS = 86_400
# Gatus and Uptime Kuma cap a check's timeout well under a minute; a longer one ties up a worker slot.
MAX_TIMEOUT_SECONDS = 60.0
MIN_THRESHOLD, MAX_THRESHOLD = 1, 100
MIN_REMINDER_SECONDS = 60
# PostgreSQL's integer, so a value valid here is valid in every database.
MAX_INT = 2_147_483_647
MAX_LATENCY_MS = 600_000
MIN_CERT_DAYS, MAX_CERT_DAYS = 1, 365
MAX_BODY_BYTES = 64 * 1024
MAX_HEADERS = 50
MAX_HEADER_NAME = 256
MAX_HEADER_VALUE = 8192
MAX_CONDITIONS_CHARS = 4000
MAX_KEYWORD_CHARS = 500
MAX_NAME_CHARS = 120
MAX_TARGET_CHARS = 2000
MAX_CHANNELS = 50
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# RFC 9110 token characters: a header name with anything else is not a header name.
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
# A window longer than a week would overlap its own next weekly occurrence; a one-off may last a month.
MAX_WEEKLY_WINDOW_MINUTES = 7 * 24 * 60
MAX_ONCE_WINDOW_MINUTES = 31 * 24 * 60

# What a check does: a change to one of these moves the monitor to a new `version`, so compiled
# conditions cached by (id, version) are rebuilt.
CHECK_FIELDS = frozenset(
    {
        "kind", "target", "method", "headers", "body", "expected_status", "keyword", "keyword_absent",
        "max_latency_ms", "conditions", "follow_redirects", "verify_tls", "timeout_seconds",
    }
)  # fmt: skip
# Every field a caller may set on a monitor.
MONITOR_FIELDS = CHECK_FIELDS | {
    "name",
    "interval_seconds",
    "failure_threshold",
    "success_threshold",
    "reminder_interval_seconds",
    "cert_expiry_warning_days",
    "channels",
    "depends_on",
    "enabled",
    "published",
}
WINDOW_FIELDS = frozenset({"name", "monitor", "starts_at", "duration_minutes", "recurrence", "timezone"})

_NAME_TAKEN = "A monitor with this name exists."


def _invalid(field: str, message: str) -> DomainError:
    return DomainError(message, details={field: [message]}, code="validation_error")


# --- validation of single fields ---------------------------------------------------------------------


def _whole(field: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(field, f"Must be a whole number from {low} to {high}.")
    return value


def _text(field: str, value: Any, limit: int, *, blank: bool = True) -> str:
    if not isinstance(value, str):
        raise _invalid(field, "Must be text.")
    if "\x00" in value:
        raise _invalid(field, "Null characters are not allowed.")
    if len(value) > limit:
        raise _invalid(field, f"At most {limit} characters.")
    if not blank and not value.strip():
        raise _invalid(field, "Must not be blank.")
    return value


def _headers(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _invalid("headers", "Must be an object of header names to values.")
    if len(value) > MAX_HEADERS:
        raise _invalid("headers", f"At most {MAX_HEADERS} headers.")
    for name, header in value.items():
        if not isinstance(name, str) or not name or len(name) > MAX_HEADER_NAME or not set(name) <= _TOKEN_CHARS:
            raise _invalid("headers", f"{str(name)[:40]!r} is not a header name (RFC 9110 token characters).")
        if not isinstance(header, str):
            raise _invalid("headers", f"The value of {name!r} must be text.")
        if len(header) > MAX_HEADER_VALUE:
            raise _invalid("headers", f"The value of {name!r} is longer than {MAX_HEADER_VALUE} characters.")
        if any(char in header for char in "\r\n\x00"):
            # CR/LF would let a value start another header (request splitting).
            raise _invalid("headers", f"The value of {name!r} holds CR, LF or NUL.")
    return dict(value)


def _conditions(value: Any) -> str:
    text = _text("conditions", value, MAX_CONDITIONS_CHARS)
    if not text.strip():
        return ""
    try:
        compile_condition(text, names=CONDITION_NAMES)
    except DslSyntaxError as exc:
        raise DomainError(
            f"Syntax error: {exc.message}", details={"conditions": exc.as_dict()}, code="invalid_condition"
        ) from None
    except DslError as exc:
        raise DomainError(exc.message, details={"conditions": exc.as_dict()}, code="invalid_condition") from None
    return text


def _expected_status(value: Any) -> list[str]:
    if not isinstance(value, list) or any(isinstance(item, bool) or not isinstance(item, str | int) for item in value):
        raise _invalid("expected_status", 'Must be a list of status codes or ranges, e.g. ["200-299", "301"].')
    try:
        parse_expected_status(value)
    except ValueError as exc:
        raise _invalid("expected_status", str(exc)) from None
    return [str(item).strip() for item in value]


def _clean(field: str, value: Any) -> Any:
    """One field's value as stored, or DomainError naming the field."""
    if field == "name":
        return _text(field, value, MAX_NAME_CHARS, blank=False).strip()
    if field == "kind":
        if value not in MonitorKind.values:
            raise _invalid(field, f"Unknown kind {str(value)[:20]!r}; one of {', '.join(MonitorKind.values)}.")
        return value
    if field == "target":
        return _text(field, value, MAX_TARGET_CHARS, blank=False).strip()
    if field == "method":
        method = _text(field, value, 10).upper()
        if method not in METHODS:
            raise _invalid(field, f"One of {', '.join(METHODS)}.")
        return method
    if field == "headers":
        return _headers(value)
    if field == "body":
        body = _text(field, value, MAX_BODY_BYTES)
        if len(body.encode()) > MAX_BODY_BYTES:
            raise _invalid(field, f"At most {MAX_BODY_BYTES} bytes.")
        return body
    if field == "expected_status":
        return _expected_status(value)
    if field == "keyword":
        return _text(field, value, MAX_KEYWORD_CHARS)
    if field == "conditions":
        return _conditions(value)
    if field in ("keyword_absent", "follow_redirects", "verify_tls", "enabled", "published"):
        if not isinstance(value, bool):
            raise _invalid(field, "Must be true or false.")
        return value
    if field == "max_latency_ms":
        return None if value is None else _whole(field, value, 1, MAX_LATENCY_MS)
    if field == "timeout_seconds":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT_SECONDS:
            raise _invalid(field, f"Must be more than 0 and at most {MAX_TIMEOUT_SECONDS:g} seconds.")
        return float(value)
    if field == "interval_seconds":
        return _whole(field, value, MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS)
    if field in ("failure_threshold", "success_threshold"):
        return _whole(field, value, MIN_THRESHOLD, MAX_THRESHOLD)
    if field == "reminder_interval_seconds":
        return None if value is None else _whole(field, value, MIN_REMINDER_SECONDS, MAX_INT)
    if field == "cert_expiry_warning_days":
        return None if value is None else _whole(field, value, MIN_CERT_DAYS, MAX_CERT_DAYS)
    raise _invalid(field, "Unknown field.")  # pragma: no cover - callers check the names first


# --- validation of the whole monitor -----------------------------------------------------------------


def _target_check(monitor: Monitor) -> None:
    """The target's shape for its kind, then the egress policy's save-time check (SPEC 7): every
    address the host resolves to must be public unicast or in EGRESS_ALLOWED_NETWORKS. Monitors
    always belong to a tenant, so none is exempt."""
    if monitor.kind == MonitorKind.HTTP:
        problem = http_target_problem(monitor.target)
        if problem is not None:
            raise _invalid("target", problem)
        checked = monitor.target
    else:
        try:
            host, port = split_tcp_target(monitor.target)
        except ValueError as exc:
            raise _invalid("target", str(exc)) from None
        checked = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        egress_policy().check_target(checked)
    except EgressDenied as denied:
        egress_refusal_record(
            kind="monitor", stage="save", tenant=str(monitor.tenant.uuid), target=monitor.target, denied=denied
        )
        raise DomainError(
            denied.message, details={"field": "target", **denied.details()}, code="egress_denied"
        ) from None


def _whole_check(monitor: Monitor) -> None:
    """What holds between fields: a timeout shorter than the interval."""
    if monitor.timeout_seconds >= monitor.interval_seconds:
        raise _invalid("timeout_seconds", "Must be shorter than interval_seconds.")


def _channels_of(tenant: Tenant, values: Any) -> list[NotificationChannel]:
    """The channels named by id (or given as objects), all of `tenant`; another tenant's or a
    missing one is refused alike, so the answer says nothing of other tenants."""
    if not isinstance(values, list | tuple) or len(values) > MAX_CHANNELS:
        raise _invalid("channels", f"Must be a list of at most {MAX_CHANNELS} channel ids.")
    ids: list[int] = []
    for value in values:
        pk = value.pk if isinstance(value, NotificationChannel) else value
        if isinstance(pk, bool) or not isinstance(pk, int) or not 1 <= pk <= MAX_INT:
            raise _invalid("channels", "Must be a list of channel ids.")
        ids.append(pk)
    found = {channel.pk: channel for channel in NotificationChannel.objects.filter(tenant=tenant, pk__in=ids)}
    missing = sorted(set(ids) - set(found))
    if missing:
        raise _invalid("channels", f"No channel of this tenant has id {missing[0]}.")
    return [found[pk] for pk in dict.fromkeys(ids)]


def _parent_of(monitor: Monitor, value: Any) -> Monitor | None:
    """The monitor `monitor` depends on: one of its tenant's, never itself nor a descendant (a
    cycle would hold every alert of the loop forever)."""
    if value is None:
        return None
    pk = value.pk if isinstance(value, Monitor) else value
    if isinstance(pk, bool) or not isinstance(pk, int) or not 1 <= pk <= MAX_INT:
        raise _invalid("depends_on", "Must be a monitor id or null.")
    parent = Monitor.objects.filter(tenant_id=monitor.tenant_id, pk=pk).first()
    if parent is None:
        raise _invalid("depends_on", f"No monitor of this tenant has id {pk}.")
    if monitor.pk is not None:
        # Walk up from the parent: reaching `monitor` means a cycle. Bounded by the tenant's monitors.
        seen: set[int] = set()
        current: Monitor | None = parent
        while current is not None and current.pk not in seen:
            if current.pk == monitor.pk:
                raise _invalid("depends_on", "A monitor cannot depend on itself, directly or through others.")
            seen.add(current.pk)
            parent_id = current.depends_on_id
            current = Monitor.objects.filter(pk=parent_id).only("pk", "depends_on_id").first() if parent_id else None
    return parent


def _apply(monitor: Monitor, fields: dict[str, Any]) -> list[NotificationChannel] | None:
    """Cleans and sets `fields` on `monitor` (not saved); returns the channels to set, if given.
    Raises DomainError for an unknown or invalid field."""
    unknown = sorted(set(fields) - MONITOR_FIELDS)
    if unknown:
        raise DomainError(
            f"Unknown monitor fields: {', '.join(unknown)}.",
            details={name: ["Unknown field."] for name in unknown},
            code="validation_error",
        )
    channels: list[NotificationChannel] | None = None
    for field, value in fields.items():
        if field == "channels":
            channels = _channels_of(monitor.tenant, value)
        elif field == "depends_on":
            monitor.depends_on = _parent_of(monitor, value)
        else:
            setattr(monitor, field, _clean(field, value))
    _whole_check(monitor)
    if fields.keys() & {"kind", "target"} or monitor.pk is None:
        _target_check(monitor)
    return channels


# --- monitors ---------------------------------------------------------------------------------------

# What pause and resume write: the run state an operator may set.
_RUN_STATE_FIELDS = [
    "enabled", "state", "state_changed_at", "consecutive_failures", "consecutive_successes", "next_due_at",
    "updated_at",
]  # fmt: skip


def monitor_create(*, tenant: Tenant, **fields: Any) -> Monitor:
    """Creates a monitor in `tenant`, enabled unless ``enabled=False`` (then paused), first check
    due now. `fields`: any of MONITOR_FIELDS; `name` and `target` are required, the rest default
    to the model's (Gatus' thresholds 3 and 2, 60 s interval, 10 s timeout, or 80 % of a shorter
    interval when no timeout is given). `channels` is a list
    of channel ids of the same tenant; `depends_on` a monitor id of the same tenant or None.

    Raises DomainError (400): ``validation_error`` naming the field (interval under 10 s or over
    a day, timeout not in (0, 60] or not under the interval, thresholds outside 1-100, unknown
    kind or method, a malformed URL, a tcp target without a port, bad headers or expected
    statuses, a body over 64 KiB, reminders under 60 s, certificate warning outside 1-365 days,
    another tenant's channel or parent), ``invalid_condition`` (details ``conditions``: message,
    line, column, expected), ``egress_denied`` (the address and the rule); Conflict (409) when
    the tenant has a monitor of that name."""
    for required in ("name", "target"):
        if required not in fields:
            raise _invalid(required, "This field is required.")
    interval = fields.get("interval_seconds")
    if "timeout_seconds" not in fields and isinstance(interval, int) and not isinstance(interval, bool):
        # Without a timeout of its own, a short interval gets 80 % of it (Uptime Kuma's default,
        # server/model/monitor.js) when that is under the 10 s default: `interval_seconds: 10`
        # alone must be a valid monitor, and a check must end before the next is due.
        fields = {**fields, "timeout_seconds": min(DEFAULT_TIMEOUT_SECONDS, round(0.8 * interval, 3))}
    monitor = Monitor(tenant=tenant)
    channels = _apply(monitor, fields)
    now = timezone.now()
    monitor.next_due_at = now
    monitor.state_changed_at = now
    if not monitor.enabled:
        monitor.state = MonitorState.PAUSED
    with unique_or_conflict(_NAME_TAKEN, "name"):
        monitor.save()
        if channels:
            monitor.channels.set(channels)
    return monitor


def monitor_update(*, monitor: Monitor, **fields: Any) -> Monitor:
    """Changes any of MONITOR_FIELDS, checked as ``monitor_create`` checks them (same errors).
    A change to what a check does (CHECK_FIELDS) bumps `version`; a shorter interval brings the
    next check no later than one new interval from now; ``enabled`` set to false pauses and to
    true resumes, as ``monitor_pause`` / ``monitor_resume`` do. Only the columns this change
    touches are written: the run state the scheduler writes meanwhile is not overwritten with
    what `monitor` held when it was read."""
    before = {field: getattr(monitor, field) for field in CHECK_FIELDS}
    old_interval, was_enabled = monitor.interval_seconds, monitor.enabled
    channels = _apply(monitor, fields)
    new_version = any(getattr(monitor, field) != before[field] for field in CHECK_FIELDS & fields.keys())
    written = {field for field in fields if field != "channels"} | {"updated_at"}
    now = timezone.now()
    if monitor.interval_seconds < old_interval:
        monitor.next_due_at = min(monitor.next_due_at, now + timedelta(seconds=monitor.interval_seconds))
        written.add("next_due_at")
    with unique_or_conflict(_NAME_TAKEN, "name"):
        if was_enabled and not monitor.enabled:
            _set_paused(monitor, now)
            written.update(_RUN_STATE_FIELDS)
        elif not was_enabled and monitor.enabled:
            _set_resumed(monitor, now)
            written.update(_RUN_STATE_FIELDS)
        if new_version:
            # F(): two concurrent edits get two versions, not one.
            monitor.version = F("version") + 1
            written.add("version")
        monitor.save(update_fields=sorted(written))
        if channels is not None:
            monitor.channels.set(channels)
    if new_version:
        monitor.refresh_from_db(fields=["version"])
    return monitor


def monitor_delete(*, monitor: Monitor) -> None:
    """Deletes a monitor with its results, roll-ups, flips and maintenance windows; its
    dependents lose their parent, and those its current outage held are released first (alerted
    on their own: their outage is not lost with the parent's flips). Raises nothing of its own."""
    from monitors.alerts import dependents_release

    with transaction.atomic():
        dependents_release(parent=monitor, reason="deleted")
        monitor.delete()


def _set_paused(monitor: Monitor, now: datetime) -> None:
    if monitor.pk is not None:
        _outage_ended_by_operator(monitor, now)
    monitor.enabled = False
    monitor.state = MonitorState.PAUSED
    monitor.state_changed_at = now
    monitor.consecutive_failures = monitor.consecutive_successes = 0


def _outage_ended_by_operator(monitor: Monitor, now: datetime) -> None:
    """A down monitor paused: its outage ends without a recovery. The flip down → paused alerts
    nobody (an operator's act), but processing it releases the dependents this outage held, which
    would otherwise stay held, unalerted, for as long as the pause lasts (monitors.alerts).

    The state is read from the row under a lock, not from `monitor` (read earlier): the scheduler's
    flip to down (a conditional UPDATE on the old state) and this pause then happen one after the
    other, and whichever comes second sees the other's state."""
    from monitors.tasks import flips_alert_enqueue

    state = Monitor.objects.select_for_update().filter(pk=monitor.pk).values_list("state", flat=True).first()
    if state != MonitorState.DOWN:
        return
    flip = Flip.objects.create(
        tenant_id=monitor.tenant_id,
        monitor=monitor,
        created_at=now,
        old_state=MonitorState.DOWN,
        new_state=MonitorState.PAUSED,
        reason="paused by an operator",
    )
    transaction.on_commit(lambda: flips_alert_enqueue([flip.pk]), robust=True)


def _set_resumed(monitor: Monitor, now: datetime) -> None:
    monitor.enabled = True
    monitor.state = MonitorState.UNKNOWN
    monitor.state_changed_at = now
    monitor.consecutive_failures = monitor.consecutive_successes = 0
    monitor.next_due_at = now


def monitor_pause(*, monitor: Monitor) -> Monitor:
    """Stops the checks: ``enabled`` false, state ``paused``, streaks cleared. An operator's pause
    alerts nobody; pausing a monitor that is down writes the flip down → paused, so that the
    dependents its outage held are released and alerted on their own. Raises nothing of its own."""
    with transaction.atomic():
        _set_paused(monitor, timezone.now())
        monitor.save(update_fields=_RUN_STATE_FIELDS)
    return monitor


def monitor_resume(*, monitor: Monitor) -> Monitor:
    """Starts the checks again: ``enabled`` true, state ``unknown`` until the thresholds decide,
    streaks cleared, first check due now. Raises nothing of its own."""
    _set_resumed(monitor, timezone.now())
    monitor.save(update_fields=_RUN_STATE_FIELDS)
    return monitor


def monitor_check_now(*, monitor: Monitor) -> Monitor:
    """Makes the next check due now; the scheduler's dispatcher picks it up on its next pass
    (about a second). Nothing is checked here. Raises Conflict (409, ``monitor_paused``) for a
    paused monitor: no check would run."""
    if not monitor.enabled:
        raise Conflict("The monitor is paused: resume it to check it.", code="monitor_paused")
    monitor.next_due_at = timezone.now()
    monitor.save(update_fields=["next_due_at", "updated_at"])
    return monitor


def monitors_pause(*, monitors: Iterable[Monitor]) -> int:
    """``monitor_pause`` for each; returns how many. Raises nothing of its own."""
    count = 0
    for monitor in monitors:
        monitor_pause(monitor=monitor)
        count += 1
    return count


def monitors_resume(*, monitors: Iterable[Monitor]) -> int:
    """``monitor_resume`` for each; returns how many. Raises nothing of its own."""
    count = 0
    for monitor in monitors:
        monitor_resume(monitor=monitor)
        count += 1
    return count


def monitors_check_now(*, monitors: Iterable[Monitor]) -> int:
    """Makes the next check of every enabled one of `monitors` due now, in one UPDATE; returns how
    many. Paused ones are skipped. Raises nothing of its own."""
    ids: Sequence[int] = [monitor.pk for monitor in monitors]
    now = timezone.now()
    return Monitor.objects.filter(pk__in=ids, enabled=True).update(next_due_at=now, updated_at=now)


# --- maintenance windows ------------------------------------------------------------------------------


def _window_apply(window: MaintenanceWindow, fields: dict[str, Any]) -> None:
    unknown = sorted(set(fields) - WINDOW_FIELDS)
    if unknown:
        raise DomainError(
            f"Unknown maintenance window fields: {', '.join(unknown)}.",
            details={name: ["Unknown field."] for name in unknown},
            code="validation_error",
        )
    for field, value in fields.items():
        if field == "name":
            window.name = _text(field, value, MAX_NAME_CHARS, blank=False).strip()
        elif field == "monitor":
            window.monitor = _window_monitor(window.tenant_id, value)
        elif field == "starts_at":
            if not isinstance(value, datetime) or timezone.is_naive(value):
                raise _invalid(field, "Must be a date-time with a time zone.")
            window.starts_at = value
        elif field == "duration_minutes":
            window.duration_minutes = _whole(field, value, 1, MAX_ONCE_WINDOW_MINUTES)
        elif field == "recurrence":
            if value not in Recurrence.values:
                raise _invalid(field, f"One of {', '.join(Recurrence.values)}.")
            window.recurrence = value
        elif field == "timezone":
            window.timezone = _zone(value)
    if window.recurrence == Recurrence.WEEKLY and window.duration_minutes > MAX_WEEKLY_WINDOW_MINUTES:
        raise _invalid("duration_minutes", f"A weekly window lasts at most {MAX_WEEKLY_WINDOW_MINUTES} minutes.")


def _zone(value: Any) -> str:
    text = _text("timezone", value, 64, blank=False)
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _invalid("timezone", f"{text[:64]!r} is not an IANA time zone, e.g. Europe/Paris.") from None
    return text


def _window_monitor(tenant_id: int, value: Any) -> Monitor | None:
    if value is None:
        return None
    pk = value.pk if isinstance(value, Monitor) else value
    if isinstance(pk, bool) or not isinstance(pk, int) or not 1 <= pk <= MAX_INT:
        raise _invalid("monitor", "Must be a monitor id or null (every monitor of the tenant).")
    monitor = Monitor.objects.filter(tenant_id=tenant_id, pk=pk).first()
    if monitor is None:
        raise _invalid("monitor", f"No monitor of this tenant has id {pk}.")
    return monitor


def maintenance_window_create(*, tenant: Tenant, **fields: Any) -> MaintenanceWindow:
    """Creates a maintenance window in `tenant`: `name`, `starts_at` (aware), `duration_minutes`
    (1 to 31 days; a weekly one at most a week), `recurrence` (``once`` by default, or
    ``weekly``), `timezone` (IANA, default UTC), `monitor` (an id of the tenant's; None: the
    whole tenant). Raises DomainError (400 ``validation_error`` naming the field)."""
    for required in ("name", "starts_at", "duration_minutes"):
        if required not in fields:
            raise _invalid(required, "This field is required.")
    window = MaintenanceWindow(tenant=tenant)
    _window_apply(window, fields)
    window.save()
    return window


def maintenance_window_update(*, window: MaintenanceWindow, **fields: Any) -> MaintenanceWindow:
    """Changes any of `name`, `monitor`, `starts_at`, `duration_minutes`, `recurrence`,
    `timezone`, checked as ``maintenance_window_create`` checks them (same errors)."""
    _window_apply(window, fields)
    window.save()
    return window


def maintenance_window_delete(*, window: MaintenanceWindow) -> None:
    """Deletes a maintenance window; alerts flow again at once. Raises nothing of its own."""
    window.delete()
