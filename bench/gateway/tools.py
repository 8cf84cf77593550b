"""The outside tools a run uses, found on the PATH (``make bench-tools`` installs them).

- ``wrk`` drives the closed-loop runs; without it the Python generator (``loadgen.py``) stands in,
  which costs about 100 µs of CPU per request itself and so bounds the direct and nginx rows.
- ``nginx`` is the reference proxy; without it there are no nginx rows.
- ``py-spy`` (in the virtualenv: a dev tool, not in the requirements) records the profile; without
  it there is none.

Nothing is installed from here: a missing tool is named with the make target that installs it, and
the run goes on without it, saying so in the report's notes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Tools:
    """Paths of the tools found (None: missing)."""

    wrk: str | None = None
    nginx: str | None = None
    py_spy: str | None = None

    @property
    def missing(self) -> list[str]:
        """The names of the tools not found, in a fixed order: `wrk`, `nginx`, `py-spy`."""
        found = {"wrk": self.wrk, "nginx": self.nginx, "py-spy": self.py_spy}
        return [name for name, path in found.items() if path is None]


def _which(name: str) -> str | None:
    # nginx lives in /usr/sbin, which is not on every user's PATH.
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def find_tools() -> Tools:
    """wrk and nginx on the PATH (or in /usr/sbin), py-spy beside this interpreter."""
    py_spy = Path(sys.executable).parent / "py-spy"
    return Tools(wrk=_which("wrk"), nginx=_which("nginx"), py_spy=str(py_spy) if py_spy.exists() else None)


def tool_version(args: list[str]) -> str:
    """The first line a tool prints for its version flag (wrk and nginx print it on stderr); `?`."""
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (result.stdout + result.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def versions(tools: Tools) -> list[str]:
    """wrk's and nginx's version lines, or `<name>: not installed`."""
    return [
        tool_version([tools.wrk, "-v"]) if tools.wrk else "wrk: not installed",
        tool_version([tools.nginx, "-v"]) if tools.nginx else "nginx: not installed",
    ]
