"""Shared by the rules services: the errors they raise and the ingest bound."""

from __future__ import annotations

from core.errors import DomainError

# Events per call of `event_ingest` (a request, a stream entry).
MAX_EVENTS_PER_REQUEST = 1000


class RuleInvalid(DomainError):
    """The DSL does not compile; `details` carries the position and what was expected."""

    code = "invalid_rule"


class EventInvalid(DomainError):
    """Events refused before anything is stored (400). ``details`` in the API's validation shape:
    ``{"events": ["<why>"]}`` for a batch of the wrong size, ``{"events": {"<index>": ["<why>"]}}``
    for the first event that cannot be stored (its position in the batch, 0 for a lone event), and
    ``{"event": ["<why>"]}`` for a dry run's sample event."""

    code = "validation_error"


class RuleEvaluationFailed(DomainError):
    """A rule raised while evaluating a sample event (a dry run); the error is the ``__cause__``."""

    code = "evaluation_failed"
