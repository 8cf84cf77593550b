"""The report: a run's figures rendered into ``report.md.tmpl`` (the tables, and the words of
``sentences.md.tmpl`` that the figures call for), the rules section of ``docs/benchmarks.md``
(written by ``bench.common.cli.publish``).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from bench.common.gitstate import CodeState
from bench.common.markdown import Sentences, count, fill, machine, table, us, utc_now
from bench.common.scratch import DROPPED_SETTINGS, redis_client
from bench.rules.config import (
    AGNOSTIC_SHARE,
    BATCH,
    EVENT_TYPES,
    GOAL_US,
    KEY_PREFIX,
    OTHER_LIMIT,
    REPEATS,
    RULE_COUNTS,
    WINDOW_IPS,
    WINDOW_RATE,
    WINDOW_RULE,
    Plan,
)
from bench.rules.evaluation import NO_WINDOW, EvalRow
from bench.rules.ingest import IngestResult, percentile
from bench.rules.timing import Timing
from bench.rules.workload import ACTION, ingest_batches
from rules.dsl import REGEX_ENGINE

TEMPLATE_PATH = Path(__file__).with_name("report.md.tmpl")
SENTENCES = Sentences(Path(__file__).with_name("sentences.md.tmpl"))
GROUPS = ("web", "pg", "redis", "bench")  # the ingest's CPU groups, `other` aside


def server_versions(plan: Plan) -> list[str]:
    """`Redis 7.0.15`, `PostgreSQL 15.20`: those that answer."""
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
    return servers


def evaluation_table(rows: list[EvalRow]) -> str:
    """One line per rule count: the index's work per event, the three engines' µs and rates."""
    headers = ["rules", "type-agnostic", "candidates/event", "matches/event", "compiled + index µs/event"]
    headers += ["events/s", "compiled, every rule µs/event", "naive interpreter µs/event", "events/s"]
    headers += ["speed-up (naive ÷ indexed)", "other cores"]
    body = []
    for row in rows:
        other = max(t.other_cores for t in row.timings().values())
        body.append([count(row.rules), str(row.agnostic), f"{row.candidates:.1f}", f"{row.matches:.2f}"])
        body[-1] += [f"**{us(row.indexed.us)}**", count(row.indexed.rate), us(row.every.us), us(row.naive.us)]
        body[-1] += [count(row.naive.rate), f"{row.naive.us / row.indexed.us:,.0f}x", f"{other:.2f}"]
    return table(headers, body, left=0)


def window_table(windows: dict[str, Timing]) -> str:
    """One line per store: µs and rate per event, and the CPU of this process and of Redis."""
    headers = ["store", "µs/event", "events/s", "bench CPU µs/event", "Redis CPU µs/event", "other cores"]
    body = []
    for name, timing in windows.items():
        redis_us = us(timing.cpu.get("redis", 0)) if "Redis" in name else "n/a"
        body.append([name, f"**{us(timing.us)}**", count(timing.rate), us(timing.cpu.get("bench", 0)), redis_us])
        body[-1].append(f"{timing.other_cores:.2f}")
    return table(headers, body)


def ingest_table(result: IngestResult) -> str:
    """The measured run in one line: rates, latency, events, and CPU per event by group."""
    headers = ["events/s stored", "batches/s", "p50 ms", "p99 ms", "events posted (202)", "events stored"]
    headers += ["web CPU µs/event", "PostgreSQL CPU µs/event", "Redis CPU µs/event", "client CPU µs/event"]
    headers += ["other cores"]
    load = result.load
    line = [f"**{count(result.events_per_s)}**", f"{load.requests / load.wall:,.1f}"]
    line += [f"{percentile(load.latencies, q) * 1000:.1f}" for q in (0.5, 0.99)]
    line += [count(load.accepted * BATCH), count(result.stored)]
    line += [count(result.us_per_event(group)) for group in GROUPS]
    line.append(f"{result.other_cores:.2f}")
    return table(headers, [line], left=0)


def _verdict(indexed_us: float) -> str:
    """`well under` the goal's millisecond below a quarter of it, `under`, or `over`."""
    name = "well_under" if indexed_us < GOAL_US / 4 else "under" if indexed_us < GOAL_US else "over"
    return SENTENCES.say(f"verdict.{name}")


