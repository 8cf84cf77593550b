"""The chaos drill's engine (`manage.py chaos`): transactions sent to `POST /transaction` at a paced
rate while someone stops and starts the brain, every answer classified, and the phases printed as
they change — "success" (scored) → "circuit open" (approved unscored, fail-open) → "recovered"
(scored again) — with the fraud brain's breaker state from `GET /circuit/status`.

Django-free (asyncio + aiohttp) so a test drives it against a local server; the command only finds
the API key and the options. Output goes through a `write(line)` callable.

An answer is
- `scored`: 2xx with `scored: true`;
- `fail_open`: 2xx with `scored: false`; its reason is the first reason's code (`brain_timeout`,
  `brain_unavailable`, `brain_error`, `breaker_open`: `fraud.engine.transaction.FAIL_OPEN_CODES`);
- `error`: any other status, an unreadable body, a refused connection or a client timeout.

A phase changes only once `confirm` answers in a row (in completion order) say so: with 20 requests
in flight, answers sent before the brain stopped still arrive after the first fail-open one, and
one straggler must not print a flap. The new phase is dated from the first of those answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp

SUCCESS: Final = "success"
CIRCUIT_OPEN: Final = "circuit open"
RECOVERED: Final = "recovered"
# The breaker's entry in `GET /circuit/status`'s `breakers` (SPEC 6).
BREAKER_NAME: Final = "fraud-brain"
# Seconds between two reads of /circuit/status.
BREAKER_POLL_S: Final = 1.0
# A client-side cap, far above the server's fail-open deadline (40 ms): past it the answer is an error.
REQUEST_TIMEOUT_S: Final = 10.0

# Realistic traffic: a few hundred users, card amounts log-normal around 40 (median e^3.7), mostly
# domestic, a few merchants each user returns to.
USERS: Final = 300
COUNTRIES: Final = (("FR", 60), ("DE", 12), ("ES", 8), ("GB", 8), ("US", 6), ("NG", 3), ("BR", 3))
CURRENCIES: Final = (("EUR", 80), ("USD", 12), ("GBP", 8))
MERCHANTS: Final = ("grocer-42", "rail-sncf", "cafe-lumiere", "bookshop-9", "fuel-total", "cloud-host", "pharmacy-3")

Write = Callable[[str], None]


class CredentialsRefused(Exception):
    """The server answered 401 or 403: the drill stops (no answer will change that)."""


@dataclass(frozen=True)
class Outcome:
    """One answer: `kind` scored | fail_open | error; `detail` the fail-open reason code or the
    error (`HTTP 503`, `ClientConnectorError`); `sent` seconds since the drill began; `latency_ms`."""

    kind: str
    detail: str
    sent: float
    latency_ms: float


@dataclass
class Phase:
    """A run of answers of one kind: `name` success | circuit open | recovered, `started` seconds
    since the drill began; errors count in the phase they fell in but not in its latencies."""

    number: int
    name: str
    started: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def answers(self) -> int:
        return len(self.latencies_ms)

    def add(self, outcome: Outcome) -> None:
        if outcome.kind == "error":
            self.errors += 1
            return
        self.latencies_ms.append(outcome.latency_ms)
        if outcome.kind == "fail_open":
            self.reasons[outcome.detail] += 1

    def figures(self) -> str:
        p50, p99 = percentile(self.latencies_ms, 0.50), percentile(self.latencies_ms, 0.99)
        return f"{self.answers} answers, p50 {fmt_ms(p50)} ms, p99 {fmt_ms(p99)} ms"


def percentile(values: list[float], q: float) -> float:
    """Nearest rank (the q-th of the sorted values, as bench.gateway.loadgen); NaN when empty."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else math.nan


def fmt_ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def classify(status: int, body: Any) -> tuple[str, str]:
    """(kind, detail) of one answer of `POST /transaction`: see the module's docstring."""
    if not 200 <= status < 300:
        return "error", f"HTTP {status}"
    if not isinstance(body, dict) or not isinstance(body.get("scored"), bool):
        return "error", "unreadable answer"
    if body["scored"]:
        return "scored", ""
    reasons = body.get("reasons")
    first = reasons[0] if isinstance(reasons, list) and reasons else None
    code = first.get("code") if isinstance(first, dict) else None
    return "fail_open", str(code or "unknown")


