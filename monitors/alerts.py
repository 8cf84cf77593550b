"""A monitor's alerts (issue 11 item 4): flips to alerts and rules events, held dependents,
reminders while down, certificate-expiry warnings, and the sweep of flips whose task was lost.

Alerts go through the rules app's delivery machinery (``rules.services.notification_send``):
retries with backoff, dead letters, signed webhooks, Retry-After and the egress policy come with
it. Each alert names what it is about in the delivery's ``source_ref`` (``monitor-flip:<id>``,
``monitor-reminder:<monitor id>:<unix time>``, ``monitor-cert:<monitor id>:<expiry unix time>``),
unique per channel: a re-run never notifies a channel twice.

Which flips alert (Uptime Kuma's "important" beats, healthchecks' flips):

=====================  ==========================================================
→ down                 alerts (from up, unknown, and maintenance: a monitor still
                       down when its window ends alerts then, as in Uptime Kuma)
down → up              alerts (resolved, with how long it was down)
unknown/maintenance →  never alerts (nothing was reported down)
up
down → paused,         never alert (an operator's act, or a planned window); the
→ maintenance          pause service writes down → paused only (other pauses write
                       no flip), so that its held dependents are released
=====================  ==========================================================

A flip created inside an open maintenance window of the monitor (or its tenant) alerts nothing,
whatever its states. Events ``monitor.down`` / ``monitor.up`` go to the rules engine for every
flip to down or up, held and in-window ones included: rules decide for themselves.

What a webhook channel receives is the rules app's notification body, ``{delivery_id,
idempotency_key, alert: {title, ...}, message}``, whose ``alert`` holds, besides the title: for a
flip, the event's payload (``_payload``); for a reminder, the payload of the flip to down with
``type: "monitor.reminder"`` and ``down_for_seconds`` counted to the reminder; for a certificate,
``{type: "monitor.certificate", monitor, cert_expires_at, days_left, warning_days}``.

Dependencies (``Monitor.depends_on``), what Sentinel chose:

* A flip to down is **held** when the monitor's parent is down when the flip is processed (its
  state is ``down``; the parent's latest flip to down is then ``held_by``). Processing, not the
  child's flip time, because a shared dependency's outage flips parent and children in the same
  few checks in either order; the child's flip task runs after the parent's flip is written in
  most of those races. A held flip sends nothing on its own.
* The parent's alerts (down, up, reminders) carry one summary of its dependents held by its
  current outage, e.g. ``3 dependents also down: a, b, c``.
* When the parent's flip away from down is processed (to up, or paused, or maintenance; and
  even when the parent's own outage was held by a grandparent), each dependent its outage held
  and still down (its latest flip is the held one) is **released**: its ``held_by`` is cleared
  (a conditional UPDATE, so once) and its down alert is sent on its own then, so no outage is
  lost. A hold and the parent's release are serialised on the parent's row (select_for_update).
* A held dependent that recovers while its parent is down sends nothing: its up flip alerts only
  when the down flip it resolves alerted (not held, or released).
* The summary lists direct dependents only; in a chain, a grandparent's alerts name the parent.
  Two monitors depending on each other never hold each other's outage.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from monitors.maintenance import monitors_in_maintenance
from monitors.models import Flip, Monitor, MonitorState
from rules import services as rules_services
from rules.models import EventSource

logger = logging.getLogger("sentinel.monitors")

# A flip still unprocessed this long after it was written has lost its task (healthchecks'
# sendalerts picks up flips the same way).
FLIPS_SWEEP_AGE = timedelta(minutes=1)
FLIPS_SWEEP_LIMIT = 1000
# Names listed in a dependents summary; the rest are counted.
SUMMARY_NAMES = 10


# --- flips ------------------------------------------------------------------------------------


def flip_alert(*, flip_id: int, now: datetime | None = None) -> str:
    """Claims one flip and sends what it calls for. Safe to run twice, and concurrently.

    The claim (``UPDATE … SET processed_at = now WHERE id = … AND processed_at IS NULL``, row
    count 1) and everything the flip sends (deliveries, the rules event, the hold or release of
    dependents) are one transaction: of two workers, the second waits on the row and finds it
    processed; a worker killed midway leaves the flip unprocessed for ``flips_sweep``.

    Returns what happened: ``"alerted"``, ``"held"`` (a dependent of a down parent),
    ``"maintenance"`` (inside a window), ``"silent"`` (a flip that never alerts, or the recovery
    of a held dependent), ``"claimed"`` (processed already, or by another worker) or
    ``"missing"``.
    """
    now = now or timezone.now()
    with transaction.atomic():
        if Flip.objects.filter(pk=flip_id, processed_at=None).update(processed_at=now) != 1:
            return "claimed" if Flip.objects.filter(pk=flip_id).exists() else "missing"
        flip = Flip.objects.select_related("monitor", "monitor__tenant", "monitor__depends_on").get(pk=flip_id)
        monitor = flip.monitor
        # The flip to down an outage's end closes: read once, for the event, the alert and the release.
        down = _latest_flip(monitor, MonitorState.DOWN, before=flip) if flip.old_state == MonitorState.DOWN else None
        payload = _payload(flip, down)
        if flip.new_state in (MonitorState.DOWN, MonitorState.UP):
            _event_emit(flip, payload)
        in_window = bool(monitors_in_maintenance(monitors=[(monitor.pk, monitor.tenant_id)], now=flip.created_at))
        if flip.new_state == MonitorState.DOWN:
            return "maintenance" if in_window else _down_alert(flip, payload)
        if flip.old_state == MonitorState.DOWN:
            return _outage_end(flip, down, payload, in_window=in_window)
        return "maintenance" if in_window else "silent"


def _down_alert(flip: Flip, payload: dict[str, Any]) -> str:
    monitor = flip.monitor
    parent = monitor.depends_on
    # The parent's row lock orders this hold against the processing of the parent's up flip
    # (which takes the same lock before releasing its held dependents): without it, a hold
    # committed just after that release began would never be released, and the outage lost.
    parent_state = (
        Monitor.objects.select_for_update().filter(pk=parent.pk).values_list("state", flat=True).first()
        if parent is not None
        else None
    )
    if parent is not None and parent_state == MonitorState.DOWN:
        parent_flip = _latest_flip(parent, MonitorState.DOWN)
        # Two monitors depending on each other must not hold each other's outage.
        cycle = (
            parent_flip is not None
            and parent_flip.held_by_id is not None
            and (Flip.objects.filter(pk=parent_flip.held_by_id, monitor=monitor).exists())
        )
        if parent_flip is not None and not cycle:
            Flip.objects.filter(pk=flip.pk).update(held_by=parent_flip)
            return "held"
    _notify(
        monitor,
        title=f"{monitor.name} is down",
        message=_down_message(flip, extra=_dependents_line(flip)),
        context=payload,
        source_ref=f"monitor-flip:{flip.pk}",
    )
    return "alerted"


def _outage_end(flip: Flip, down: Flip | None, payload: dict[str, Any], *, in_window: bool) -> str:
    """A flip from down to anything else (`down`: the flip to down it ends): the up alert when it
    is due, then the release of the dependents this outage held (whatever the new state: up,
    paused, maintenance, and even when this monitor's own outage was held, so a chain of
    dependents loses none)."""
    monitor = flip.monitor
    # Taken before the held dependents are read, for the summary and the release (see _down_alert).
    Monitor.objects.select_for_update().filter(pk=monitor.pk).values_list("pk", flat=True).first()
    outcome = "maintenance" if in_window else "silent"
    if flip.new_state == MonitorState.UP and not in_window and _outage_reported(monitor, down):
        summary = _dependents_line(down, recovered=True)
        _notify(
            monitor,
            title=f"{monitor.name} is up",
            message=_up_message(flip, down, extra=summary),
            context=payload,
            source_ref=f"monitor-flip:{flip.pk}",
        )
        outcome = "alerted"
    if down is not None:
        _dependents_release(down, parent_state=flip.new_state)
    return outcome


def _outage_reported(monitor: Monitor, down: Flip | None) -> bool:
    """Whether the outage that `down` began was alerted: not held (or released since), and not
    begun inside a maintenance window. An up flip with no down flip before it says nothing."""
    if down is None or down.held_by_id is not None:
        return False
    return not monitors_in_maintenance(monitors=[(monitor.pk, monitor.tenant_id)], now=down.created_at)


def dependents_release(*, parent: Monitor, reason: str) -> None:
    """Releases the dependents held by `parent`'s latest outage (see the module docstring), for
    when the parent's outage ends without a flip of its own: the parent is being deleted.
    `reason` says what became of it ("deleted"). Call it inside the transaction that deletes."""
    down = _latest_flip(parent, MonitorState.DOWN)
    if down is not None:
        Monitor.objects.select_for_update().filter(pk=parent.pk).values_list("pk", flat=True).first()
        _dependents_release(down, parent_state=reason)


def _dependents_release(parent_down: Flip, *, parent_state: str) -> None:
    """Sends, on their own, the down alerts of dependents held by `parent_down` and still down;
    `parent_state` is what the parent is now."""
    for held in Flip.objects.filter(held_by=parent_down).select_related("monitor", "monitor__tenant"):
        child = held.monitor
        latest = _latest_flip(child)
        if child.state != MonitorState.DOWN or latest is None or latest.pk != held.pk:
            continue
        # Conditional: the release happens once even if this parent's up flip were re-run.
        if Flip.objects.filter(pk=held.pk, held_by=parent_down).update(held_by=None) != 1:
            continue
        note = f"Held while {parent_down.monitor.name} was down; it is {parent_state} now, this one is still down."
        _notify(
            child,
            title=f"{child.name} is down",
            message=_down_message(held, extra=note),
            context=_payload(held),
            source_ref=f"monitor-flip:{held.pk}",
        )


def _latest_flip(monitor: Monitor, new_state: str | None = None, *, before: Flip | None = None) -> Flip | None:
    flips = Flip.objects.filter(monitor=monitor)
    if new_state is not None:
        flips = flips.filter(new_state=new_state)
    if before is not None:
        flips = flips.filter(Q(created_at__lt=before.created_at) | Q(created_at=before.created_at, pk__lt=before.pk))
    return flips.order_by("-created_at", "-id").first()


def _dependents_line(down: Flip | None, *, recovered: bool = False) -> str:
    """One summary of the dependents held by the outage `down` began: those still down, or for a
    recovery all that were held (each still down is then alerted on its own)."""
    if down is None or down.new_state != MonitorState.DOWN:
        return ""
    held = Flip.objects.filter(held_by=down)
    if not recovered:
        held = held.filter(monitor__state=MonitorState.DOWN)
    names = sorted(set(held.values_list("monitor__name", flat=True)))
    if not names:
        return ""
    shown = ", ".join(names[:SUMMARY_NAMES]) + (
        f" and {len(names) - SUMMARY_NAMES} more" if len(names) > SUMMARY_NAMES else ""
    )
    noun = "dependent" if len(names) == 1 else "dependents"
    if recovered:
        return f"{len(names)} {noun} also went down meanwhile: {shown}."
    return f"{len(names)} {noun} also down: {shown}."


# --- reminders --------------------------------------------------------------------------------


def reminders_send(*, now: datetime | None = None) -> int:
    """Reminds the channels of each monitor still down ``reminder_interval_seconds`` after its
    down alert or its last reminder ("still down since …, for 2 h 10 min"). Returns how many
    monitors were reminded.

    One query for the candidates (down, enabled, a reminder interval set), then per due monitor
    a conditional UPDATE of ``last_reminder_at`` from the value read, so of two beats or workers
    only one reminds. Not reminded: a held dependent (its parent's reminders carry it), and a
    monitor inside a maintenance window.
    """
    now = now or timezone.now()
    candidates = list(
        Monitor.objects.filter(state=MonitorState.DOWN, enabled=True, reminder_interval_seconds__isnull=False)
        .select_related("tenant")
        .order_by("pk")
    )
    due = [monitor for monitor in candidates if _reminder_due(monitor, now)]
    in_window = monitors_in_maintenance(monitors=[(m.pk, m.tenant_id) for m in due], now=now)
    sent = 0
    for monitor in due:
        if monitor.pk in in_window:
            continue
        down = _latest_flip(monitor)
        if down is None or down.new_state != MonitorState.DOWN or down.held_by_id is not None:
            continue
        with transaction.atomic():
            claimed = Monitor.objects.filter(
                pk=monitor.pk, state=MonitorState.DOWN, last_reminder_at=monitor.last_reminder_at
            )
            if claimed.update(last_reminder_at=now) != 1:
                continue
            since = down.created_at
            lines = [f"{monitor.name} is still down since {_when(since)}, for {_duration(now - since)}."]
            lines += [f"Target: {monitor.target}", f"Reason: {down.reason or monitor.last_reason or 'not recorded'}"]
            summary = _dependents_line(down)
            _notify(
                monitor,
                title=f"{monitor.name} is still down",
                message="\n".join([*lines, summary] if summary else lines),
                context={**_payload(down), "type": "monitor.reminder", "down_for_seconds": _seconds(now - since)},
                source_ref=f"monitor-reminder:{monitor.pk}:{int(now.timestamp())}",
            )
        sent += 1
    return sent


def _reminder_due(monitor: Monitor, now: datetime) -> bool:
    assert monitor.reminder_interval_seconds is not None
    last = monitor.state_changed_at
    # A reminder of an earlier outage does not count against this one.
    if monitor.last_reminder_at is not None and monitor.last_reminder_at > last:
        last = monitor.last_reminder_at
    return now - last >= timedelta(seconds=monitor.reminder_interval_seconds)


# --- certificates -----------------------------------------------------------------------------


def cert_warnings_check(*, monitor_ids: Sequence[int] | None = None, now: datetime | None = None) -> int:
    """Warns the channels of each monitor whose TLS certificate expires within its
    ``cert_expiry_warning_days`` (or has expired), once per certificate. Returns how many
    monitors were warned. `monitor_ids` narrows the scan (the scheduler's batch); None scans
    every enabled monitor with a known expiry (the beat task) in one query.

    Once per certificate: a warning at ``cert_warned_at`` covers the certificate whose warning
    period (``cert_expires_at`` minus the warning days) began before it; a renewed certificate
    expires later, its period begins after that warning, and it is warned about in its turn.
    The claim is a conditional UPDATE of ``cert_warned_at`` from the value read.
    """
    now = now or timezone.now()
    monitors = Monitor.objects.filter(
        enabled=True, cert_expires_at__isnull=False, cert_expiry_warning_days__isnull=False
    ).select_related("tenant")
    if monitor_ids is not None:
        monitors = monitors.filter(pk__in=list(monitor_ids))
    warned = 0
    for monitor in monitors:
        expires, days = monitor.cert_expires_at, monitor.cert_expiry_warning_days
        assert expires is not None and days is not None
        period_start = expires - timedelta(days=days)
        if now < period_start or (monitor.cert_warned_at is not None and monitor.cert_warned_at >= period_start):
            continue
        with transaction.atomic():
            claimed = Monitor.objects.filter(pk=monitor.pk, cert_warned_at=monitor.cert_warned_at)
            if claimed.update(cert_warned_at=now) != 1:
                continue
            left = expires - now
            when = f"expires in {_duration(left)}" if left.total_seconds() > 0 else f"expired {_duration(-left)} ago"
            _notify(
                monitor,
                title=f"{monitor.name}: TLS certificate {when}",
                message=f"The TLS certificate of {monitor.name} ({monitor.target}) {when}, on {_when(expires)}.",
                context={
                    "type": "monitor.certificate",
                    "monitor": _monitor_json(monitor),
                    "cert_expires_at": expires.isoformat(),
                    "days_left": round(left.total_seconds() / 86400, 2),
                    "warning_days": days,
                },
                source_ref=f"monitor-cert:{monitor.pk}:{int(expires.timestamp())}",
            )
        warned += 1
    return warned


# --- the sweep --------------------------------------------------------------------------------


def flips_unprocessed(*, older_than: timedelta = FLIPS_SWEEP_AGE, now: datetime | None = None) -> list[int]:
    """Ids of flips written over `older_than` ago and still unprocessed (their task was lost), the
    oldest first, at most FLIPS_SWEEP_LIMIT (served by the partial index on unprocessed flips)."""
    horizon = (now or timezone.now()) - older_than
    return list(
        Flip.objects.filter(processed_at=None, created_at__lt=horizon)
        .order_by("created_at")
        .values_list("pk", flat=True)[:FLIPS_SWEEP_LIMIT]
    )


# --- what is sent -----------------------------------------------------------------------------


def _notify(monitor: Monitor, *, title: str, message: str, context: dict[str, Any], source_ref: str) -> list[int]:
    # Only the monitor's tenant's active channels: notification_send drops any other.
    return rules_services.notification_send(
        tenant=monitor.tenant,
        channels=monitor.channels.all(),
        title=title,
        message=message,
        context=context,
        source_ref=source_ref,
    )


def _event_emit(flip: Flip, payload: dict[str, Any]) -> None:
    """``monitor.down`` / ``monitor.up`` (`payload`, ``_payload``) into the rules engine; its
    `source_ref` keeps a re-run from storing it twice."""
    rules_services.event_ingest(
        tenant=flip.monitor.tenant,
        payloads=[payload],
        source=EventSource.MONITOR,
        source_ref=f"monitor-flip:{flip.pk}",
    )


def _payload(flip: Flip, down: Flip | None = None) -> dict[str, Any]:
    """The event (and webhook ``alert``) of a flip; `down` is the flip to down that an up flip
    ends (None otherwise)::

    {"type": "monitor.down" | "monitor.up",
     "monitor": {"id": int, "name": str, "kind": "http" | "tcp", "target": str},
     "state": new state, "previous_state": old state, "reason": str (why the last check
     failed, "" for up), "at": ISO 8601 UTC time of the flip,
     "down_for_seconds": for up after down, seconds since the flip to down; else null}
    """
    down_for: float | None = None
    if flip.new_state == MonitorState.UP and down is not None:
        down_for = _seconds(flip.created_at - down.created_at)
    return {
        "type": f"monitor.{flip.new_state}",
        "monitor": _monitor_json(flip.monitor),
        "state": flip.new_state,
        "previous_state": flip.old_state,
        "reason": flip.reason,
        "at": flip.created_at.isoformat(),
        "down_for_seconds": down_for,
    }


def _monitor_json(monitor: Monitor) -> dict[str, Any]:
    return {"id": monitor.pk, "name": monitor.name, "kind": monitor.kind, "target": monitor.target}


def _down_message(flip: Flip, *, extra: str = "") -> str:
    monitor = flip.monitor
    lines = [
        f"{monitor.name} is DOWN since {_when(flip.created_at)} (was {flip.old_state}).",
        f"Target: {monitor.target}",
        f"Reason: {flip.reason or 'not recorded'}",
    ]
    return "\n".join([*lines, extra] if extra else lines)


def _up_message(flip: Flip, down: Flip | None, *, extra: str = "") -> str:
    monitor = flip.monitor
    after = f" after {_duration(flip.created_at - down.created_at)} down" if down is not None else ""
    since = f" (down since {_when(down.created_at)})" if down is not None else ""
    lines = [f"{monitor.name} is UP again{after}, at {_when(flip.created_at)}{since}.", f"Target: {monitor.target}"]
    return "\n".join([*lines, extra] if extra else lines)


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(span: timedelta) -> float:
    return round(span.total_seconds(), 3)


def _duration(span: timedelta) -> str:
    """A span in words an operator reads at a glance: ``2 h 10 min``, ``3 d 4 h``, ``45 s``."""
    seconds = max(int(span.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"
