"""`python manage.py seed_demo`: demo tenants of each tier, a staff user and a demo API key,
idempotently.

The staff user's password is random. It is printed when the user is created and kept, with a demo
API key, in `var/first-run.txt`, readable by its owner only (0600), the way Jenkins keeps its
initial admin password in a file: under `make run` the process output scrolls the printed line
away at once. Later runs leave the user, the key and the file alone (reset the password with
`manage.py changepassword`, then delete the file).

The gateway's demo route and the rules engine's demo channel and rule are seeded by those apps'
own commands (`seed_demo_routes`, `seed_demo_rules`); `make run` calls all three.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from accounts.models import Role, Scope, Tenant, Tier, User
from accounts.services import api_key_create, membership_add, tenant_create, user_create

DEMO_TENANTS = [
    ("Acme Payments", "acme", Tier.VITAL),
    ("Globex Retail", "globex", Tier.STANDARD),
    ("Initech Labs", "initech", Tier.ECONOMY),
]
# The tenant whose API key the first-run file holds (and whose demo rule `seed_demo_rules` adds).
DEMO_KEY_TENANT = "globex"
DEMO_KEY_SCOPES = [Scope.PROXY.value, Scope.EVENTS_WRITE.value, Scope.TRANSACTIONS_WRITE.value, Scope.API_READ.value]


def first_run_file() -> Path:
    """Where the one-time credentials are kept (`var/first-run.txt`)."""
    return Path(settings.VAR_DIR) / "first-run.txt"


class Command(BaseCommand):
    help = "Create demo tenants (one per tier), a staff user and a demo API key; safe to run again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--admin-username", default="admin")
        parser.add_argument("--admin-email", default="admin@sentinel.local")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        # Through the services, like every other write: the running proxies learn of the tenants.
        for name, slug, tier in DEMO_TENANTS:
            tenant = Tenant.objects.filter(slug=slug).first()
            created = tenant is None
            if tenant is None:
                tenant = tenant_create(name=name, slug=slug, tier=tier)
            self.stdout.write(f"tenant {tenant.slug:<10} tier={tenant.tier:<9} {'created' if created else 'exists'}")
            owner_name = f"{slug}-admin"
            if not User.objects.filter(username=owner_name).exists():
                # No password (unusable): demo owners exist for the data; log in as staff.
                owner = user_create(username=owner_name, email=f"{owner_name}@example.com")
                membership_add(tenant=tenant, user=owner, role=Role.ADMIN)

        username = options["admin_username"]
        if User.objects.filter(username=username).exists():
            self.stdout.write(
                f"staff user {username!r} exists; password unchanged (manage.py changepassword {username})"
            )
            return
        password = secrets.token_urlsafe(12)
        user_create(
            username=username, email=options["admin_email"], password=password, is_staff=True, is_superuser=True
        )
        _, key = api_key_create(
            tenant=Tenant.objects.get(slug=DEMO_KEY_TENANT), name="demo (first run)", scopes=DEMO_KEY_SCOPES
        )
        path = _write_first_run(username=username, password=password, api_key=key)
        self.stdout.write(self.style.WARNING(f"staff user created: {username} / {password}  (shown once)"))
        self.stdout.write(self.style.WARNING(f"credentials and a demo API key kept in {path} (mode 0600)"))


def _write_first_run(*, username: str, password: str, api_key: str) -> Path:
    """Writes the first-run credentials, readable by the owner only; replaces an older file."""
    path = first_run_file()
    text = (
        "# Sentinel's first-run credentials. Readable by you only; delete this file once noted.\n"
        f"admin_username={username}\n"
        f"admin_password={password}\n"
        f"# An API key of the demo tenant {DEMO_KEY_TENANT!r} (scopes: {', '.join(DEMO_KEY_SCOPES)}).\n"
        f"demo_api_key={api_key}\n"
    )
    path.unlink(missing_ok=True)
    # O_EXCL after the unlink: the file is created with 0600 from the start, never readable by others.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    return path
