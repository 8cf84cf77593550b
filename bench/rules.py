"""Rules engine throughput: the compiled DSL against the naive interpreter, windows, and ingest (SPEC 4).

Run from the repository root, on an otherwise idle machine (about 3 minutes)::

    .venv/bin/python bench/rules.py [--seconds 2] [--ingest-seconds 10] [--connections 4] [--quick]

What it does, in order:

0. Waits until no other benchmark runs (no ``wrk`` process and no ``bench.gateway``, polled every
   5 s for up to ``--wait-minutes``, 20): both would compete for the same cores. It checks again
   before each part.
1. Evaluation, in this process (``rules.dsl``, no Django): rules generated over 100 event types
   (mostly ``event.type == "type_k" and ...`` with comparisons, ``in``, ``contains``, ``matches``,
   ``startswith`` and arithmetic; about 1 % without a type conjunct) and random events over the same
   types. For 10, 100 and 1,000 rules: the compiled engine through its ``RuleIndex``
   (``index.evaluate``: candidates, evaluation, rendered messages), the compiled engine testing every
   rule, and ``NaiveRule`` walking the Lark tree per event. The compiled rules and the interpreter
   are first checked to agree. Each figure: a warm-up, then the median of 3 repeats of at least
   ``--seconds`` each (``time.perf_counter``).
2. One windowed rule, ``count(1m by event.ip) >= 5``, with ``MemoryWindowStore`` and with
   ``RedisWindowStore`` (keys under a unique prefix, deleted afterwards), next to the same rule
   without its window. The events' clock is simulated (200 events/s over 100 ips), and a whole
   window's worth of events is recorded first, so each key holds its steady-state 120 entries.
3. Ingest: ``manage.py serve`` (1 process, production mode: PostgreSQL ``sentinel_bench_rules``,
   created when missing and migrated, and Redis under a unique ``CACHE_KEY_PREFIX``); a new user,
   tenant and ``events:write`` API key; then batches of 100 events posted to ``POST /events`` from
   ``--connections`` keep-alive connections, a warm-up and ``--ingest-seconds`` measured. Stored
   events are counted in ``rules_event`` for the tenant. No Celery worker runs: the evaluation tasks
   stay queued in Redis and are deleted with every other key under the prefix at the end.
4. Prints the tables and writes them between ``<!-- bench:rules:start -->`` and
   ``<!-- bench:rules:end -->`` in ``docs/benchmarks.md`` (appended when absent; other sections
   stay as they are). ``--quick`` is a smoke test: short runs, nothing written.

Every process it starts is stopped (SIGTERM, then SIGKILL to its process group). The database is
kept (the bench tenant's events stay in it); nothing else is dropped.

CPU columns are from /proc, in µs of CPU per event or in cores (CPU seconds / wall seconds):
``web`` is the server's process tree, ``pg`` every PostgreSQL process (backends that exited are
counted through the postmaster's reaped-children time), ``redis`` the Redis server, ``bench`` this
script (the load generator in part 3), ``other`` everything else busy on the box. A measurement
during which ``other`` exceeds 0.25 core is taken again once the machine is quiet (twice at most).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import http.client
import itertools
import json
import os
import platform
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # `rules.dsl` when run as `python bench/rules.py`

from rules.dsl import REGEX_ENGINE, EvalContext, MemoryWindowStore, RedisWindowStore, RuleIndex  # noqa: E402
from rules.dsl import compile_rule as compile_dsl  # noqa: E402
from rules.tests.dsl_oracle import NaiveRule  # noqa: E402
from tests.support.net import free_port  # noqa: E402

DOCS_PATH = REPO / "docs" / "benchmarks.md"
MARK_START = "<!-- bench:rules:start -->"
MARK_END = "<!-- bench:rules:end -->"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/sentinel_bench_rules"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CLK_TCK = os.sysconf("SC_CLK_TCK")

RULE_COUNTS = (10, 100, 1000)
EVENT_TYPES = tuple(f"type_{k}" for k in range(100))
AGNOSTIC_SHARE = 100  # one rule in this many has no event.type conjunct (at least one per rule set)
REPEATS = 3
BATCH = 100  # events per POST /events
# The goal: one event against 1,000 indexed rules "in well under a millisecond".
GOAL_US = 1000.0
# A measurement during which processes this script did not start (nor PostgreSQL and Redis) used
# more than this many cores is taken again when the machine is quiet.
OTHER_LIMIT = 0.25
# Window part: a simulated clock at this many events/s over this many ips (60 s window: 120 each).
WINDOW_RATE = 200
WINDOW_IPS = 100
WINDOW_RULE = 'when event.type == "login_failed" and count(1m by event.ip) >= 5 then notify("webhook:x", "{ip}")'
PLAIN_RULE = 'when event.type == "login_failed" then notify("webhook:x", "{ip}")'

# Run once in `manage.py shell -c`: a user with a tenant of their own and an events:write key.
SETUP_CODE = """
import json, os
from accounts.services import api_key_create, user_signup
name = os.environ["BENCH_USER"]
user = user_signup(username=name, email=f"{name}@example.com", password=os.environ["BENCH_PASSWORD"],
                   tenant_name=name)