def reading(rows: list[EvalRow], windows: dict[str, Timing], ingest: IngestResult) -> dict[str, object]:
    """The figures of "Reading the figures": the largest rule set, the windows' cost, the ingest."""
    largest = rows[-1]
    redis, memory, plain = windows["RedisWindowStore"], windows["MemoryWindowStore"], windows[NO_WINDOW]
    biggest = max(GROUPS, key=ingest.us_per_event)
    return {
        "rules": count(largest.rules),
        "indexed_us": us(largest.indexed.us),
        "indexed_rate": count(largest.indexed.rate),
        "verdict": _verdict(largest.indexed.us),
        "speedup": count(largest.naive.us / largest.indexed.us),
        "naive_us": us(largest.naive.us),
        "candidates": f"{largest.candidates:.1f}",
        "every_us": us(largest.every.us),
        "every_ns": count(largest.every.us / largest.rules * 1000),
        "naive_ns": count(largest.naive.us / largest.rules * 1000),
        "memory_added": us(memory.us - plain.us),
        "redis_added": us(redis.us - plain.us),
        "redis_client_us": us(redis.cpu.get("bench", 0)),
        "redis_server_us": us(redis.cpu.get("redis", 0)),
        "events_per_s": count(ingest.events_per_s),
        "biggest": SENTENCES.say(f"group.{biggest}"),
        "biggest_us": count(ingest.us_per_event(biggest)),
        "total_us": count(sum(ingest.us_per_event(group) for group in GROUPS)),
    }


def _ingest_figures(plan: Plan, ingest: IngestResult) -> dict[str, object]:
    """The ingest's set-up and its cores over the measured run."""
    return {
        "key_prefix": KEY_PREFIX,
        "database_url": plan.database_url,
        "redis_url": plan.redis_url,
        "dropped_settings": ", ".join(f"`{name}`" for name in DROPPED_SETTINGS),
        "connections": plan.connections,
        "batch": BATCH,
        "batch_kib": f"{len(ingest_batches(1)[0]) / 1024:.0f}",
        "ingest_warmup": f"{plan.ingest_warmup:g}",
        "ingest_seconds": f"{plan.ingest_seconds:g}",
        "ingest_table": ingest_table(ingest),
        "wall": f"{ingest.load.wall:.1f}",
        **{f"{group}_cores": f"{ingest.cores(group):.2f}" for group in GROUPS},
        "other_cores": f"{ingest.other_cores:.2f}",
        "queued": count(ingest.queued_tasks),
    }


def render(plan: Plan, code: CodeState, rows: list[EvalRow], windows: dict[str, Timing], ingest: IngestResult) -> str:
    """The whole marked section, markers included."""
    timings = {f"{name}, {row.rules:,} rules": t for row in rows for name, t in row.timings().items()}
    timings |= {f"window rule, {name}": t for name, t in windows.items()}
    widest = max(timings, key=lambda name: timings[name].spread)
    servers = server_versions(plan)
    figures = {
        **machine(),
        "date": utc_now(),
        "commit": code.describe(),
        "regex_engine": REGEX_ENGINE,
        "servers": SENTENCES.say("servers", servers=", ".join(servers)) if servers else "",
        "other_limit": f"{OTHER_LIMIT:g}",
        "command": plan.command(),
        "repeats": REPEATS,
        "seconds": f"{plan.seconds:g}",
        "spread": f"{100 * timings[widest].spread:.0f}",
        "widest": widest,
        "rule_counts": ", ".join(count(n) for n in RULE_COUNTS),
        "action": ACTION,
        "types": len(EVENT_TYPES),
        "agnostic_share": AGNOSTIC_SHARE,
        "check_events": plan.check_events,
        "evaluation_table": evaluation_table(rows),
        "window_rule": WINDOW_RULE,
        "window_rate": WINDOW_RATE,
        "window_ips": WINDOW_IPS,
        "window_entries": 60 * WINDOW_RATE // WINDOW_IPS,
        "window_table": window_table(windows),
        **_ingest_figures(plan, ingest),
        **reading(rows, windows, ingest),
    }
    return fill(TEMPLATE_PATH, figures)
