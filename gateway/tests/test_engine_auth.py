"""The proxy's authentication: every mode, every bad credential, tenants and key caching."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from gateway.engine.auth import (
    ApiKeyResolver,
    Authenticator,
    AuthFailure,
    Identity,
    JwtVerifier,
    KeyInfo,
    TenantDirectory,
    TenantInfo,
)
from gateway.engine.routes import RouteSpec

KEY = "k" * 40
ACME = TenantInfo(uuid="11111111-1111-1111-1111-111111111111", slug="acme", tier="vital")
DORMANT = TenantInfo(uuid="22222222-2222-2222-2222-222222222222", slug="dormant", tier="standard", active=False)
TENANTS = TenantDirectory([ACME, DORMANT])
GOOD_KEY = "snl_abcd1234_secret"


def token(**claims: object) -> str:
    body = {
        "token_type": "access",
        "user_id": 7,
        "tenant": ACME.uuid,
        "exp": int(time.time()) + 3600,
        **claims,
    }  # built at collection: outlive the run
    return jwt.encode(body, KEY, algorithm="HS256")


class Keys:
    """A key store that counts lookups, as the database behind the resolver would be hit."""

    def __init__(self) -> None:
        self.calls = 0
        self.known = {
            __import__("hashlib").sha256(GOOD_KEY.encode()).hexdigest(): KeyInfo(
                prefix="snl_abcd1234", tenant_uuid=ACME.uuid, scopes=frozenset({"proxy"})
            )
        }

    async def lookup(self, digest: str) -> KeyInfo | None:
        self.calls += 1
        return self.known.get(digest)


def authenticate(mode: str, headers: dict[str, str], *, keys: Keys | None = None, **route_kw: object) -> object:
    route = RouteSpec(id=1, name="r", path_prefix="/r/", targets=("http://a",), auth_mode=mode, **route_kw)  # type: ignore[arg-type]
    resolver = ApiKeyResolver((keys or Keys()).lookup)
    auth = Authenticator(jwt_verifier=JwtVerifier(KEY), keys=resolver, tenant_header="x-tenant-id")
    return asyncio.run(auth.authenticate(route, headers, "203.0.113.5", TENANTS))


def test_a_valid_jwt_names_the_tenant_and_tier() -> None:
    identity = authenticate("jwt", {"authorization": f"Bearer {token()}"})

    assert isinstance(identity, Identity)
    assert (identity.kind, identity.tenant_key, identity.tier, identity.principal) == (
        "jwt",
        ACME.uuid,
        "vital",
        "user:7",
    )


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "not_authenticated"),
        ({"authorization": "Bearer "}, 401, "token_not_valid"),
        ({"authorization": "Bearer garbage"}, 401, "token_not_valid"),
        ({"authorization": f"Bearer {token(exp=int(time.time()) - 60)}"}, 401, "token_expired"),
        ({"authorization": f"Bearer {token(token_type='refresh')}"}, 401, "token_not_valid"),
        ({"authorization": f"Bearer {token()[:-3]}abc"}, 401, "token_not_valid"),  # tampered signature
        (
            {"authorization": "Bearer " + jwt.encode({"user_id": 1}, "other-key" * 5, algorithm="HS256")},
            401,
            "token_not_valid",
        ),
        ({"authorization": f"Bearer {token(tenant=DORMANT.uuid)}"}, 403, "tenant_inactive"),
        ({"authorization": f"Bearer {token(tenant='nobody')}"}, 401, "unknown_tenant"),
        ({"authorization": "Bearer " + "a" * 5000}, 401, "token_not_valid"),
    ],
)
def test_bad_jwts_are_refused(headers: dict[str, str], status: int, code: str) -> None:
    failure = authenticate("jwt", headers)

    assert isinstance(failure, AuthFailure)
    assert (failure.status, failure.code) == (status, code)


def test_the_none_algorithm_is_refused() -> None:
    unsigned = jwt.encode({"token_type": "access", "user_id": 1, "exp": int(time.time()) + 60}, None, algorithm="none")

    failure = authenticate("jwt", {"authorization": f"Bearer {unsigned}"})

    assert isinstance(failure, AuthFailure)


def test_api_keys_authenticate_and_are_cached() -> None:
    keys = Keys()
    resolver = ApiKeyResolver(keys.lookup, ttl_s=60)

    async def twice() -> tuple[KeyInfo | None, KeyInfo | None]:
        return await resolver.resolve(GOOD_KEY), await resolver.resolve(GOOD_KEY)

    first, second = asyncio.run(twice())

    assert first == second
    assert first is not None
    assert keys.calls == 1


def test_a_revoked_key_stops_working_once_the_cache_expires() -> None:
    keys = Keys()
    resolver = ApiKeyResolver(keys.lookup, ttl_s=0.05)

    async def revoke_then_resolve() -> KeyInfo | None:
        assert await resolver.resolve(GOOD_KEY) is not None
        keys.known.clear()  # revoked in the database
        await asyncio.sleep(0.06)  # the documented revocation delay, scaled down
        return await resolver.resolve(GOOD_KEY)

    assert asyncio.run(revoke_then_resolve()) is None


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("snl_abcd1234_wrong", "invalid_api_key"),
        ("nonsense", "invalid_api_key"),
        ("snl_" + "x" * 300, "invalid_api_key"),
    ],
)
def test_bad_keys_are_refused(raw: str, code: str) -> None:
    failure = authenticate("api_key", {"x-api-key": raw})

    assert isinstance(failure, AuthFailure)
    assert (failure.status, failure.code) == (401, code)


def test_a_key_without_the_proxy_scope_is_forbidden() -> None:
    keys = Keys()
    (digest,) = keys.known
    keys.known[digest] = KeyInfo(prefix="snl_abcd1234", tenant_uuid=ACME.uuid, scopes=frozenset({"api:read"}))

    failure = authenticate("api_key", {"x-api-key": GOOD_KEY}, keys=keys)

    assert isinstance(failure, AuthFailure)
    assert (failure.status, failure.code) == (403, "insufficient_scope")


def test_jwt_or_api_key_takes_either() -> None:
    assert isinstance(authenticate("jwt_or_api_key", {"x-api-key": GOOD_KEY}), Identity)
    assert isinstance(authenticate("jwt_or_api_key", {"authorization": f"Bearer {token()}"}), Identity)
    assert authenticate("jwt_or_api_key", {}).code == "not_authenticated"  # type: ignore[union-attr]


def test_a_jwt_only_route_ignores_api_keys() -> None:
    failure = authenticate("jwt", {"x-api-key": GOOD_KEY})

    assert isinstance(failure, AuthFailure)
    assert failure.status == 401


def test_public_routes_take_the_tenant_header_only_where_allowed() -> None:
    named = authenticate("none", {"x-tenant-id": "acme"}, allow_tenant_header=True)
    ignored = authenticate("none", {"x-tenant-id": "acme"})
    unknown = authenticate("none", {"x-tenant-id": "nobody"}, allow_tenant_header=True)

    assert isinstance(named, Identity) and (named.kind, named.tier) == ("tenant_header", "vital")
    assert isinstance(ignored, Identity) and (ignored.kind, ignored.tenant_key, ignored.tier) == (
        "anonymous",
        "ip:203.0.113.5",
        "economy",
    )
    assert isinstance(unknown, AuthFailure) and unknown.status == 400


def test_another_tenants_route_is_forbidden() -> None:
    failure = authenticate("jwt", {"authorization": f"Bearer {token()}"}, tenant_uuid=DORMANT.uuid)

    assert isinstance(failure, AuthFailure)
    assert (failure.status, failure.code) == (403, "wrong_tenant")


@pytest.mark.django_db
def test_tokens_issued_by_the_api_verify_in_the_engine(alice: object) -> None:
    from django.conf import settings

    from accounts.api.serializers import TokenSerializer

    access = str(TokenSerializer.get_token(alice).access_token)  # type: ignore[arg-type]

    claims = JwtVerifier(settings.SIMPLE_JWT["SIGNING_KEY"]).verify(access)

    assert isinstance(claims, dict)
    assert claims["tenant"] == str(alice.membership.tenant.uuid)  # type: ignore[attr-defined]


def test_a_verified_token_is_remembered_until_it_expires() -> None:
    verifier = JwtVerifier(KEY, leeway_s=0)
    short = token(exp=int(time.time()) + 1)

    first = verifier.verify(short)
    second = verifier.verify(short)
    time.sleep(max(0.0, int(time.time()) + 1.05 - time.time()))  # until the token's exp has passed
    expired = verifier.verify(short)

    assert isinstance(first, dict) and second is first
    assert isinstance(expired, AuthFailure) and expired.code == "token_expired"


def test_a_tampered_copy_of_a_cached_token_is_still_refused() -> None:
    verifier = JwtVerifier(KEY)
    good = token()
    verifier.verify(good)

    assert isinstance(verifier.verify(good[:-2] + "xx"), AuthFailure)


class HeldKeys(Keys):
    """A key store whose lookups read the key, then wait until `release` is set before answering
    (the reply in transit from a busy database), or fail."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.fail = False

    async def lookup(self, digest: str) -> KeyInfo | None:
        self.calls += 1
        answer = self.known.get(digest)
        await self.release.wait()
        if self.fail:
            raise ConnectionError("the database is down")
        return answer


