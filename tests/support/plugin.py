"""The suite's pytest plugin (registered by the root ``conftest.py``): settings every test runs
under, the mock upstream as a fixture, and a Redis the run leaves as it found it.

- bcrypt at cost 4, the egress policy allowing loopback, failed-login counts and throttles
  forgotten around each test;
- ``mock_upstream(name)``: a real ``python -m gateway.mock_upstream`` process per call, stopped
  after the test;
- ``shared_cache``: the test process and every process it starts share one Redis namespace;
- Redis isolation (``tests.support.redis_keys``): the test process and its children write under
  this run's key root, each ``key_prefix`` is swept after its test, and a session that leaves a
  key under the root fails.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.contrib.auth.hashers import BCryptSHA256PasswordHasher
from django.core.cache import cache
from pytest_django import Settings

from tests.support import redis_keys
from tests.support.processes import MockUpstream, MockUpstreams, mock_upstream_process
from tests.support.services import redis_url_for_tests, require_redis

_REDIS_REPORT = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    # The run's key prefix is set by its settings (tests.support.settings), before Django reads them.
    config.stash[_REDIS_REPORT] = []


@pytest.fixture(autouse=True, scope="session")
def _fast_bcrypt() -> Iterator[None]:
    # Cost 4 instead of 12: the hashes are still bcrypt, the suite just does not spend minutes on them.
    original = BCryptSHA256PasswordHasher.rounds
    BCryptSHA256PasswordHasher.rounds = 4
    yield
    BCryptSHA256PasswordHasher.rounds = original


@pytest.fixture(autouse=True, scope="session")
def _egress_allows_loopback() -> None:
    """The egress policy allows loopback in tests, in both modes (production mode would refuse it):
    tests point tenant routes and channels at local servers. A test of the production policy sets
    ``settings.EGRESS_ALLOW_LOOPBACK = False`` (or ``EGRESS_ALLOW_LOOPBACK="false"`` for a child)."""
    settings.EGRESS_ALLOW_LOOPBACK = True


def _forget_counters() -> None:
    if hasattr(cache, "delete_pattern"):
        # Only the limiter and throttle keys under the run's prefix, never the whole Redis DB.
        for pattern in ("accounts:*", "throttle_*"):
            cache.delete_pattern(pattern)
    else:
        cache.clear()


@pytest.fixture(autouse=True)
def _clean_cache() -> Iterator[None]:
    """Failed-login counts and throttles must not leak between tests (on Redis the run's cache
    lives for the whole session)."""
    _forget_counters()
    yield
    _forget_counters()


# --- Real processes ---------------------------------------------------------------------------


@pytest.fixture
def mock_upstream() -> Iterator[MockUpstreams]:
    """``mock_upstream(name)`` starts ``python -m gateway.mock_upstream`` answering as ``name``
    and returns it once its /health answers; every one started is stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(name: str) -> MockUpstream:
            return MockUpstream(name, stack.enter_context(mock_upstream_process(name)))

        yield start


# --- Redis ------------------------------------------------------------------------------------


@pytest.fixture
def shared_cache(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The test process's cache on the real Redis under a prefix of this test's own, and the same
    ``REDIS_URL`` and ``CACHE_KEY_PREFIX`` for every process it starts (``child_env`` inherits
    them): what one writes (the config version, a bump), the others read. Returns those two
    variables. Skips without Redis (fails with CI=true)."""
    url = require_redis()
    prefix = redis_keys.key_prefix("shared")
    settings.CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url, "KEY_PREFIX": prefix}}
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("CACHE_KEY_PREFIX", prefix)
    return {"REDIS_URL": url, "CACHE_KEY_PREFIX": prefix}


@pytest.fixture(autouse=True)
def _redis_keys_swept() -> Iterator[None]:
    """Deletes the keys under every ``key_prefix`` the test asked for, once its processes have
    stopped (an autouse fixture is torn down after the fixtures the test requested)."""
    yield
    redis_keys.delete_under(redis_url_for_tests(), redis_keys.take_issued())


@pytest.fixture(autouse=True, scope="session")
def _redis_left_as_found(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails the session if it left a key under this run's root in a test database; reports new
    keys outside it (another process on the same Redis wrote them, or a test escaped the root)."""
    url = redis_url_for_tests()
    before = redis_keys.keys_by_database(url)
    yield
    redis_keys.delete_under(url, [*redis_keys.session_prefixes(), *redis_keys.take_issued()])
    after = redis_keys.keys_by_database(url)
    if before is None or after is None:
        return
    root = redis_keys.RUN_ROOT.encode()
    left: list[str] = []
    report = request.config.stash[_REDIS_REPORT]
    for db, keys in sorted(after.items()):
        new = keys - before.get(db, set())
        ours = sorted(key.decode(errors="replace") for key in new if key.startswith(root))
        others = sorted(key.decode(errors="replace") for key in new if not key.startswith(root))
        report.append(f"db {db}: {len(before.get(db, ()))} keys before the session, {len(keys)} after")
        if others:
            report.append(f"db {db}: {len(others)} new keys outside {redis_keys.RUN_ROOT}-*, e.g. {others[:5]}")
        left += [f"db {db}: {key}" for key in ours]
    if left:
        pytest.fail(f"the test run left {len(left)} keys in Redis under {redis_keys.RUN_ROOT}: {left[:20]}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(_REDIS_REPORT, [])
    if lines and (config.option.verbose > 0 or any("outside" in line for line in lines)):
        terminalreporter.section("Redis keys")
        for line in lines:
            terminalreporter.write_line(line)
