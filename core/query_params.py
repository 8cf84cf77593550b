"""Query-string values the REST APIs share, each refused with a 400 that names the parameter."""

from __future__ import annotations

from datetime import UTC, datetime, time

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from rest_framework import exceptions

MOMENT_HELP = "Must be an ISO 8601 date-time, e.g. 2026-11-30T14:02:00Z."
MAX_MOMENT_CHARS = 64


def iso_moment(raw: str | None, *, name: str) -> datetime | None:
    """An ISO 8601 date-time (`2026-11-30T14:02:00Z`, with an offset, or none: UTC) or a date (its
    midnight, UTC), as aware UTC; None when `raw` is None or empty.

    Raises DRF's ValidationError ``{name: [why]}`` (a 400) for text that is not one, holds NUL
    (PostgreSQL cannot compare it), is longer than MAX_MOMENT_CHARS, names an impossible day
    (February 30th) or lies outside the dates Python and the database can hold."""
    if raw is None or raw == "":
        return None
    if "\x00" in raw or len(raw) > MAX_MOMENT_CHARS:
        raise exceptions.ValidationError({name: [MOMENT_HELP]})
    try:
        moment = parse_datetime(raw)
        day = parse_date(raw) if moment is None else None
    except ValueError:  # well-formed but impossible, e.g. February 30th
        moment, day = None, None
    if day is not None:
        moment = datetime.combine(day, time.min)
    if moment is None:
        raise exceptions.ValidationError({name: [MOMENT_HELP]})
    try:  # in UTC now: 9999-12-31T23:00-05:00 is past the last datetime, and would fail in the database
        return (moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        raise exceptions.ValidationError({name: ["Out of the range of dates."]}) from None
