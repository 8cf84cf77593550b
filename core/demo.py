"""The demo objects' one shared fact: what an address of `make run`'s mock upstream looks like.

`make run UPSTREAM_PORT=...` moves the mock upstream; the demo route and the demo webhook channel
(seeded by `seed_demo_routes` and `seed_demo_rules` with ``--follow-downstream``) follow it while
they still point at a mock upstream of an earlier run, and keep anything an operator set by hand.
"""

from __future__ import annotations

import re
from argparse import ArgumentParser

# The form the Makefile gives DOWNSTREAM_URL (http://127.0.0.1:<UPSTREAM_PORT>), with an optional path.
_MOCK_UPSTREAM = re.compile(r"^http://127\.0\.0\.1:\d{1,5}(?P<path>/[a-z]*)?$")


def mock_upstream_moved(current: str, wanted: str) -> bool:
    """True when `current` is a mock upstream address of an earlier run that `wanted` (this run's,
    same path) replaces: both in the Makefile's form, same path, another port. An address of any
    other form was set by someone and stays."""
    now, then = _MOCK_UPSTREAM.match(current.rstrip("/")), _MOCK_UPSTREAM.match(wanted.rstrip("/"))
    if now is None or then is None:
        return False
    return now.group("path") == then.group("path") and current.rstrip("/") != wanted.rstrip("/")


def follow_downstream_option(parser: ArgumentParser, what: str) -> None:
    """The seed commands' ``--follow-downstream`` flag (what `make run` passes), for `what`."""
    parser.add_argument(
        "--follow-downstream",
        action="store_true",
        help=f"re-point the {what} when it still targets an earlier run's mock upstream (make run)",
    )
