"""Signup, tokens, refresh, /auth/me and the failed-login limiter, through the HTTP API."""

from __future__ import annotations

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import Membership, Role, User
from tests.support.cast import PASSWORD

pytestmark = pytest.mark.django_db


def signup(client: APIClient, **overrides: str) -> tuple[int, dict]:
    body = {"username": "carol", "email": "carol@example.com", "password": "a-long-unusual-passphrase"}
    body.update(overrides)
    response = client.post("/auth/signup", body, format="json")
    return response.status_code, response.json()


def test_signup_creates_a_user_who_administers_a_new_tenant() -> None:
    status, body = signup(APIClient())

    assert status == 201
    assert body["username"] == "carol"
    assert body["role"] == "admin"
    assert body["tenant"]["slug"] == "carol"
    assert Membership.objects.get(user__username="carol").role == Role.ADMIN


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"password": "short"}, "password"),
        ({"password": "password123"}, "password"),  # common and too short
        ({"password": "12345678901234"}, "password"),  # entirely numeric
        ({"email": "not-an-email"}, "email"),
        ({"username": "bad name!"}, "username"),
        ({"username": ""}, "username"),
    ],
)
def test_signup_rejects_invalid_input_with_a_json_400(overrides: dict[str, str], field: str) -> None:
    status, body = signup(APIClient(), **overrides)

    assert status == 400
    assert body["error"]["code"] == "validation_error"
    assert field in body["error"]["details"]
    assert not User.objects.exists()


def test_signup_rejects_a_duplicate_username_whatever_its_case() -> None:
    client = APIClient()
    assert signup(client)[0] == 201

    status, body = signup(client, username="CAROL", email="other@example.com")

    assert status == 400
    assert body["error"]["code"] == "validation_error"
    assert "username" in body["error"]["details"]
    assert User.objects.count() == 1


def test_signup_rejects_a_duplicate_email() -> None:
    client = APIClient()
    assert signup(client)[0] == 201

    status, body = signup(client, username="carol2", email="Carol@Example.com")

    assert status == 400
    assert "email" in body["error"]["details"]
    assert list(User.objects.values_list("username", flat=True)) == ["carol"]
    assert Membership.objects.count() == 1  # and no tenant was made for carol2


def test_passwords_are_stored_as_bcrypt_hashes() -> None:
    signup(APIClient())

    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM accounts_user WHERE username = %s", ["carol"])
        (stored,) = cursor.fetchone()
    assert stored.startswith("bcrypt_sha256$$2b$")
    assert "a-long-unusual-passphrase" not in stored


def test_token_then_me_then_refresh(alice: User) -> None:
    client = APIClient()
    tokens = client.post("/auth/token", {"username": "alice", "password": PASSWORD}, format="json").json()
    assert set(tokens) == {"access", "refresh"}

    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    me = client.get("/auth/me").json()
    assert me["username"] == "alice"
    assert me["tenant"]["slug"] == "wonderland"
    assert me["role"] == "admin"

    refreshed = APIClient().post("/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")
    assert refreshed.status_code == 200
    assert refreshed.json()["access"] != tokens["access"]

    # Rotation: the old refresh token worked once and is now refused.
    replay = APIClient().post("/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")
    assert replay.status_code == 401
    assert replay.json()["error"]["code"] == "token_not_valid"


def test_access_tokens_carry_the_tenant_claims(alice: User) -> None:
    import jwt
    from django.conf import settings

    tokens = APIClient().post("/auth/token", {"username": "alice", "password": PASSWORD}, format="json").json()
    claims = jwt.decode(tokens["access"], settings.SIMPLE_JWT["SIGNING_KEY"], algorithms=["HS256"])

    assert claims["tenant"] == str(alice.membership.tenant.uuid)
    assert claims["role"] == "admin"
    assert claims["token_type"] == "access"


