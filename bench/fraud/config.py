"""What a run is: its options (`Plan`), its goals and constants; no measuring here."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import DEFAULT_REDIS_URL, DOCS_PATH

PROG = "python -m bench.fraud"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/sentinel_bench_fraud"
KEY_PREFIX = "bench-fraud"
OTHER_BENCHMARKS = ("bench.gateway", "bench.rules", "bench.logpipe", "bench.monitors")
# Issue 12's goals, in milliseconds and transactions per second.
GOAL_P99_MS = 35.0
GOAL_RATE = 500.0
GOAL_FAIL_OPEN_P99_MS = 50.0
# The rate search: from GOAL_RATE up by this step, each step measured SEARCH_SECONDS.
SEARCH_STEP = 250.0
SEARCH_SECONDS = 5.0
SEARCH_MAX_RATE = 3000.0
# The web process's per-tenant admission (fraud.engine.admission), for the one bench tenant: so
# large that its bucket runs its check on every transaction (its cost is measured) and never
# refuses one, whatever the rate searched (the defaults hold a standard tenant to 200/s per process).
WEB_ADMISSION_ENV = {"FRAUD_BURST_CAPACITY": "1000000000", "FRAUD_REFILL_RATE": "1000000000"}


@dataclass(frozen=True)
class Plan:
    brain_duration: float
    concurrency: int
    rate: float
    duration: float
    warmup: float
    search: bool
    fake_brain: bool
    parts: tuple[str, ...]
    quick: bool
    database_url: str
    redis_url: str
    docs: Path

    def command(self) -> str:
        if self.quick:
            return f"{PROG} --quick" + (" --fake-brain" if self.fake_brain else "")
        return f"{PROG} --rate {self.rate:g} --duration {self.duration:g} --concurrency {self.concurrency}"


def parse_args(argv: Sequence[str], description: str) -> Plan:
    parser = argparse.ArgumentParser(prog=PROG, description=description)
    parser.add_argument("--brain-duration", type=float, default=10.0, help="seconds of the brain-alone run (10)")
    parser.add_argument("--concurrency", type=int, default=32, help="Score calls in flight in (a) (32)")
    parser.add_argument("--rate", type=float, default=GOAL_RATE, help=f"transactions/s in (b) and (c) ({GOAL_RATE:g})")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured in (b) and (c) (10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up before (b) and (c) (3)")
    parser.add_argument("--no-search", action="store_true", help="skip the search for the highest rate under goal")
    parser.add_argument(
        "--fake-brain",
        action="store_true",
        help="the scripted stand-in (tests/support/fake_brain.py) instead of run_brain; implies --quick",
    )
    parser.add_argument(
        "--parts", default="brain,e2e,fail-open", help="which parts, comma-separated (brain,e2e,fail-open)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: short runs, docs/benchmarks.md untouched")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="scratch database (dropped and created)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help=f"Redis; keys under {KEY_PREFIX}-<random>")
    parser.add_argument("--docs", type=Path, default=DOCS_PATH, help="markdown file to update")
    args = parser.parse_args(argv)
    parts = tuple(part.strip() for part in args.parts.split(",") if part.strip())
    if unknown := set(parts) - {"brain", "e2e", "fail-open"}:
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}")
    if args.rate <= 0 or args.duration <= 0 or args.concurrency < 1:
        parser.error("--rate and --duration must be > 0, --concurrency >= 1")
    # The stand-in's figures say nothing of the model: never recorded.
    quick = bool(args.quick or args.fake_brain)
    return Plan(
        brain_duration=3.0 if quick else args.brain_duration,
        concurrency=args.concurrency,
        rate=args.rate,
        duration=3.0 if quick else args.duration,
        warmup=1.0 if quick else args.warmup,
        search=not (quick or args.no_search),
        fake_brain=bool(args.fake_brain),
        parts=parts,
        quick=quick,
        database_url=args.database_url,
        redis_url=args.redis_url,
        docs=args.docs,
    )
