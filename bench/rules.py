"""Rules benchmark: how fast the compiled DSL evaluates events, and how fast `POST /events` stores them.

    .venv/bin/python bench/rules.py            # the full run, recorded in docs/benchmarks.md
    .venv/bin/python bench/rules.py --quick    # a smoke run, printed only

1. Events per second for 10, 100 and 1,000 rules: the compiled engine with its event-type index,
   the compiled engine testing every rule, and the naive baseline that walks the Lark parse tree
   for every event (`rules.dsl.interpreter.NaiveRule`).
2. One windowed rule (`count(1m by event.ip) >= 5`) with the in-memory and the Redis window store.
3. End to end: batches of 100 events posted to a real `manage.py serve` (PostgreSQL, Redis) from
   a few keep-alive connections, counted as stored rows.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rules.dsl import EvalContext, MemoryWindowStore, RedisWindowStore, RuleIndex, compile_rule  # noqa: E402
from rules.dsl.interpreter import NaiveRule  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
START, END = "<!-- bench:rules:start -->", "<!-- bench:rules:end -->"
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "sentinel_bench_rules"
REDIS_URL = "redis://127.0.0.1:6379/0"
TYPES = [f"type_{n}" for n in range(100)]


# --- 1. evaluation -----------------------------------------------------------------------------


def make_rules(count: int, rng: random.Random) -> list[str]:
    """Rules shaped like real ones: a type, a comparison or two, sometimes a regex or a list."""
    conditions = [
        "amount > {n}",
        'amount * 2 >= {n} and currency in ["EUR", "USD"]',
        'user.country != "FR" and amount < {n}',
        'path startswith "/api/" and status >= 500',
        'email matches "^[a-z]+@example\\\\.com$"',
        'tags contains "vip" or amount > {n}',
    ]
    rules = []
    for index in range(count):
        condition = rng.choice(conditions).format(n=rng.randint(10, 1000))
        if index % 50 == 49:  # a few rules for every type of event
            rules.append(f'when {condition} then notify("webhook:all")')
        else:
            kind = TYPES[index % len(TYPES)]
            rules.append(f'when event.type == "{kind}" and ({condition}) then notify("webhook:x", "{{amount}}")')
    return rules


def make_events(count: int, rng: random.Random) -> list[dict[str, Any]]:
    return [
        {
            "type": rng.choice(TYPES),
            "amount": rng.randint(0, 2000),
            "currency": rng.choice(["EUR", "USD", "GBP"]),
            "user": {"country": rng.choice(["FR", "DE", "US"])},
            "path": rng.choice(["/api/orders", "/health", "/api/users"]),
            "status": rng.choice([200, 200, 404, 503]),
            "email": rng.choice(["ann@example.com", "bob@example.org"]),
            "tags": rng.sample(["vip", "new", "b2b", "trial"], 2),
        }
        for _ in range(count)
    ]


def per_event_us(evaluate: Callable[[dict[str, Any]], object], events: list[dict[str, Any]], seconds: float) -> float:
    """Median over 3 rounds of µs per event; each round cycles through the events for `seconds`."""
    rounds = []
    for _ in range(3):
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for event in events[:200]:
                evaluate(event)
            done += min(200, len(events))
        rounds.append((time.perf_counter() - started) / done * 1e6)
        events = events[200:] + events[:200]
    return statistics.median(rounds)


def measure_evaluation(sizes: list[int], seconds: float) -> list[dict[str, Any]]:
    rng = random.Random(7)
    events = make_events(2000, rng)
    rows = []
    for size in sizes:
        texts = make_rules(size, rng)
        compiled = [(n, compile_rule(text)) for n, text in enumerate(texts)]
        index = RuleIndex(compiled)
        naive = [NaiveRule(text) for text in texts]
        context = EvalContext()

        def indexed(event: dict[str, Any], index: Any = index, context: EvalContext = context) -> object:
            return [rule.evaluate(event, context) for _, rule in index.candidates(event)]

        def unindexed(event: dict[str, Any], compiled: Any = compiled, context: EvalContext = context) -> object:
            return [rule.evaluate(event, context) for _, rule in compiled]

        def interpreted(event: dict[str, Any], naive: Any = naive) -> object:
            return [rule.matches(event) for rule in naive]

        # The engines must agree before their speed means anything.
        for event in events[:300]:
            assert [r.evaluate(event, context) is not None for _, r in compiled] == [r.matches(event) for r in naive]
        matched = sum(
            sum(rule.evaluate(event, context) is not None for _, rule in index.candidates(event)) for event in events
        )
        row = {
            "rules": size,
            "candidates": sum(len(index.candidates(event)) for event in events) / len(events),
            "matches": matched / len(events),
            "indexed": per_event_us(indexed, events, seconds),
            "unindexed": per_event_us(unindexed, events, seconds),
            "naive": per_event_us(interpreted, events, seconds),
        }
        rows.append(row)
        print(
            f"{size:>5} rules: indexed {row['indexed']:9.1f} µs/event, every rule {row['unindexed']:9.1f}, "
            f"naive {row['naive']:9.1f}"
        )
    return rows


def measure_windows(seconds: float) -> dict[str, float]:
    import redis

    rule = compile_rule('when event.type == "login_failed" and count(1m by event.ip) >= 5 then notify("email:x")')
    prefix = f"bench-rules-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(REDIS_URL)
    results = {}
    try:
        for name, store in (("memory", MemoryWindowStore()), ("redis", RedisWindowStore(client, prefix=prefix))):
            counter = iter(range(10**9))

            def evaluate(event: dict[str, Any], store: Any = store, counter: Any = counter) -> object:
                ctx = EvalContext(store=store, tenant="1", rule="1", event_id=str(next(counter)), now=time.time())
                return rule.evaluate(event, ctx)

            events = [{"type": "login_failed", "ip": f"10.0.{n % 50}.{n % 200}"} for n in range(400)]
            results[name] = per_event_us(evaluate, events, seconds / 2)
            print(f"window count(1m by ip), {name} store: {results[name]:.1f} µs/event")
    finally:
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()
    return results


# --- 3. ingest through a real web process ------------------------------------------------------


def _env(port: int, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + BENCH_DB,
        "REDIS_URL": REDIS_URL,
        "CACHE_KEY_PREFIX": prefix,
        "SECRET_KEY": "bench-only-secret-key-0123456789abcdefghij",
        "LOG_LEVEL": "warning",
        "PORT": str(port),
        "PROMETHEUS_MULTIPROC_DIR": str(Path(tempfile.gettempdir()) / f"{prefix}-metrics"),
    }


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_ingest(seconds: float, connections: int) -> dict[str, float]:
    import psycopg
    import redis

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")
    prefix = f"bench-rules-{uuid.uuid4().hex[:8]}"
    port = _free_port()
    env = _env(port, prefix)
    _manage(env, "migrate", "--noinput", "-v0")
    key = (
        _manage(
            env,
            "shell",
            "-c",
            "from accounts.services import user_signup, api_key_create;"
            "u = user_signup(username='bench', email='bench@example.com', password='bench-Passw0rd!',"
            " tenant_name='Bench');"
            "print(api_key_create(tenant=u.membership.tenant, name='bench', scopes=['events:write'])[1])",
        )
        .strip()
        .splitlines()[-1]
    )
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=2).request("GET", "/health")
                break
            except OSError:
                time.sleep(0.2)
        batch = json.dumps([{"type": "order", "amount": n, "user": {"id": n % 97}} for n in range(100)]).encode()
        headers = {"X-API-Key": key, "Content-Type": "application/json"}
        latencies: list[float] = []
        lock = threading.Lock()
        stop = time.monotonic() + 2  # warm-up

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            while time.monotonic() < stop:
                started = time.perf_counter()
                conn.request("POST", "/events", body=batch, headers=headers)
                response = conn.getresponse()
                response.read()
                assert response.status == 202, response.status
                with lock:
                    latencies.append(time.perf_counter() - started)
            conn.close()

        def run(duration: float) -> float:
            nonlocal stop
            latencies.clear()
            stop = time.monotonic() + duration
            threads = [threading.Thread(target=client) for _ in range(connections)]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return time.monotonic() - started

        run(2.0)
        with psycopg.connect(env["DATABASE_URL"]) as conn:
            before_rows = conn.execute("SELECT count(*) FROM rules_event").fetchone()[0]
        cpu_before = _cpu_seconds(server.pid)
        elapsed = run(seconds)
        cpu = _cpu_seconds(server.pid) - cpu_before
        with psycopg.connect(env["DATABASE_URL"]) as conn:
            stored = conn.execute("SELECT count(*) FROM rules_event").fetchone()[0] - before_rows
        requests = len(latencies)
        ordered = sorted(latencies)
        result = {
            "requests_per_s": requests / elapsed,
            "events_per_s": stored / elapsed,
            "stored": stored,
            "posted": requests * 100,
            "p50_ms": ordered[len(ordered) // 2] * 1000,
            "p99_ms": ordered[int(len(ordered) * 0.99)] * 1000,
            "cpu_us_per_event": cpu / max(stored, 1) * 1e6,
        }
        print(
            f"ingest: {result['events_per_s']:,.0f} events/s stored ({result['requests_per_s']:.0f} batches/s, "
            f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, {result['cpu_us_per_event']:.0f} µs "
            "web CPU/event)"
        )
        return result
    finally:
        server.terminate()
        server.wait(timeout=15)
        client = redis.Redis.from_url(REDIS_URL)
        for key_name in client.scan_iter(match=f"{prefix}*"):
            client.delete(key_name)
        client.close()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


# --- report ------------------------------------------------------------------------------------


def markdown(evaluation: list[dict[str, Any]], windows: dict[str, float], ingest: dict[str, float], args: Any) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    model_lines = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line]
    cpu = model_lines[0].split(":", 1)[1].strip() if model_lines else platform.processor()
    lines = [
        START,
        "## Rules (`bench/rules.py`)",
        "",
        f"Recorded {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} at commit {commit.stdout.strip()}. "
        f"Machine: {os.cpu_count()} vCPU ({cpu}), Python {platform.python_version()}.",
        "",
        f"Command: `.venv/bin/python bench/rules.py --seconds {args.seconds} --ingest-seconds {args.ingest_seconds} "
        f"--connections {args.connections}`. Rules are generated over 100 event types (a type, one or two "
        "comparisons, sometimes `in`, `contains`, `startswith` or an RE2 `matches`; one rule in 50 without a type); "
        "events are random over the same types and fields. Every figure is the median of 3 rounds; the compiled "
        "engine and the interpreter are first checked to agree on 300 events.",
        "",
        "### Evaluation, one process, one event at a time",
        "",
        "| rules | rules tested per event (index) | matches per event | compiled + type index µs/event "
        "| events/s | compiled, every rule µs/event | naive Lark-tree interpreter µs/event | events/s "
        "| index speed-up over naive |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in evaluation:
        lines.append(
            f"| {row['rules']:,} | {row['candidates']:.1f} | {row['matches']:.1f} | {row['indexed']:.1f} | "
            f"{1e6 / row['indexed']:,.0f} | {row['unindexed']:.1f} | "
            f"{row['naive']:.1f} | {1e6 / row['naive']:,.0f} | {row['naive'] / row['indexed']:,.0f}x |"
        )
    lines += [
        "",
        "### A windowed rule: `count(1m by event.ip) >= 5`",
        "",
        "| window store | µs/event |",
        "|---|---:|",
        *(f"| {name} | {value:.1f} |" for name, value in windows.items()),
        "",
        "### Ingest: `POST /events`, batches of 100, into PostgreSQL",
        "",
        f"One `manage.py serve` process (production mode: PostgreSQL, Redis as Celery's broker), {args.connections} "
        f"keep-alive connections with an API key, {args.ingest_seconds} s after a 2 s warm-up; stored rows counted "
        "in the database. Evaluation is queued to Celery (no worker runs here), so this is the ingest path alone.",
        "",
        "| events/s stored | batches/s | p50 ms | p99 ms | web CPU µs/event | posted | stored |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {ingest['events_per_s']:,.0f} | {ingest['requests_per_s']:,.0f} | {ingest['p50_ms']:.1f} | "
        f"{ingest['p99_ms']:.1f} | {ingest['cpu_us_per_event']:.0f} | {ingest['posted']:,} | {ingest['stored']:,} |",
        "",
        summary(evaluation, windows, ingest),
        END,
    ]
    return "\n".join(lines)


def summary(evaluation: list[dict[str, Any]], windows: dict[str, float], ingest: dict[str, float]) -> str:
    largest = evaluation[-1]
    return (
        f"Reached: one event against {largest['rules']:,} indexed rules in {largest['indexed']:.1f} µs "
        f"({largest['naive'] / largest['indexed']:,.0f} times faster than interpreting the tree; testing every "
        f"compiled rule takes {largest['unindexed']:.0f} µs), well under the millisecond the issue asks. "
        "The index matters "
        "most: an event meets only its type's rules and the type-agnostic ones; what remains is mostly the "
        "matches themselves (building the match and rendering its messages: these generated rules match often). "
        "A Redis window costs "
        f"{windows.get('redis', 0):.0f} µs per event (one EVALSHA round trip), memory "
        f"{windows.get('memory', 0):.0f} µs. Ingest stores {ingest['events_per_s']:,.0f} events/s on one web process; "
        "per batch the cost is Django's request handling, JSON parsing and validation, one multi-row INSERT and one "
        "Celery publish."
    )


def record(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short rounds, nothing recorded")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one evaluation round")
    parser.add_argument("--ingest-seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.ingest_seconds = 0.2, 2.0
    evaluation = measure_evaluation([10, 100, 1000], args.seconds)
    windows = measure_windows(args.seconds)
    ingest = measure_ingest(args.ingest_seconds, args.connections)
    section = markdown(evaluation, windows, ingest, args)
    if args.quick:
        print("(--quick: not recorded)")
        return
    record(section)
    print(f"recorded in {DOC.relative_to(REPO)}")


if __name__ == "__main__":
    main()
