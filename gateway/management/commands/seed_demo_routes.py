"""`python manage.py seed_demo_routes`: the default `/proxy/` route to DOWNSTREAM_URL (SPEC 2.2),
created once; later edits of it stay. With ``--follow-downstream`` (what `make run` passes) a route
that still points at an earlier run's mock upstream follows this run's (`core.demo`)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from core.conf import sentinel_settings
from core.demo import follow_downstream_option, mock_upstream_moved
from gateway.services import route_ensure_default, route_update


class Command(BaseCommand):
    help = "Create the default /proxy/ route to DOWNSTREAM_URL; safe to run again."

    def add_arguments(self, parser: CommandParser) -> None:
        follow_downstream_option(parser, "route")

    def handle(self, *args: Any, **options: Any) -> None:
        downstream = sentinel_settings.gateway.DOWNSTREAM_URL
        route = route_ensure_default(downstream_url=downstream)
        moved = len(route.targets) == 1 and mock_upstream_moved(route.targets[0], downstream)
        if options["follow_downstream"] and moved:
            self.stdout.write(f"route  {route.path_prefix:<10} re-pointed from {route.targets[0]} (an earlier run's)")
            route = route_update(route=route, targets=[downstream])
        self.stdout.write(f"route  {route.path_prefix:<10} -> {', '.join(route.targets)}")
        if downstream.rstrip("/") not in [target.rstrip("/") for target in route.targets]:
            # Kept on purpose (later edits stay), but a changed DOWNSTREAM_URL is easy to miss.
            self.stderr.write(
                f"note: DOWNSTREAM_URL is {downstream}, but the existing {route.path_prefix} route keeps its "
                "targets; change them in the admin or with PATCH /api/v1/routes/<id>"
            )