tenant = user.membership.tenant
_, secret = api_key_create(tenant=tenant, name="bench", scopes=["events:write"])
print(json.dumps({"tenant_id": tenant.pk, "api_key": secret}))
"""


class BenchError(Exception):
    """A step failed; the message says which and why."""


@dataclass(frozen=True)
class Plan:
    seconds: float
    ingest_seconds: float
    ingest_warmup: float
    connections: int
    check_events: int
    wait_minutes: float
    quick: bool
    database_url: str
    redis_url: str
    docs: Path

    def command(self) -> str:
        return (
            f".venv/bin/python bench/rules.py --seconds {self.seconds:g} --ingest-seconds {self.ingest_seconds:g} "
            f"--connections {self.connections}" + (" --quick" if self.quick else "")
        )


def parse_args(argv: Sequence[str]) -> Plan:
    parser = argparse.ArgumentParser(prog="bench/rules.py", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each evaluation repeat (2)")
    parser.add_argument("--ingest-seconds", type=float, default=10.0, help="measured ingest run (10)")
    parser.add_argument("--connections", type=int, default=4, help="concurrent ingest connections (4)")
    parser.add_argument("--wait-minutes", type=float, default=20.0, help="longest wait for a quiet machine (20)")
    parser.add_argument("--quick", action="store_true", help="smoke test: short runs, docs/benchmarks.md untouched")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="bench database (created if missing)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--docs", type=Path, default=DOCS_PATH, help="markdown file to update")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.ingest_seconds <= 0 or args.connections < 1:
        parser.error("--seconds and --ingest-seconds must be > 0, --connections >= 1")
    quick = bool(args.quick)
    return Plan(
        seconds=0.25 if quick else args.seconds,
        ingest_seconds=2.0 if quick else args.ingest_seconds,
        ingest_warmup=1.0 if quick else 3.0,
        connections=args.connections,
        check_events=50 if quick else 300,
        wait_minutes=args.wait_minutes,
        quick=quick,
        database_url=args.database_url,
        redis_url=args.redis_url,
        docs=args.docs,
    )


# --- A quiet machine ----------------------------------------------------------------------------


def _busy_benchmarks() -> list[str]:
    """Other benchmarks running now: wrk, or the gateway benchmark between its wrk runs."""
    found = []
    checks = {"wrk": ["pgrep", "-x", "wrk"], "bench.gateway": ["pgrep", "-f", r"python.* -m bench\.gateway"]}
    for name, args in checks.items():
        result = subprocess.run(args, capture_output=True, text=True)
        if result.stdout.strip():
            found.append(f"{name} (pid {', '.join(result.stdout.split())})")
    return found


def wait_for_quiet(plan: Plan) -> float:
    """Polls until no other benchmark runs; the seconds waited. Fails after `plan.wait_minutes`."""
    started = time.monotonic()
    deadline = started + plan.wait_minutes * 60
    announced = False
    while busy := _busy_benchmarks():
        if time.monotonic() > deadline:
            raise BenchError(f"the machine stayed busy for {plan.wait_minutes:g} minutes: {', '.join(busy)}")
        if not announced:
            print(f"waiting for another benchmark to finish: {', '.join(busy)} ...", flush=True)
            announced = True
        time.sleep(5)
    waited = time.monotonic() - started
    if announced:
        print(f"quiet after {waited:.0f} s", flush=True)
    return waited


# --- CPU accounting (/proc) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    ppid: int
    comm: str
    ticks: int  # utime + stime + cutime + cstime: its own CPU and that of the children it reaped


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    busy: int  # every non-idle tick of all CPUs
    interrupts: int  # the irq and softirq part of it, which no process is charged for
    procs: dict[int, Proc]


def cpu_snapshot() -> CpuSnapshot:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values
    procs = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        procs[int(entry.name)] = Proc(int(fields[1]), comm, sum(int(v) for v in fields[11:15]))
    return CpuSnapshot(time.monotonic(), user + nice + system + irq + softirq + steal, irq + softirq, procs)


def process_tree(root: int, *snapshots: CpuSnapshot) -> set[int]:
    children: dict[int, set[int]] = {}
    for snapshot in snapshots:
        for pid, proc in snapshot.procs.items():
            children.setdefault(proc.ppid, set()).add(pid)
    found, stack = set(), [root]
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


def cpu_seconds(before: CpuSnapshot, after: CpuSnapshot, roots: dict[str, int] | None = None) -> dict[str, float]:
    """CPU seconds between two snapshots: `bench` (this process), each tree of `roots`, `pg`,
    `redis`, `other` (the rest of the box, interrupts excluded) and `wall`."""

    def used(pids: set[int]) -> float:
        # A process born in between counts from zero; one that exited is in its parent's cutime.
        ticks = sum(max(0, after.procs[p].ticks - (before.procs[p].ticks if p in before.procs else 0)) for p in pids)
        return ticks / CLK_TCK

    def named(comm: str) -> set[int]:
        return {pid for pid, proc in after.procs.items() if proc.comm == comm}

    groups = {"bench": {os.getpid()}} | {name: process_tree(pid, before, after) for name, pid in (roots or {}).items()}
    groups |= {"pg": named("postgres"), "redis": named("redis-server")}
    result = {name: used({p for p in pids if p in after.procs}) for name, pids in groups.items()}
    box = (after.busy - before.busy - (after.interrupts - before.interrupts)) / CLK_TCK
    result["other"] = max(0.0, box - sum(result.values()))
    result["wall"] = after.at - before.at
    return result


# --- 1. Evaluation ------------------------------------------------------------------------------

CURRENCIES = ["EUR", "USD", "GBP", "JPY", "CHF"]
COUNTRIES = ["FR", "DE", "US", "GB", "ES", "IT", "JP", "BR"]
PLANS = ["free", "free", "free", "pro", "pro", "enterprise"]
PATHS = ["/api/orders", "/api/users", "/api/payments", "/login", "/logout", "/health", "/admin/users", "/app.js"]
STATUSES = [200] * 12 + [201, 201, 204, 301, 400, 401, 403, 404, 404, 429, 500, 502, 503]
DOMAINS = ["example.com", "example.org", "mail.test", "corp.example.net"]
NAMES = ["ann", "bob", "chloe", "dmitri", "eve", "farid", "gus", "hana"]
TAGS = ["vip", "new", "b2b", "trial", "beta", "churn-risk", "partner"]

# One conjunct of a generated rule, given a random source; each holds for a minority of events.
CONDITIONS: tuple[Callable[[random.Random], str], ...] = (
    lambda r: f"event.amount > {r.choice([250, 500, 1000, 2500])}",
    lambda r: f"event.amount * event.quantity >= {r.choice([1000, 2500, 5000])}",
    lambda r: f"event.price * event.quantity - event.amount > {r.choice([500, 1000, 2000])}",
    lambda r: f"event.currency in {json.dumps(r.sample(CURRENCIES, 2))}",
    lambda r: f"event.user.country not in {json.dumps(r.sample(COUNTRIES, 5))}",
    lambda r: f'event.user.plan == "{r.choice(["pro", "enterprise"])}"',
    lambda r: f'event.tags contains "{r.choice(TAGS)}"',
    lambda r: f'event.email matches "^[a-z]+[0-9]+@{r.choice(DOMAINS).replace(".", chr(92) * 2 + ".")}$"',
    lambda r: f"event.status >= {r.choice([400, 500])}",
    lambda r: f'event.path startswith "{r.choice(["/api/pay", "/admin/", "/login"])}"',
    lambda r: f"event.latency_ms > {r.choice([250, 500, 1000])}",
    lambda r: "(event.status == 401 or event.status == 403)",
)
ACTION = 'notify("webhook:x", "{type}: {amount} {currency} from {user.country} ({user.plan})")'


def make_rules(count: int, rng: random.Random) -> list[str]:
    """`count` window-free rules: typed ones spread evenly over the event types, and one in
    AGNOSTIC_SHARE (at least one, evenly placed) without a type conjunct and with three conditions
    instead, so that it stays selective."""
    agnostic = max(1, count // AGNOSTIC_SHARE)
    untyped = {int((i + 0.5) * count / agnostic) for i in range(agnostic)}
    typed = (f'event.type == "{t}"' for t in itertools.cycle(EVENT_TYPES))
    rules = []
    for k in range(count):
        if k in untyped:
            conditions = [c(rng) for c in rng.sample(CONDITIONS, 3)]
        else:
            conditions = [next(typed)] + [c(rng) for c in rng.sample(CONDITIONS, rng.choice([1, 2, 2, 3]))]
        rules.append(f"when {' and '.join(conditions)} then {ACTION}")
    return rules


def make_event(rng: random.Random) -> dict[str, Any]:
    number = str(rng.randint(1, 99)) if rng.random() < 0.4 else ""
    return {
        "type": rng.choice(EVENT_TYPES),
        "amount": round(rng.lognormvariate(5.0, 1.2), 2),  # median about 150, a long tail
        "currency": rng.choice(CURRENCIES),
        "quantity": rng.randint(1, 10),
        "price": round(rng.uniform(1, 300), 2),
        "status": rng.choice(STATUSES),
        "path": rng.choice(PATHS),
        "latency_ms": round(rng.expovariate(1 / 150), 1),
        "ip": f"10.{rng.randint(0, 3)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        "email": f"{rng.choice(NAMES)}{number}@{rng.choice(DOMAINS)}",
        "user": {"id": rng.randint(1, 50_000), "country": rng.choice(COUNTRIES), "plan": rng.choice(PLANS)},
        "tags": rng.sample(TAGS, rng.randint(0, 3)),
    }


@dataclass(frozen=True)
class Timing:
    us: float  # median µs per event
    repeats: tuple[float, ...]
    other_cores: float  # the most that other processes used during a kept repeat
    cpu: dict[str, float] = field(default_factory=dict)  # µs of CPU per event by group (median repeat)

    @property
    def rate(self) -> float:
        return 1e6 / self.us

    @property
    def spread(self) -> float:
        return (max(self.repeats) - min(self.repeats)) / self.us


def time_per_event(fn: Callable[[dict[str, Any]], object], events: list[dict[str, Any]], seconds: float) -> Timing:
    """Warm-up (a quarter of `seconds`, at least 20 events), then REPEATS repeats of at least
    `seconds` each, cycling through `events`; the clock is read every ~20 ms of work. A repeat during
    which other processes used more than OTHER_LIMIT core is taken again (twice at most)."""
    position = 0

    def run(count: int) -> None:
        nonlocal position
        while count > 0:
            chunk = events[position : position + count]
            for event in chunk:
                fn(event)
            count -= len(chunk)
            position = (position + len(chunk)) % len(events)

    done, started = 0, time.perf_counter()
    while done < 20 or time.perf_counter() - started < seconds / 4:
        run(10)
        done += 10
    batch = max(1, int(0.02 / ((time.perf_counter() - started) / done)))

    results: list[tuple[float, float, dict[str, float]]] = []
    for _ in range(REPEATS):
        for attempt in range(3):
            gc.collect()
            before = cpu_snapshot()
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                run(batch)
                done += batch
            elapsed = time.perf_counter() - started
            used = cpu_seconds(before, cpu_snapshot())
            other = used["other"] / used["wall"]
            if other <= OTHER_LIMIT or attempt == 2:
                break
            print(f"   disturbed ({other:.2f} core elsewhere); again", flush=True)
            time.sleep(2)
        per_event = {name: value / done * 1e6 for name, value in used.items() if name in ("bench", "redis")}
        results.append((elapsed / done * 1e6, other, per_event))
    ordered = sorted(results, key=lambda r: r[0])
    median = ordered[len(ordered) // 2]
    return Timing(median[0], tuple(r[0] for r in results), max(r[1] for r in results), median[2])


@dataclass(frozen=True)
class EvalRow:
    rules: int
    agnostic: int
    candidates: float  # rules the index hands out per event
    matches: float  # matching rules per event
    indexed: Timing
    every: Timing
    naive: Timing

    def timings(self) -> dict[str, Timing]:
        return {"compiled + index": self.indexed, "compiled, every rule": self.every, "naive": self.naive}


def measure_evaluation(plan: Plan) -> list[EvalRow]:
    rng = random.Random(20241123)
    events = [make_event(rng) for _ in range(5000)]
    ctx = EvalContext()
    rows = []
    for count in RULE_COUNTS:
        texts = make_rules(count, rng)
        compiled = [(number, compile_dsl(text)) for number, text in enumerate(texts)]
        index = RuleIndex(compiled)
        naive = [NaiveRule(text) for text in texts]

        def every_rule(event: dict[str, Any], compiled: Any = compiled) -> list[Any]:
            # RuleIndex.evaluate's loop over every rule instead of the event type's candidates.
            matches = []
            for rule_id, rule in compiled:
                match = rule.evaluate(event, ctx)
                if match is not None:
                    matches.append((rule_id, match))
            return matches

        def interpreted(event: dict[str, Any], naive: Any = naive) -> list[int]:
            return [number for number, rule in enumerate(naive) if rule.matches(event)]

        # The three must agree before their speeds mean anything.
        for event in events[: plan.check_events]:
            expected = interpreted(event)
            if [n for n, _ in index.evaluate(event, ctx)] != expected or [n for n, _ in every_rule(event)] != expected:
                raise BenchError(f"{count} rules: the compiled engine and the interpreter disagree on {event}")
        row = EvalRow(
            rules=count,
            agnostic=sum(rule.event_types is None for _, rule in compiled),
            candidates=statistics.fmean(len(index.candidates(event)) for event in events),
            matches=statistics.fmean(len(index.evaluate(event, ctx)) for event in events),
            indexed=time_per_event(lambda event, index=index: index.evaluate(event, ctx), events, plan.seconds),
            every=time_per_event(every_rule, events, plan.seconds),
            naive=time_per_event(interpreted, events, plan.seconds),
        )
        rows.append(row)
        print(
            f"{count:>5} rules ({row.candidates:.1f} candidates, {row.matches:.2f} matches per event): "
            f"indexed {row.indexed.us:.2f} µs/event, every rule {row.every.us:.1f}, naive {row.naive.us:.1f} "
            f"({row.naive.us / row.indexed.us:,.0f}x); repeats "
            + ", ".join(f"{name} {'/'.join(_us(us) for us in t.repeats)}" for name, t in row.timings().items()),
            flush=True,
        )
    return rows


# --- 2. Windows ---------------------------------------------------------------------------------


def redis_client(redis_url: str) -> Any:
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BenchError(f"Redis at {redis_url}: {exc}") from exc
    return client


def delete_keys(client: Any, pattern: str) -> int:
    deleted, batch = 0, []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    return int(deleted)


def window_evaluator(rule: Any, store: Any) -> Callable[[dict[str, Any]], object]:
    """Evaluates `rule` on an event with a fresh context: the next event id, the simulated clock."""
    sequence = itertools.count()
    now0 = time.time()

    def evaluate(event: dict[str, Any]) -> object:
        n = next(sequence)
        ctx = EvalContext(store=store, tenant="bench", rule="1", event_id=str(n), now=now0 + n / WINDOW_RATE)
        return rule.evaluate(event, ctx)

    return evaluate


def measure_windows(plan: Plan) -> dict[str, Timing]:
    windowed, plain = compile_dsl(WINDOW_RULE), compile_dsl(PLAIN_RULE)
    rng = random.Random(5)
    ips = [f"192.0.2.{n}" for n in range(WINDOW_IPS)]
    events = [{"type": "login_failed", "ip": rng.choice(ips), "user": f"u{rng.randint(1, 999)}"} for _ in range(4096)]
    client = redis_client(plan.redis_url)
    prefix = f"bench-rules-{secrets.token_hex(4)}:win:"
    stores = {"memory": MemoryWindowStore(), "redis": RedisWindowStore(client, prefix=prefix)}
    results = {}
    try:
        for name, rule, store in (
            ("no window (same rule without `count`)", plain, None),
            ("MemoryWindowStore", windowed, stores["memory"]),
            ("RedisWindowStore", windowed, stores["redis"]),
        ):
            evaluate = window_evaluator(rule, store)
            # A window's worth of events first: each ip's key at its steady size.
            for n in range(60 * WINDOW_RATE if store is not None else 1000):
                evaluate(events[n % len(events)])
            results[name] = time_per_event(evaluate, events, plan.seconds)
            print(f"window rule, {name}: {results[name].us:.1f} µs/event", flush=True)
    finally:
        delete_keys(client, f"{prefix}*")
        client.close()
    return results


# --- 3. Ingest through a real web process -------------------------------------------------------


@dataclass
class Service:
    """A process this script started, in a session of its own; its output goes to `log`."""

    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 25) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def service(args: list[str], env: dict[str, str], log: Path) -> Iterator[Service]:
    """Starts `args`; on exit SIGTERM, then SIGKILL to its process group after 15 s."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield Service(process, log)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # a worker that outlived its parent


