"""The gateway's instructions per proxied request between checkouts, counted by callgrind: a figure
that does not drift with the shared machine's speed.

Run from the repository root, with valgrind installed and the machine's PostgreSQL and Redis
(about 2 minutes per checkout, plus 2 for the direct row)::

    nice -n 19 .venv/bin/python -m bench.gateway_instructions HEAD 073fc0f [--tree]
        [--requests-seconds 30] [--idle-seconds 30] [--warmup 5] [--connections 4] [--rate R] [--breakdown]
        [--docs] [--docs-file PATH] [--database-url URL] [--redis-url URL]

Wall-clock CPU on this 2-vCPU VM drifts 15-25 % between runs minutes apart, so a lever of 2-5 %
cannot be seen in ``bench.gateway_ab``'s figures. ``valgrind --tool=callgrind`` counts the
instructions a process executes: the same total for the same work whatever else the machine does.
What it does:

1. Resolves the checkouts as ``bench.gateway_ab`` does (commits named, in order, then the working
   tree with ``--tree``) and prepares each the same way (``variants.commit_variant``: ``git
   archive``, its own scratch database ``<scratch>_<n>`` and Redis keys ``sentinel-instr-<n>:``,
   that code's own ``bench_setup``); starts the mock upstream the route points at. Before that, it
   waits (``--wait-minutes``, 30; 0: not at all) until no other benchmark runs: they do not change
   a count, but its valgrind would take a core from their timings.
2. For the direct row (the mock upstream alone, a second one) and then each checkout, one after
   the other: starts the server under callgrind with instrumentation off (``manage.py serve`` in
   issue 13's configuration: production mode, 1 web process, tracing off, the request log on;
   ``PYTHONHASHSEED=0``), waits until it answers (15-30 s under valgrind), warms it up with wrk,
   turns instrumentation on, zeroes the counters, runs ``wrk -t1 -c<connections>
   -d<requests-seconds>s``, dumps the counters; zeroes them, sleeps ``--idle-seconds``, dumps
   again: the idle process's background loops (timers, the route table's refresh), whose rate per
   second times the loaded seconds is taken out of the loaded count. Instructions per request =
   (loaded - idle rate x loaded seconds) / the requests wrk counted, all of which must be 2xx.
   With ``--rate R`` the load is ``bench.gateway.loadgen``'s open loop instead (R requests per
   second on a fixed schedule, warm-up included): the same requests whatever the server's speed,
   about one per event-loop turn. Either way, two counts of the same code in one run agree within
   about 1 %, two runs within about 2 % (the section says what was seen): compare by B/A.
3. Reads the loaded dump with ``callgrind_annotate``: the 15 C functions with the most own
   instructions, and with ``--breakdown`` a few groups (the eval loop, uvloop/libuv,
   httptools/llhttp, hiredis, psycopg/libpq, ``re``, malloc/free, the cyclic GC): their own
   instructions summed, and the largest inclusive figure among their functions.
4. Prints each checkout's instructions per request over the direct row's (``x direct``) and, for
   each pair (A named before B), B/A. With ``--docs``, writes the section between
   ``<!-- bench:gateway-instructions:start -->`` and ``...:end -->`` of docs/benchmarks.md,
   comparing each commit with the figure the section it replaces recorded for the same commit (the
   run-to-run repeatability), unless a server answered anything but 2xx or the tree changed.

The whole run renices itself to 19: counts do not depend on the CPU a process gets, so it yields to
everything else. Every process it starts is stopped (by its pid), the scratch databases dropped and
the Redis keys deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import gateway_ab as ab
from bench.common import DOCS_PATH, REPO, BenchError
from bench.common import callgrind as cg
from bench.common.cli import markers, publish_if_asked, run
from bench.common.gitstate import CodeState, code_state
from bench.common.markdown import fill, machine, table, utc_now
from bench.common.processes import Service, answers, run_timed, stop_service, wait_serving
from bench.common.quiet import wait_for_benchmarks
from bench.common.scratch import delete_keys, recreate_database, redis_client
from bench.gateway.config import Plan as RunPlan
from bench.gateway.config import secs
from bench.gateway.load import Load, LoadResult, parse_wrk
from bench.gateway.servers import prepare_data, sentinel_env, start_reference_servers
from bench.gateway.tools import Tools, find_tools, tool_version
from bench.gateway.variants import Variant, commit_variant
from tests.support.net import free_port

PROG = "python -m bench.gateway_instructions"
SECTION = "gateway-instructions"
TITLE = "Gateway instructions per proxied request (callgrind)"
TEMPLATE_PATH = Path(__file__).with_name("gateway_instructions.md.tmpl")
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/sentinel_instr"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/7"
# Not bench.gateway's `sentinel-bench`: the two may run against the same Redis.
KEY_PREFIX = "sentinel-instr"
DIRECT = "direct"
TOP_FUNCTIONS = 15
# Python under valgrind starts in 15-30 s on this machine; a loaded one takes longer.
STARTUP_TIMEOUT = 240.0
# String hashing seeded the same in every run: dict and set probing then repeats run to run.
SERVER_ENV = {"PYTHONHASHSEED": "0"}
OTHER_BENCHMARKS = (*ab.OTHER_BENCHMARKS, "bench.gateway_instructions")
# How to read --breakdown's table (its own column adds up; the inclusive one does not).
GROUPS_NOTE = (
    "`own` sums the group's functions' own instructions, each counted once; `largest inclusive` is its "
    "costliest function's with everything it called, Python callbacks included: for a recursive function "
    "(the eval loop) nested calls are counted again, so it can exceed the whole"
)
# The section's machine-readable line: each measured code's figure, read back by the next --docs run.
DATA_MARK = "<!-- bench:gateway-instructions:data "


# --- What a run is ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The checkouts named (commits, then the tree), the load's shape, whether to break the counts
    down, where the section goes (`docs`: None, printed only; the figures of the one in `recorded`
    are compared with this run's), the scratch database and Redis."""

    commits: tuple[str, ...]
    tree: bool
    seconds: float
    idle_seconds: float
    warmup: float
    connections: int
    rate: float | None  # requests/s on a fixed schedule (bench.gateway.loadgen) instead of wrk's closed loop
    breakdown: bool
    docs: Path | None
    database_url: str
    redis_url: str
    recorded: Path = DOCS_PATH  # whose section's figures this run's are compared with
    wait_minutes: float = 30.0  # for other benchmarks to finish first (0: do not wait)

    def command(self) -> str:
        """The command line that makes this run (the database and Redis left out)."""
        words = ["nice -n 19 .venv/bin/python -m bench.gateway_instructions", *self.commits]
        words += ["--tree"] if self.tree else []
        words += [f"--requests-seconds {secs(self.seconds)}", f"--idle-seconds {secs(self.idle_seconds)}"]
        words += [f"--warmup {secs(self.warmup)}", f"--connections {self.connections}"]
        words += [f"--rate {secs(self.rate)}"] if self.rate else []
        return " ".join(words + (["--breakdown"] if self.breakdown else []))

    def run_plan(self) -> RunPlan:
        """The figures `bench.gateway`'s helpers read (only the database and Redis matter here)."""
        return RunPlan(
            duration=self.seconds,
            warmup=self.warmup,
            single_duration=self.seconds,
            connections=self.connections,
            profile_seconds=0.0,
            quick=False,
            retries=0,
            variants=False,
            rounds=1,
            baseline=None,
            database_url=self.database_url,
            redis_url=self.redis_url,
            docs=self.docs or DOCS_PATH,
            readme=None,
        )

    def ab_plan(self) -> ab.Plan:
        """The same checkouts as `bench.gateway_ab` names them (`ab.resolve_checkouts`)."""
        return ab.Plan(self.commits, self.tree, 1, False, None, self.run_plan())