@pytest.mark.parametrize(
    "header",
    ["Bearer not-a-token", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.tampered", "Basic YWxpY2U6cGFzcw=="],
)
def test_me_refuses_bad_credentials_with_a_json_401(header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get("/auth/me")

    assert response.status_code == 401
    assert "code" in response.json()["error"]


def test_me_without_credentials_is_401() -> None:
    response = APIClient().get("/auth/me")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


def test_wrong_password_is_a_json_401(alice: User) -> None:
    response = APIClient().post("/auth/token", {"username": "alice", "password": "nope"}, format="json")

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Wrong username or password."


def test_failed_logins_are_limited_per_username(alice: User, settings: object) -> None:
    settings.SENTINEL_ACCOUNTS = {**settings.SENTINEL_ACCOUNTS, "LOGIN_FAILURES_PER_USERNAME": 3}
    client = APIClient()
    for _ in range(3):
        assert client.post("/auth/token", {"username": "alice", "password": "x"}, format="json").status_code == 401

    # Even the right password is refused now, without being checked.
    locked = client.post("/auth/token", {"username": "ALICE", "password": PASSWORD}, format="json")

    assert locked.status_code == 429
    assert int(locked["Retry-After"]) >= 1
    assert locked.json()["error"]["code"] == "too_many_failed_logins"
    # The same header set as every other 429 (issue 8 item 7): the policy, nothing left, the reset.
    assert locked["RateLimit-Policy"] == '"login-username";q=3;w=900'
    assert locked["RateLimit-Remaining"] == "0"
    assert locked["x-ratelimit-remaining"] == "0"
    assert int(locked["RateLimit-Reset"]) <= int(locked["Retry-After"])


def test_failed_logins_are_limited_per_ip_across_usernames(alice: User, settings: object) -> None:
    settings.SENTINEL_ACCOUNTS = {**settings.SENTINEL_ACCOUNTS, "LOGIN_FAILURES_PER_IP": 4}
    client = APIClient(REMOTE_ADDR="203.0.113.9")
    for n in range(4):
        client.post("/auth/token", {"username": f"guess{n}", "password": "x"}, format="json")

    locked = client.post("/auth/token", {"username": "alice", "password": PASSWORD}, format="json")
    elsewhere = APIClient(REMOTE_ADDR="198.51.100.7").post(
        "/auth/token", {"username": "alice", "password": PASSWORD}, format="json"
    )

    assert locked.status_code == 429
    assert "Retry-After" in locked
    assert locked["RateLimit-Policy"] == '"login-ip";q=4;w=900'
    assert elsewhere.status_code == 200


def test_a_successful_login_clears_the_username_count(alice: User, settings: object) -> None:
    settings.SENTINEL_ACCOUNTS = {**settings.SENTINEL_ACCOUNTS, "LOGIN_FAILURES_PER_USERNAME": 3}
    client = APIClient()
    for _ in range(2):
        client.post("/auth/token", {"username": "alice", "password": "x"}, format="json")
    assert client.post("/auth/token", {"username": "alice", "password": PASSWORD}, format="json").status_code == 200

    for _ in range(2):
        client.post("/auth/token", {"username": "alice", "password": "x"}, format="json")

    assert client.post("/auth/token", {"username": "alice", "password": PASSWORD}, format="json").status_code == 200


def test_a_deactivated_tenant_cannot_log_in_nor_use_its_tokens(alice: User) -> None:
    client = APIClient()
    tokens = client.post("/auth/token", {"username": "alice", "password": PASSWORD}, format="json").json()
    tenant = alice.membership.tenant
    tenant.active = False
    tenant.save()

    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert client.get("/auth/me").status_code == 401
    login = APIClient().post("/auth/token", {"username": "alice", "password": PASSWORD}, format="json")
    assert login.status_code == 401
    assert login.json()["error"]["code"] == "tenant_inactive"


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2", b'{"username": "a", '])
def test_malformed_json_is_a_json_400(body: bytes) -> None:
    response = APIClient().post("/auth/token", body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_a_json_list_instead_of_an_object_is_a_400() -> None:
    response = APIClient().post("/auth/token", [1, 2], format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_an_oversized_body_is_a_json_413(settings: object) -> None:
    settings.API_MAX_BODY_BYTES = 4096
    body = b'{"username": "' + b"a" * 10_000 + b'"}'

    response = APIClient().post("/auth/signup", body, content_type="application/json")

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_form_encoded_bodies_are_refused_with_415() -> None:
    response = APIClient().post("/auth/token", {"username": "a", "password": "b"})  # multipart

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_logins_keep_working_when_the_cache_is_down(alice: User, settings: object) -> None:
    from tests.support.net import free_port

    # A Redis that refuses connections: the limiter fails open, the API never answers 500.
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }
    client = APIClient()

    assert client.post("/auth/token", {"username": "alice", "password": "x"}, format="json").status_code == 401
    assert client.post("/auth/token", {"username": "alice", "password": PASSWORD}, format="json").status_code == 200
