"""`python manage.py seed_demo_routes`: the default `/proxy/` route to DOWNSTREAM_URL (SPEC 2.2),
created once; later edits of it stay."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from gateway.services import route_ensure_default


class Command(BaseCommand):
    help = "Create the default /proxy/ route to DOWNSTREAM_URL; safe to run again."

    def handle(self, *args: Any, **options: Any) -> None:
        route = route_ensure_default(downstream_url=settings.SENTINEL_GATEWAY["DOWNSTREAM_URL"])
        self.stdout.write(f"route  {route.path_prefix:<10} -> {', '.join(route.targets)}")
