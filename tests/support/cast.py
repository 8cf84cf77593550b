"""The cast of users every app's tests share, and API clients with real credentials (a pytest
plugin, registered by the root ``conftest.py``).

The cast (CONVENTIONS 9): ``alice`` administers tenant ``wonderland``, ``bob`` is a member there,
``mallory`` administers another tenant, ``staff`` is a superuser with no tenant (``staff_client``
is a test client signed in as them). Each has the password ``PASSWORD``; ``make_member`` adds
someone else.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.api.serializers import TokenSerializer
from accounts.models import Membership, Role, Tenant, Tier, User

PASSWORD = "correct-horse-battery-staple"


def make_member(username: str, tenant: Tenant, role: str) -> User:
    """A user ``username`` (password ``PASSWORD``) with a membership of ``tenant`` in ``role``."""
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
def staff_client(staff: User) -> Client:
    """A Django test client signed in as ``staff`` (the admin's pages)."""
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def api() -> Callable[..., APIClient]:
    """``api(user)`` is a client with a real JWT for that user; ``api(api_key=raw)`` one with a
    key; ``api()`` an anonymous one."""

    def build(user: User | None = None, *, api_key: str | None = None) -> APIClient:
        client = APIClient()
        if user is not None:
            token: RefreshToken = TokenSerializer.get_token(user)
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.access_token}")
        if api_key is not None:
            client.credentials(HTTP_X_API_KEY=api_key)
        return client

    return build
