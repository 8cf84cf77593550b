"""`python manage.py bench_setup --upstream URL [--limits JSON]`: the gateway benchmark's data.

Run by `python -m bench.gateway` in its scratch database only: a `vital` tenant "bench" with the
given rate-limit overrides, a member user "bench" (no password) and the platform route `/proxy/`
(auth `jwt`, prefix stripped) to URL, all through the services. Prints the user's access token as
JSON on its last line: `{"jwt": "..."}`. Fails (the services' Conflict) when they exist already.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from accounts.api.serializers import TokenSerializer
from accounts.models import Role, Tier, User
from accounts.services import membership_add, tenant_create, user_create
from gateway.services import route_create


class Command(BaseCommand):
    help = "Create the gateway benchmark's tenant, user and /proxy/ route; print the user's JWT as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--upstream", required=True, help="the route's target, e.g. http://127.0.0.1:8080")
        parser.add_argument("--limits", type=json.loads, default={}, help="the tenant's rate-limit overrides (JSON)")

    def handle(self, *args: Any, **options: Any) -> None:
        with transaction.atomic():
            tenant = tenant_create(name="Bench", slug="bench", tier=Tier.VITAL, **options["limits"])
            user = user_create(username="bench", email="bench@example.com")
            membership_add(tenant=tenant, user=user, role=Role.MEMBER)
            route_create(
                tenant=None,
                name="Bench proxy",
                path_prefix="/proxy/",
                targets=[options["upstream"]],
                auth_mode="jwt",
                strip_prefix=True,
            )
        # Fetched anew: the token's claims name the membership made above.
        token = TokenSerializer.get_token(User.objects.get(pk=user.pk)).access_token
        self.stdout.write(json.dumps({"jwt": str(token)}))
