"""The request log with real processes: every proxied request, rejections included, lands in the
log exactly once, across two web processes, a 10 s database outage and a SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import aiohttp
import pytest
from django.db import connection

from gateway import services
from observability.models import Decision, RequestLog
from observability.tests.request_log_support import no_partitions_left, postgres
from tests.support.net import TcpRelay, tcp_relay
from tests.support.processes import MockUpstreams, web_server
from tests.support.services import database_url_of
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures(no_partitions_left.__name__)]

# Only the burst route's own bucket limits anything.
GENEROUS = {"BURST_CAPACITY": "1000000", "REFILL_RATE": "1000000", "BASE_RATE_LIMIT": "1000000"}
# Each request's path, and what the proxy answers it (from its correlation id's number).
KINDS = {0: ("/private/x", 401), 1: ("/burst/x", 429)}
CONCURRENCY = 200


@pytest.fixture
def routes(mock_upstream: MockUpstreams) -> None:
    upstream = mock_upstream("logpipe").url
    services.route_create(tenant=None, name="ok", path_prefix="/ok/", targets=[upstream], auth_mode="none")
    # Five requests at once per process, then one a second: most of a burst is refused (429).
    services.route_create(
        tenant=None, name="burst", path_prefix="/burst/", targets=[upstream], auth_mode="none",
        burst_capacity=5, refill_rate=1.0,
    )  # fmt: skip
    # No credentials are sent: every request is refused (401, auth_failed).
    services.route_create(tenant=None, name="private", path_prefix="/private/", targets=[upstream], auth_mode="jwt")


def path_of(n: int) -> str:
    return KINDS[n % 10][0] if n % 10 in KINDS else f"/ok/item/{n}"


async def send(ports: list[int], prefix: str, numbers: range) -> dict[str, int]:
    """Requests `numbers` through the web processes in turn, `CONCURRENCY` at a time over
    keep-alive connections; returns each correlation id's status as the client saw it."""
    seen: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(n: int) -> None:
            cid = f"{prefix}-{n}"
            async with (
                gate,
                session.get(
                    f"http://127.0.0.1:{ports[n % len(ports)]}{path_of(n)}", headers={"x-correlation-id": cid}
                ) as response,
            ):
                await response.read()
                seen[cid] = response.status

        await asyncio.gather(*(one(n) for n in numbers))
    return seen


def logged(prefix: str) -> dict[str, list[tuple[int, str]]]:
    """(status, decision) of every row whose correlation id starts with `prefix`, by id."""
    rows: dict[str, list[tuple[int, str]]] = {}
    for cid, status, decision in RequestLog.objects.filter(correlation_id__startswith=prefix).values_list(
        "correlation_id", "status", "decision"
    ):
        rows.setdefault(cid, []).append((status, decision))
    return rows


@pytest.fixture
def database_relay() -> Iterator[TcpRelay | None]:
    """A relay in front of PostgreSQL for the web processes; None on SQLite (a file: no outage)."""
    if not postgres():
        yield None
        return
    with tcp_relay(int(connection.settings_dict.get("PORT") or 5432)) as relay:
        yield relay


def relayed_env(relay: TcpRelay | None) -> dict[str, str]:
    if relay is None:
        return {}
    return {"DATABASE_URL": database_url_of({**connection.settings_dict, "HOST": "127.0.0.1", "PORT": relay.port})}


def test_ten_thousand_requests_over_two_processes_and_an_outage_are_each_logged_once(
    routes: None, database_relay: TcpRelay | None
) -> None:
    """On PostgreSQL, with the database unreachable for 10 s in the middle; on SQLite, without."""
    prefix = f"acc{uuid.uuid4().hex[:6]}"
    env = {
        **GENEROUS,
        **relayed_env(database_relay),
        "GATEWAY_FORCED_PRESSURE": "0",
        "REQUEST_LOG_RETRY_MAX_SECONDS": "1",
    }
    with web_server(**env) as (first, _), web_server(**env) as (second, second_process):
        ports = [first, second]
        # Given traffic through both processes
        seen = asyncio.run(send(ports, prefix, range(4000)))
        # When PostgreSQL becomes unreachable for 10 s while traffic goes on
        if database_relay is not None:
            database_relay.cut()
        cut_at = time.monotonic()
        seen |= asyncio.run(send(ports, prefix, range(4000, 7000)))
        during = RequestLog.objects.filter(correlation_id__startswith=prefix).count()
        if database_relay is not None:
            time.sleep(max(0.0, cut_at + 10 - time.monotonic()))  # the outage's length, not a wait for anything
            database_relay.start()
        seen |= asyncio.run(send(ports, prefix, range(7000, 10_000)))
        # and the second process is stopped with SIGTERM right after its last request
        second_process.send_signal(signal.SIGTERM)
        exit_code = second_process.wait(timeout=30)
        second_rows = logged(prefix)
        # Then what the second process answered is all in the log once it has exited
        sent_to_second = {cid for cid in seen if int(cid.rsplit("-", 1)[1]) % 2 == 1}
        assert exit_code == -signal.SIGTERM  # uvicorn's graceful exit: it re-raises the signal it handled
        assert sent_to_second <= set(second_rows), f"{len(sent_to_second - set(second_rows))} rows missing"
        # and the first process's rows arrive too (it flushes at least every second)
        wait_until(
            lambda: RequestLog.objects.filter(correlation_id__startswith=prefix).count() >= len(seen),
            timeout=60,
            what="every row of the first process",
        )

    rows = logged(prefix)
    assert len(seen) == 10_000
    statuses = Counter(seen.values())
    assert statuses[401] == 1000 and statuses[429] > 900 and statuses[200] > 8000, statuses
    # Exactly one row per request, with the status the client got
    assert {cid: len(found) for cid, found in rows.items() if len(found) != 1} == {}
    assert {cid: found[0][0] for cid, found in rows.items()} == seen
    decisions = Counter(decision for found in rows.values() for _, decision in found)
    assert decisions[Decision.AUTH_FAILED] == 1000
    assert decisions[Decision.LIMITED] == statuses[429]
    assert decisions[Decision.FORWARDED] == statuses[200]
    # The outage really kept the log from being written while it lasted
    assert database_relay is None or during < 7000


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_stopped_web_process_writes_its_queue_before_it_exits(routes: None, signal_name: str) -> None:
    prefix = f"stop{uuid.uuid4().hex[:6]}"
    # A writer that would wait an hour, or 100,000 rows, before writing anything
    env = {**GENEROUS, "REQUEST_LOG_FLUSH_SECONDS": "3600", "REQUEST_LOG_BATCH_ROWS": "100000"}
    with web_server(**env) as (port, process):
        seen = asyncio.run(send([port], prefix, range(300)))
        queued = RequestLog.objects.filter(correlation_id__startswith=prefix).count()
        # When the process is told to stop
        process.send_signal(getattr(signal, signal_name))
        exit_code = process.wait(timeout=30)

    # Then nothing had been written before, and everything is once it has exited
    assert queued == 0
    # A graceful exit (uvicorn re-raises the signal it handled; Django's command turns SIGINT's
    # KeyboardInterrupt into 0), not the SIGKILL of a process that did not stop in time
    assert exit_code in (0, -getattr(signal, signal_name))
    rows = logged(prefix)
    assert {cid: [status for status, _ in found] for cid, found in rows.items()} == {
        cid: [status] for cid, status in seen.items()
    }
