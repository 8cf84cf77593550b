from __future__ import annotations

from typing import Any

from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """`/api/v1/tenants` (the spec's spelling) and `/api/v1/tenants/` both resolve, without a
    redirect that would turn a POST into a GET."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trailing_slash = "/?"
