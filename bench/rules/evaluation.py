"""Parts 1 and 2, in this process (``rules.dsl``, no Django): rule evaluation for 10, 100 and
1,000 rules by the compiled engine through its index, the compiled engine testing every rule, and
the naive interpreter; then one windowed rule with its window in memory and in Redis.
"""

from __future__ import annotations

import itertools
import random
import secrets
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common import BenchError
from bench.common.markdown import us
from bench.common.scratch import delete_keys, redis_client
from bench.rules.config import KEY_PREFIX, PLAIN_RULE, RULE_COUNTS, WINDOW_IPS, WINDOW_RATE, WINDOW_RULE, Plan
from bench.rules.timing import Events, Timing, time_per_event
from bench.rules.workload import make_event, make_rules
from rules.dsl import CompiledRule, EvalContext, Match, MemoryWindowStore, RedisWindowStore, RuleIndex, WindowStore
from rules.dsl import compile_rule as compile_dsl
from rules.tests.dsl_oracle import NaiveRule

# --- 1. Evaluation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalRow:
    """One rule count: its type-agnostic rules, the candidates the index hands out and the matching
    rules per event, and the three engines' timings."""

    rules: int
    agnostic: int
    candidates: float
    matches: float
    indexed: Timing
    every: Timing
    naive: Timing

    def timings(self) -> dict[str, Timing]:
        """The three timings by the name the report gives them."""
        return {"compiled + index": self.indexed, "compiled, every rule": self.every, "naive": self.naive}


@dataclass(frozen=True)
class Engines:
    """One rule set three ways: the compiled rules (with their numbers), their index, and the naive
    interpreter's rules; each way returns the numbers of the rules an event matches."""

    compiled: list[tuple[int, CompiledRule]]
    index: RuleIndex[int]
    naive: list[NaiveRule]
    ctx: EvalContext

    @classmethod
    def of(cls, texts: list[str], ctx: EvalContext) -> Engines:
        compiled = [(number, compile_dsl(text)) for number, text in enumerate(texts)]
        return cls(compiled, RuleIndex(compiled), [NaiveRule(text) for text in texts], ctx)

    def indexed(self, event: dict[str, Any]) -> list[tuple[int, Match]]:
        return self.index.evaluate(event, self.ctx)

    def every_rule(self, event: dict[str, Any]) -> list[tuple[int, Match]]:
        # RuleIndex.evaluate's loop over every rule instead of the event type's candidates (the
        # context a local, as in a closure: an attribute look-up per rule would weigh on the figure).
        matches: list[tuple[int, Match]] = []
        ctx = self.ctx
        for rule_id, rule in self.compiled:
            match = rule.evaluate(event, ctx)
            if match is not None:
                matches.append((rule_id, match))
        return matches

    def interpreted(self, event: dict[str, Any]) -> list[int]:
        return [number for number, rule in enumerate(self.naive) if rule.matches(event)]

    def check_agree(self, events: Events) -> None:
        """BenchError on the first event the three ways disagree on: only then do speeds mean anything."""
        for event in events:
            expected = self.interpreted(event)
            if [n for n, _ in self.indexed(event)] != expected or [n for n, _ in self.every_rule(event)] != expected:
                count = len(self.naive)
                raise BenchError(f"{count} rules: the compiled engine and the interpreter disagree on {event}")


def evaluation_row(engines: Engines, events: Events, seconds: float) -> EvalRow:
    """The figures of one rule set over `events`."""
    return EvalRow(
        rules=len(engines.compiled),
        agnostic=sum(rule.event_types is None for _, rule in engines.compiled),
        candidates=statistics.fmean(len(engines.index.candidates(event)) for event in events),
        matches=statistics.fmean(len(engines.indexed(event)) for event in events),
        indexed=time_per_event(engines.indexed, events, seconds),
        every=time_per_event(engines.every_rule, events, seconds),
        naive=time_per_event(engines.interpreted, events, seconds),
    )


def measure_evaluation(plan: Plan) -> list[EvalRow]:
    """A row for each of RULE_COUNTS, over 5,000 random events; progress printed."""
    rng = random.Random(20241123)
    events = [make_event(rng) for _ in range(5000)]
    ctx = EvalContext()
    rows = []
    for count in RULE_COUNTS:
        engines = Engines.of(make_rules(count, rng), ctx)
        engines.check_agree(events[: plan.check_events])
        row = evaluation_row(engines, events, plan.seconds)
        rows.append(row)
        print(
            f"{count:>5} rules ({row.candidates:.1f} candidates, {row.matches:.2f} matches per event): "
            f"indexed {row.indexed.us:.2f} µs/event, every rule {row.every.us:.1f}, naive {row.naive.us:.1f} "
            f"({row.naive.us / row.indexed.us:,.0f}x); repeats "
            + ", ".join(f"{name} {'/'.join(us(x) for x in t.repeats)}" for name, t in row.timings().items()),
            flush=True,
        )
    return rows


# --- 2. Windows ---------------------------------------------------------------------------------

NO_WINDOW = "no window (same rule without `count`)"


def window_evaluator(rule: CompiledRule, store: WindowStore | None) -> Callable[[dict[str, Any]], object]:
    """Evaluates `rule` on an event with a fresh context: the next event id, the simulated clock."""
    sequence = itertools.count()
    now0 = time.time()

    def evaluate(event: dict[str, Any]) -> object:
        n = next(sequence)
        ctx = EvalContext(store=store, tenant="bench", rule="1", event_id=str(n), now=now0 + n / WINDOW_RATE)
        return rule.evaluate(event, ctx)

    return evaluate


def measure_windows(plan: Plan) -> dict[str, Timing]:
    """The windowed rule with each store, and the same rule without its window: timings by name."""
    windowed, plain = compile_dsl(WINDOW_RULE), compile_dsl(PLAIN_RULE)
    rng = random.Random(5)
    ips = [f"192.0.2.{n}" for n in range(WINDOW_IPS)]
    events = [{"type": "login_failed", "ip": rng.choice(ips), "user": f"u{rng.randint(1, 999)}"} for _ in range(4096)]
    client = redis_client(plan.redis_url)
    prefix = f"{KEY_PREFIX}-{secrets.token_hex(4)}:win:"
    runs = (
        (NO_WINDOW, plain, None),
        ("MemoryWindowStore", windowed, MemoryWindowStore()),
        ("RedisWindowStore", windowed, RedisWindowStore(client, prefix=prefix)),
    )
    results = {}
    try:
        for name, rule, store in runs:
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
