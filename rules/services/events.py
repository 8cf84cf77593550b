"""Event ingest (SPEC 4): every payload checked before the first write, then stored and queued for evaluation."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.models import Tenant
from core.conf import sentinel_settings
from rules import metrics
from rules.models import (
    Event,
    EventSource,
)
from rules.services._common import MAX_EVENTS_PER_REQUEST, EventInvalid
from rules.tasks import events_evaluate_enqueue


def event_ingest(
    *, tenant: Tenant, payloads: Sequence[Any], source: str = EventSource.API, source_ref: str = ""
) -> list[int]:
    """Checks every payload, stores them as events and queues their evaluation once they are
    committed. Returns their ids, in the order given.

    Raises EventInvalid, before anything is written, when there are no payloads or more than
    MAX_EVENTS_PER_REQUEST, or when one cannot be stored (``event_problem``: not a JSON object,
    a `type` that is not a string, too deep, too large, NUL or lone surrogates in its text,
    non-finite numbers); the details name the first such payload by its index.

    With a `source_ref` (a stream entry id), events already stored from it are not stored again
    and an empty list is returned: the stream redelivered an entry whose acknowledgement was lost.
    """
    _payloads_check(payloads)
    if source_ref and Event.objects.filter(tenant=tenant, source_ref=f"{source_ref}:0").exists():
        return []
    now = timezone.now()
    events = [
        Event(
            tenant=tenant,
            type=_event_type(payload),
            payload=dict(payload),
            source=source,
            received_at=now,
            source_ref=f"{source_ref}:{position}" if source_ref else "",
        )
        for position, payload in enumerate(payloads)
    ]
    with transaction.atomic():
        Event.objects.bulk_create(events, batch_size=500)
        ids = [event.pk for event in events]
        # robust: a broker that is down must not turn stored events into an error answer; the
        # events sweeper (tasks.events_sweep) queues whatever stayed unevaluated.
        transaction.on_commit(lambda: events_evaluate_enqueue(ids), robust=True)
    metrics.events_ingested.inc(len(ids))
    return ids


def _payloads_check(payloads: Sequence[Any]) -> None:
    """Every check `event_ingest` makes before its first write; raises EventInvalid."""
    if not payloads:
        raise EventInvalid("Send at least one event.", details={"events": ["Send at least one event."]})
    if len(payloads) > MAX_EVENTS_PER_REQUEST:
        message = f"At most {MAX_EVENTS_PER_REQUEST} events per request (got {len(payloads)})."
        raise EventInvalid(message, details={"events": [message]})
    for index, payload in enumerate(payloads):
        problem = event_problem(payload=payload)
        if problem is not None:
            raise EventInvalid(f"Event {index}: {problem}", details={"events": {str(index): [problem]}})


def event_problem(*, payload: Any) -> str | None:
    """Why one payload cannot be stored as an event, or None: it must be a JSON object (a dict)
    whose `type`, when present, is a string, nested at most EVENT_MAX_DEPTH levels, at most
    EVENT_MAX_BYTES serialized, without NUL or lone surrogates in its text or non-finite numbers.
    ``event_ingest`` and ``rule_dry_run`` check with it; forms may too, to show the problem."""
    if not isinstance(payload, dict):
        return "An event must be a JSON object."
    if "type" in payload and not isinstance(payload["type"], str):
        return "`type` must be a string."
    problem = _structure_problem(payload, sentinel_settings.rules.EVENT_MAX_DEPTH)
    if problem is not None:
        return problem
    limit = sentinel_settings.rules.EVENT_MAX_BYTES
    # The depth is bounded by now, so json.dumps cannot recurse too deep.
    size = len(json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > limit:
        return f"An event may not be larger than {limit} bytes serialized (this one is {size})."
    return None


def _structure_problem(event: dict[str, Any], max_depth: int) -> str | None:
    """Nesting depth and values the database cannot store, walked iteratively (no recursion, so
    a hostile payload cannot exhaust the stack). The event itself is level 1."""
    pending: list[tuple[Any, int]] = [(event, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict):
            if depth > max_depth:
                return f"An event may not be nested more than {max_depth} levels deep."
            for key, item in value.items():
                problem = _text_problem(key)
                if problem is not None:
                    return problem
                pending.append((item, depth + 1))
        elif isinstance(value, list):
            if depth > max_depth:
                return f"An event may not be nested more than {max_depth} levels deep."
            pending.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            problem = _text_problem(value)
            if problem is not None:
                return problem
        elif isinstance(value, float) and not math.isfinite(value):
            # `1e999` parses to infinity, which JSON (and PostgreSQL's jsonb) cannot represent.
            return "Numbers must be finite."
    return None


def _text_problem(text: str) -> str | None:
    # PostgreSQL's jsonb refuses \u0000, and lone surrogates are not valid UTF-8: both would
    # fail at the INSERT (a 500) rather than here (a 400).
    if "\x00" in text:
        return "Text may not contain the NUL character (\\u0000)."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "Text must be valid Unicode (no lone surrogates)."
    return None


def _event_type(payload: Mapping[str, Any]) -> str:
    kind = payload.get("type")
    return kind[:100] if isinstance(kind, str) else ""
