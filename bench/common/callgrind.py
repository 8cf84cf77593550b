"""A server under ``valgrind --tool=callgrind``: its instructions counted while a load runs, the
idle background's rate, and ``callgrind_annotate``'s function table, read into figures.

Callgrind counts the instructions a process executes (``Ir``): the same total for the same work
whatever else the machine does, where CPU time on a shared machine drifts by tens of percent. The
server starts with instrumentation off (``--instr-atstart=no``: its start-up runs at a fraction of
valgrind's usual slowdown); ``callgrind_control -i on`` turns it on once warm, ``-z`` zeroes the
counters and ``-d`` writes them to a new dump file (``<out>.<n>``), whose ``summary:`` line is
the total. (``--collect-atstart=no`` is no substitute: ``-i on`` does not turn its collection on.)

The parsing and the arithmetic are plain functions of text and numbers, for the tests.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.common import BenchError

VALGRIND_OPTIONS = ("--tool=callgrind", "--instr-atstart=no")
# A dump of a server that ran a load is written in a second or two; past this, something is wrong.
DUMP_TIMEOUT = 120.0
_TOTAL_LINE = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)
# A row of callgrind_annotate's function table: `1,234 ( 5.67%)  file:function'2 [object]`. The
# percentage is absent with --show-percs=no; the object when the code was inlined from a header.
_ROW = re.compile(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(\S.*?)(?:\s+\[([^\]]*)\])?\s*$")
# callgrind's name of the n-th level of a recursive function: `_PyEval_EvalFrameDefault'2`.
_RECURSION = re.compile(r"'\d+$")


def tools_missing() -> list[str]:
    """The callgrind tools not on the PATH (`apt-get install valgrind` brings all three)."""
    return [name for name in ("valgrind", "callgrind_control", "callgrind_annotate") if shutil.which(name) is None]


def valgrind_args(out: Path, args: list[str]) -> list[str]:
    """`args` run under callgrind, instrumentation off until `control(pid, "-i", "on")`, the dumps
    written to `out.<n>`."""
    return ["valgrind", *VALGRIND_OPTIONS, f"--callgrind-out-file={out}", *args]


# --- Reading a dump and callgrind_annotate's table ----------------------------------------------


def dump_total(text: str) -> int:
    """A dump's total instructions: its `summary:` line (or `totals:`); BenchError when it has none."""
    match = _TOTAL_LINE.search(text)
    if match is None:
        raise BenchError("a callgrind dump without a summary: or totals: line")
    return int(match.group(1))


@dataclass(frozen=True)
class FunctionCost:
    """A function's instructions in a dump (its own, or inclusive of its callees): its name less
    callgrind's recursion suffix, the file it was first found in, and its object ('' when unnamed)."""

    name: str
    file: str
    obj: str
    ir: int

    def where(self) -> str:
        """`file:function [object]`, as callgrind_annotate writes it: what the groups match."""
        return f"{self.file}:{self.name} [{self.obj}]"


@dataclass(frozen=True)
class Annotated:
    """callgrind_annotate's reading of a dump: the program's total and the functions, the costliest
    first."""

    total: int
    functions: list[FunctionCost]


def parse_annotate(text: str) -> Annotated:
    """callgrind_annotate's output: the `PROGRAM TOTALS` line and the function table. A function's
    rows (one per recursion level `'n`, and one per file its code was inlined from) are summed into
    one; BenchError when there is no total."""
    total: int | None = None
    merged: dict[str, FunctionCost] = {}
    for line in text.splitlines():
        match = _ROW.match(line)
        if match is None:
            continue
        ir, where, obj = int(match.group(1).replace(",", "")), match.group(2), match.group(3) or ""
        if where == "PROGRAM TOTALS":
            total = ir
            continue
        file, colon, function = where.partition(":")
        if not colon:
            continue  # a header line of the table, not a function
        name = _RECURSION.sub("", function)
        known = merged.get(name)
        if known is None:
            merged[name] = FunctionCost(name, file, obj, ir)
        else:
            merged[name] = FunctionCost(name, known.file, known.obj or obj, known.ir + ir)
    if total is None:
        raise BenchError("callgrind_annotate printed no PROGRAM TOTALS")
    return Annotated(total, sorted(merged.values(), key=lambda f: (-f.ir, f.name)))


@dataclass(frozen=True)
class Group:
    """Functions that make one part of the server (the eval loop, uvloop), by a pattern matched
    against `FunctionCost.where()`."""

    name: str
    pattern: str

    def members(self, functions: Iterable[FunctionCost]) -> list[FunctionCost]:
        return [f for f in functions if re.search(self.pattern, f.where())]