def manage(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise BenchError(f"manage.py {args[0]} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return result.stdout


def ensure_database(database_url: str) -> bool:
    """Creates the bench database when missing (`createdb`); True when it did."""
    import psycopg

    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    try:
        with psycopg.connect(admin, connect_timeout=5) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                return False
    except psycopg.Error as exc:
        raise BenchError(f"PostgreSQL at {admin}: {exc}") from exc
    args = ["createdb", "-h", parts.hostname or "127.0.0.1", "-p", str(parts.port or 5432)]
    args += ["-U", parts.username or "postgres", name]
    result = subprocess.run(args, capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"{' '.join(args)}: {result.stderr.strip()}")
    return True


def count_events(database_url: str, tenant_id: int) -> int:
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM rules_event WHERE tenant_id = %s", (tenant_id,)).fetchone()
    return int(row[0]) if row else 0


def server_env(plan: Plan, prefix: str, metrics_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DJANGO_DEBUG", "DB_CONN_MAX_AGE", "ENABLE_TRACING", "WEB_CONCURRENCY"):
        env.pop(name, None)  # settings of the caller's shell that would change what is measured
    env.update(
        {
            "DATABASE_URL": plan.database_url,
            "REDIS_URL": plan.redis_url,
            "CACHE_KEY_PREFIX": prefix,
            "SECRET_KEY": secrets.token_urlsafe(48),
            "LOG_LEVEL": "warning",
            "WEB_CONCURRENCY": "1",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "DJANGO_SETTINGS_MODULE": "sentinel_site.settings",
        }
    )
    return env


@dataclass
class Client:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Load:
    wall: float
    requests: int
    accepted: int  # 202 answers
    latencies: list[float]
    problems: list[str]


def post_batches(port: int, api_key: str, bodies: list[bytes], connections: int, duration: float) -> Load:
    """`connections` threads, each with one keep-alive connection, posting its next batch as soon as
    the previous one is answered, for `duration` seconds (requests in flight then are finished)."""
    headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
    clients = [Client() for _ in range(connections)]
    go = threading.Event()
    deadline = 0.0

    def run(number: int, client: Client) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        go.wait()
        sent = number
        try:
            while time.monotonic() < deadline:
                body = bodies[sent % len(bodies)]
                sent += connections
                started = time.perf_counter()
                try:
                    conn.request("POST", "/events", body=body, headers=headers)
                    response = conn.getresponse()
                    text = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    client.errors.append(repr(exc))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    continue
                client.latencies.append(time.perf_counter() - started)
                client.statuses[response.status] += 1
                if response.status != 202 and len(client.errors) < 3:
                    client.errors.append(f"{response.status}: {text[:200]!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=run, args=(n, c), daemon=True) for n, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    deadline = started + duration
    go.set()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    statuses = sum((c.statuses for c in clients), Counter())
    problems = [error for c in clients for error in c.errors]
    if set(statuses) - {202}:
        problems.insert(0, f"answers other than 202: {dict(statuses)}")
    return Load(wall, sum(statuses.values()), statuses[202], sorted(x for c in clients for x in c.latencies), problems)


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass(frozen=True)
class IngestResult:
    load: Load
    stored: int  # rows in rules_event for the tenant, added during the measured run
    cpu: dict[str, float]  # CPU seconds by group
    other_cores: float
    queued_tasks: int  # evaluation tasks left in the Celery queue (no worker)
    database_created: bool

    @property
    def events_per_s(self) -> float:
        return self.stored / self.load.wall

    def us_per_event(self, group: str) -> float:
        return self.cpu[group] / max(1, self.stored) * 1e6

    def cores(self, group: str) -> float:
        return self.cpu[group] / self.load.wall


def ingest_batches(count: int) -> list[bytes]:
    rng = random.Random(11)
    return [json.dumps([make_event(rng) for _ in range(BATCH)]).encode() for _ in range(count)]


def measure_ingest(plan: Plan) -> IngestResult:
    created = ensure_database(plan.database_url)
    client = redis_client(plan.redis_url)
    prefix = f"bench-rules-{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="sentinel-bench-rules-") as tmp_name:
        tmp = Path(tmp_name)
        env = server_env(plan, prefix, tmp / "prometheus")
        try:
            manage(["migrate", "--noinput"], env)
            setup_env = {**env, "BENCH_USER": prefix, "BENCH_PASSWORD": secrets.token_urlsafe(16)}
            setup = json.loads(manage(["shell", "-c", SETUP_CODE], setup_env).strip().splitlines()[-1])
            port = free_port()
            with service([sys.executable, "manage.py", "serve", "--port", str(port)], env, tmp / "serve.log") as web:
                bodies = ingest_batches(32)
                wait_until_accepting(web, port, setup["api_key"], bodies[0])
                post_batches(port, setup["api_key"], bodies, plan.connections, plan.ingest_warmup)
                for attempt in range(3):  # again when other processes took the cores meanwhile
                    stored_before = count_events(plan.database_url, setup["tenant_id"])
                    before = cpu_snapshot()
                    load = post_batches(port, setup["api_key"], bodies, plan.connections, plan.ingest_seconds)
                    cpu = cpu_seconds(before, cpu_snapshot(), {"web": web.pid})
                    stored = count_events(plan.database_url, setup["tenant_id"]) - stored_before
                    if web.process.poll() is not None:
                        raise BenchError(f"the web process exited during the run:\n{web.tail()}")
                    if cpu["other"] / cpu["wall"] <= OTHER_LIMIT or attempt == 2:
                        break
                    print(f"   disturbed ({cpu['other'] / cpu['wall']:.2f} core elsewhere); again", flush=True)
                    wait_for_quiet(plan)
                    time.sleep(2)
        finally:
            queued = _queued_tasks(client, prefix)
            delete_keys(client, f"{prefix}:*")
            delete_keys(client, prefix)
            left = [k.decode() for k in client.scan_iter(match=f"*{prefix}*", count=1000)]
            client.close()
            if left:
                print(f"warning: Redis keys left under {prefix}: {left[:5]}", file=sys.stderr)
    return IngestResult(load, stored, cpu, cpu["other"] / cpu["wall"], queued, created)


def _queued_tasks(client: Any, prefix: str) -> int:
    """Tasks waiting in Celery's default queue (a list under the broker's global_keyprefix)."""
    with contextlib.suppress(Exception):
        return int(client.llen(f"{prefix}:celery:celery"))
    return -1


def wait_until_accepting(web: Service, port: int, api_key: str, body: bytes, timeout: float = 60.0) -> None:
    """Until one batch is accepted (202); fails with the server's log if it dies or refuses."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if web.process.poll() is not None:
            raise BenchError(f"manage.py serve exited ({web.process.returncode}):\n{web.tail()}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request(
                "POST", "/events", body=body, headers={"X-API-Key": api_key, "Content-Type": "application/json"}
            )
            response = conn.getresponse()
            text = response.read()
            if response.status == 202:
                return
            last = f"{response.status}: {text[:300]!r}"
        except (OSError, http.client.HTTPException) as exc:
            last = repr(exc)
        finally:
            conn.close()
        time.sleep(0.2)
    raise BenchError(f"POST /events was not accepted within {timeout:.0f} s ({last})\n{web.tail()}")


# --- Report -------------------------------------------------------------------------------------


def _git(*args: str) -> str:
    result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "?"


def code_version() -> str:
    """The short commit, and the files outside bench/ and docs/ that differ from it."""
    commit = _git("rev-parse", "--short", "HEAD")
    changed = _git("diff", "--name-only", "HEAD").splitlines()
    changed += _git("ls-files", "--others", "--exclude-standard").splitlines()
    changed = sorted(p for p in set(changed) if p and not p.startswith(("bench/", "docs/")))
    return commit + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")


def machine(plan: Plan) -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    servers = []
    with contextlib.suppress(Exception):
        client = redis_client(plan.redis_url)
        servers.append(f"Redis {client.info('server')['redis_version']}")
        client.close()
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(plan.database_url, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            servers.append(f"PostgreSQL {str(row[0]).split()[0]}" if row else "PostgreSQL")
    return (
        f"{os.cpu_count()} vCPU ({model}), Linux {platform.release()}, Python {platform.python_version()}, "
        f"regex engine {REGEX_ENGINE}" + (f"; {', '.join(servers)} on the same machine" if servers else "")
    )


def _us(value: float) -> str:
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def evaluation_table(rows: list[EvalRow]) -> list[str]:
    lines = [
        "| rules | type-agnostic | candidates/event | matches/event | compiled + index µs/event | events/s "
        "| compiled, every rule µs/event | naive interpreter µs/event | events/s | speed-up (naive ÷ indexed) "
        "| other cores |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        other = max(row.indexed.other_cores, row.every.other_cores, row.naive.other_cores)
        lines.append(
            f"| {row.rules:,} | {row.agnostic} | {row.candidates:.1f} | {row.matches:.2f} | **{_us(row.indexed.us)}** "
            f"| {row.indexed.rate:,.0f} | {_us(row.every.us)} | {_us(row.naive.us)} | {row.naive.rate:,.0f} "
            f"| {row.naive.us / row.indexed.us:,.0f}x | {other:.2f} |"
        )
    return lines


def window_table(windows: dict[str, Timing]) -> list[str]:
    lines = [
        "| store | µs/event | events/s | bench CPU µs/event | Redis CPU µs/event | other cores |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, timing in windows.items():
        redis_us = _us(timing.cpu.get("redis", 0)) if "Redis" in name else "n/a"
        lines.append(
            f"| {name} | **{_us(timing.us)}** | {timing.rate:,.0f} | {_us(timing.cpu.get('bench', 0))} | {redis_us} "
            f"| {timing.other_cores:.2f} |"
        )
    return lines


def ingest_table(result: IngestResult, plan: Plan) -> list[str]:
    load = result.load
    return [
        "| events/s stored | batches/s | p50 ms | p99 ms | events posted (202) | events stored "
        "| web CPU µs/event | PostgreSQL CPU µs/event | Redis CPU µs/event | client CPU µs/event | other cores |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| **{result.events_per_s:,.0f}** | {load.requests / load.wall:,.1f} "
        f"| {percentile(load.latencies, 0.5) * 1000:.1f} | {percentile(load.latencies, 0.99) * 1000:.1f} "
        f"| {load.accepted * BATCH:,} | {result.stored:,} | {result.us_per_event('web'):.0f} "
        f"| {result.us_per_event('pg'):.0f} | {result.us_per_event('redis'):.0f} "
        f"| {result.us_per_event('bench'):.0f} | {result.other_cores:.2f} |",
        "",
        f"In cores over the {load.wall:.1f} s: web {result.cores('web'):.2f}, PostgreSQL {result.cores('pg'):.2f}, "
        f"Redis {result.cores('redis'):.2f}, client {result.cores('bench'):.2f}, other {result.other_cores:.2f} "
        f"(of {os.cpu_count()}). Evaluation tasks left queued in Redis at the end (no worker): "
        f"{result.queued_tasks:,}.",
    ]


def reading(rows: list[EvalRow], windows: dict[str, Timing], ingest: IngestResult) -> list[str]:
    largest = rows[-1]
    verdict = "well under" if largest.indexed.us < GOAL_US / 4 else "under" if largest.indexed.us < GOAL_US else "over"
    redis, memory = windows["RedisWindowStore"], windows["MemoryWindowStore"]
    plain = windows["no window (same rule without `count`)"]
    biggest = max(("web", "pg", "redis", "bench"), key=ingest.us_per_event)
    label = {"web": "the web process", "pg": "PostgreSQL", "redis": "Redis", "bench": "the client"}[biggest]
    return [
        f"Reached: one event against {largest.rules:,} indexed rules in {_us(largest.indexed.us)} µs "
        f"({largest.indexed.rate:,.0f} events/s on one core), {verdict} the issue's millisecond, and "
        f"{largest.naive.us / largest.indexed.us:,.0f} times faster than walking the Lark tree per event "
        f"({_us(largest.naive.us)} µs). The index does most of it: an event meets {largest.candidates:.1f} "
        f"candidates instead of {largest.rules:,} rules (testing every compiled rule costs {_us(largest.every.us)} µs, "
        f"{largest.every.us / largest.rules * 1000:.0f} ns per rule against "
        f"{largest.naive.us / largest.rules * 1000:,.0f} ns interpreted), so the cost per event grows with the "
        f"rules per event type and the type-agnostic rules, not with the rule count. "
        f"A window adds {_us(memory.us - plain.us)} µs per event in memory and {_us(redis.us - plain.us)} µs with "
        f"Redis, where the EVALSHA round trip (client {_us(redis.cpu.get('bench', 0))} µs and Redis server "
        f"{_us(redis.cpu.get('redis', 0))} µs of CPU per event) costs far more than evaluating the rule itself. "
        f"Ingest stored {ingest.events_per_s:,.0f} events/s through one web process in batches of {BATCH}; "
        f"the most CPU per event goes to {label} ({ingest.us_per_event(biggest):.0f} µs of "
        f"{sum(ingest.us_per_event(g) for g in ('web', 'pg', 'redis', 'bench')):.0f} µs in all)."
    ]


def render(plan: Plan, rows: list[EvalRow], windows: dict[str, Timing], ingest: IngestResult) -> str:
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    timings = {f"{name}, {row.rules:,} rules": t for row in rows for name, t in row.timings().items()}
    timings |= {f"window rule, {name}": t for name, t in windows.items()}
    widest = max(timings, key=lambda name: timings[name].spread)
    return "\n".join(
        [
            MARK_START,
            "## Rules engine (`bench/rules.py`)",
            "",
            f"Recorded {date} at commit {code_version()}.",
            f"Machine: {machine(plan)}. Everything shares these cores; `other cores` is what processes this "
            f"script did not start (nor PostgreSQL and Redis) used meanwhile (a repeat with more than "
            f"{OTHER_LIMIT:g} is taken again).",
            "",
            "### Commands",
            "",
            f"- whole run: `{plan.command()}`",
            f"- evaluation and windows: in the script's process, one event at a time; a warm-up, then the median of "
            f"{REPEATS} repeats of at least {plan.seconds:g} s each (`time.perf_counter`, the clock read about every "
            f"20 ms); the widest spread between the repeats of one figure (max - min over the median) was "
            f"{100 * timings[widest].spread:.0f} %, for {widest}: compare runs with that margin in mind",
            "- web: `WEB_CONCURRENCY=1 LOG_LEVEL=warning CACHE_KEY_PREFIX=bench-rules-<random> "
            f"DATABASE_URL={plan.database_url} REDIS_URL={plan.redis_url} SECRET_KEY=<random> "
            "python manage.py serve --port P` (production mode, defaults otherwise: `DB_CONN_MAX_AGE=0`)",
            f"- ingest: {plan.connections} threads of `http.client` with one keep-alive connection each, posting "
            f"`POST /events` (`X-API-Key`, scope `events:write`) batches of {BATCH} events (32 different bodies, "
            f"about {len(ingest_batches(1)[0]) / 1024:.0f} KiB each) back to back: {plan.ingest_warmup:g} s warm-up, "
            f"{plan.ingest_seconds:g} s measured; stored events counted in `rules_event` for the bench tenant",
            "",
            f"### Evaluation: {', '.join(f'{n:,}' for n in RULE_COUNTS)} rules, one event at a time",
            "",
            f'Rules: `when event.type == "type_k" and <1 to 3 conditions> then {ACTION}` spread over '
            f"{len(EVENT_TYPES)} types, conditions drawn from comparisons, arithmetic (`event.price * event.quantity "
            "- event.amount > 1000`), `in`/`not in` lists, `contains`, `matches` (a regex), `startswith` and an "
            f"`or` group; one rule in {AGNOSTIC_SHARE} (at least one) has no type conjunct and three conditions. "
            f"Events: 5,000 random payloads over the same {len(EVENT_TYPES)} types (12 fields, nested `user`, a "
            "`tags` list). `compiled + index` is `RuleIndex.evaluate` (candidates, evaluation, messages rendered "
            "for each match); `every rule` the same loop over all N rules; `naive` is "
            "`rules.tests.dsl_oracle.NaiveRule(text).matches(event)` for each rule (no messages rendered). "
            f"The three were checked to agree on {plan.check_events} events first.",
            "",
            *evaluation_table(rows),
            "",
            "### A windowed rule: `count(1m by event.ip) >= 5`",
            "",
            f"`{WINDOW_RULE}`, every event a `login_failed` one, one `EvalContext` per event. The events' "
            f"clock runs at {WINDOW_RATE} events/s over {WINDOW_IPS} ips and a minute of events is recorded "
            f"before measuring, so each key holds {60 * WINDOW_RATE // WINDOW_IPS} entries and the rule matches "
            "every event. Redis: one EVALSHA per event over a local TCP connection (redis-py).",
            "",
            *window_table(windows),
            "",
            f"### Ingest: `POST /events` in batches of {BATCH}, one web process",
            "",
            "Each request: API-key authentication, JSON parsing and validation of the 100 events, one multi-row "
            "INSERT in a transaction, and on commit one Celery publish of the evaluation task to Redis (no worker "
            "runs: this is the ingest path alone).",
            "",
            *ingest_table(ingest, plan),
            "",
            "### Reading the figures",
            "",
            *reading(rows, windows, ingest),
            MARK_END,
        ]
    )


def write_docs(path: Path, section: str) -> None:
    """Replaces the marked section, or appends it; the rest of the file stays as it was."""
    text = path.read_text() if path.exists() else "# Benchmarks\n\nFigures recorded by the scripts in `bench/`.\n"
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(MARK_END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --- Entry point --------------------------------------------------------------------------------


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so that every `finally` stops what it started


def main(argv: Sequence[str]) -> int:
    plan = parse_args(argv)
    if not Path("/proc/stat").exists():
        raise BenchError("needs Linux /proc for the CPU columns")
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    wait_for_quiet(plan)
    print("1. evaluation", flush=True)
    rows = measure_evaluation(plan)
    wait_for_quiet(plan)
    print("2. windows", flush=True)
    windows = measure_windows(plan)
    wait_for_quiet(plan)
    print("3. ingest", flush=True)
    ingest = measure_ingest(plan)
    section = render(plan, rows, windows, ingest)
    print("\n" + section)
    if ingest.load.problems:
        raise BenchError("ingest errors, docs not written:\n  " + "\n  ".join(ingest.load.problems[:10]))
    if ingest.stored != ingest.load.accepted * BATCH:
        raise BenchError(f"{ingest.load.accepted * BATCH} events accepted but {ingest.stored} stored; docs not written")
    if plan.quick:
        print(f"\n--quick: {plan.docs} left as it was.")
    else:
        write_docs(plan.docs, section)
        print(f"\nwritten to {plan.docs}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as error:
        print(f"bench/rules.py: error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("bench/rules.py: interrupted; processes stopped, Redis keys deleted", file=sys.stderr)
        sys.exit(130)