class PhaseTracker:
    """Folds outcomes, in completion order, into phases and prints each change as it happens."""

    def __init__(self, write: Write, *, began_at: float, confirm: int = 3) -> None:
        self.write = write
        self.began_at = began_at  # wall clock (epoch s) of the drill's start, for the printed times
        self.confirm = confirm
        self.phases: list[Phase] = []
        self.errors: Counter[str] = Counter()
        self.fail_open: Counter[str] = Counter()
        self._pending: list[Outcome] = []  # answers that disagree with the current phase, in a row

    @property
    def current(self) -> Phase | None:
        return self.phases[-1] if self.phases else None

    def record(self, outcome: Outcome) -> None:
        if outcome.kind == "error":
            self.errors[outcome.detail] += 1
        elif outcome.kind == "fail_open":
            self.fail_open[outcome.detail] += 1
        current = self.current
        if outcome.kind == "error":
            if current is not None:
                current.add(outcome)
            return
        wanted = self._phase_for(outcome.kind)
        if current is not None and current.name == wanted:
            # A straggler of the other kind was not a change after all: it stays where it fell.
            for held in self._pending:
                current.add(held)
            self._pending.clear()
            current.add(outcome)
            return
        self._pending.append(outcome)
        if current is None or len(self._pending) >= self.confirm:
            self._begin(wanted, self._pending)
            self._pending = []

    def _phase_for(self, kind: str) -> str:
        if kind == "fail_open":
            return CIRCUIT_OPEN
        seen_outage = any(phase.name == CIRCUIT_OPEN for phase in self.phases)
        return RECOVERED if seen_outage else SUCCESS

    def _begin(self, name: str, outcomes: list[Outcome]) -> None:
        previous = self.current
        phase = Phase(len(self.phases) + 1, name, outcomes[0].sent)
        for outcome in outcomes:
            phase.add(outcome)
        self.phases.append(phase)
        why = f" ({outcomes[0].detail})" if name == CIRCUIT_OPEN else ""
        if previous is None:
            self.write(f"{self.stamp(phase.started)}  {name}{why}")
        else:
            self.write(
                f"{self.stamp(phase.started)}  {previous.name} → {name}{why}; "
                f"{previous.name} from {offset(previous.started)}: {previous.figures()}"
            )

    def close(self) -> None:
        """Answers still pending when the drill ends belong to the phase they fell in."""
        current = self.current
        if current is not None:
            for held in self._pending:
                current.add(held)
        self._pending.clear()

    def stamp(self, since_start: float) -> str:
        """`10:31:14.480 (+12.4 s)`: the wall-clock time (UTC) and the offset from the start."""
        moment = datetime.fromtimestamp(self.began_at + since_start, tz=UTC)
        return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d} ({offset(since_start)})"


def offset(seconds: float) -> str:
    return f"+{seconds:.1f} s"


@dataclass(frozen=True)
class Plan:
    """What to run: `requests` (None: until `duration`), `rate` per second (0: as fast as the
    `workers` allow), `duration` seconds (None: until `requests` are sent), against `url`."""

    url: str
    api_key: str
    requests: int | None = 200
    workers: int = 20
    rate: float = 4.0
    duration: float | None = None
    confirm: int = 3
    breaker_poll_s: float = BREAKER_POLL_S
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def describe(self) -> str:
        count = f"{self.requests} requests" if self.requests is not None else "requests"
        pace = f"at {self.rate:g}/s" if self.rate > 0 else "at full speed"
        limits = []
        if self.requests is not None and self.rate > 0:
            limits.append(f"about {self.requests / self.rate:.0f} s")
        if self.duration is not None:
            limits.append(f"at most {self.duration:g} s")
        span = f" ({', '.join(limits)})" if limits else ""
        return f"{count} {pace}{span}, at most {self.workers} in flight, to {self.url}/transaction"


