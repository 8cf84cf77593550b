"""`python manage.py seed_demo_routes`: the default `/proxy/` route to DOWNSTREAM_URL (SPEC 2.2),
created once; later edits of it stay."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from core.conf import sentinel_settings
from gateway.services import route_ensure_default


class Command(BaseCommand):
    help = "Create the default /proxy/ route to DOWNSTREAM_URL; safe to run again."

    def handle(self, *args: Any, **options: Any) -> None:
        downstream = sentinel_settings.gateway.DOWNSTREAM_URL
        route = route_ensure_default(downstream_url=downstream)
        self.stdout.write(f"route  {route.path_prefix:<10} -> {', '.join(route.targets)}")
        if downstream.rstrip("/") not in [target.rstrip("/") for target in route.targets]:
            # Kept on purpose (later edits stay), but a changed DOWNSTREAM_URL is easy to miss.
            self.stderr.write(
                f"note: DOWNSTREAM_URL is {downstream}, but the existing {route.path_prefix} route keeps its "
                "targets; change them in the admin or with PATCH /api/v1/routes/<id>"
            )
