"""The one builder of rejection headers (core.ratelimit_headers): shapes, rounding, coherence."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from core.ratelimit_headers import (
    MAX_RETRY_AFTER_S,
    LimitState,
    as_text,
    limit_headers,
    retry_after_seconds,
    service_unavailable_headers,
    too_many_requests_headers,
)

BURST = LimitState("burst", limit=20, window_s=2, remaining=0, reset_s=0.1)


def test_a_429_carries_the_whole_set_in_the_drafts_syntax() -> None:
    headers = too_many_requests_headers(BURST, retry_after_s=0.1)

    assert headers == [
        (b"x-ratelimit-remaining", b"0"),
        (b"ratelimit-limit", b"20"),
        (b"ratelimit-remaining", b"0"),
        (b"ratelimit-reset", b"1"),
        (b"ratelimit-policy", b'"burst";q=20;w=2'),
        (b"ratelimit", b'"burst";r=0;t=1'),
        (b"retry-after", b"1"),
    ]


def test_retry_after_never_points_before_the_reset() -> None:
    # Given a policy whose next slot frees in 42.5 s, and a caller that suggests less
    limit = LimitState("window", limit=100, window_s=60, remaining=0, reset_s=42.5)

    headers = dict(too_many_requests_headers(limit, retry_after_s=3))

    # Then Retry-After is raised to the reset, both rounded up to whole seconds
    assert (headers[b"ratelimit-reset"], headers[b"retry-after"]) == (b"43", b"43")


def test_a_503_carries_retry_after_alone() -> None:
    assert service_unavailable_headers(retry_after_s=5) == [(b"retry-after", b"5")]
    assert service_unavailable_headers(retry_after_s=0.2) == [(b"retry-after", b"1")]


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0, 1), (0.001, 1), (1, 1), (1.2, 2), (59.999, 60), (math.inf, MAX_RETRY_AFTER_S), (math.nan, MAX_RETRY_AFTER_S)],
)
def test_retry_after_is_whole_seconds_rounded_up_between_1_and_the_cap(seconds: float, expected: int) -> None:
    assert retry_after_seconds(seconds) == expected


def test_a_bucket_that_never_refills_announces_the_cap_not_infinity() -> None:
    limit = LimitState("burst", limit=5, window_s=0, remaining=0, reset_s=math.inf)

    headers = dict(too_many_requests_headers(limit, retry_after_s=math.inf))

    assert headers[b"retry-after"] == headers[b"ratelimit-reset"] == str(MAX_RETRY_AFTER_S).encode()
    # An unknown window leaves w out
    assert headers[b"ratelimit-policy"] == b'"burst";q=5'


def test_an_admitted_response_gets_the_set_without_retry_after() -> None:
    limit = LimitState("window", limit=100, window_s=60, remaining=42, reset_s=16.001)

    assert dict(limit_headers(limit)) == {
        b"x-ratelimit-remaining": b"42",
        b"ratelimit-limit": b"100",
        b"ratelimit-remaining": b"42",
        b"ratelimit-reset": b"17",
        b"ratelimit-policy": b'"window";q=100;w=60',
        b"ratelimit": b'"window";r=42;t=17',
    }


def test_policy_names_are_structured_field_strings() -> None:
    quoted = LimitState('a"b\\c', limit=1, window_s=1, remaining=0, reset_s=1)

    assert dict(limit_headers(quoted))[b"ratelimit-policy"] == b'"a\\"b\\\\c";q=1;w=1'
    for bad in ("caf\u00e9", "", "tab\there"):
        with pytest.raises(ValueError, match="printable ASCII"):
            LimitState(bad, limit=1, window_s=1, remaining=0, reset_s=1)
    with pytest.raises(ValueError, match="negative"):
        LimitState("x", limit=1, window_s=1, remaining=-1, reset_s=1)


def test_text_pairs_for_django() -> None:
    assert as_text(service_unavailable_headers(retry_after_s=30)) == [("Retry-After", "30")]
    assert as_text([(b"ratelimit-policy", b'"w";q=1'), (b"x-other", b"1")]) == [
        ("RateLimit-Policy", '"w";q=1'),
        ("x-other", "1"),
    ]


def test_the_module_imports_no_django_and_no_sentinel_app() -> None:
    code = (
        "import sys, core.ratelimit_headers; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('django', 'rest_framework', 'accounts', 'gateway', 'sentinel_site', 'rules', 'observability')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
