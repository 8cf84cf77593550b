"""Failed logins are kept as `LoginFailure` rows (for the insight engine's brute-force detector),
from both doors, refusals by the limiter included; whatever the client sends as a username is
stored without a server error."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.models import LoginFailure, User
from accounts.services import login_failure_log
from tests.support.cast import PASSWORD

pytestmark = pytest.mark.django_db


def token_login(client: Client, username: str, password: str) -> int:
    body = {"username": username, "password": password}
    return client.post("/auth/token", body, content_type="application/json").status_code


def failures() -> list[tuple[str, str | None, str, str]]:
    return list(LoginFailure.objects.order_by("id").values_list("username", "client_ip", "reason", "door"))


def test_each_failed_login_is_kept_with_its_reason_and_door(alice: User) -> None:
    client = Client(REMOTE_ADDR="192.0.2.7")
    codes = [token_login(client, "Alice", f"guess-{n}") for n in range(6)]
    assert codes == [401] * 5 + [429]
    client.post("/admin/login/", {"username": "alice", "password": "wrong", "next": "/admin/"})
    assert failures() == [("alice", "192.0.2.7", "bad_credentials", "api")] * 5 + [
        ("alice", "192.0.2.7", "locked_out", "api"),
        ("alice", "192.0.2.7", "locked_out", "admin"),
    ]


def test_a_right_password_is_not_a_failure(alice: User) -> None:
    assert token_login(Client(), "alice", PASSWORD) == 200
    assert failures() == []


@pytest.mark.parametrize("username", ["nul\x00byte", "lone \ud800 surrogate", "x" * 400])
def test_any_username_is_stored_without_a_server_error(db: None, username: str) -> None:
    # NUL and lone surrogates are refused by the token serializer (400) before any password check.
    assert token_login(Client(), username, "whatever") in (400, 401)
    assert all("\x00" not in stored and len(stored) <= 150 for stored, _, _, _ in failures())


def test_the_service_stores_what_the_database_could_refuse(db: None) -> None:
    # A locked-out address is refused before the serializer sees the username, so whatever it is
    # reaches the service.
    login_failure_log(username="Lone \ud800\x00 Surrogate", ip="203.0.113.1", reason="locked_out", door="api")
    assert failures() == [("lone ? surrogate", "203.0.113.1", "locked_out", "api")]
