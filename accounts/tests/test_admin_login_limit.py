"""The admin's login form is under the same failed-login limiter as `POST /auth/token` (issue 8,
item 13's limiter; found by the new-user trial): one budget per username and per client IP across
both doors, a locked login refused before the password is checked with a 429 and the wait, and a
success clearing the username's count."""

from __future__ import annotations

import http.client
import logging
import re
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pytest
from django.test import Client, override_settings

from accounts.models import User
from tests.support.cast import PASSWORD
from tests.support.processes import web_process

LOGIN = "/admin/login/"
WRONG = "not-the-password"


def admin_login(client: Client, username: str, password: str, **extra: str) -> tuple[int, str, dict[str, str]]:
    """Posts the admin's login form; (status, page, headers)."""
    response = client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"}, **extra)
    return response.status_code, response.content.decode(), dict(response.headers)


def token_login(client: Client, username: str, password: str, **extra: str) -> int:
    response = client.post(
        "/auth/token", {"username": username, "password": password}, content_type="application/json", **extra
    )
    return response.status_code


def signed_in(client: Client) -> bool:
    return client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_five_wrong_passwords_at_the_admin_lock_the_right_one_out(staff: User) -> None:
    client = Client()
    for _ in range(5):
        status, page, _ = admin_login(client, staff.username, WRONG)
        assert status == 200 and "Please enter the correct username" in page

    status, page, headers = admin_login(client, staff.username, PASSWORD)

    assert status == 429
    wait = int(headers["Retry-After"])
    assert 1 <= wait <= 900
    assert headers["RateLimit-Policy"] == '"login-username";q=5;w=900'
    assert re.search(r"Too many failed logins from this account or address; try again in \d+ seconds\.", page)
    assert 'name="password"' in page  # the login page, with the error on it
    assert not signed_in(client)


@pytest.mark.parametrize(
    "doors",
    [
        pytest.param(["admin"] * 5 + ["token"], id="admin-failures-lock-the-api"),
        pytest.param(["token"] * 5 + ["admin"], id="api-failures-lock-the-admin"),
        pytest.param(["admin", "token", "admin", "token", "admin", "token"], id="mixed-lock-the-api"),
        pytest.param(["token", "admin", "token", "admin", "token", "admin"], id="mixed-lock-the-admin"),
    ],
)
@pytest.mark.django_db
def test_failures_at_either_door_count_for_both(staff: User, doors: list[str]) -> None:
    client = Client()
    for door in doors[:-1]:
        if door == "admin":
            assert admin_login(client, staff.username, WRONG)[0] == 200
        else:
            assert token_login(client, staff.username, WRONG) == 401

    # The sixth try, with the right password, at the last door.
    if doors[-1] == "admin":
        assert admin_login(client, staff.username, PASSWORD)[0] == 429
        assert not signed_in(client)
    else:
        assert token_login(client, staff.username, PASSWORD) == 429


@pytest.mark.django_db
def test_the_usernames_case_and_spaces_do_not_make_a_second_budget(staff: User) -> None:
    client = Client()
    for spelling in (
        staff.username.upper(),
        f" {staff.username}",
        staff.username.title(),
        staff.username,
        "  " + staff.username.upper(),
    ):
        admin_login(client, spelling, WRONG)

    assert token_login(client, staff.username, PASSWORD) == 429


@pytest.mark.django_db
def test_twenty_failures_from_one_address_lock_that_address_for_every_username(staff: User) -> None:
    attacker = {"REMOTE_ADDR": "203.0.113.7"}
    client = Client()
    for n in range(20):  # four tries on each of five usernames: no username reaches its limit
        door = admin_login if n % 2 else token_login
        result = door(client, f"guess{n % 5}", WRONG, **attacker)
        assert (result[0] if isinstance(result, tuple) else result) in (200, 401)

    status, _, headers = admin_login(client, staff.username, PASSWORD, **attacker)
    assert status == 429
    assert headers["RateLimit-Policy"] == '"login-ip";q=20;w=900'
    assert token_login(client, staff.username, PASSWORD, **attacker) == 429

    # The same staff member from another address is not locked out.
    elsewhere = Client()
    assert admin_login(elsewhere, staff.username, PASSWORD, REMOTE_ADDR="198.51.100.4")[0] == 302
    assert signed_in(elsewhere)


