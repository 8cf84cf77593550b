"""The OpenAPI schema says what the API does, and hostile input never makes it answer 500.

Two parts:

* the schema builds with no warning and no error (what `manage.py spectacular --fail-on-warn
  --validate` checks in `make test`), and documents what a client needs: every operation's
  responses, the SPEC 7 error on its 4xx, both auth schemes;
* schemathesis fuzzes every operation of that schema against a real `manage.py serve`, once for
  each identity a client can hold (an API key, a tenant admin's JWT, a staff JWT), with the checks
  `not_a_server_error`, `status_code_conformance`, `content_type_conformance` and
  `response_schema_conformance`. A failure prints the reproducing request as a curl command.

A real process rather than schemathesis' ASGI integration: in-process, the app would run on the
test transaction with the ORM in threads, and skip the server's parser and the ASGI guards a
client meets first. The fuzzed server runs on a database of its own (created and dropped here),
a var directory of its own and a Redis key prefix of its own, so what fuzzing creates, deletes or
queues reaches no other test. Generation is derandomised (Hypothesis' derandomize: the same
examples on every run) and bounded (FUZZ_EXAMPLES per operation and identity, about 15-30 s an
identity on a busy 2-core machine).

Between the two parts, the regressions of what fuzzing (and documenting) found, in-process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from django.core.management import call_command
from django.db import connection
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.processes import BASE_DIR, child_env, python_command, web_server
from tests.support.redis_keys import lasting_key_prefix
from tests.support.services import database_url_of

# Examples per operation and identity: 50 operations x 3 identities x 12 is ~1,800 requests, about
# 25 s an identity on this 2-core machine; the suite stays under its 15 minutes. A deeper run:
# FUZZ_EXAMPLES=100 .venv/bin/python -m pytest sentinel_site/tests/test_openapi_fuzz.py.
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
PASSWORD = "fuzz-correct-horse-battery-staple"
# Writes that take no body: the path says everything.
BODILESS_VERBS = {
    ("POST", "/api/v1/api-keys/{id}/revoke"),
    ("POST", "/api/v1/incidents/{id}/acknowledge"),
    ("POST", "/api/v1/incidents/{id}/resolve"),
    ("POST", "/api/v1/monitors/{id}/pause"),
    ("POST", "/api/v1/monitors/{id}/resume"),
    ("POST", "/api/v1/monitors/{id}/check-now"),
}
# Not `negative_data_rejection`: DRF's pagination ignores a junk `page_size` and reads an empty
# `page` as the first, by design; that leniency is all the check finds (tried at 60 examples).
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# --- the schema itself -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_schema() -> dict[str, Any]:
    """The schema as `manage.py spectacular` builds it; fails on any warning or error."""
    out = io.StringIO()
    call_command("spectacular", "--fail-on-warn", "--validate", "--format", "openapi-json", stdout=out)
    return json.loads(out.getvalue())


def _operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in ("get", "put", "post", "patch", "delete"):
                yield method.upper(), path, operation


def test_the_schema_builds_without_warnings_and_documents_every_promised_path(built_schema: dict[str, Any]) -> None:
    paths = set(built_schema["paths"])

    for promised in ("/auth/signup", "/auth/token", "/auth/token/refresh", "/auth/me", "/events", "/health",
                     "/circuit/status", "/circuit/reset", "/api/v1/tenants", "/api/v1/tenants/{id}/members",
                     "/api/v1/api-keys", "/api/v1/routes", "/api/v1/rules", "/api/v1/channels", "/api/v1/events",
                     "/api/v1/matches", "/api/v1/deliveries", "/api/v1/monitors", "/api/v1/monitors/{id}",
                     "/api/v1/monitors/{id}/history", "/api/v1/monitors/{id}/uptime",
                     "/api/v1/maintenance-windows"):  # fmt: skip
        assert promised in paths


@pytest.mark.parametrize(("method", "path"), [("GET", "/circuit/status"), ("POST", "/circuit/reset")])
def test_the_circuit_endpoints_document_their_answer(built_schema: dict[str, Any], method: str, path: str) -> None:
    ok = built_schema["paths"][path][method.lower()]["responses"]["200"]

    schema_ref = ok["content"]["application/json"]["schema"]["$ref"]
    component = built_schema["components"]["schemas"][schema_ref.rsplit("/", 1)[1]]
    assert component["properties"], f"{method} {path} documents an empty body"


def test_every_operation_documents_a_success_and_its_errors_in_the_spec_7_shape(built_schema: dict[str, Any]) -> None:
    error = built_schema["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    body = built_schema["components"]["schemas"]["ErrorBody"]
    assert set(body["properties"]) == {"code", "message", "details"}

    for method, path, operation in _operations(built_schema):
        codes = set(operation["responses"])
        assert any(code.startswith("2") for code in codes), f"{method} {path} documents no success"
        assert "400" in codes, f"{method} {path}"
        for code, response in operation["responses"].items():
            if code.startswith("4"):
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
            elif code != "204":
                assert response.get("content"), f"{method} {path} {code} documents no body"
        if method in ("POST", "PUT", "PATCH") and (method, path) not in BODILESS_VERBS:
            assert "requestBody" in operation, f"{method} {path} documents no request body"
        if operation.get("security") and {} not in operation["security"]:
            assert {"401", "403"} <= codes, f"{method} {path}"


def test_both_auth_schemes_are_documented(built_schema: dict[str, Any]) -> None:
    schemes = built_schema["components"]["securitySchemes"]

    assert schemes["jwtAuth"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["ApiKeyAuth"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}


@pytest.mark.django_db
@pytest.mark.parametrize("accept", ["text/plain", "text/html", "application/json", "*/*"])
def test_health_stays_json_whatever_the_probe_accepts(accept: str) -> None:
    # /health became a DRF view so the schema documents it; a probe's Accept must not make it a 406.
    response = Client().get("/health", HTTP_ACCEPT=accept)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["components"]["database"]["status"] == "ok"


# --- what fuzzing found: input the database cannot take is a 400, never a 500 ----------------------
# PostgreSQL refuses NUL in text and integers past bigint; `int()` refuses the non-ASCII digits
# that `str.isdigit()` accepts ("²"). Each reached a query before and answered 500.

UNSTORABLE_REFERENCES = ["bad\x00slug", "\x00", "²", "99999999999999999999999", "\uff11\uff12"]


@pytest.mark.django_db
@pytest.mark.parametrize("reference", UNSTORABLE_REFERENCES)
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/api-keys", {"name": "k"}),
        ("/api/v1/routes", {"name": "r", "path_prefix": "/x/", "targets": ["http://127.0.0.1:9/"]}),
        ("/api/v1/rules", {"name": "r", "dsl": 'when type == "a" then notify("webhook:x")'}),
        ("/api/v1/channels", {"kind": "webhook", "name": "c", "target": "http://127.0.0.1:9/"}),
        ("/api/v1/monitors", {"name": "m", "target": "http://127.0.0.1:9/"}),
        ("/api/v1/maintenance-windows", {"name": "w", "starts_at": "2026-12-01T00:00:00Z", "duration_minutes": 5}),
    ],
)
def test_a_tenant_reference_no_database_can_look_up_is_a_400(
    api: Any, staff: Any, path: str, body: dict[str, Any], reference: str
) -> None:
    response = api(staff).post(path, {**body, "tenant": reference}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert "tenant" in response.json()["error"]["details"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/events?type=%00"),
        ("get", "/api/v1/events?type=a%00b"),
        ("get", "/api/v1/matches?rule=%C2%B2"),
        ("get", "/api/v1/matches?rule=99999999999999999999999"),
        ("post", "/events?tenant=%00"),
        ("post", "/events?tenant=%C2%B2"),
    ],
)
def test_a_query_parameter_no_database_can_compare_is_a_400(api: Any, staff: Any, method: str, path: str) -> None:
    response = getattr(api(staff), method)(path, {"type": "x"} if method == "post" else None, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


# Found while documenting /auth/token/refresh's answers: credentials whose user is gone or
# disabled since they were issued. simplejwt looks the refresh token's user up with `.get()`.
@pytest.mark.django_db
@pytest.mark.parametrize("change", ["deleted", "deactivated"])
@pytest.mark.parametrize("credential", ["refresh", "access"])
def test_tokens_of_a_user_deleted_or_deactivated_since_are_a_json_401(
    api: Any, alice: Any, change: str, credential: str
) -> None:
    from accounts.api.serializers import TokenSerializer

    refresh = TokenSerializer.get_token(alice)
    access = str(refresh.access_token)
    if change == "deleted":
        alice.delete()
    else:
        alice.is_active = False
        alice.save(update_fields=["is_active"])

    if credential == "refresh":
        response = api().post("/auth/token/refresh", {"refresh": str(refresh)}, format="json")
    else:
        response = api().get("/auth/me", HTTP_AUTHORIZATION=f"Bearer {access}")

    assert response.status_code == 401
    assert response.json()["error"]["code"] in ("no_active_account", "user_not_found", "user_inactive")


# --- fuzzing a real server -------------------------------------------------------------------------


@dataclass(frozen=True)
class FuzzTarget:
    base_url: str
    headers: dict[str, dict[str, str]]  # identity -> the headers that authenticate it


@contextlib.contextmanager
def _own_database(var_dir: Path) -> Iterator[str]:
    """A DATABASE_URL for an empty database nobody else uses, dropped afterwards."""
    settings_dict = connection.settings_dict
    if settings_dict["ENGINE"].endswith("sqlite3"):
        yield f"sqlite:///{var_dir / 'fuzz.sqlite3'}"
        return
    import psycopg
    from psycopg import sql

    name = f"{settings_dict['NAME']}_fuzz"[:63]
    admin_url = database_url_of({**settings_dict, "NAME": "postgres"})
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(drop)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url_of({**settings_dict, "NAME": name})
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(drop)


def _forget_redis_keys(prefix: str) -> None:
    url = os.environ.get("REDIS_URL")
    if not url:
        return
    import redis

    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
    finally:
        client.close()


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run(python_command("manage.py", *args), cwd=BASE_DIR, env=env, check=True, capture_output=True)


def _identities(base_url: str) -> dict[str, dict[str, str]]:
    """Signs up a tenant admin, makes them an API key, and logs them and the staff user in."""
    with requests.Session() as session:
        return _sign_in_everyone(base_url, session)


def _sign_in_everyone(base_url: str, session: requests.Session) -> dict[str, dict[str, str]]:
    def post(path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = session.post(f"{base_url}{path}", json=body, headers=headers or {}, timeout=30)
        assert response.status_code in (200, 201), f"POST {path}: {response.status_code} {response.text}"
        return response.json()

    post("/auth/signup", {"username": "fuzz-admin", "email": "fuzz-admin@example.com", "password": PASSWORD})
    admin = {
        "Authorization": f"Bearer {post('/auth/token', {'username': 'fuzz-admin', 'password': PASSWORD})['access']}"
    }
    key = post("/api/v1/api-keys", {"name": "fuzz", "scopes": ["api:read", "api:write", "events:write"]}, admin)
    staff = {
        "Authorization": f"Bearer {post('/auth/token', {'username': 'fuzz-staff', 'password': PASSWORD})['access']}"
    }
    return {"api_key": {"X-API-Key": key["key"]}, "tenant_admin": admin, "staff": staff}


@pytest.fixture(scope="module")
def fuzz_target(django_db_setup: None, django_db_blocker: Any) -> Iterator[FuzzTarget]:
    prefix = lasting_key_prefix("fuzz")
    var_dir = Path(tempfile.mkdtemp(prefix="sentinel-fuzz-"))
    try:
        with django_db_blocker.unblock(), _own_database(var_dir) as database_url:
            own = {
                "DATABASE_URL": database_url,
                "SENTINEL_VAR_DIR": str(var_dir),
                "CACHE_KEY_PREFIX": prefix,
                # bcrypt at cost 4: fuzzed logins of unknown users and fuzzed signups each hash a
                # password, ~5 s of the server's CPU per identity at the production cost.
                "DJANGO_SETTINGS_MODULE": "tests.support.fast_hash_settings",
            }
            env = child_env(**own)
            _manage(env, "migrate", "--noinput")
            _manage(
                {**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD},
                "createsuperuser", "--noinput", "--username", "fuzz-staff", "--email", "fuzz-staff@example.com",
            )  # fmt: skip
            # A signup rate the fuzzer cannot exhaust before the fixture signs its own user up.
            with web_server(**own, SIGNUP_RATE="10000/hour") as (port, _):
                base_url = f"http://127.0.0.1:{port}"
                yield FuzzTarget(base_url=base_url, headers=_identities(base_url))
    finally:
        _forget_redis_keys(prefix)
        shutil.rmtree(var_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_target: FuzzTarget) -> Any:
    config = schemathesis.Config.from_dict(
        {
            "generation": {
                "deterministic": True,
                "database": "none",
                # The identity's own credentials are sent; random ones would only reach the 401 path.
                "with-security-parameters": False,
            },
            # The reproducing curl shows the real (throwaway) credentials, so it can be pasted as is.
            "output": {"sanitization": {"enabled": False}},
        }
    )
    return schemathesis.openapi.from_url(f"{fuzz_target.base_url}/api/schema/?format=json", config=config)


def _fuzz_operation(operation: Any, headers: dict[str, str], session: requests.Session) -> str | None:
    """FUZZ_EXAMPLES valid and invalid requests to one operation; the first failure, with the
    request that reproduces it (as curl) and what was wrong, or None."""
    # Valid and invalid inputs: hostile input is what must never be a 500.
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    last: list[schemathesis.Case] = []

    @settings(
        max_examples=FUZZ_EXAMPLES,
        derandomize=True,  # the same requests on every run, in CI and on a laptop
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        last[:] = [case]
        case.call_and_validate(session=session, headers=headers, checks=CHECKS, timeout=30)

    try:
        check()
    # schemathesis' FailureGroup is a BaseExceptionGroup; every operation is fuzzed and every
    # failure reported, so catch it all here.
    except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001
        # Hypothesis replays the minimal failing example last, so `last` holds it.
        request = last[0].as_curl_command(headers=headers) if last else "(no request was built)"
        return f"{operation.label}\n  reproduce: {request}\n  {exc}"
    return None


def _fuzz_every_operation(schema: Any, headers: dict[str, str]) -> list[str]:
    # One session, closed at the end: kept-alive connections would hold the server's shutdown.
    with requests.Session() as session:
        failures = [_fuzz_operation(result.ok(), headers, session) for result in schema.get_all_operations()]
    return [failure for failure in failures if failure is not None]


def _fuzz_as(identity: str, target: FuzzTarget, schema: Any) -> None:
    failures = _fuzz_every_operation(schema, target.headers[identity])

    assert not failures, f"{len(failures)} operation(s) failed as {identity}:\n\n" + "\n\n".join(failures)


# In this order, staff last: a staff DELETE may remove the tenant the other identities belong to,
# which would leave them only 401s and 403s to find.
@pytest.mark.timeout(900)
def test_fuzzing_as_an_api_key_finds_no_server_error_and_no_undocumented_answer(
    fuzz_target: FuzzTarget, fuzz_schema: Any
) -> None:
    _fuzz_as("api_key", fuzz_target, fuzz_schema)


@pytest.mark.timeout(900)
def test_fuzzing_as_a_tenant_admin_finds_no_server_error_and_no_undocumented_answer(
    fuzz_target: FuzzTarget, fuzz_schema: Any
) -> None:
    _fuzz_as("tenant_admin", fuzz_target, fuzz_schema)


@pytest.mark.timeout(900)
def test_fuzzing_as_staff_finds_no_server_error_and_no_undocumented_answer(
    fuzz_target: FuzzTarget, fuzz_schema: Any
) -> None:
    _fuzz_as("staff", fuzz_target, fuzz_schema)
