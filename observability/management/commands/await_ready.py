"""`python manage.py await_ready`: waits until `/health` answers 200, then prints where everything is.

`make run` starts it in the background next to honcho: the processes' output scrolls fast, so the
URLs and the first-run credentials are printed again once Sentinel is actually serving, as the
last thing on the screen.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

# The web process answers /health within ~10 s of a warm start; a cold one (first migration,
# collectstatic) takes longer. Past this the banner says so instead of waiting forever.
DEFAULT_TIMEOUT_S = 180.0
POLL_INTERVAL_S = 0.5


def health_status(url: str) -> int | None:
    """The HTTP status `/health` answers, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own http URL
            return int(response.status)
    except urllib.error.HTTPError as exc:  # 503: up, but a component is not
        return exc.code
    except (OSError, ValueError):
        return None


class Command(BaseCommand):
    help = "Wait for /health, then print Sentinel's URLs and the first-run credentials."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--upstream-port", type=int, default=8080)
        parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds")

    def handle(self, *args: Any, **options: Any) -> None:
        base = f"http://127.0.0.1:{options['port']}"
        deadline = time.monotonic() + options["timeout"]
        status = health_status(f"{base}/health")
        while status != 200 and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)  # polling a condition with a deadline
            status = health_status(f"{base}/health")
        if status is None:
            raise CommandError(f"Sentinel did not answer at {base}/health within {options['timeout']:.0f} s")
        self.stdout.write(self._banner(base, options["upstream_port"], status))

    def _banner(self, base: str, upstream_port: int, status: int) -> str:
        upstream = f"http://127.0.0.1:{upstream_port}"
        state = "ready" if status == 200 else f"up, but /health answers {status}: see {base}/health"
        lines = [
            "",
            "=" * 72,
            f"Sentinel is {state}.",
            f"  home       {base}/",
            f"  dashboard  {base}/dashboard/  (live traffic, breakers, incidents; log in below)",
            f"  API docs   {base}/docs",
            f"  admin      {base}/admin/",
            f"  health     {base}/health",
            f"  metrics    {base}/metrics",
            f"  upstream   {upstream}/  (mock backend; demo webhooks arrive at {upstream}/sink)",
            *self._credentials(base),
            "=" * 72,
            "",
        ]
        return "\n".join(lines)

    @staticmethod
    def _credentials(base: str) -> list[str]:
        path = Path(settings.VAR_DIR) / "first-run.txt"
        try:
            values = dict(
                line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#")
            )
        except OSError:
            return [f"  log in with the staff user you created (no {path.name} found)"]
        username, password = values.get("admin_username", "admin"), values.get("admin_password", "")
        if not first_run_still_valid(username=username, password=password):
            # The file belongs to the checkout, the user to the database: after a switch between
            # embedded and production mode it may describe another database's admin.
            return [
                f"  {path} holds credentials of another database (the password does not match):",
                f"  reset it with `.venv/bin/python manage.py changepassword {username}`",
            ]
        lines = [f"  log in     {username} / {password}  (kept in {path}, mode 0600)"]
        if not demo_channel_exists():
            return [*lines, "  the demo channel was not created (see `manage.py seed_demo_rules`'s message above)"]
        key = values.get("demo_api_key", "<key>")
        return [
            *lines,
            "  try the demo rule (an order over 500 notifies the sink):",
            f"    curl -s -X POST {base}/events -H 'X-API-Key: {key}' -H 'Content-Type: application/json' \\",
            """      -d '{"type": "order", "id": "o-1", "amount": 900, "currency": "EUR"}'""",
        ]


def first_run_still_valid(*, username: str, password: str) -> bool:
    """Whether the first-run file's password is still the staff user's in this database."""
    from accounts.models import User

    user = User.objects.filter(username=username).first()
    return user is not None and bool(password) and user.check_password(password)


def demo_channel_exists() -> bool:
    """Whether `seed_demo_rules` could create the demo channel (the egress policy may refuse it)."""
    from rules.management.commands.seed_demo_rules import DEMO_CHANNEL
    from rules.models import NotificationChannel

    return NotificationChannel.objects.filter(kind="webhook", name=DEMO_CHANNEL).exists()
