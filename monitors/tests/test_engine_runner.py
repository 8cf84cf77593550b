"""The check runner against real local servers: one reason per kind of failure, TLS with real
certificates, the egress policy at connect time, bounded body reads, and batches observed from
the server's side. No Django: the engine must not need it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from core.egress import EgressPolicy
from monitors.engine.runner import CheckRunner
from monitors.engine.spec import CheckReport, CheckSpec
from monitors.tests.engine_servers import Servers, running_servers, tcp_listener
from tests.support.net import free_port

LOOPBACK_OK = EgressPolicy(allow_loopback=True)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with running_servers(tmp_path_factory.mktemp("pki")) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh_records(servers: Servers) -> None:
    servers.reset()


def http(url: str, **fields: Any) -> CheckSpec:
    return CheckSpec(
        monitor_id=fields.pop("monitor_id", 1), version=fields.pop("version", 1), kind="http", target=url, **fields
    )


def check(
    servers: Servers, spec: CheckSpec, *, egress: EgressPolicy | None = LOOPBACK_OK, **options: Any
) -> CheckReport:
    async def scenario() -> CheckReport:
        runner = CheckRunner(egress=egress, ssl_context=servers.pki.client_context(), **options)
        try:
            return await runner.run(spec)
        finally:
            await runner.aclose()

    return asyncio.run(scenario())


# --- up -----------------------------------------------------------------------------------------


def test_a_healthy_http_target_is_up_with_its_status_and_latency(servers: Servers) -> None:
    report = check(servers, http(f"{servers.http}/ok", conditions='status == 200 and body.status == "UP"'))

    assert (report.outcome, report.reason, report.failed_condition) == ("up", "", "")
    assert report.status_code == 200
    assert report.latency_ms is not None and report.latency_ms > 0
    assert report.cert_expiry_days is None  # plain http has no certificate
    assert report.lag_ms == 0


def test_method_headers_and_body_reach_the_target(servers: Servers) -> None:
    spec = http(f"{servers.http}/echo", method="POST", headers=(("X-Probe", "sentinel"),), body=b'{"ping": 1}')

    assert check(servers, spec).outcome == "up"

    (seen,) = servers.recorder.requests("/echo")
    assert (seen.method, seen.body, seen.headers["x-probe"]) == ("POST", b'{"ping": 1}', "sentinel")
    assert seen.headers["user-agent"].startswith("Sentinel-Monitor/")


def test_every_check_opens_a_new_connection(servers: Servers) -> None:
    async def scenario() -> None:
        runner = CheckRunner(egress=LOOPBACK_OK)
        try:
            for _ in range(3):
                assert (await runner.run(http(f"{servers.http}/ok"))).outcome == "up"
        finally:
            await runner.aclose()

    asyncio.run(scenario())

    ports = [seen.peer_port for seen in servers.recorder.requests("/ok")]
    assert len(ports) == 3 and len(set(ports)) == 3  # three client sockets: no keep-alive


# --- one reason per kind of failure -------------------------------------------------------------


def test_an_unexpected_status_says_what_was_expected(servers: Servers) -> None:
    report = check(servers, http(f"{servers.http}/status/500"))

    assert report.outcome == "down"
    assert report.status_code == 500
    assert report.reason == "status 500, expected 200-299"


@pytest.mark.parametrize(
    ("expected", "outcome"),
    [(((500, 503),), "up"), (((200, 299), (404, 404)), "down")],
)
def test_expected_status_ranges_decide(servers: Servers, expected: tuple[tuple[int, int], ...], outcome: str) -> None:
    report = check(servers, http(f"{servers.http}/status/503", expected_status=expected))

    assert report.outcome == outcome
    if outcome == "down":
        assert report.reason == "status 503, expected 200-299, 404"


def test_a_missing_keyword_and_a_keyword_that_must_be_absent(servers: Servers) -> None:
    missing = check(servers, http(f"{servers.http}/text", keyword="degraded"))
    present = check(servers, http(f"{servers.http}/text", keyword="ERROR", keyword_absent=True))
    found = check(servers, http(f"{servers.http}/text", keyword="operational"))

    assert (missing.outcome, missing.reason) == ("down", 'keyword "degraded" not found in the body')
    assert (present.outcome, present.reason) == ("down", 'keyword "ERROR" found in the body, where it must be absent')
    assert found.outcome == "up"


def test_a_failed_condition_is_rendered_with_its_actual_value(servers: Servers) -> None:
    report = check(servers, http(f"{servers.http}/down", conditions='status == 200 and body.status == "UP"'))

    assert report.outcome == "down"
    assert report.failed_condition == 'body.status ("DOWN") == "UP"'
    assert report.reason == 'condition failed: body.status ("DOWN") == "UP"'


def test_conditions_read_headers_by_lower_cased_name_and_the_status(servers: Servers) -> None:
    up = check(servers, http(f"{servers.http}/ok", conditions='headers.x_version == "7" and status < 300'))
    down = check(servers, http(f"{servers.http}/ok", conditions='headers.content_type == "text/html"'))

    assert up.outcome == "up"
    assert down.failed_condition == 'headers.content_type ("application/json; charset=utf-8") == "text/html"'


def test_a_condition_over_response_time(servers: Servers) -> None:
    report = check(servers, http(f"{servers.http}/slow?ms=150", conditions="response_time < 100"))

    assert report.outcome == "down"
    assert report.failed_condition.startswith("response_time (")
    assert report.failed_condition.endswith(") < 100")
    assert report.latency_ms is not None and report.latency_ms >= 150


def test_too_slow(servers: Servers) -> None:
    report = check(servers, http(f"{servers.http}/slow?ms=200", max_latency_ms=50))

    assert report.outcome == "down"
    assert report.reason.startswith("too slow: ")
    assert report.reason.endswith(" ms, the limit is 50 ms")


def test_timeout_names_the_phase(servers: Servers) -> None:
    report = check(servers, http(f"{servers.http}/slow?ms=5000", timeout_seconds=0.3))

    assert report.outcome == "down"
    assert report.reason == "timeout: no answer within 0.3 s (while waiting for the response)"
    assert report.status_code is None


def test_dns_failure(servers: Servers) -> None:
    # RFC 2606: names under .invalid never resolve.
    report = check(servers, http("http://monitor-target.invalid/health"))

    assert report.outcome == "down"
    assert report.reason.startswith("DNS failure: monitor-target.invalid does not resolve (")


def test_connection_refused(servers: Servers) -> None:
    port = free_port()

    report = check(servers, http(f"http://127.0.0.1:{port}/"))

    assert (report.outcome, report.reason) == ("down", f"connection refused by 127.0.0.1:{port}")


def test_redirects_are_followed_or_not(servers: Servers) -> None:
    followed = check(servers, http(f"{servers.http}/redirect?to=/status/500"))
    kept = check(servers, http(f"{servers.http}/redirect", follow_redirects=False))
    accepted = check(servers, http(f"{servers.http}/redirect", follow_redirects=False, expected_status=((300, 399),)))
    looping = check(servers, http(f"{servers.http}/loop"))

    assert followed.reason == "status 500, expected 200-299"
    assert kept.reason == "status 302, expected 200-299"
    assert accepted.outcome == "up"
    assert looping.reason == "too many redirects (more than 10)"


# --- TLS ----------------------------------------------------------------------------------------


def test_https_records_the_certificates_expiry(servers: Servers) -> None:
    report = check(servers, http(f"{servers.https['good']}/ok", conditions="cert_expiry_days > 14"))

    assert report.outcome == "up", report.reason
    assert report.cert_expiry_days == 30
    assert report.cert_expires_at is not None and report.cert_expires_at > time.time() + 30 * 86_400


def test_a_condition_over_cert_expiry_days(servers: Servers) -> None:
    report = check(servers, http(f"{servers.https['good']}/ok", conditions="cert_expiry_days > 45"))

    assert report.failed_condition == "cert_expiry_days (30) > 45"


@pytest.mark.parametrize(
    ("leaf", "problem"),
    [
        ("self_signed", "self-signed certificate"),
        ("expired", "certificate has expired"),
        ("mismatch", "IP address mismatch, certificate is not valid for '127.0.0.1'"),
    ],
)
def test_a_tls_error_names_the_certificates_problem(servers: Servers, leaf: str, problem: str) -> None:
    url = servers.https[leaf]

    report = check(servers, http(f"{url}/ok"))

    assert report.outcome == "down"
    assert report.reason == f"TLS error: {problem} ({url.removeprefix('https://')})"
    assert servers.recorder.requests() == []  # no request was sent over an unverified channel


@pytest.mark.parametrize(("leaf", "days"), [("self_signed", 30), ("expired", -2), ("mismatch", 30)])
def test_with_verification_off_the_check_passes_and_still_records_the_expiry(
    servers: Servers, leaf: str, days: int
) -> None:
    report = check(servers, http(f"{servers.https[leaf]}/ok", verify_tls=False))

    assert (report.outcome, report.reason) == ("up", "")
    assert report.cert_expiry_days == days


# --- bounds -------------------------------------------------------------------------------------


def test_the_body_is_read_only_up_to_the_bound(servers: Servers) -> None:
    # The body never ends: the check finishes only because it stops at the bound.
    found = check(
        servers, http(f"{servers.http}/endless", keyword="HEALTHY", timeout_seconds=5), body_limit_bytes=50_000
    )
    beyond = check(servers, http(f"{servers.http}/endless", keyword="SICK", timeout_seconds=5), body_limit_bytes=50_000)

    assert found.outcome == "up", found.reason
    assert beyond.reason == 'keyword "SICK" not found in the first 50000 bytes of the body'


def test_the_body_is_not_read_when_nothing_needs_it(servers: Servers) -> None:
    # With neither keyword nor a condition over body, an endless body does not hold the check.
    report = check(servers, http(f"{servers.http}/endless", conditions="status == 200", timeout_seconds=5))

    assert report.outcome == "up", report.reason


def test_a_condition_over_a_cut_json_body_says_the_body_was_too_large(servers: Servers) -> None:
    spec = http(f"{servers.http}/big-json?bytes=20000", conditions='body.status == "UP"')

    within = check(servers, spec, body_limit_bytes=100_000)
    cut = check(servers, spec, body_limit_bytes=10_000)

    assert within.outcome == "up"
    assert cut.outcome == "down"
    assert cut.failed_condition == 'body.status (missing) == "UP"'
    assert "the body was larger than the 10000-byte bound" in cut.reason


# --- egress -------------------------------------------------------------------------------------


def test_egress_denied_names_the_address_and_the_rule(servers: Servers) -> None:
    refused: list[tuple[int, str | None]] = []
    spec = http(f"{servers.http}/ok")

    report = check(
        servers, spec, egress=EgressPolicy(), on_egress_denied=lambda s, d: refused.append((s.monitor_id, d.address))
    )

    assert report.outcome == "down"
    assert report.reason.startswith("egress denied: ")
    assert "127.0.0.1" in report.reason and "loopback (RFC 1122)" in report.reason
    assert servers.recorder.requests() == []
    # The site logs and counts each refusal (monitors.tasks) through this hook.
    assert refused == [(spec.monitor_id, "127.0.0.1")]


def test_egress_is_judged_on_every_redirect_hop(servers: Servers) -> None:
    # 127.0.0.1 is allowed, 127.0.0.2 (loopback too) is not: the hop there must be refused.
    only_first = EgressPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    with tcp_listener("127.0.0.2") as (port, accepted):
        report = check(servers, http(f"{servers.http}/redirect?to=http://127.0.0.2:{port}/"), egress=only_first)

    assert report.outcome == "down"
    assert "127.0.0.2" in report.reason and "loopback" in report.reason
    assert len(servers.recorder.requests("/redirect")) == 1
    assert accepted == []


# --- tcp ----------------------------------------------------------------------------------------


def tcp(target: str, **fields: Any) -> CheckSpec:
    return CheckSpec(monitor_id=2, version=1, kind="tcp", target=target, **fields)


def test_tcp_connects_and_closes(servers: Servers) -> None:
    with tcp_listener() as (port, accepted):
        report = check(servers, tcp(f"127.0.0.1:{port}"))

    assert (report.outcome, report.reason) == ("up", "")
    assert report.latency_ms is not None
    assert len(accepted) == 1


def test_tcp_failures(servers: Servers) -> None:
    port = free_port()

    refused = check(servers, tcp(f"127.0.0.1:{port}"))
    unresolved = check(servers, tcp("db.invalid:5432"))
    denied = check(servers, tcp(f"127.0.0.1:{port}"), egress=EgressPolicy())

    assert refused.reason == f"connection refused by 127.0.0.1:{port}"
    assert unresolved.reason.startswith("DNS failure: db.invalid does not resolve (")
    assert denied.reason.startswith("egress denied: ") and "loopback (RFC 1122)" in denied.reason


def test_tcp_egress_is_judged_before_connecting(servers: Servers) -> None:
    with tcp_listener() as (port, accepted):
        report = check(servers, tcp(f"localhost:{port}"), egress=EgressPolicy())

    assert report.reason.startswith("egress denied: ")
    assert accepted == []


# --- compiled conditions ------------------------------------------------------------------------


def test_a_new_version_of_a_monitor_uses_its_new_condition(servers: Servers) -> None:
    async def scenario() -> tuple[CheckReport, CheckReport]:
        runner = CheckRunner(egress=LOOPBACK_OK)
        try:
            first = await runner.run(http(f"{servers.http}/ok", monitor_id=9, version=1, conditions="status == 200"))
            second = await runner.run(http(f"{servers.http}/ok", monitor_id=9, version=2, conditions="status == 201"))
            return first, second
        finally:
            await runner.aclose()

    first, second = asyncio.run(scenario())

    assert first.outcome == "up"
    assert second.failed_condition == "status (200) == 201"


def test_a_condition_saved_around_the_services_fails_the_check_in_words(servers: Servers) -> None:
    report = check(servers, http(f"{servers.http}/ok", conditions="status =="))

    assert report.outcome == "down"
    assert report.reason.startswith("the condition cannot be compiled: unexpected end of input")


# --- batches ------------------------------------------------------------------------------------


def test_run_batch_starts_each_check_at_its_due_time(servers: Servers) -> None:
    now = time.time()
    dues = {1: now + 0.6, 2: now + 0.2, 3: 0.0, 4: now + 0.4}
    specs = [
        http(f"{servers.http}/ok", monitor_id=m, due_at=due, headers=(("X-M", str(m)),)) for m, due in dues.items()
    ]
    finished: list[int] = []

    async def scenario() -> list[CheckReport]:
        runner = CheckRunner(egress=LOOPBACK_OK)
        try:
            return await runner.run_batch(specs, on_report=lambda report: finished.append(report.monitor_id))
        finally:
            await runner.aclose()

    reports = asyncio.run(scenario())

    assert [report.monitor_id for report in reports] == [1, 2, 3, 4]  # the order of the specs
    assert sorted(finished) == [1, 2, 3, 4]
    arrivals = {int(seen.headers["x-m"]): seen.arrived_at for seen in servers.recorder.requests("/ok")}
    # The server saw each request no earlier than its due time, in due order.
    assert all(arrivals[m] >= due for m, due in dues.items())
    assert sorted(arrivals, key=arrivals.__getitem__) == [3, 2, 4, 1]
    assert all(report.lag_ms >= 0 for report in reports)


def test_run_batch_bounds_the_checks_in_flight(servers: Servers) -> None:
    specs = [http(f"{servers.http}/hold?ms=150", monitor_id=m) for m in range(12)]

    async def scenario() -> list[CheckReport]:
        runner = CheckRunner(egress=LOOPBACK_OK, concurrency=3)
        try:
            return await runner.run_batch(specs)
        finally:
            await runner.aclose()

    reports = asyncio.run(scenario())

    assert [report.outcome for report in reports] == ["up"] * 12
    assert len(servers.recorder.requests("/hold")) == 12
    assert servers.recorder.max_in_flight == 3


def test_run_never_raises_for_a_targets_fault(servers: Servers) -> None:
    weird = [
        http("http://[::1"),
        http("ftp://example.invalid/"),
        tcp("no-port"),
        replace(tcp("127.0.0.1:1"), kind="icmp"),
    ]

    reports = [check(servers, spec) for spec in weird]

    assert [report.outcome for report in reports] == ["down"] * 4
    assert all(report.reason for report in reports)


def test_a_cancelled_batch_gives_back_every_slot(servers: Servers) -> None:
    now = time.time()
    specs = [http(f"{servers.http}/ok", monitor_id=1), http(f"{servers.http}/ok", monitor_id=2, due_at=now + 60)]

    async def scenario() -> CheckReport:
        runner = CheckRunner(egress=LOOPBACK_OK, concurrency=1)
        try:
            batch = asyncio.create_task(runner.run_batch(specs))
            await asyncio.sleep(0)  # the feeder takes the one slot, starts a check, sleeps for the next
            batch.cancel()  # ...and is cancelled with that check in flight
            with contextlib.suppress(asyncio.CancelledError):
                await batch
            # With the slot given back, the runner still runs checks.
            return await asyncio.wait_for(runner.run(http(f"{servers.http}/ok", monitor_id=3)), 5)
        finally:
            await runner.aclose()

    assert asyncio.run(scenario()).outcome == "up"


def test_concurrent_checks_each_record_their_own_certificate(servers: Servers) -> None:
    specs = [
        http(f"{servers.https['good']}/ok", monitor_id=1),
        http(f"{servers.http}/ok", monitor_id=2),
        http(f"{servers.https['expired']}/ok", monitor_id=3, verify_tls=False),
    ] * 5

    async def scenario() -> list[CheckReport]:
        runner = CheckRunner(egress=LOOPBACK_OK, ssl_context=servers.pki.client_context())
        try:
            return list(await asyncio.gather(*(runner.run(spec) for spec in specs)))
        finally:
            await runner.aclose()

    reports = asyncio.run(scenario())

    seen = {(report.monitor_id, report.outcome, report.cert_expiry_days) for report in reports}
    assert seen == {(1, "up", 30), (2, "up", None), (3, "up", -2)}
