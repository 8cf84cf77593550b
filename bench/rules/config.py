"""What a run is: the command-line options (`Plan`), the goal it is judged by, and its constants.

No measuring here: the other modules take a `Plan` and these constants.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import DEFAULT_REDIS_URL, DOCS_PATH

PROG = "python -m bench.rules"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/sentinel_bench_rules"
# Redis keys of a run live under this, followed by a random part (the same Redis may serve others).
KEY_PREFIX = "bench-rules"
# Benchmarks that must not run at the same time as this one (besides any wrk).
OTHER_BENCHMARKS = ("bench.gateway",)
# The servers' processes, measured by name: a PostgreSQL backend exits when its connection closes.
SERVERS = {"pg": "postgres", "redis": "redis-server"}

RULE_COUNTS = (10, 100, 1000)
EVENT_TYPES = tuple(f"type_{k}" for k in range(100))
AGNOSTIC_SHARE = 100  # one rule in this many has no event.type conjunct (at least one per rule set)
REPEATS = 3
BATCH = 100  # events per POST /events
# The goal: one event against 1,000 indexed rules "in well under a millisecond".
GOAL_US = 1000.0
# A measurement during which processes this benchmark did not start (nor PostgreSQL and Redis) used
# more than this many cores is taken again when the machine is quiet.
OTHER_LIMIT = 0.25
# Window part: a simulated clock at this many events/s over this many ips (60 s window: 120 each).
WINDOW_RATE = 200
WINDOW_IPS = 100
WINDOW_RULE = 'when event.type == "login_failed" and count(1m by event.ip) >= 5 then notify("webhook:x", "{ip}")'
PLAIN_RULE = 'when event.type == "login_failed" then notify("webhook:x", "{ip}")'


@dataclass(frozen=True)
class Plan:
    """How long (seconds) and how hard each part runs, and where the data and the report go."""

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
        """The command line of this run, as the report shows it."""
        return (
            f".venv/bin/python -m bench.rules --seconds {self.seconds:g} --ingest-seconds {self.ingest_seconds:g} "
            f"--connections {self.connections}" + (" --quick" if self.quick else "")
        )


def parse_args(argv: Sequence[str], description: str) -> Plan:
    """The options of `python -m bench.rules`; exits with argparse's message when one is wrong."""
    parser = argparse.ArgumentParser(prog=PROG, description=description)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each evaluation repeat (2)")
    parser.add_argument("--ingest-seconds", type=float, default=10.0, help="measured ingest run (10)")
    parser.add_argument("--connections", type=int, default=4, help="concurrent ingest connections (4)")
    parser.add_argument("--wait-minutes", type=float, default=20.0, help="longest wait for a quiet machine (20)")
    parser.add_argument("--quick", action="store_true", help="smoke test: short runs, docs/benchmarks.md untouched")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="bench database (created if missing)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help=f"Redis; keys under {KEY_PREFIX}-<random>")
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