def test_requests_missing_the_cache_together_share_one_lookup() -> None:
    async def scenario() -> tuple[list[KeyInfo | None], int]:
        keys = HeldKeys()
        resolver = ApiKeyResolver(keys.lookup)
        waiting = [asyncio.ensure_future(resolver.resolve(GOOD_KEY)) for _ in range(200)]
        await asyncio.sleep(0)
        keys.release.set()
        return await asyncio.gather(*waiting), keys.calls

    answers, calls = asyncio.run(scenario())

    assert calls == 1
    assert all(answer is not None and answer.tenant_uuid == ACME.uuid for answer in answers)


def test_a_key_in_use_is_refreshed_before_it_expires_without_a_request_waiting() -> None:
    async def scenario() -> None:
        keys = HeldKeys()
        keys.release.set()
        resolver = ApiKeyResolver(keys.lookup, ttl_s=0.2)
        assert await resolver.resolve(GOOD_KEY) is not None
        keys.release.clear()  # the next lookup hangs
        keys.known.clear()  # and will say the key was revoked
        await asyncio.sleep(0.2 * 0.85)  # past the refresh point, before the TTL
        # Answered from the cache at once, though a lookup is now in flight.
        assert await asyncio.wait_for(resolver.resolve(GOOD_KEY), 0.01) is not None
        assert await asyncio.wait_for(resolver.resolve(GOOD_KEY), 0.01) is not None
        assert keys.calls == 2  # one refresh for both
        keys.release.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert await resolver.resolve(GOOD_KEY) is None  # the refresh's answer replaced the entry

    asyncio.run(scenario())


