"""The check engine's data shapes and the parsing the API shares: expected status lists, tcp
targets and http URLs, each refused in words."""

from __future__ import annotations

import dataclasses

import pytest

from monitors.engine.spec import (
    CheckReport,
    CheckSpec,
    format_expected_status,
    http_target_problem,
    parse_expected_status,
    split_tcp_target,
)


def test_expected_status_ranges_codes_and_the_default() -> None:
    assert parse_expected_status(["200-299", "301", 404]) == ((200, 299), (301, 301), (404, 404))
    assert parse_expected_status([]) == ((200, 299),)  # Uptime Kuma's default
    assert parse_expected_status([" 500 - 503 "]) == ((500, 503),)


@pytest.mark.parametrize(
    ("values", "words"),
    [
        (["abc"], "'abc' is not a status code or a range"),
        (["299-200"], "a range goes from the lower code to the higher"),
        ([99], "status codes go from 100 to 599"),
        ([600], "status codes go from 100 to 599"),
        (["200-600"], "status codes go from 100 to 599"),
        ([True], "True is not a status code"),
        ([2.5], "is not a status code"),
        (["\uff12\uff10\uff10"], "is not a status code"),  # full-width digits are not ASCII digits
        (["-"], "is not a status code"),
        (["200"] * 51, "at most 50 codes or ranges"),
        ("200", "must be a list"),
    ],
)
def test_expected_status_junk_is_refused_in_words(values: object, words: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_expected_status(values)  # type: ignore[arg-type]

    assert words in str(raised.value)


def test_expected_status_is_shown_as_written() -> None:
    assert format_expected_status(((200, 299), (301, 301))) == "200-299, 301"


@pytest.mark.parametrize(
    ("target", "parsed"),
    [
        ("db.example.com:5432", ("db.example.com", 5432)),
        ("127.0.0.1:6379", ("127.0.0.1", 6379)),
        ("[::1]:22", ("::1", 22)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
        (" cache:11211 ", ("cache", 11211)),
    ],
)
def test_tcp_targets(target: str, parsed: tuple[str, int]) -> None:
    assert split_tcp_target(target) == parsed


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("db.example.com", "needs a port"),
        ("[::1]", "needs a port"),
        ("::1:80", "in brackets"),
        ("[nope]:80", "is not an IPv6 address"),
        ("db:0", "is not a port"),
        ("db:65536", "is not a port"),
        ("db:http", "is not a port"),
        (":80", "needs a host"),
        ("tcp://db:80", "without a scheme"),
        ("", "host:port"),
        ("d b:80", "cannot contain spaces"),
    ],
)
def test_tcp_targets_without_a_port_or_host_are_refused_in_words(target: str, words: str) -> None:
    with pytest.raises(ValueError) as raised:
        split_tcp_target(target)

    assert words in str(raised.value)


@pytest.mark.parametrize(
    "url",
    ["http://example.com", "https://example.com:8443/health?x=1", "http://[2001:db8::1]/", "HTTPS://Example.com/"],
)
def test_checkable_urls(url: str) -> None:
    assert http_target_problem(url) is None


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("", "empty"),
        ("example.com/health", "must start with http:// or https://"),
        ("ftp://example.com/", "must start with http:// or https://"),
        ("http://", "has no host"),
        ("http:///path", "has no host"),
        ("http://exa mple.com/", "spaces or control characters"),
        ("http://example.com/\n", "spaces or control characters"),
        ("http://example.com:99999/", "cannot be read"),
        ("http://example.com:0/", "port must be 1 to 65535"),
        ("http://[zz]/", "cannot be read"),
        ("http://example.com/" + "a" * 2000, "longer than 2000 characters"),
    ],
)
def test_urls_that_cannot_be_checked_say_why(url: str, words: str) -> None:
    problem = http_target_problem(url)

    assert problem is not None and words in problem


def test_spec_defaults_are_the_documented_ones() -> None:
    spec = CheckSpec(monitor_id=1, version=1, kind="http", target="http://example.com")

    assert (spec.method, spec.expected_status, spec.timeout_seconds, spec.due_at) == ("GET", ((200, 299),), 10.0, 0.0)
    assert spec.follow_redirects and spec.verify_tls
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.target = "http://elsewhere"  # type: ignore[misc]


def test_a_report_is_up_when_its_outcome_is() -> None:
    fields = {
        "monitor_id": 1,
        "started_at": 0.0,
        "status_code": 200,
        "latency_ms": 1.0,
        "reason": "",
        "failed_condition": "",
        "cert_expiry_days": None,
        "cert_expires_at": None,
        "lag_ms": 0.0,
    }

    assert CheckReport(outcome="up", **fields).up  # type: ignore[arg-type]
    assert not CheckReport(outcome="down", **fields).up  # type: ignore[arg-type]
