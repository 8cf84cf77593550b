"""Incidents: opened, updated, escalated and resolved by the insight engine's findings, and
acknowledged or resolved by people (API, admin). Each new, escalated or resolved incident goes
into the rules engine as an event of type `incident` (docs/insight.md), so a rule can page.

Races: two workers analysing the same window may both try to open one (kind, subject). The
partial unique constraint (one unresolved incident per kind and subject) lets one INSERT win;
the loser's fails and it updates the winner's row instead. Each change of state is a conditional
UPDATE (``... WHERE severity IN (lower ones)``, ``... WHERE status != 'resolved'``) whose row
count says who made it, and only that caller emits the event, in the same transaction, so an
escalation or a resolution is announced once however many workers saw it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Tenant
from core.errors import Conflict
from observability import selectors
from observability.insight.config import insight_config
from observability.insight.detectors import Finding
from observability.models import SEVERITY_RANK, Incident, IncidentStatus, Severity
from rules.models import EventSource
from rules.services import event_ingest

logger = logging.getLogger("sentinel.insight")

OPENED, ESCALATED, RESOLVED = "opened", "escalated", "resolved"


def incident_observe(*, finding: Finding, now: datetime) -> tuple[Incident, str | None]:
    """Records that `finding` holds at `now`: opens its incident, or updates the unresolved one
    (last seen, summary, evidence), escalating it when the finding is more severe (severity never
    drops while the incident lasts; an acknowledged incident that escalates is open again).

    Returns (the incident, OPENED | ESCALATED | None); the event of a change is ingested once.
    """
    with transaction.atomic():
        if not Incident.objects.unresolved().filter(kind=finding.kind, subject=finding.subject).exists():
            opened = _open(finding, now)
            if opened is not None:
                _announce(opened, OPENED)
                return opened, OPENED
        change = ESCALATED if _escalate(finding) else None
        current = Incident.objects.unresolved().filter(kind=finding.kind, subject=finding.subject)
        incident = current.select_for_update().first()
        if incident is None:  # resolved by hand in the meantime: the finding opens a new one
            return incident_observe(finding=finding, now=now)
        if incident.last_seen < now:
            incident.evidence = _evidence_with_peak(incident, finding)  # reads the summary it replaces
            incident.last_seen, incident.summary = now, finding.summary[:500]
            incident.save(update_fields=["last_seen", "summary", "evidence"])
        if change is not None:
            _announce(incident, ESCALATED)
        return incident, change


def _evidence_with_peak(incident: Incident, finding: Finding) -> dict[str, Any]:
    """The finding's figures (the present), with `peak`: the figures of the most severe
    observation so far, which the incident's severity stands for (it never drops while the
    incident lasts, while the summary and the figures follow the present)."""
    previous = dict(incident.evidence)
    peak = previous.pop("peak", None) or {**previous, "severity": incident.severity, "summary": incident.summary}
    if SEVERITY_RANK[Severity(finding.severity)] >= SEVERITY_RANK[Severity(incident.severity)]:
        peak = {**finding.evidence, "severity": finding.severity, "summary": finding.summary[:500]}
    return {**finding.evidence, "peak": peak}


def _open(finding: Finding, now: datetime) -> Incident | None:
    """The new incident, or None when another worker opened it first (the constraint refused)."""
    try:
        with transaction.atomic():
            return Incident.objects.create(
                kind=finding.kind,
                subject=finding.subject[:300],
                tenant_uuid=finding.tenant_uuid,
                severity=finding.severity,
                summary=finding.summary[:500],
                evidence=finding.evidence,
                first_seen=now,
                last_seen=now,
            )
    except IntegrityError:
        return None


def _escalate(finding: Finding) -> bool:
    lower = [severity for severity, rank in SEVERITY_RANK.items() if rank < SEVERITY_RANK[Severity(finding.severity)]]
    moved = (
        Incident.objects.unresolved()
        .filter(kind=finding.kind, subject=finding.subject, severity__in=lower)
        .update(severity=finding.severity, status=IncidentStatus.OPEN)
    )
    return moved == 1


def incidents_resolve_quiet(
    *, still_found: set[tuple[str, str]], quiet_since: datetime, now: datetime
) -> list[Incident]:
    """Resolves every unresolved incident whose finding was last seen before `quiet_since` and
    is not among `still_found` ((kind, subject) pairs): the engine has not seen it for the
    resolution delay (INSIGHT_RESOLVE_AFTER_PERIODS analysis periods), as Alertmanager resolves
    an alert that stopped firing. Returns those it resolved (each announced once)."""
    resolved = []
    for incident in Incident.objects.unresolved().filter(last_seen__lt=quiet_since):
        if (incident.kind, incident.subject) in still_found:
            continue
        with transaction.atomic():
            moved = (
                Incident.objects.unresolved()
                .filter(pk=incident.pk, last_seen__lt=quiet_since)
                .update(status=IncidentStatus.RESOLVED, resolved_at=now)
            )
            if moved:
                incident.refresh_from_db()
                _announce(incident, RESOLVED)
                resolved.append(incident)
    return resolved


def incident_acknowledge(*, incident: Incident, by: str, now: datetime | None = None) -> Incident:
    """Someone is on it: an open incident becomes acknowledged (it still updates, and escalation
    opens it again). Acknowledging an acknowledged one changes nothing. Raises Conflict when the
    incident is resolved."""
    moved = Incident.objects.filter(pk=incident.pk, status=IncidentStatus.OPEN).update(
        status=IncidentStatus.ACKNOWLEDGED, acknowledged_at=now or timezone.now(), acknowledged_by=by[:150]
    )
    incident.refresh_from_db()
    if not moved and incident.status == IncidentStatus.RESOLVED:
        raise Conflict("This incident is resolved.", code="incident_resolved")
    return incident


def incident_resolve(*, incident: Incident, by: str, now: datetime | None = None) -> Incident:
    """Resolves an incident by hand (the event says so, with `resolved_by`). If the finding
    persists the next analysis opens a new incident. Raises Conflict when already resolved."""
    with transaction.atomic():
        moved = (
            Incident.objects.unresolved()
            .filter(pk=incident.pk)
            .update(status=IncidentStatus.RESOLVED, resolved_at=now or timezone.now())
        )
        incident.refresh_from_db()
        if not moved:
            raise Conflict("This incident is already resolved.", code="incident_resolved")
        _announce(incident, RESOLVED, resolved_by=by)
    return incident


# --- Into the rules engine ---------------------------------------------------------------------


def incident_event(incident: Incident, change: str) -> dict[str, Any]:
    """The event payload of an incident's change (`opened`, `escalated`, `resolved`)."""
    return {
        "type": "incident",
        "kind": incident.kind,
        "severity": incident.severity,
        "subject": incident.subject,
        "summary": incident.summary,
        "evidence": incident.evidence,
        "incident_id": incident.pk,
        "status": incident.status,
        "change": change,
        "first_seen": incident.first_seen.isoformat(),
        "last_seen": incident.last_seen.isoformat(),
    }


def _events_tenant(incident: Incident) -> Tenant | None:
    """The incident's tenant when it has one, else the operator's (INSIGHT_EVENTS_TENANT)."""
    if incident.tenant_uuid is not None:
        tenant = selectors.tenant_by_uuid(uuid=incident.tenant_uuid)
        if tenant is not None:
            return tenant
    return selectors.operator_tenant(slug=insight_config().EVENTS_TENANT)


def _announce(incident: Incident, change: str, **extra: Any) -> None:
    """Ingests the change as an event, once: the source reference names the incident and the
    change (an escalation by its new severity), and event_ingest stores a reference only once."""
    tenant = _events_tenant(incident)
    if tenant is None:
        logger.warning(
            "incident event not sent: no tenant receives fleet-wide incidents (set INSIGHT_EVENTS_TENANT)",
            extra={"incident_id": incident.pk, "kind": incident.kind},
        )
        return
    step = incident.severity if change == ESCALATED else change
    payload = {**incident_event(incident, change), **extra}
    event_ingest(
        tenant=tenant, payloads=[payload], source=EventSource.INSIGHT, source_ref=f"incident:{incident.pk}:{step}"
    )
