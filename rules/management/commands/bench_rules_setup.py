"""`python manage.py bench_rules_setup --name NAME`: the rules benchmark's data.

Run by `python -m bench.rules` in its bench database only: a user NAME (random password) with a
tenant of their own, and an API key of that tenant with the `events:write` scope, through the
services. Prints `{"tenant_id": ..., "api_key": "..."}` as JSON on its last line. Fails (the
services' refusal) when the user exists already.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from accounts.models import Scope
from accounts.services import api_key_create, user_signup


class Command(BaseCommand):
    help = "Create the rules benchmark's user, tenant and events:write key; print them as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="the user's and the tenant's name")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"]
        with transaction.atomic():
            user = user_signup(
                username=name, email=f"{name}@example.com", password=secrets.token_urlsafe(16), tenant_name=name
            )
            tenant = user.membership.tenant
            _, secret = api_key_create(tenant=tenant, name="bench", scopes=[Scope.EVENTS_WRITE])
        self.stdout.write(json.dumps({"tenant_id": tenant.pk, "api_key": secret}))