# What `--breakdown` sums. Objects are matched by their file name: uvloop's loop.*.so holds libuv,
# httptools' parser.*.so holds llhttp, hiredis' .so its C library.
GROUPS = (
    Group("CPython eval loop", r":_PyEval_EvalFrameDefault \["),
    Group("uvloop/libuv", r"uvloop/|:uv__?[a-z]"),
    Group("httptools/llhttp", r"httptools/|:llhttp_"),
    Group("hiredis", r"hiredis"),
    Group("psycopg/libpq", r"psycopg|libpq"),
    Group("re (sre_*)", r"_sre/|_sre\.c|sre_lib\.h|:_?sre_|:SRE_"),
    # The cyclic collector: a collection of the older generations walks every tracked object, so
    # one more or one fewer during a count moves it by up to about 1 %.
    Group("cyclic GC", r"gcmodule\.c:"),
    Group(
        "malloc/free",
        r"obmalloc\.c:|/malloc/|:(malloc|free|calloc|realloc|cfree|_int_(malloc|free|realloc)|malloc_consolidate"
        r"|tcache_\w+|unlink_chunk\S*|_?PyObject_(Malloc|Free|Calloc|Realloc)|_?PyMem_\w+|pymalloc_\w+) \[",
    ),
)


@dataclass(frozen=True)
class GroupCost:
    """A group's instructions in a dump: its functions' own, summed (each instruction counted
    once), and the largest inclusive figure among them (its outermost entry point's, callees from
    other groups included; a recursive function's exceeds the whole, its nested calls counted again)."""

    name: str
    own: int
    inclusive: int
    functions: int


def group_costs(own: Annotated, inclusive: Annotated | None, groups: Iterable[Group] = GROUPS) -> list[GroupCost]:
    """Each of `groups` in `own` (callgrind_annotate's default table) and `inclusive` (its
    `--inclusive=yes` table; 0 without one)."""
    found = []
    for group in groups:
        members = group.members(own.functions)
        outer = group.members(inclusive.functions) if inclusive else []
        found.append(
            GroupCost(group.name, sum(f.ir for f in members), max((f.ir for f in outer), default=0), len(members))
        )
    return found


# --- The arithmetic -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Count:
    """A measured load: the requests served, the instructions counted over `loaded_seconds`, and the
    idle process's instructions over `idle_seconds` just after (its background loops)."""

    requests: int
    loaded_ir: int
    loaded_seconds: float
    idle_ir: int
    idle_seconds: float

    @property
    def idle_rate(self) -> float:
        """The background's instructions per second."""
        return self.idle_ir / self.idle_seconds if self.idle_seconds > 0 else 0.0

    @property
    def background(self) -> float:
        """The background's share of the loaded count: its rate over the loaded seconds."""
        return self.idle_rate * self.loaded_seconds

    @property
    def per_request(self) -> float:
        """Instructions per request, the background taken out; 0 when no request was served."""
        return (self.loaded_ir - self.background) / self.requests if self.requests else 0.0


def ratio(b: float, a: float) -> float | None:
    """`b` / `a`; None when `a` is 0 (nothing measured)."""
    return b / a if a else None


# --- Driving a process under callgrind -----------------------------------------------------------


def control(pid: int, *args: str) -> str:
    """`callgrind_control <args> <pid>`'s output; BenchError when it fails."""
    result = subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise BenchError(f"callgrind_control {' '.join(args)} {pid}: {(result.stdout + result.stderr).strip()}")
    return result.stdout


def dumps(out: Path) -> set[Path]:
    """The dump files of the process writing to `out`: `out.1`, `out.2`, ..."""
    return {path for path in out.parent.glob(out.name + ".*") if path.suffix[1:].isdigit()}


def dump(pid: int, out: Path) -> tuple[Path, int]:
    """Asks the process to write its counters (`callgrind_control -d`) and waits until the new dump
    is whole (its `totals:` line comes last): (its path, its total)."""
    before = dumps(out)
    control(pid, "-d")
    deadline = time.monotonic() + DUMP_TIMEOUT
    while time.monotonic() < deadline:
        for path in sorted(dumps(out) - before):
            text = path.read_text(errors="replace")
            if "\ntotals:" in text:
                return path, dump_total(text)
        time.sleep(0.2)
    raise BenchError(f"callgrind wrote no whole dump beside {out} within {DUMP_TIMEOUT:.0f} s")


def annotate(path: Path, *, inclusive: bool = False) -> Annotated:
    """callgrind_annotate's function table of the dump at `path`, every function (`--threshold=100`),
    no source annotation."""
    args = ["callgrind_annotate", "--threshold=100", "--auto=no", f"--inclusive={'yes' if inclusive else 'no'}"]
    result = subprocess.run([*args, str(path)], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise BenchError(f"callgrind_annotate {path}: {result.stderr.strip()}")
    return parse_annotate(result.stdout)
