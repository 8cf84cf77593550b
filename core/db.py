"""Database idioms the apps' services share."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

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


def postgres_connect_kwargs(database: Mapping[str, Any], *, application_name: str) -> dict[str, Any]:
    """psycopg's connection arguments for a Django `DATABASES` entry: a connection of the caller's
    own to the same database (Django's belong to threads; an event loop's writer keeps one), in
    autocommit (transactions are explicit, `connection.transaction()`), with a connect timeout of
    5 s (an unreachable server must fail fast and be retried) and `application_name` to tell it
    apart in `pg_stat_activity`."""
    options = dict(database.get("OPTIONS") or {})
    options.pop("pool", None)
    options.pop("server_side_binding", None)
    options.pop("assume_role", None)
    kwargs: dict[str, Any] = {
        "dbname": database["NAME"],
        "user": database.get("USER") or None,
        "password": database.get("PASSWORD") or None,
        "host": database.get("HOST") or None,
        "port": database.get("PORT") or None,
        "application_name": application_name,
        "connect_timeout": 5,
        "autocommit": True,
        **options,
    }
    return {key: value for key, value in kwargs.items() if value is not None}