@pytest.mark.django_db
def test_the_admin_reads_the_client_ip_as_the_api_does_behind_a_trusted_proxy(staff: User) -> None:
    proxy = "10.0.0.2"
    with override_settings(TRUSTED_PROXY_COUNT=1):
        client = Client()
        for n in range(20):
            # The client forges a left-most entry each time; the proxy appends the real address.
            forwarded = f"192.0.2.{n}, 203.0.113.7"
            admin_login(client, f"guess{n % 5}", WRONG, REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR=forwarded)

        locked = admin_login(client, staff.username, PASSWORD, REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="203.0.113.7")
        other = admin_login(Client(), staff.username, PASSWORD, REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="198.51.100.4")

    assert locked[0] == 429  # the forged entries did not spread the failures over twenty addresses
    assert other[0] == 302  # the proxy's own address is not what was locked


def attempt(client: Client, door: str, username: str, password: str) -> int:
    """One login at `door` ("admin" or "token"); the status: 200/302 admin, 200/401 token, 429."""
    if door == "admin":
        return admin_login(client, username, password)[0]
    return token_login(client, username, password)


SIGNED_IN = {"admin": 302, "token": 200}
REFUSED = {"admin": 200, "token": 401}


@pytest.mark.parametrize(("door", "other"), [("admin", "token"), ("token", "admin")])
@pytest.mark.django_db
def test_a_login_at_either_door_clears_the_usernames_count_for_both(staff: User, door: str, other: str) -> None:
    client = Client()
    for _ in range(4):
        assert attempt(client, door, staff.username, WRONG) == REFUSED[door]
    assert attempt(client, other, staff.username, PASSWORD) == SIGNED_IN[other]  # clears the four

    for _ in range(4):  # eight in the window, had the login at the other door not cleared them
        assert attempt(client, door, staff.username, WRONG) == REFUSED[door]
    assert attempt(client, door, staff.username, PASSWORD) == SIGNED_IN[door]

    # And the count starts again from zero: five more lock both doors.
    for _ in range(5):
        assert attempt(client, door, staff.username, WRONG) == REFUSED[door]
    assert attempt(Client(), other, staff.username, PASSWORD) == 429


@pytest.mark.django_db
def test_a_right_password_without_staff_status_is_refused_but_not_counted(alice: User) -> None:
    client = Client()
    for _ in range(6):
        status, page, _ = admin_login(client, alice.username, PASSWORD)
        assert status == 200 and "for a staff account" in page

    assert token_login(client, alice.username, PASSWORD) == 200


@pytest.mark.django_db
def test_an_admin_failure_is_logged_as_the_apis_are(staff: User, caplog: pytest.LogCaptureFixture) -> None:
    # The insight engine's brute-force detector reads these lines: the admin's must be among them.
    with caplog.at_level(logging.WARNING, logger="sentinel.security"):
        admin_login(Client(), staff.username, WRONG, REMOTE_ADDR="203.0.113.7")

    failed = [record for record in caplog.records if getattr(record, "event", None) == "login_failed"]
    assert [(r.username, r.client_ip, r.door) for r in failed] == [(staff.username, "203.0.113.7", "admin")]  # type: ignore[attr-defined]


# --- through a real web process ------------------------------------------------------------------


class Browser:
    """Just enough of a browser for the admin's login: a cookie jar and the CSRF token."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: str = "") -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Referer"] = f"http://127.0.0.1:{self.port}{LOGIN}"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        page = response.read().decode()
        for value in response.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(value).items():
                self.cookies[name] = morsel.value
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, page

    def login(self, username: str, password: str) -> tuple[int, dict[str, str], str]:
        _, _, form = self.request("GET", LOGIN)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
        assert token, form[:500]
        body = urlencode(
            {"csrfmiddlewaretoken": token.group(1), "username": username, "password": password, "next": "/admin/"}
        )
        return self.request("POST", LOGIN, body)


@pytest.mark.django_db(transaction=True)
def test_a_served_admin_refuses_the_sixth_login_with_429(staff: User) -> None:
    with web_process() as port:
        browser = Browser(port)
        for _ in range(5):
            status, _, page = browser.login(staff.username, WRONG)
            assert status == 200 and "Please enter the correct username" in page

        status, headers, page = browser.login(staff.username, PASSWORD)

    assert status == 429
    assert 1 <= int(headers["retry-after"]) <= 900
    assert "Too many failed logins" in page
    assert "sessionid" not in browser.cookies
