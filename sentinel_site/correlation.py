"""The correlation id of the work in progress, and the rules for accepting one from a client.

Kept free of Django so the gateway engine and Celery tasks can share it.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

HEADER = "x-correlation-id"
# SPEC 2.1: at most 128 characters of [A-Za-z0-9._-]; anything else is replaced, never echoed.
_VALID = re.compile(r"[A-Za-z0-9._-]{1,128}")

current_correlation_id: ContextVar[str | None] = ContextVar("sentinel_correlation_id", default=None)


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def accept_correlation_id(candidate: str | None) -> str:
    """The client's id when it is valid, otherwise a fresh one."""
    if candidate and _VALID.fullmatch(candidate):
        return candidate
    return new_correlation_id()
