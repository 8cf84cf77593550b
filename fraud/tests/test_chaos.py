"""`manage.py chaos` against a local Sentinel stand-in: a real aiohttp server answering
`POST /transaction` scored, fail-open or with an error on cue (by the request's rank), serving
`GET /circuit/status` to match, and recording what it received."""

from __future__ import annotations

import asyncio
import io
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from django.core.management import CommandError, call_command

from fraud.chaos import Plan, run_drill
from tests.support.net import free_port

BREAKER_STATE = {"scored": "closed", "brain_unavailable": "closed", "breaker_open": "open"}


@dataclass
class StandIn:
    """What the stand-in answers: `script` is a list of (how many requests, answer), the answer
    `scored`, a fail-open code, or an HTTP status as an int; past the script, `scored`."""

    script: list[tuple[int, str | int]]
    status_code: int = 200
    # Hold the first answer of each scripted segment until /circuit/status has reported it, so a
    # test sees every breaker state without hoping the poll falls in time.
    hold_for_breaker: bool = False
    reported: dict[int, asyncio.Event] = field(default_factory=lambda: defaultdict(asyncio.Event))
    received: list[tuple[float, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def segment_of(self, rank: int) -> tuple[int, bool]:
        """(the script's segment answering request `rank`, whether it is that segment's first)."""
        for number, (count, _) in enumerate(self.script):
            if rank < count:
                return number, rank == 0
            rank -= count
        return len(self.script), rank == 0

    def answer_for(self, rank: int) -> str | int:
        number, _ = self.segment_of(rank)
        return self.script[number][1] if number < len(self.script) else "scored"

    async def transaction(self, request: web.Request) -> web.Response:
        body = await request.json()
        rank = len(self.received)
        answer = self.answer_for(rank)
        self.received.append((time.monotonic(), dict(request.headers), body))
        segment, first = self.segment_of(rank)
        if self.hold_for_breaker and first:
            await self.reported[segment].wait()
        if isinstance(answer, int):
            return web.json_response({"error": {"code": "x", "message": "scripted", "details": None}}, status=answer)
        scored = answer == "scored"
        reason = (
            {"code": "amount_vs_habit", "message": "Amount far above the user's habit", "contribution": 0.4}
            if scored
            else {"code": answer, "message": "scripted fail-open", "contribution": None}
        )
        payload = {
            "transaction_id": body["transaction_id"],
            "decision": "approve",
            "score": 0.12 if scored else None,
            "scored": scored,
            "reasons": [reason],
            "model_version": "stand-in-1" if scored else "",
            "created_at": "2026-12-01T10:00:00Z",
        }
        return web.json_response(payload, status=201)

    async def circuit_status(self, request: web.Request) -> web.Response:
        if self.status_code != 200:
            return web.json_response({"error": {"code": "forbidden", "message": "no", "details": None}}, status=403)
        answer = self.answer_for(len(self.received))
        state = BREAKER_STATE.get(str(answer), "closed")
        self.reported[self.segment_of(len(self.received))[0]].set()
        breakers = [
            {"upstream": "http://upstream.example", "state": "closed"},
            {"upstream": "fraud-brain", "state": state},
        ]
        return web.json_response({"breakers": breakers})


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    """A StandIn served from a thread of its own (the command runs its own event loop)."""
    server = StandIn(script=[])
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/transaction", server.transaction)
    app.router.add_get("/circuit/status", server.circuit_status)
    runner = web.AppRunner(app, access_log=None)
    server.port = free_port()
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", server.port).start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10), "the stand-in did not start"
    yield server
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def drill(stand_in: StandIn, **options: Any) -> str:
    out = io.StringIO()
    options.setdefault("api_key", "snl_test")
    call_command("chaos", url=stand_in.url, stdout=out, **options)
    return out.getvalue()


def phase_lines(output: str) -> list[str]:
    """The printed phase changes (not the breaker's), without their time stamps."""
    lines = [line for line in output.splitlines() if re.match(r"\d\d:\d\d:\d\d\.\d{3} \(\+", line)]
    changes = [line.split(")  ", 1)[1] for line in lines]
    return [change for change in changes if not change.startswith("breaker ")]


def summary_row(output: str, label: str) -> list[str]:
    row = next(line for line in output.splitlines() if line.strip().startswith(label))
    return row.strip()[len(label) :].split()


def test_an_outage_prints_success_then_circuit_open_then_recovered_with_counts(stand_in: StandIn) -> None:
    # Given a Sentinel that scores 10, fails open for 15 (the brain down, then the breaker open), scores again
    stand_in.script = [(10, "scored"), (3, "brain_unavailable"), (12, "breaker_open"), (10, "scored")]

    # When the drill sends 35 transactions one at a time
    output = drill(stand_in, requests=35, workers=1, rate=0)

    # Then it prints the three phases as they changed, each closing one with its count and latencies
    changes = phase_lines(output)
    assert changes[0] == "success"
    assert re.fullmatch(
        r"success → circuit open \(brain_unavailable\); success from \+0\.0 s: "
        r"10 answers, p50 [\d.]+ ms, p99 [\d.]+ ms",
        changes[1],
    )
    assert changes[2].startswith("circuit open → recovered; circuit open from +")
    assert ": 15 answers, p50 " in changes[2]
    assert len(changes) == 3
    # and the breaker's state as /circuit/status reported it at the start
    assert "breaker fraud-brain: closed" in output
    # and a summary per phase and in total, with the fail-open answers by reason
    assert summary_row(output, "1. success")[2:4] == ["10", "0"]
    assert summary_row(output, "2. circuit open")[2:4] == ["15", "0"]
    assert summary_row(output, "3. recovered")[2:4] == ["10", "0"]
    assert summary_row(output, "total")[:2] == ["35", "0"]
    assert "scored 20, fail-open 15, errors 0" in output
    assert "fail-open by reason: breaker_open 12, brain_unavailable 3" in output


def test_the_requests_are_unique_plausible_transactions_with_the_key(stand_in: StandIn) -> None:
    stand_in.script = [(20, "scored")]

    drill(stand_in, requests=20, workers=4, rate=0, api_key="snl_given")

    bodies = [body for _, _, body in stand_in.received]
    assert len({body["transaction_id"] for body in bodies}) == 20
    assert {headers["X-API-Key"] for _, headers, _ in stand_in.received} == {"snl_given"}
    for body in bodies:
        assert set(body) == {"transaction_id", "amount", "currency", "user_id", "merchant", "country"}
        assert body["amount"] > 0 and round(body["amount"], 2) == body["amount"]
        assert body["currency"] in {"EUR", "USD", "GBP"} and len(body["country"]) == 2


def test_a_second_run_sends_other_transaction_ids(stand_in: StandIn) -> None:
    drill(stand_in, requests=3, workers=1, rate=0)
    drill(stand_in, requests=3, workers=1, rate=0)

    assert len({body["transaction_id"] for _, _, body in stand_in.received}) == 6


def test_stragglers_in_flight_do_not_print_a_flap(stand_in: StandIn) -> None:
    # Given many requests in flight across each change
    stand_in.script = [(40, "scored"), (40, "breaker_open"), (40, "scored")]

    output = drill(stand_in, requests=120, workers=8, rate=0)

    # Then there are exactly the three phases, and every answer is counted once
    assert [line.split(";")[0] for line in phase_lines(output)] == [
        "success",
        "success → circuit open (breaker_open)",
        "circuit open → recovered",
    ]
    assert summary_row(output, "total")[:2] == ["120", "0"]
    assert "scored 80, fail-open 40, errors 0" in output


def test_errors_are_counted_apart_and_do_not_change_the_phase(stand_in: StandIn) -> None:
    stand_in.script = [(5, "scored"), (2, 503), (5, "scored")]

    output = drill(stand_in, requests=12, workers=1, rate=0)

    assert phase_lines(output) == ["success"]
    assert summary_row(output, "1. success")[2:4] == ["10", "2"]
    assert "errors by kind: HTTP 503 2" in output


def test_nothing_listening_is_an_error_per_request_not_a_crash() -> None:
    out = io.StringIO()
    call_command("chaos", url=f"http://127.0.0.1:{free_port()}", api_key="k", requests=3, rate=0, stdout=out)

    assert "scored 0, fail-open 0, errors 3" in out.getvalue()
    assert "errors by kind: ClientConnectorError 3" in out.getvalue()


def test_a_refused_key_stops_the_drill_with_what_to_do(stand_in: StandIn) -> None:
    stand_in.script = [(100, 403)]

    refused = r"API key was refused \(HTTP 403.*--api-key with a key of scope transactions:write"
    with pytest.raises(CommandError, match=refused):
        drill(stand_in, requests=100, workers=1, rate=0)

    assert len(stand_in.received) == 1


def test_a_breaker_the_key_may_not_read_is_said_once(stand_in: StandIn) -> None:
    stand_in.status_code = 403

    output = drill(stand_in, requests=3, workers=1, rate=0)

    assert output.count("breaker state unknown: /circuit/status answered HTTP 403") == 1


def test_the_demo_key_is_read_from_the_first_run_file(stand_in: StandIn, settings: Any, tmp_path: Path) -> None:
    settings.VAR_DIR = tmp_path
    (tmp_path / "first-run.txt").write_text("# creds\nadmin_username=admin\ndemo_api_key=snl_demo123\n")

    drill(stand_in, requests=2, workers=1, rate=0, api_key=None)

    assert {headers["X-API-Key"] for _, headers, _ in stand_in.received} == {"snl_demo123"}


def test_without_a_key_it_says_to_pass_one(stand_in: StandIn, settings: Any, tmp_path: Path) -> None:
    settings.VAR_DIR = tmp_path

    with pytest.raises(CommandError, match=r"no API key: .*first-run\.txt holds none.*--api-key"):
        drill(stand_in, requests=2, api_key=None)

    assert stand_in.received == []


def test_the_rate_paces_the_requests(stand_in: StandIn) -> None:
    # 10 requests at 50/s: the schedule spaces the first and the last by 9/50 s at least
    drill(stand_in, requests=10, workers=2, rate=50)

    sent = [at for at, _, _ in stand_in.received]
    assert len(sent) == 10
    assert sent[-1] - sent[0] >= 9 / 50 - 0.01


def test_a_duration_without_requests_keeps_going_until_it_ends(stand_in: StandIn) -> None:
    output = drill(stand_in, duration=0.5, rate=40, workers=4)

    # 0.5 s at 40/s is at most 20 requests; open-ended, not the default 200
    assert 1 <= len(stand_in.received) <= 21
    assert "requests at 40/s (at most 0.5 s)" in output


def test_the_breaker_state_is_printed_as_it_changes(stand_in: StandIn) -> None:
    # Given a Sentinel whose fraud-brain breaker is closed, then open, then closed again
    stand_in.script = [(5, "scored"), (5, "breaker_open"), (5, "scored")]
    stand_in.hold_for_breaker = True
    lines: list[str] = []

    # When the drill runs, reading /circuit/status often
    plan = Plan(url=stand_in.url, api_key="k", requests=15, workers=1, rate=0, breaker_poll_s=0.02)
    asyncio.run(run_drill(plan, lines.append))

    # Then each change of the breaker is printed once, in order
    breaker = [line.split(")  ", 1)[1] for line in lines if ")  breaker fraud-brain" in line]
    assert breaker == [
        "breaker fraud-brain: closed",
        "breaker fraud-brain: closed → open",
        "breaker fraud-brain: open → closed",
    ]
