"""Fixtures shared by every app's tests: the cast of users and API clients with real credentials.

The cast (CONVENTIONS 9): `alice` administers tenant `wonderland`, `bob` is a member there,
`mallory` administers another tenant, `staff` is a superuser with no tenant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from django.conf import settings
from django.contrib.auth.hashers import BCryptSHA256PasswordHasher
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.api.serializers import TokenSerializer
from accounts.models import Membership, Role, Tenant, Tier, User

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True, scope="session")
def _fast_bcrypt() -> Iterator[None]:
    # Cost 4 instead of 12: the hashes are still bcrypt, the suite just does not spend minutes on them.
    original = BCryptSHA256PasswordHasher.rounds
    BCryptSHA256PasswordHasher.rounds = 4
    yield
    BCryptSHA256PasswordHasher.rounds = original


def _forget_counters() -> None:
    if hasattr(cache, "delete_pattern"):
        # Only the limiter and throttle keys under Sentinel's prefix, never the whole Redis DB.
        for pattern in ("accounts:*", "throttle_*"):
            cache.delete_pattern(pattern)
    else:
        cache.clear()


@pytest.fixture(autouse=True, scope="session")
def _egress_allows_loopback() -> None:
    """The egress policy allows loopback in tests, in both modes (production mode would refuse it):
    tests point tenant routes and channels at local servers. A test of the production policy sets
    ``settings.EGRESS_ALLOW_LOOPBACK = False`` (or ``EGRESS_ALLOW_LOOPBACK="false"`` for a child)."""
    settings.EGRESS_ALLOW_LOOPBACK = True


@pytest.fixture(autouse=True)
def _clean_cache() -> Iterator[None]:
    """Failed-login counts and throttles must not leak between tests (nor from earlier runs,
    when the cache is a Redis that outlives the test session)."""
    _forget_counters()
    yield
    _forget_counters()


def make_member(username: str, tenant: Tenant, role: str) -> User:
    user = User.objects.create_user(username=username, email=f"{username}@example.com", password=PASSWORD)
    Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


@pytest.fixture
def tenant_a(db: None) -> Tenant:
    return Tenant.objects.create(name="Wonderland", slug="wonderland", tier=Tier.STANDARD)


@pytest.fixture
def tenant_b(db: None) -> Tenant:
    return Tenant.objects.create(name="Evil Corp", slug="evil", tier=Tier.ECONOMY)


@pytest.fixture
def alice(tenant_a: Tenant) -> User:
    return make_member("alice", tenant_a, Role.ADMIN)


@pytest.fixture
def bob(tenant_a: Tenant) -> User:
    return make_member("bob", tenant_a, Role.MEMBER)


@pytest.fixture
def mallory(tenant_b: Tenant) -> User:
    return make_member("mallory", tenant_b, Role.ADMIN)


@pytest.fixture
def staff(db: None) -> User:
    return User.objects.create_superuser(username="staff", email="staff@example.com", password=PASSWORD)


@pytest.fixture
def api() -> Callable[..., APIClient]:
    """`api(user)` is a client with a real JWT for that user; `api(api_key=raw)` one with a key;
    `api()` an anonymous one."""

    def build(user: User | None = None, *, api_key: str | None = None) -> APIClient:
        client = APIClient()
        if user is not None:
            token: RefreshToken = TokenSerializer.get_token(user)
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.access_token}")
        if api_key is not None:
            client.credentials(HTTP_X_API_KEY=api_key)
        return client

    return build
