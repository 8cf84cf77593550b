"""`python manage.py run_brain`: the Procfile's `brain` process, the fraud brain's gRPC server
(fraud.brain.server). Trains the model first when MODEL_DIR has none."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import uvloop
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.conf import sentinel_settings
from fraud.brain.server import BrainOptions, FaultInjection, serve

# A long-running process: its lines go through LOGGING (JSON, one object a line) like every other's.
logger = logging.getLogger("sentinel.fraud.brain")


class Command(BaseCommand):
    help = "Serve the fraud brain (FraudBrain.Score, ScoreMany and gRPC health) until SIGTERM or SIGINT."

    def add_arguments(self, parser: CommandParser) -> None:
        fraud = sentinel_settings.fraud
        parser.add_argument("--address", default=fraud.BRAIN_ADDRESS, help="HOST:PORT to listen on.")
        parser.add_argument("--model-dir", default=fraud.MODEL_DIR, help="The model's folder (trained if empty).")
        parser.add_argument("--slow-rate", type=float, default=fraud.BRAIN_SLOW_RATE, help="Share of calls delayed.")
        parser.add_argument("--slow-ms", type=int, default=fraud.BRAIN_SLOW_MS, help="Delay of a slow call (ms).")
        parser.add_argument(
            "--failure-rate", type=float, default=fraud.BRAIN_FAILURE_RATE, help="Share of calls failed."
        )
        parser.add_argument("--fault-seed", type=int, default=None, help="Seed of the fault injection's dice.")

    def handle(self, *args: Any, **options: Any) -> None:
        fraud = sentinel_settings.fraud
        for name in ("slow_rate", "failure_rate"):
            if not 0.0 <= options[name] <= 1.0:  # the settings' defaults are checked >= 0 only
                raise CommandError(f"--{name.replace('_', '-')} must be between 0 and 1, not {options[name]}")
        brain = BrainOptions(
            address=options["address"],
            model_dir=Path(options["model_dir"]),
            faults=FaultInjection(
                slow_rate=options["slow_rate"],
                slow_ms=options["slow_ms"],
                failure_rate=options["failure_rate"],
                seed=options["fault_seed"],
            ),
            review_threshold=fraud.REVIEW_THRESHOLD,
            decline_threshold=fraud.DECLINE_THRESHOLD,
        )
        if brain.faults.active:
            logger.warning(
                "Fault injection on: %.0f %% of calls fail, %.0f %% are %d ms slower.",
                brain.faults.failure_rate * 100,
                brain.faults.slow_rate * 100,
                brain.faults.slow_ms,
            )
        try:
            # uvloop, as the web process's server runs: grpc.aio takes any asyncio loop, and the
            # brain's CPU per unary Score fell from ~1,000 to 815-903 us (bench.fraud --parts brain).
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(serve(brain))
        except RuntimeError as exc:  # grpc's "Failed to bind", say: one line, not a traceback
            raise CommandError(f"the fraud brain could not start on {brain.address}: {exc}") from exc
