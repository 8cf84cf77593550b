"""`python manage.py chaos [--requests 200] [--workers 20] [--url http://127.0.0.1:8000] [--api-key K]
[--rate 4] [--duration S]`: the fail-open drill of SPEC 6 (the engine is `fraud.chaos`).

It sends transactions to a running Sentinel while you stop and start the brain (README, "Fraud"),
and prints the phases — success → circuit open → recovered — as they change, then a summary.

Pacing: 4 requests/s by default, so that 200 requests last about 50 s: long enough to stop the
brain by hand, see the breaker open, and see it close again once its 30 s reset has passed (at full
speed, `--rate 0`, 200 requests are over in a second). `--duration` keeps going for that many
seconds (with no `--requests`, however many that takes).

The API key: `--api-key`, else the demo tenant's key that `seed_demo` keeps in `var/first-run.txt`;
it needs the scope `transactions:write`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.management.commands.seed_demo import first_run_file
from fraud.chaos import CredentialsRefused, Plan, run_drill

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_REQUESTS = 200


def demo_api_key(path: Path) -> str | None:
    """The `demo_api_key=` line of the first-run file, or None when the file or the line is missing."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition("=")
        if name.strip() == "demo_api_key" and value.strip():
            return value.strip()
    return None


class Command(BaseCommand):
    help = "Drive transactions at POST /transaction and print the fail-open phases while the brain stops and starts."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--requests", type=int, default=None, help=f"how many ({DEFAULT_REQUESTS}; unlimited with --duration)"
        )
        parser.add_argument("--workers", type=int, default=20, help="requests in flight at most (20)")
        parser.add_argument("--url", default=DEFAULT_URL, help=f"Sentinel's base URL ({DEFAULT_URL})")
        parser.add_argument("--api-key", default=None, help="a key of scope transactions:write (the demo key)")
        parser.add_argument("--rate", type=float, default=4.0, help="requests per second (4; 0 = as fast as possible)")
        parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        requests, duration = options["requests"], options["duration"]
        if requests is None and duration is None:
            requests = DEFAULT_REQUESTS
        if (requests is not None and requests < 1) or options["workers"] < 1 or options["rate"] < 0:
            raise CommandError("--requests and --workers must be at least 1, --rate at least 0")
        if duration is not None and duration <= 0:
            raise CommandError("--duration must be positive")
        api_key = options["api_key"] or demo_api_key(first_run_file())
        if not api_key:
            raise CommandError(
                f"no API key: {first_run_file()} holds none (seed_demo writes it once, on the first run). "
                "Pass --api-key with a key of scope transactions:write (create one in the admin or with "
                "POST /api/v1/api-keys)."
            )
        plan = Plan(
            url=options["url"].rstrip("/"),
            api_key=api_key,
            requests=requests,
            workers=options["workers"],
            rate=options["rate"],
            duration=duration,
        )

        def write(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        try:
            asyncio.run(run_drill(plan, write))
        except CredentialsRefused as exc:
            raise CommandError(
                f"the API key was refused ({exc}). Pass --api-key with a key of scope transactions:write."
            ) from None
        except KeyboardInterrupt:
            return  # Ctrl-C: run_drill said so and printed the summary
