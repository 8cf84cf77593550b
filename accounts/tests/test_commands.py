from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from accounts.models import Tenant, User

pytestmark = pytest.mark.django_db


def test_seed_demo_creates_each_tier_and_a_staff_user_once() -> None:
    first = io.StringIO()
    call_command("seed_demo", stdout=first)
    second = io.StringIO()
    call_command("seed_demo", stdout=second)

    assert set(Tenant.objects.values_list("tier", flat=True)) == {"vital", "standard", "economy"}
    assert Tenant.objects.count() == 3
    password = first.getvalue().split("staff user created: admin / ")[1].split()[0]
    assert User.objects.get(username="admin").check_password(password)
    assert User.objects.get(username="admin").is_staff
    assert "password unchanged" in second.getvalue()
    assert password not in second.getvalue()
