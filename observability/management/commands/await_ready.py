"""`python manage.py await_ready`: waits until `/health` answers 200, then prints where everything is.

`make run` starts it in the background next to honcho: the processes' output scrolls fast, so the
URLs and the first-run credentials are printed again once Sentinel is actually serving, as the
last thing on the screen. With `--while-pid` (honcho's pid) it gives up quietly when honcho has
ended, so a start that failed is never followed by "ready" (another instance answering /health on
the port would otherwise be taken for this one).

`--ports-free` is the check `make run` makes before migrating and starting anything: it fails,
naming the port, when something already listens on the web or the mock upstream's port.
"""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.conf import sentinel_settings

# The web process answers /health within ~10 s of a warm start; a cold one (first migration,
# collectstatic) takes longer. Past this the banner says so instead of waiting forever.
DEFAULT_TIMEOUT_S = 180.0
# Hosts whose ports `make run` checks before starting (a remote brain is not ours to check).
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "0.0.0.0", "[::1]", "[::]", ""})  # noqa: S104 - names, not binds
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


def port_taken(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def process_alive(pid: int) -> bool:
    """True while process `pid` exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


class Command(BaseCommand):
    help = "Wait for /health, then print Sentinel's URLs and the first-run credentials."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--upstream-port", type=int, default=8080)
        parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds")
        parser.add_argument("--while-pid", type=int, help="stop waiting, printing nothing, once this process ends")
        parser.add_argument(
            "--ports-free",
            action="store_true",
            help="only check that the web, mock upstream and local brain ports are free; fail naming a taken one",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["ports_free"]:
            self._ports_free(options["port"], options["upstream_port"])
            return
        base = f"http://127.0.0.1:{options['port']}"
        owner = options["while_pid"]
        deadline = time.monotonic() + options["timeout"]
        status = None
        while time.monotonic() < deadline:
            if owner is not None and not process_alive(owner):
                return  # honcho ended: the start failed or was stopped, and it said why
            status = health_status(f"{base}/health")
            if status == 200:
                break
            time.sleep(POLL_INTERVAL_S)  # polling a condition with a deadline
        if owner is not None and not process_alive(owner):
            return
        if status is None:
            raise CommandError(f"Sentinel did not answer at {base}/health within {options['timeout']:.0f} s")
        self.stdout.write(self._banner(base, options["upstream_port"], status))

    @staticmethod
    def _ports_free(port: int, upstream_port: int) -> None:
        for name, number in (("web", port), ("mock upstream", upstream_port)):
            if port_taken(number):
                raise CommandError(
                    f"port {number} ({name}) is already in use: is Sentinel already running? Stop it; a "
                    "second one needs a checkout of its own (var/ holds the first one's database and "
                    "pids) and free ports: make run PORT=8100 UPSTREAM_PORT=8180 "
                    "FRAUD_BRAIN_ADDRESS=127.0.0.1:50052"
                )
        # The Procfile's brain listens on FRAUD_BRAIN_ADDRESS; taken, it would fail to start and
        # every transaction would be approved unscored (fail-open) with nothing else amiss.
        host, _, brain_port = sentinel_settings.fraud.BRAIN_ADDRESS.rpartition(":")
        if host in LOCAL_HOSTS and brain_port.isdigit() and port_taken(int(brain_port)):
            raise CommandError(
                f"port {brain_port} (fraud brain) is already in use: is Sentinel already running? "
                f"Stop it, or pick a free one: make run FRAUD_BRAIN_ADDRESS={host}:{int(brain_port) + 1}"
            )

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
