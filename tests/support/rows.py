"""What the database holds for a row, to prove a refused write changed nothing."""

from __future__ import annotations

from typing import Any

from django.db.models import Model


def row(instance: Model) -> dict[str, Any]:
    """Every stored column of ``instance``'s row, re-read from the database: ``{attname: value}``.

    Foreign keys appear by their ``<name>_id``. Raises ``DoesNotExist`` when the row is gone, so
    ``assert row(obj) == before`` also fails on a deletion.
    """
    fresh = type(instance)._base_manager.get(pk=instance.pk)
    return {field.attname: getattr(fresh, field.attname) for field in fresh._meta.concrete_fields}