def test_a_failed_refresh_is_logged_and_the_key_serves_until_its_ttl(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        keys = HeldKeys()
        keys.release.set()
        resolver = ApiKeyResolver(keys.lookup, ttl_s=0.2)
        assert await resolver.resolve(GOOD_KEY) is not None
        keys.fail = True
        await asyncio.sleep(0.2 * 0.85)
        assert await resolver.resolve(GOOD_KEY) is not None  # starts the refresh, which fails
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await asyncio.sleep(0.2 * 0.2)  # the TTL is over: a caller now waits for a lookup of its own
        with pytest.raises(ConnectionError):
            await resolver.resolve(GOOD_KEY)

    asyncio.run(scenario())

    assert any("API key refresh failed" in record.getMessage() for record in caplog.records)


def test_a_lookup_begun_before_forget_is_not_cached() -> None:
    async def scenario() -> KeyInfo | None:
        keys = HeldKeys()
        resolver = ApiKeyResolver(keys.lookup, ttl_s=60)
        first = asyncio.ensure_future(resolver.resolve(GOOD_KEY))
        while keys.calls == 0:  # its lookup has read the key
            await asyncio.sleep(0)
        resolver.forget()  # the key was revoked meanwhile (the config version moved)
        keys.known.clear()
        keys.release.set()
        assert await first is not None  # read before the revocation: this caller's answer
        return await resolver.resolve(GOOD_KEY)  # a new lookup, not the old answer

    assert asyncio.run(scenario()) is None


def test_a_remembered_identity_follows_the_directory_it_was_made_in() -> None:
    # Given one authenticator, a token and a key used again and again
    route = RouteSpec(id=1, name="r", path_prefix="/r/", targets=("http://a",), auth_mode="jwt_or_api_key")
    auth = Authenticator(jwt_verifier=JwtVerifier(KEY), keys=ApiKeyResolver(Keys().lookup), tenant_header="x-tenant-id")
    bearer = {"authorization": f"Bearer {token()}"}
    keyed = {"x-api-key": GOOD_KEY}
    moved = TenantInfo(uuid=ACME.uuid, slug="acme", tier="economy")

    async def scenario() -> list[object]:
        seen: list[object] = []
        for directory in (
            TENANTS,
            TENANTS,
            # the tenant's tier changed: the runtime loads a new directory
            TenantDirectory([moved, DORMANT]),
            # the user was deactivated, then the tenant
            TenantDirectory([moved, DORMANT], inactive_users=["7"]),
            TenantDirectory([TenantInfo(uuid=ACME.uuid, slug="acme", tier="economy", active=False)]),
        ):
            for headers in (bearer, keyed):
                identity = await auth.authenticate(route, headers, "203.0.113.5", directory)
                seen.append(identity.tier if isinstance(identity, Identity) else identity.code)  # type: ignore[union-attr]
        return seen

    # Then each new directory is seen by the next request, whatever was remembered before it
    assert asyncio.run(scenario()) == [
        "vital", "vital", "vital", "vital", "economy", "economy",
        "user_inactive", "economy", "tenant_inactive", "tenant_inactive",
    ]  # fmt: skip
