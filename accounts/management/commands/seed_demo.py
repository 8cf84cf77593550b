"""`python manage.py seed_demo`: demo tenants of each tier, the default `/proxy/` route and a staff
user, idempotently.

The staff user's password is random and printed once, when the user is created; later runs
leave it alone (reset it with `manage.py changepassword`).
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from accounts.models import Membership, Role, Tenant, Tier, User
from gateway.services import route_ensure_default

DEMO_TENANTS = [
    ("Acme Payments", "acme", Tier.VITAL),
    ("Globex Retail", "globex", Tier.STANDARD),
    ("Initech Labs", "initech", Tier.ECONOMY),
]


class Command(BaseCommand):
    help = "Create demo tenants (one per tier) and a staff user; safe to run again."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--admin-username", default="admin")
        parser.add_argument("--admin-email", default="admin@sentinel.local")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        for name, slug, tier in DEMO_TENANTS:
            tenant, created = Tenant.objects.get_or_create(slug=slug, defaults={"name": name, "tier": tier})
            self.stdout.write(f"tenant {tenant.slug:<10} tier={tenant.tier:<9} {'created' if created else 'exists'}")
            owner_name = f"{slug}-admin"
            if not User.objects.filter(username=owner_name).exists():
                owner = User.objects.create_user(username=owner_name, email=f"{owner_name}@example.com")
                owner.set_unusable_password()  # demo owners exist for the data; log in as staff
                owner.save(update_fields=["password"])
                Membership.objects.create(user=owner, tenant=tenant, role=Role.ADMIN)

        route = route_ensure_default(downstream_url=settings.SENTINEL_GATEWAY["DOWNSTREAM_URL"])
        self.stdout.write(f"route  {route.path_prefix:<10} -> {', '.join(route.targets)}")

        username = options["admin_username"]
        if User.objects.filter(username=username).exists():
            self.stdout.write(
                f"staff user {username!r} exists; password unchanged (manage.py changepassword {username})"
            )
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email=options["admin_email"], password=password)
        self.stdout.write(self.style.WARNING(f"staff user created: {username} / {password}  (shown once)"))
