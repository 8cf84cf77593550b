"""Database idioms the apps' services share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import IntegrityError, transaction

from core.errors import Conflict


@contextmanager
def unique_or_conflict(message: str, *fields: str) -> Iterator[None]:
    """Runs the block in a savepoint and turns a unique constraint's IntegrityError into a
    Conflict (409) with `message` under each of `fields` in its details. Catching it, rather than
    checking first, also covers two concurrent requests for one name; the savepoint keeps an outer
    transaction usable."""
    try:
        with transaction.atomic():
            yield
    except IntegrityError:
        raise Conflict(message, details={field: [message] for field in fields}) from None