class TransactionMaker:
    """Unique transaction ids per run (`chaos-<run id>-<n>`) and plausible bodies (seeded by run id)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.random = random.Random(run_id)  # noqa: S311 - test traffic, not secrets
        self.n = 0

    def __call__(self) -> dict[str, Any]:
        self.n += 1
        pick = self.random
        user = pick.randrange(USERS)
        country = pick.choices([c for c, _ in COUNTRIES], [w for _, w in COUNTRIES])[0]
        currency = pick.choices([c for c, _ in CURRENCIES], [w for _, w in CURRENCIES])[0]
        amount = round(min(max(pick.lognormvariate(3.7, 1.0), 0.5), 9_000.0), 2)
        return {
            "transaction_id": f"chaos-{self.run_id}-{self.n:06d}",
            "amount": amount,
            "currency": currency,
            "user_id": f"chaos-user-{user:04d}",
            "merchant": MERCHANTS[(user + self.n // 7) % len(MERCHANTS)],
            "country": country,
        }


async def send_one(session: aiohttp.ClientSession, url: str, body: dict[str, Any], began: float) -> Outcome:
    """POSTs one transaction and classifies the answer; CredentialsRefused on 401/403."""
    sent = time.perf_counter()
    try:
        async with session.post(f"{url}/transaction", json=body) as response:
            status = response.status
            text = await response.text()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return Outcome("error", type(exc).__name__, sent - began, (time.perf_counter() - sent) * 1000)
    latency_ms = (time.perf_counter() - sent) * 1000
    if status in (401, 403):
        raise CredentialsRefused(f"HTTP {status}: {text[:300]}")
    parsed: Any = None
    with contextlib.suppress(ValueError):
        parsed = json.loads(text)
    kind, detail = classify(status, parsed)
    return Outcome(kind, detail, sent - began, latency_ms)


async def breaker_state(session: aiohttp.ClientSession, url: str) -> tuple[str | None, str, bool]:
    """(state of the `fraud-brain` breaker or None, why none, whether asking again is pointless),
    read from `GET /circuit/status` (its `breakers` entry whose `name` or `upstream` is fraud-brain)."""
    try:
        async with session.get(f"{url}/circuit/status") as response:
            if response.status != 200:
                # 401/403: these credentials may not read it; asking again will not change that.
                return None, f"/circuit/status answered HTTP {response.status}", response.status in (401, 403, 404)
            data = await response.json(content_type=None)
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        return None, f"/circuit/status unreadable ({type(exc).__name__})", False
    for entry in data.get("breakers", []) if isinstance(data, dict) else []:
        if isinstance(entry, dict) and BREAKER_NAME in (entry.get("name"), entry.get("upstream")):
            return str(entry.get("state")), "", False
    return None, f"no {BREAKER_NAME!r} entry in /circuit/status", True


async def watch_breaker(
    session: aiohttp.ClientSession, url: str, tracker: PhaseTracker, began: float, every_s: float = BREAKER_POLL_S
) -> None:
    """Prints the breaker's state whenever it changes; says once why when it cannot be read, and
    stops when asking again is pointless (refused, or no such entry)."""
    last: str | None = None
    said = ""
    while True:
        state, why, final = await breaker_state(session, url)
        now = time.perf_counter() - began
        if state is not None and state != last:
            change = f"{last} → {state}" if last else state
            tracker.write(f"{tracker.stamp(now)}  breaker {BREAKER_NAME}: {change}")
            last = state
        elif state is None and why != said:
            tracker.write(f"{tracker.stamp(now)}  breaker state unknown: {why}")
            said = why
            if final:
                return
        await asyncio.sleep(every_s)


async def run_drill(plan: Plan, write: Write) -> PhaseTracker:
    """Runs the drill, printing the phases as they change and the summary at the end.

    Raises CredentialsRefused when the server refuses the key (after printing what was seen).
    """
    began_wall, began = time.time(), time.perf_counter()
    tracker = PhaseTracker(write, began_at=began_wall, confirm=plan.confirm)
    make = TransactionMaker(plan.run_id)
    write(f"chaos run {plan.run_id}: {plan.describe()}")
    write("stop and start the brain meanwhile; phases print as they change (times UTC); Ctrl-C ends early")
    headers = {"X-API-Key": plan.api_key}
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=plan.workers + 1)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as session:
        watcher = asyncio.create_task(watch_breaker(session, plan.url, tracker, began, plan.breaker_poll_s))
        try:
            await _send_all(plan, session, make, tracker, began)
        except asyncio.CancelledError:
            write("interrupted: the summary covers the answers received so far")
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            tracker.close()
            for line in summary(tracker, time.perf_counter() - began):
                write(line)
    return tracker


async def _send_all(
    plan: Plan, session: aiohttp.ClientSession, make: TransactionMaker, tracker: PhaseTracker, began: float
) -> None:
    """Open loop at `plan.rate` (a request leaves on schedule whatever the answers do, as long as
    fewer than `workers` are in flight), or closed loop at full speed when the rate is 0."""
    slots = asyncio.Semaphore(plan.workers)
    pending: set[asyncio.Task[None]] = set()
    refused: list[CredentialsRefused] = []
    deadline = began + plan.duration if plan.duration is not None else math.inf

    async def one(body: dict[str, Any]) -> None:
        try:
            tracker.record(await send_one(session, plan.url, body, began))
        except CredentialsRefused as exc:
            refused.append(exc)
        finally:
            slots.release()

    try:
        await _schedule(plan, make, one, slots, pending, refused, deadline, began)
    except asyncio.CancelledError:
        for task in pending:  # Ctrl-C: answers still in flight are not waited for
            task.cancel()
        raise
    if pending:
        await asyncio.wait(pending)
    if refused:
        raise refused[0]


async def _schedule(
    plan: Plan,
    make: TransactionMaker,
    one: Callable[[dict[str, Any]], Coroutine[Any, Any, None]],
    slots: asyncio.Semaphore,
    pending: set[asyncio.Task[None]],
    refused: list[CredentialsRefused],
    deadline: float,
    began: float,
) -> None:
    """Starts the requests on schedule until `plan.requests` or the deadline, or a refusal."""
    n = 0
    while (plan.requests is None or n < plan.requests) and not refused:
        if plan.rate > 0:
            delay = began + n / plan.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        if time.perf_counter() >= deadline:
            break
        await slots.acquire()
        if refused:  # refused while this one waited for a slot
            slots.release()
            break
        task = asyncio.create_task(one(make()))
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1


def summary(tracker: PhaseTracker, wall_s: float) -> list[str]:
    """The closing table: each phase and the total, errors and fail-open answers by kind."""
    phases = tracker.phases
    every = [latency for phase in phases for latency in phase.latencies_ms]
    errors = sum(tracker.errors.values())
    lines = [
        "",
        f"summary: {len(every) + errors} requests in {wall_s:.1f} s",
        f"  {'phase':<16}{'started':>10}{'answers':>9}{'errors':>8}{'p50 ms':>9}{'p99 ms':>9}",
    ]
    for phase in phases:
        lines.append(
            f"  {f'{phase.number}. {phase.name}':<16}{offset(phase.started):>10}{phase.answers:>9}{phase.errors:>8}"
            f"{fmt_ms(percentile(phase.latencies_ms, 0.5)):>9}{fmt_ms(percentile(phase.latencies_ms, 0.99)):>9}"
        )
    lines.append(
        f"  {'total':<16}{'':>10}{len(every):>9}{errors:>8}"
        f"{fmt_ms(percentile(every, 0.5)):>9}{fmt_ms(percentile(every, 0.99)):>9}"
    )
    scored = sum(p.answers - sum(p.reasons.values()) for p in phases)
    lines.append(f"  scored {scored}, fail-open {sum(tracker.fail_open.values())}, errors {errors}")
    if tracker.fail_open:
        lines.append("  fail-open by reason: " + ", ".join(f"{k} {v}" for k, v in tracker.fail_open.most_common()))
    if tracker.errors:
        lines.append("  errors by kind: " + ", ".join(f"{k} {v}" for k, v in tracker.errors.most_common()))
    return lines