def parse_args(argv: Sequence[str]) -> Plan:
    """The options of `python -m bench.gateway_instructions`; exits with argparse's message when one
    is wrong."""
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("commits", nargs="*", metavar="COMMIT", help="commits to count (HEAD, 073fc0f, a tag)")
    parser.add_argument("--tree", action="store_true", help="also the working tree as it is, after the commits")
    parser.add_argument("--requests-seconds", type=float, default=30.0, help="seconds of the measured load (30)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="seconds of the idle count after it (30)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before counting (5)")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections (4)")
    parser.add_argument(
        "--rate", type=float, help="open loop: requests/s on a fixed schedule (python loadgen), not wrk's closed loop"
    )
    parser.add_argument("--breakdown", action="store_true", help="also the eval loop, uvloop, httptools, ... groups")
    parser.add_argument(
        "--wait-minutes",
        type=float,
        default=30.0,
        help="minutes to wait for other benchmarks (wrk, python -m bench.*) to end first; 0: start at once (30)",
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="scratch databases' prefix (<it>_<n>)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help=f"Redis; keys under {KEY_PREFIX}-<n>:")
    parser.add_argument("--docs", action="store_true", help="write the section to the docs (else printed only)")
    parser.add_argument("--docs-file", type=Path, default=DOCS_PATH, help="the file --docs writes (docs/benchmarks.md)")
    args = parser.parse_intermixed_args(argv)
    if not args.commits and not args.tree:
        parser.error("name at least one commit, or --tree")
    rate = 1.0 if args.rate is None else args.rate
    if min(args.requests_seconds, args.idle_seconds, args.warmup, rate) <= 0 or args.connections < 1:
        parser.error("--requests-seconds, --idle-seconds, --warmup and --rate must be > 0, --connections >= 1")
    return Plan(
        commits=tuple(args.commits),
        tree=bool(args.tree),
        seconds=args.requests_seconds,
        idle_seconds=args.idle_seconds,
        warmup=args.warmup,
        connections=args.connections,
        rate=args.rate,
        breakdown=bool(args.breakdown),
        docs=args.docs_file if args.docs else None,
        database_url=args.database_url,
        redis_url=args.redis_url,
        recorded=args.docs_file,
        wait_minutes=max(0.0, args.wait_minutes),
    )


# --- A row's figures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    """A target's count (`cg.Count`), the loaded run's wrk result, the functions with the most own
    instructions in the loaded dump, and its groups (`--breakdown`; else empty)."""

    target: str
    code: str  # the commit measured ('' when uncommitted changes make it no commit's)
    count: cg.Count
    load: LoadResult
    total: int  # the loaded dump's, as callgrind_annotate reads it
    top: list[cg.FunctionCost]
    groups: list[cg.GroupCost] = field(default_factory=list)


@dataclass
class Results:
    """Every target measured (the direct row first), what makes the figures meaningless, the code
    of this checkout when the run started, and the seconds it took."""

    rows: list[Measured] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    code: CodeState | None = None
    seconds: float = 0.0

    def row(self, target: str) -> Measured | None:
        return next((row for row in self.rows if row.target == target), None)


def times_direct(row: Measured, results: Results) -> float | None:
    """A row's instructions per request over the direct row's; None without one."""
    direct = results.row(DIRECT)
    return cg.ratio(row.count.per_request, direct.count.per_request) if direct else None


def pairs(results: Results, labels: list[str]) -> list[tuple[str, str, float]]:
    """(A, B, B/A of their instructions per request) for every pair of `labels`, A named first."""
    found = []
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            row_a, row_b = results.row(a), results.row(b)
            if row_a and row_b and (value := cg.ratio(row_b.count.per_request, row_a.count.per_request)):
                found.append((a, b, value))
    return found


# --- Running the servers under callgrind ---------------------------------------------------------


def wrk_run(wrk: str, url: str, jwt: str, connections: int, seconds: float) -> LoadResult:
    """`wrk -t1 -c<connections> -d<seconds>s --latency` with the bench user's token."""
    args = [wrk, "-t1", f"-c{connections}", f"-d{secs(seconds)}s", "--latency"]
    shown = " ".join([*args[1:], '-H "Authorization: Bearer $JWT"', "URL"])
    text, cpu = run_timed([*args, "-H", f"Authorization: Bearer {jwt}", url], timeout=seconds + 120)
    return parse_wrk(text, cpu, f"wrk {shown}")


@contextlib.contextmanager
def under_callgrind(
    name: str, args: list[str], *, root: Path, env: dict[str, str], tmp: Path, ready: str, port: int, jwt: str
) -> Iterator[tuple[Service, Path]]:
    """`args` (a Python server on `port`, run in `root`) under callgrind, instrumentation off,
    until `ready` answers 200 five times: (it, its dumps' path less the `.n`); stopped at the end."""
    out = tmp / f"{name}.callgrind"
    log = tmp / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            cg.valgrind_args(out, args), cwd=root, env={**env, **SERVER_ENV},
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    service = Service(name, process, log)
    try:
        check = lambda: answers(port, ready, {"Authorization": f"Bearer {jwt}"}, times=5)  # noqa: E731
        wait_serving(check, what=f"{name} under callgrind", service=service, timeout=STARTUP_TIMEOUT)
        yield service, out
    finally:
        stop_service(service, grace=30.0)  # valgrind writes its last dump on the way out


def drive(plan: Plan, wrk: str, url: str, jwt: str, seconds: float) -> LoadResult:
    """`seconds` of load: wrk's closed loop, or with `--rate` the Python generator's open loop
    (its requests, rate x seconds, are then the same whatever the server's speed)."""
    if plan.rate:
        return Load(None, jwt).open(url, rate=plan.rate, duration=seconds)
    return wrk_run(wrk, url, jwt, plan.connections, seconds)


def count_load(
    plan: Plan, wrk: str, service: Service, out: Path, url: str, jwt: str
) -> tuple[cg.Count, LoadResult, Path]:
    """Warm-up, then the counted load and the idle count after it: (the count, the load's result,
    the loaded dump's path)."""
    drive(plan, wrk, url, jwt, plan.warmup)
    cg.control(service.pid, "-i", "on")
    cg.control(service.pid, "-z")
    started = time.monotonic()
    load = drive(plan, wrk, url, jwt, plan.seconds)
    loaded_seconds = time.monotonic() - started
    loaded_dump, loaded_ir = cg.dump(service.pid, out)
    cg.control(service.pid, "-z")
    started = time.monotonic()
    time.sleep(plan.idle_seconds)
    idle_seconds = time.monotonic() - started
    _, idle_ir = cg.dump(service.pid, out)
    return cg.Count(load.requests, loaded_ir, loaded_seconds, idle_ir, idle_seconds), load, loaded_dump


def measure(plan: Plan, target: str, code: str, counted: tuple[cg.Count, LoadResult, Path]) -> Measured:
    """A target's row from its count and its loaded dump, read by callgrind_annotate."""
    count, load, loaded_dump = counted
    own = cg.annotate(loaded_dump)
    groups = cg.group_costs(own, cg.annotate(loaded_dump, inclusive=True)) if plan.breakdown else []
    return Measured(target, code, count, load, own.total, own.functions[:TOP_FUNCTIONS], groups)


def say(row: Measured) -> None:
    count = row.count
    print(
        f"   {row.target}: {count.requests:,} requests, {count.loaded_ir / 1e9:.3f} G instructions in "
        f"{count.loaded_seconds:.1f} s, idle {count.idle_rate / 1e6:.2f} M/s: "
        f"{count.per_request / 1e3:,.1f} k instructions per request",
        flush=True,
    )


def check_clean(row: Measured, failures: list[str]) -> None:
    """Adds to `failures` a target whose load was not all 2xx, or served nothing."""
    load = row.load
    if load.non2xx or load.socket_errors or not load.requests:
        failures.append(
            f"{row.target}: {load.requests} requests, {load.non2xx} non-2xx, {load.socket_errors} socket errors"
        )


# --- The checkouts ------------------------------------------------------------------------------


def prepare(
    plan: Plan, checkout: ab.Checkout, number: int, secret_key: str, stack: contextlib.ExitStack, tmp: Path, url: str
) -> Variant:
    """Checkout `number`'s code and data (`<scratch>_<number>`, keys under `sentinel-instr-<number>:`),
    its route to the upstream at `url`; dropped when `stack` closes."""
    database_url = f"{plan.database_url.rstrip('/')}_{number}"
    key_prefix = f"{KEY_PREFIX}-{number}"
    if checkout.commit is not None:
        variant = commit_variant(
            plan.run_plan(), secret_key, stack, checkout.commit, url,
            name=checkout.label, root=tmp / f"checkout-{number}", database_url=database_url, key_prefix=key_prefix,
        )  # fmt: skip
        return Variant(variant.name, {**variant.env, **ab.ISSUE_CONFIGURATION}, variant.root, variant.jwt)
    # The working tree: commit_variant less the extraction.
    stack.callback(recreate_database, database_url, create=False)
    client = redis_client(plan.redis_url)
    delete_keys(client, f"{key_prefix}:*")
    stack.callback(delete_keys, client, f"{key_prefix}:*")
    env = {"DATABASE_URL": database_url, "CACHE_KEY_PREFIX": key_prefix}
    jwt = prepare_data(database_url, sentinel_env(plan.run_plan(), secret_key, 1, **env), url)
    return Variant(checkout.label, {**env, **ab.ISSUE_CONFIGURATION}, REPO, jwt)


def count_direct(plan: Plan, wrk: str, env: dict[str, str], jwt: str, code: str, tmp: Path) -> Measured:
    """The mock upstream alone (a second one, not the route's), under callgrind: the direct row."""
    print(f"-> {DIRECT}: the mock upstream alone, under callgrind", flush=True)
    port = free_port()
    args = [sys.executable, "-m", "gateway.mock_upstream", "--port", str(port)]
    with under_callgrind(DIRECT, args, root=REPO, env=env, tmp=tmp, ready="/health", port=port, jwt=jwt) as served:
        return measure(plan, DIRECT, code, count_load(plan, wrk, *served, f"http://127.0.0.1:{port}/", jwt))


def count_checkout(plan: Plan, wrk: str, variant: Variant, secret_key: str, code: str, tmp: Path) -> Measured:
    """`manage.py serve` of a checkout under callgrind, from its tree and with its data."""
    print(f"-> {variant.name}: manage.py serve under callgrind", flush=True)
    port, jwt = free_port(), variant.jwt or ""
    args = [sys.executable, "manage.py", "serve", "--port", str(port)]
    env = sentinel_env(plan.run_plan(), secret_key, 1, **variant.env)
    name = "sentinel-" + re.sub(r"\W+", "-", variant.name).strip("-")
    with under_callgrind(
        name, args, root=variant.root, env=env, tmp=tmp, ready="/proxy/", port=port, jwt=jwt
    ) as served:
        return measure(plan, variant.name, code, count_load(plan, wrk, *served, f"http://127.0.0.1:{port}/proxy/", jwt))


def run_counts(plan: Plan, checkouts: list[ab.Checkout], wrk: str, stack: contextlib.ExitStack, tmp: Path) -> Results:
    """The direct row, then each checkout, one at a time under callgrind; whatever it starts is
    stopped, and the scratch data dropped, when `stack` closes."""
    started = time.monotonic()
    results = Results(code=code_state())
    head = results.code.commit if results.code and not results.code.dirty else ""
    secret_key = secrets.token_urlsafe(50)
    upstream_port = free_port()
    url = f"http://127.0.0.1:{upstream_port}"
    chosen = []
    for number, checkout in enumerate(checkouts, start=1):
        print(f"preparing {checkout.label} ({checkout.about[:70]}) ...", flush=True)
        chosen.append(prepare(plan, checkout, number, secret_key, stack, tmp, url))
    env = sentinel_env(plan.run_plan(), secret_key)
    start_reference_servers(stack, Tools(), tmp, env, upstream_port)
    # The direct row sends the same request, the first checkout's token included (the mock ignores it).
    rows = [count_direct(plan, wrk, env, chosen[0].jwt or "", head, tmp)]
    say(rows[-1])
    for checkout, variant in zip(checkouts, chosen, strict=True):
        rows.append(count_checkout(plan, wrk, variant, secret_key, checkout.commit or head, tmp))
        say(rows[-1])
    for row in rows:
        check_clean(row, results.failures)
    results.rows, results.seconds = rows, time.monotonic() - started
    return results


# --- The section ----------------------------------------------------------------------------------


def kilo(value: float) -> str:
    """Instructions in thousands, one decimal: `771.3`."""
    return f"{value / 1e3:,.1f}"


def data_key(row: Measured) -> str | None:
    """What a figure is recorded under for the next run to compare with: the commit, `direct@` or
    `tree@` it for the direct row and the working tree (run from its own folder, not an extracted
    one); None for uncommitted code."""
    if not row.code:
        return None
    return f"{row.target}@{row.code}" if row.target in (DIRECT, ab.TREE) else row.code


def recorded(path: Path) -> tuple[str, dict[str, float]]:
    """The date and figures (instructions per request by `data_key`) of the section in `path`;
    ('', {}) when there is none."""
    text = path.read_text() if path.exists() else ""
    start = text.find(DATA_MARK)
    if start == -1:
        return "", {}
    end = text.find(" -->", start)
    with contextlib.suppress(ValueError, TypeError):
        data = json.loads(text[start + len(DATA_MARK) : end])
        return str(data["date"]), {str(k): float(v) for k, v in data["per_request"].items()}
    return "", {}


def data_line(results: Results, date: str) -> str:
    """The section's machine-readable line: this run's figures by `data_key` (the first of a key)."""
    figures: dict[str, float] = {}
    for row in results.rows:
        if (key := data_key(row)) is not None:
            figures.setdefault(key, round(row.count.per_request, 1))
    return DATA_MARK + json.dumps({"date": date, "per_request": figures}) + " -->"


def against(row: Measured, previous: dict[str, float]) -> str:
    """The previous run's figure of the same code, and this one's difference from it: `771.0 (+0.04 %)`."""
    key = data_key(row)
    before = previous.get(key) if key else None
    if not before:
        return "-"
    return f"{kilo(before)} ({(row.count.per_request / before - 1) * 100:+.2f} %)"


def summary_table(results: Results, previous: dict[str, float]) -> str:
    """Per target: the requests, the loaded count and seconds, the idle rate, the background's
    share, instructions per request, that over the direct row's, and the previous run's figure."""
    headers = ["target", "requests", "non-2xx", "counted G instr", "s", "idle M instr/s", "background"]
    headers += ["k instr/request", "x direct", "previous run, k (diff)"]
    body = []
    for row in results.rows:
        count = row.count
        multiple = times_direct(row, results)
        body.append(
            [
                row.target, f"{count.requests:,}", str(row.load.non2xx + row.load.socket_errors),
                f"{count.loaded_ir / 1e9:.3f}", f"{count.loaded_seconds:.1f}", f"{count.idle_rate / 1e6:.2f}",
                f"{count.background / count.loaded_ir:.1%}" if count.loaded_ir else "-",
                kilo(count.per_request), f"{multiple:.3f}" if multiple else "-", against(row, previous),
            ]
        )  # fmt: skip
    return table(headers, body)


def pairs_table(results: Results, labels: list[str]) -> str:
    """Per pair of checkouts: B/A of their instructions per request."""
    found = pairs(results, labels)
    if not found:
        return "(one checkout: no pairs)"
    return table(["A", "B", "B/A, instructions per request"], [[a, b, f"{value:.4f}"] for a, b, value in found], left=2)


def functions_table(row: Measured) -> str:
    """The functions with the most own instructions in a target's loaded dump, per request."""
    requests = max(1, row.count.requests)
    body = [
        [f"`{f.name}`", Path(f.obj).name or "-", kilo(f.ir / requests), f"{f.ir / row.total:.1%}" if row.total else "-"]
        for f in row.top
    ]
    return table(["function", "object", "own k instr/request", "share"], body, left=2)


def groups_table(row: Measured) -> str:
    """`--breakdown`'s groups in a target's loaded dump, per request."""
    requests = max(1, row.count.requests)
    headers = ["group", "functions", "own k instr/request", "own share", "largest inclusive, k instr/request"]
    body = [
        [g.name, str(g.functions), kilo(g.own / requests), f"{g.own / row.total:.1%}" if row.total else "-",
         kilo(g.inclusive / requests)]
        for g in row.groups
    ]  # fmt: skip
    return table(headers, body)


def per_target(results: Results) -> str:
    """Each target's function table, and its groups with `--breakdown`."""
    parts = []
    for row in results.rows:
        parts.append(
            f"### {row.target}: the {len(row.top)} functions with the most own instructions\n\n{functions_table(row)}"
        )
        if row.groups:
            parts.append(f"{row.target}, by group (`--breakdown`; {GROUPS_NOTE}):\n\n{groups_table(row)}")
    return "\n\n".join(parts)


def render(plan: Plan, checkouts: list[ab.Checkout], results: Results, previous: tuple[str, dict[str, float]]) -> str:
    """The whole marked section, markers and the data line included."""
    start, end = markers(SECTION)
    date = utc_now()
    failures = "".join(f"\n- **failed**: {failure}" for failure in results.failures)
    before_date, before = previous
    figures: dict[str, object] = {
        **machine(),
        "start": start,
        "end": end,
        "title": TITLE,
        "date": date,
        "command": plan.command(),
        "code": results.code.describe() if results.code else "?",
        "valgrind": tool_version(["valgrind", "--version"]),
        "minutes": f"{results.seconds / 60:.1f}",
        "load_command": results.rows[0].load.command if results.rows else "?",
        "warmup": secs(plan.warmup),
        "idle": secs(plan.idle_seconds),
        "previous": f"the section this one replaced (recorded {before_date})"
        if before
        else "an earlier run (none recorded)",
        "checkouts": "\n".join(f"- `{checkout.label}`: {checkout.about}" for checkout in checkouts),
        "summary_table": summary_table(results, before),
        "pairs_table": pairs_table(results, [checkout.label for checkout in checkouts]),
        "per_target": per_target(results),
        "failures": failures and "\n" + failures.lstrip("\n") + "\n",
        "data": data_line(results, date),
    }
    return fill(TEMPLATE_PATH, figures)


def publish(plan: Plan, section: str, results: Results) -> None:
    """Prints the section, then writes it where `plan.docs` says, unless there is nowhere to write
    or the figures must not be recorded (BenchError saying why)."""
    refusal = (
        "a server answered errors, so these figures do not count the proxy (docs not written)"
        if results.failures
        else None
    )
    publish_if_asked(plan.docs, SECTION, section, refusal=refusal, unchanged=results.code if plan.tree else None)


def main(argv: Sequence[str]) -> int:
    """Runs everything; 0 once the section is printed (and written with `--docs`)."""
    plan = parse_args(argv)
    # Counts do not depend on the CPU a process gets: yield it to everything else (children inherit).
    os.setpriority(os.PRIO_PROCESS, 0, 19)
    if missing := cg.tools_missing():
        raise BenchError(f"{', '.join(missing)} not found: make bench-tools (Debian's valgrind)")
    wrk = find_tools().wrk
    if wrk is None:
        raise BenchError("wrk not found: make bench-tools")
    checkouts = ab.resolve_checkouts(plan.ab_plan())
    previous = recorded(plan.recorded)
    # Other benchmarks do not change a count, but this one's valgrind would take a core from theirs.
    if plan.wait_minutes:
        wait_for_benchmarks(OTHER_BENCHMARKS, plan.wait_minutes)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sentinel-instr-")))
        results = run_counts(plan, checkouts, wrk, stack, tmp)
    publish(plan, render(plan, checkouts, results, previous), results)
    print(f"\n{results.seconds / 60:.1f} minutes")
    if results.failures:
        print("\n".join(["", "failures:", *results.failures]))
        return 1
    return 0


if __name__ == "__main__":
    run(main, PROG, "processes stopped, scratch data dropped")
