"""A benchmark run's frame: SIGTERM turned into KeyboardInterrupt (so that every `finally` stops
what it started), errors printed as one line and an exit code, and the report written between its
markers in ``docs/benchmarks.md`` (or not, with ``--quick``).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from bench.common import BenchError
from bench.common.gitstate import CodeState, check_unchanged

EMPTY_DOCS = "# Benchmarks\n\nFigures recorded by the scripts in `bench/`.\n"


def markers(name: str) -> tuple[str, str]:
    """The comments around benchmark `name`'s section: `<!-- bench:<name>:start -->`, `...:end -->`."""
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def write_section(path: Path, name: str, section: str) -> None:
    """Replaces the section of benchmark `name` (markers included in `section`), or appends it;
    the rest of the file stays as it was."""
    start_mark, end_mark = markers(name)
    text = path.read_text() if path.exists() else EMPTY_DOCS
    start, end = text.find(start_mark), text.find(end_mark)
    if start != -1 and end > start:
        text = text[:start] + section + text[end + len(end_mark) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def publish(path: Path, name: str, section: str, *, quick: bool, check: Callable[[], None]) -> None:
    """Prints the section, then writes it to `path` unless `check` raises (a BenchError saying why
    these figures must not be recorded) or the run was `quick` (a smoke test); says which."""
    print("\n" + section)
    check()
    if quick:
        print(f"\n--quick: {path} left as it was.")
    else:
        write_section(path, name, section)
        print(f"\nwritten to {path}")


def publish_if_asked(
    path: Path | None, name: str, section: str, *, refusal: str | None, unchanged: CodeState | None
) -> None:
    """`publish` for a benchmark that writes the docs only when asked (``--docs``): with `path`
    None the section is printed only. `refusal` says why these figures must not be recorded
    (BenchError with it); `unchanged` is the working tree measured, which must not have changed
    since (`check_unchanged`)."""
    if path is None:
        print("\n" + section)
        print("\nnot written (--docs writes it to docs/benchmarks.md)")
        return

    def check() -> None:
        if refusal is not None:
            raise BenchError(refusal)
        if unchanged is not None:
            check_unchanged(unchanged)

    publish(path, name, section, quick=False, check=check)


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so that every `finally` stops what it started


def run(main: Callable[[Sequence[str]], int], prog: str, interrupted: str) -> NoReturn:
    """Exits with `main(argv)`'s code; 1 with the message of a BenchError, 130 when interrupted
    (Ctrl-C or SIGTERM), after saying `interrupted` (what was cleaned up)."""
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        code = main(sys.argv[1:])
    except BenchError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; {interrupted}", file=sys.stderr)
        code = 130
    sys.exit(code)
