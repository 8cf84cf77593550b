from __future__ import annotations

import io
import stat
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from accounts.models import ApiKey, Tenant, User, hash_api_key

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _var_dir(tmp_path: Path, settings: Any) -> Path:
    settings.VAR_DIR = tmp_path  # the first-run file goes here, not into the checkout's var/
    return tmp_path


def first_run_values(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_seed_demo_creates_each_tier_and_a_staff_user_once(tmp_path: Path) -> None:
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


def test_seed_demo_keeps_the_one_time_password_and_a_demo_key_in_a_file_only_its_owner_reads(tmp_path: Path) -> None:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    path = tmp_path / "first-run.txt"

    values = first_run_values(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in out.getvalue()
    assert User.objects.get(username=values["admin_username"]).check_password(values["admin_password"])
    key = ApiKey.objects.get(key_hash=hash_api_key(values["demo_api_key"]))
    assert key.tenant.slug == "globex"
    assert "events:write" in key.scopes

    # A second run neither rotates the password nor rewrites the file.
    before = path.read_text()
    call_command("seed_demo", stdout=io.StringIO())
    assert path.read_text() == before
    assert ApiKey.objects.count() == 1
