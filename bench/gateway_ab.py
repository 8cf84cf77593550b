"""A/B of the gateway's CPU per proxied request between checkouts: commits, and the working tree.

Run from the repository root, after ``make bench-tools`` (wrk; py-spy for ``--profile``), with the
machine's PostgreSQL and Redis (a few minutes)::

    .venv/bin/python -m bench.gateway_ab 154044e 40ba491 HEAD [--tree] [--rounds 5] [--seconds 5]
        [--connections 64] [--warmup 2] [--retries 2] [--profile] [--docs] [--docs-file PATH]
        [--database-url URL] [--redis-url URL]

It answers "how much CPU does a proxied request cost at this commit against that one", the figure
issue 13's levers were judged by, with ``bench.gateway``'s pieces (the module doing each step in
brackets, under ``bench/gateway/``):

1. Resolves every commit named (``git log``: a wrong name fails before anything starts). The same
   commit may be named twice (``HEAD 073fc0f`` when they are one): two rows of the same code, whose
   ratio shows the noise. ``--tree`` adds the working tree as it is, uncommitted changes included.
2. Waits until no other benchmark runs (wrk, ``python -m bench.<name>``) and the machine is quiet.
3. Prepares each checkout's code and data: a commit is extracted with ``git archive`` under a
   temporary folder (its gRPC stubs generated), with a scratch database ``<scratch>_ab<n>`` and
   Redis keys under ``sentinel-bench-ab<n>:`` of its own, migrated and set up by that commit's own
   ``manage.py bench_setup``, as ``bench.gateway --baseline`` does (``variants.commit_variant``);
   the working tree uses the scratch database itself (``servers.prepare_data``). Then starts the
   mock upstream (``servers.start_reference_servers``; no nginx).
4. Starts one ``manage.py serve`` per checkout, all at once (each idle while another is loaded),
   in issue 13's configuration: production mode, 1 web process, tracing off, the request log on
   (``variants.serve_variant``). The direct target (the mock upstream alone) and every checkout are
   warmed up until their rate is steady (``measure.warm_up``).
5. Runs ``--rounds`` interleaved rounds: the direct row (wrk straight at the mock upstream), then
   every checkout, their order rotated by one each round so that none always runs right after the
   direct row. Each run is a warm-up of ``--warmup`` s, then ``wrk -t2 -c<connections>
   -d<seconds>s`` (``measure.round_run``), with the CPU of the server's process tree from psutil:
   a run during which processes this benchmark did not start took more than 0.1 core is run again
   once the machine is quiet, up to ``--retries`` times (``measure.measured``). Each round's table
   is printed when it ends: req/s, the server's CPU µs per request, and that as a multiple of the
   same round's direct row's (``times direct``).
6. With ``--profile``, records each checkout with ``py-spy`` under load once after the rounds
   (``profile.profile_sentinel``), shown as ``bench.gateway``'s report shows its profile.
7. Prints the summary: per checkout, over the rounds, the median CPU µs per request, its min-max,
   the median of its per-round multiples of the direct row and the median req/s; and for each pair
   of checkouts (A named before B) the median of the per-round ratios B/A of their µs per request.
   The shared machine's speed drifts by tens of percent over minutes; within one round A and B run
   seconds apart, so B/A is the figure that survives the drift, and its min-max is the noise to
   read it by.

Nothing is written unless ``--docs`` is given: then the section between
``<!-- bench:gateway-ab:start -->`` and ``<!-- bench:gateway-ab:end -->`` of docs/benchmarks.md (or
``--docs-file``) is replaced, or appended when there is none, saying the command and the date; not
when a Sentinel answered anything but 2xx, nor when the working tree measured by ``--tree`` changed
during the run. Every process it starts is stopped at the end (SIGTERM, then SIGKILL), and the
scratch databases and Redis keys are dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import secrets
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from textwrap import shorten
from typing import TypeVar

from bench.common import DEFAULT_REDIS_URL, DOCS_PATH, REPO
from bench.common.cli import markers, publish_if_asked, run
from bench.common.cpu import local_pid
from bench.common.gitstate import CodeState, code_state, commit_of
from bench.common.markdown import NONE, count, fill, machine, ms, table, utc_now
from bench.common.processes import Service
from bench.common.quiet import wait_for_benchmarks, wait_quiet
from bench.common.scratch import recreate_database, redis_client
from bench.gateway.config import DEFAULT_DATABASE_URL, KEY_PREFIX, OTHER_LIMIT, secs
from bench.gateway.config import Plan as RunPlan
from bench.gateway.figures import TIMES_DIRECT, cores, times_cell, us_per_request
from bench.gateway.load import Load
from bench.gateway.measure import Row, Target, VariantRow, check_clean, round_run, warm_up
from bench.gateway.profile import Profile, profile_sentinel
from bench.gateway.report import profile_section
from bench.gateway.servers import delete_bench_keys, prepare_data, sentinel_env, start_reference_servers
from bench.gateway.tools import Tools, find_tools, versions
from bench.gateway.variants import Variant, commit_variant, serve_variant
from tests.support.net import free_port

PROG = "python -m bench.gateway_ab"
SECTION = "gateway-ab"
TITLE = "Gateway A/B: CPU per proxied request between commits"
# The section's prose (``string.Template``: ``$name`` filled in).
TEMPLATE_PATH = Path(__file__).with_name("gateway_ab.md.tmpl")
DIRECT = "direct"
TREE = "tree"
# Issue 13's configuration, whatever the caller's shell says.
ISSUE_CONFIGURATION = {"ENABLE_TRACING": "false", "REQUEST_LOG_ENABLED": "true"}
# Benchmarks whose load would be measured as ours: waited for before starting (wrk is found too).
OTHER_BENCHMARKS = (
    "bench.gateway",
    "bench.gateway_ab",
    "bench.rules",
    "bench.logpipe",
    "bench.monitors",
    "bench.fraud",
)
WAIT_MINUTES = 20.0
# A commit's subject is said up to this many characters (this repository's run long).
SUBJECT_WIDTH = 100
# As long as bench.gateway's profile: 1,600 samples at py-spy's 200 Hz.
PROFILE_SECONDS = 8.0


T = TypeVar("T")


# --- What a run is ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The checkouts named (commits as written, in order, then the tree), how many rounds, whether
    to profile and where the section goes (`docs`: None, printed only); `run` holds the figures
    ``bench.gateway``'s functions read (durations, connections, retries, scratch database, Redis)."""

    commits: tuple[str, ...]
    tree: bool
    rounds: int
    profile: bool
    docs: Path | None
    run: RunPlan

    def command(self) -> str:
        """The command line that makes this run (the database and Redis left out)."""
        words = [".venv/bin/python -m bench.gateway_ab", *self.commits, *(["--tree"] if self.tree else [])]
        words += [f"--rounds {self.rounds}", f"--seconds {secs(self.run.duration)}"]
        words += [f"--connections {self.run.connections}", f"--warmup {secs(self.run.warmup)}"]
        words += [f"--retries {self.run.retries}", *(["--profile"] if self.profile else [])]
        return " ".join(words)


def parse_args(argv: Sequence[str]) -> Plan:
    """The options of `python -m bench.gateway_ab`; exits with argparse's message when one is wrong."""
    parser = argparse.ArgumentParser(prog=PROG, description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "commits",
        nargs="*",
        metavar="COMMIT",
        help="commits to compare (HEAD, 073fc0f, a tag); B/A is of a later one over an earlier one",
    )
    parser.add_argument("--tree", action="store_true", help="also the working tree as it is, after the commits")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of each measured run (5)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of the warm-up before each run (2)")
    parser.add_argument("--retries", type=int, default=2, help="re-runs of a run that other processes disturbed (2)")
    parser.add_argument("--profile", action="store_true", help="py-spy each checkout under load after the rounds")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="scratch database (dropped and created)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help=f"Redis; keys under {KEY_PREFIX}(-ab<n>):")
    parser.add_argument("--docs", action="store_true", help="write the section to the docs (else printed only)")
    parser.add_argument("--docs-file", type=Path, default=DOCS_PATH, help="the file --docs writes (docs/benchmarks.md)")
    args = parser.parse_intermixed_args(argv)
    if not args.commits and not args.tree:
        parser.error("name at least one commit, or --tree")
    if args.rounds < 1 or args.seconds <= 0 or args.warmup <= 0 or args.connections < 2:
        parser.error("--rounds must be >= 1, --seconds and --warmup > 0, --connections >= 2")
    run_plan = RunPlan(
        duration=args.seconds,
        warmup=args.warmup,
        single_duration=args.seconds,  # no one-connection runs here
        connections=args.connections,
        profile_seconds=PROFILE_SECONDS,
        quick=False,
        retries=max(0, args.retries),
        variants=False,
        rounds=args.rounds,
        baseline=None,
        database_url=args.database_url,
        redis_url=args.redis_url,
        docs=args.docs_file,
        readme=None,
    )
    docs = args.docs_file if args.docs else None
    return Plan(tuple(args.commits), bool(args.tree), args.rounds, bool(args.profile), docs, run_plan)


@dataclass(frozen=True)
class Checkout:
    """A row of the comparison: its label, its commit (None: the working tree) and what it is."""

    label: str
    commit: str | None
    about: str


def label(name: str, commit: str) -> str:
    """A commit's label: its short hash when named by a prefix of it, else `name (short hash)`."""
    short = commit[:7]
    return short if commit.startswith(name.lower()) else f"{name} ({short})"


def unique(labels: list[str]) -> list[str]:
    """`labels` with the second and later of the same one marked `#2`, `#3`: a commit named twice
    is measured twice."""
    seen: dict[str, int] = {}
    found = []
    for name in labels:
        seen[name] = seen.get(name, 0) + 1
        found.append(name if seen[name] == 1 else f"{name} #{seen[name]}")
    return found


def resolve_checkouts(plan: Plan, tree: CodeState | None = None) -> list[Checkout]:
    """The commits named, in order, then the working tree (at `tree`, its state now when None);
    BenchError when git knows a commit not."""
    resolved = [(name, *commit_of(name)) for name in plan.commits]
    labels = unique([label(name, commit) for name, commit, _ in resolved])
    checkouts = [
        Checkout(name, commit, f"commit {commit[:7]}: {shorten(subject, SUBJECT_WIDTH, placeholder=' …')}")
        for name, (_, commit, subject) in zip(labels, resolved, strict=True)
    ]
    if plan.tree:
        state = tree or code_state()
        checkouts.append(Checkout(TREE, None, f"the working tree at {state.describe()}"))
    return checkouts


# --- The runs -----------------------------------------------------------------------------------


@dataclass
class Results:
    """Every measured run in the order it ran (`row.target`: `DIRECT` or a checkout's label), the
    profiles by label, what makes the figures meaningless, and the code of this checkout."""

    runs: list[VariantRow] = field(default_factory=list)
    profiles: dict[str, Profile] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    code: CodeState | None = None


def rotated(items: list[T], round_number: int) -> list[T]:
    """`items` starting at the (`round_number` - 1)th, modulo their number: round 1 keeps the
    order named, round 2 starts at the second, and so on."""
    shift = (round_number - 1) % len(items) if items else 0
    return items[shift:] + items[:shift]


def prepare_checkout(
    plan: Plan, checkout: Checkout, number: int, secret_key: str, stack: contextlib.ExitStack, tmp: Path, url: str
) -> Variant:
    """The code and data of checkout `number` (1-based) whose route goes to the upstream at `url`;
    its database and Redis keys dropped when `stack` closes."""
    run_plan = plan.run
    if checkout.commit is None:
        client = redis_client(run_plan.redis_url)
        delete_bench_keys(client)
        stack.callback(delete_bench_keys, client)
        stack.callback(recreate_database, run_plan.database_url, create=False)
        jwt = prepare_data(run_plan.database_url, sentinel_env(run_plan, secret_key), url)
        return Variant(checkout.label, dict(ISSUE_CONFIGURATION), REPO, jwt)
    variant = commit_variant(
        run_plan,
        secret_key,
        stack,
        checkout.commit,
        url,
        name=checkout.label,
        root=tmp / f"checkout-{number}",
        database_url=f"{run_plan.database_url.rstrip('/')}_ab{number}",
        key_prefix=f"{KEY_PREFIX}-ab{number}",
    )
    return dataclasses.replace(variant, env={**variant.env, **ISSUE_CONFIGURATION})


def run_ab(plan: Plan, checkouts: list[Checkout], tools: Tools, stack: contextlib.ExitStack, tmp: Path) -> Results:
    """Every run; whatever it starts is stopped, and the scratch data dropped, when `stack` closes."""
    results = Results(code=code_state())
    run_plan = plan.run
    secret_key = secrets.token_urlsafe(50)
    upstream_port = free_port()
    url = f"http://127.0.0.1:{upstream_port}"
    chosen = []
    for number, checkout in enumerate(checkouts, start=1):
        print(f"preparing {checkout.label} ({checkout.about[:70]}) ...", flush=True)
        chosen.append(prepare_checkout(plan, checkout, number, secret_key, stack, tmp, url))
    env = sentinel_env(run_plan, secret_key)
    servers = start_reference_servers(stack, dataclasses.replace(tools, nginx=None), tmp, env, upstream_port)
    redis_pid = local_pid(int(redis_client(run_plan.redis_url).info("server").get("process_id", 0)))
    references = {"upstream": servers.upstream.pid, **({"redis": redis_pid} if redis_pid else {})}
    # The direct row sends the same request, the first checkout's token included (the mock ignores it).
    direct = Target(DIRECT, "1", f"{url}/", {**references, "srv": servers.upstream.pid})
    loads = {DIRECT: Load(tools.wrk, chosen[0].jwt or "")}
    with contextlib.ExitStack() as running:
        targets: list[Target] = []
        services: dict[str, Service] = {}
        for variant in chosen:
            jwt = variant.jwt or ""
            service, port = running.enter_context(serve_variant(run_plan, secret_key, variant, jwt, tmp))
            roots = {**references, "srv": service.pid}
            targets.append(Target(variant.name, "1", f"http://127.0.0.1:{port}/proxy/", roots, must_be_clean=True))
            loads[variant.name], services[variant.name] = Load(tools.wrk, jwt), service
        for target in [direct, *targets]:
            print(f"-> {target.name}: warm-up", flush=True)
            warm_up(run_plan, loads[target.name], target.url)
        for number in range(1, plan.rounds + 1):
            for target in [direct, *rotated(targets, number)]:
                measured_run = round_run(run_plan, loads[target.name], target, number)
                results.runs.append(measured_run)
                check_clean(target, measured_run.row.load, results.failures)
            print(f"\nround {number}:\n{runs_table([r for r in results.runs if r.round == number])}\n", flush=True)
        if plan.profile:
            for target in targets:
                print(f"-> profile of {target.name} under load, py-spy", flush=True)
                service = services[target.name]
                profile = profile_sentinel(run_plan, tools.py_spy, loads[target.name], service, target.url, tmp)
                results.profiles[target.name] = profile
    return results


# --- The summary's arithmetic -------------------------------------------------------------------


def by_round(runs: list[VariantRow]) -> dict[int, dict[str, Row]]:
    """The runs that served requests, by round, then by target (a run served nothing: left out)."""
    rounds: dict[int, dict[str, Row]] = {}
    for measured_run in runs:
        if measured_run.row.load.rps:
            rounds.setdefault(measured_run.round, {})[measured_run.row.target] = measured_run.row
    return rounds


def times_direct(row: Row, round_rows: dict[str, Row]) -> float | None:
    """A row's CPU µs per request over its round's direct row's; None without that row."""
    direct = round_rows.get(DIRECT)
    direct_us = us_per_request(direct) if direct is not None else 0.0
    return us_per_request(row) / direct_us if direct_us else None


@dataclass(frozen=True)
class Summary:
    """A target's figures over its rounds: their number, the median CPU µs per request and its
    min-max, the median of the per-round multiples of the direct row (None: no direct row), the
    median req/s."""

    target: str
    rounds: int
    us: float
    us_min: float
    us_max: float
    times_direct: float | None
    rps: float


@dataclass(frozen=True)
class Pair:
    """A pair of checkouts, A named before B: the median over the rounds where both served of B's
    CPU µs per request over A's in the same round, and that ratio's min-max."""

    a: str
    b: str
    rounds: int
    ratio: float
    low: float
    high: float


def summarise(runs: list[VariantRow], targets: list[str]) -> list[Summary]:
    """Each of `targets` (the direct row first, then the checkouts in order) over its rounds; a
    target with no run that served is left out."""
    rounds = by_round(runs)
    found = []
    for target in targets:
        rows = [(row, round_rows) for round_rows in rounds.values() if (row := round_rows.get(target)) is not None]
        if not rows:
            continue
        us = [us_per_request(row) for row, _ in rows]
        ratios = [ratio for row, round_rows in rows if (ratio := times_direct(row, round_rows)) is not None]
        found.append(
            Summary(
                target,
                len(rows),
                statistics.median(us),
                min(us),
                max(us),
                statistics.median(ratios) if ratios else None,
                statistics.median(row.load.rps for row, _ in rows),
            )
        )
    return found


def pairs(runs: list[VariantRow], checkouts: list[str]) -> list[Pair]:
    """Every pair of `checkouts` (A before B in their order), over the rounds where both served."""
    rounds = by_round(runs)
    found = []
    for a, b in itertools.combinations(checkouts, 2):
        ratios = [
            us_per_request(round_rows[b]) / us_per_request(round_rows[a])
            for round_rows in rounds.values()
            if a in round_rows and b in round_rows and round_rows[a].cores["srv"]
        ]
        if ratios:
            found.append(Pair(a, b, len(ratios), statistics.median(ratios), min(ratios), max(ratios)))
    return found


# --- Rendering ----------------------------------------------------------------------------------


def runs_table(runs: list[VariantRow]) -> str:
    """Every run in the order it ran: rate, p99, the server's and others' cores, the load average
    before it, the server's CPU µs per request and that over its round's direct row."""
    rounds = by_round(runs)
    headers = ["round", "target", "rps", "p99 ms", "non-2xx", "srv cores", "other cores", "load avg (1 min)"]
    headers += ["srv CPU µs/req", TIMES_DIRECT]
    body = []
    for measured_run in runs:
        row, load = measured_run.row, measured_run.row.load
        cells = [str(measured_run.round), row.target, count(load.rps), ms(load.p99_ms)]
        cells += [str(load.non2xx + load.socket_errors), cores(row, "srv"), cores(row, "other")]
        cells.append(f"{measured_run.load_average:.2f}")
        if load.rps:
            cells += [count(us_per_request(row)), times_cell(times_direct(row, rounds[measured_run.round]))]
        else:
            cells += [NONE, NONE]
        body.append(cells)
    return table(headers, body, left=2)


def summary_table(summaries: list[Summary]) -> str:
    """Per target, over its rounds: the median CPU µs per request, its min-max, the median multiple
    of the direct row, the median req/s."""
    headers = ["target", "rounds", "srv CPU µs/req (median)", "min-max", f"{TIMES_DIRECT} (median)", "rps (median)"]
    body = [
        [
            s.target,
            str(s.rounds),
            count(s.us),
            f"{count(s.us_min)}-{count(s.us_max)}",
            times_cell(s.times_direct),
            count(s.rps),
        ]
        for s in summaries
    ]
    return table(headers, body)


def pairs_table(found: list[Pair]) -> str:
    """Per pair: B/A of the CPU µs per request, the median of the rounds' ratios, and its min-max."""
    headers = ["A", "B", "rounds", "B/A, srv CPU µs/req (median of the rounds)", "min-max"]
    body = [[p.a, p.b, str(p.rounds), f"{p.ratio:.3f}", f"{p.low:.3f}-{p.high:.3f}"] for p in found]
    return table(headers, body, left=2)


def disturbed(runs: list[VariantRow], retries: int) -> str:
    """What the section says of the runs during which other processes took more than `OTHER_LIMIT`
    core: each was run again up to `retries` times; how many stayed so."""
    again = f"was run again once the machine was quiet, up to {retries} times" if retries else "was not run again"
    said = f"A run during which they took over {OTHER_LIMIT:g} core {again} (`--retries`)"
    busy = [run.row.cores["other"] for run in runs if run.row.cores.get("other", 0.0) > OTHER_LIMIT]
    if not busy:
        return said + "; none was left so."
    return f"{said}; {len(busy)} of {len(runs)} were left so, up to {max(busy):.2f} core: read these figures as noisy."


def _profiles(results: Results) -> str:
    return "".join(
        f"\n### Profile of {name}\n\n{profile_section(profile)}\n" for name, profile in results.profiles.items()
    )


def render(plan: Plan, checkouts: list[Checkout], results: Results, tools: Tools) -> str:
    """The whole marked section, markers included."""
    labels = [checkout.label for checkout in checkouts]
    start, end = markers(SECTION)
    failures = "".join(f"\n- **failed**: {failure}" for failure in results.failures)
    figures = {
        **machine(),
        "start": start,
        "end": end,
        "title": TITLE,
        "date": utc_now(),
        "command": plan.command(),
        "code": results.code.describe() if results.code else "?",
        "versions": "; ".join(versions(tools)[:1]),
        "rounds": plan.rounds,
        "warmup": secs(plan.run.warmup),
        # The command of the first run, its URL (the direct row's) left out.
        "load_command": results.runs[0].row.load.command.rsplit(" ", 1)[0] + " URL" if results.runs else "?",
        "times_direct": TIMES_DIRECT,
        "disturbed": disturbed(results.runs, plan.run.retries),
        "checkouts": "\n".join(f"- `{checkout.label}`: {checkout.about}" for checkout in checkouts),
        "summary_table": summary_table(summarise(results.runs, [DIRECT, *labels])),
        "pairs_table": pairs_table(pairs(results.runs, labels)) if len(labels) > 1 else "(one checkout: no pairs)",
        "runs_table": runs_table(results.runs),
        "profiles": _profiles(results),
        "failures": failures and "\n" + failures.lstrip("\n") + "\n",
    }
    return fill(TEMPLATE_PATH, figures)


def publish(plan: Plan, section: str, results: Results) -> None:
    """Prints the section, then writes it where `plan.docs` says, unless there is nowhere to write
    or the figures must not be recorded (BenchError saying why)."""
    refusal = (
        "a Sentinel answered errors, so these figures do not measure the proxy (docs not written)"
        if results.failures
        else None
    )
    publish_if_asked(plan.docs, SECTION, section, refusal=refusal, unchanged=results.code if plan.tree else None)


def main(argv: Sequence[str]) -> int:
    """Runs everything; 0 once the section is printed (and written with `--docs`)."""
    plan = parse_args(argv)
    checkouts = resolve_checkouts(plan)
    tools = find_tools()
    if tools.wrk is None:
        print("note: wrk not found (`make bench-tools`): the Python generator stands in, slower", flush=True)
    if plan.profile and tools.py_spy is None:
        print("note: py-spy not found (`make bench-tools`): no profiles", flush=True)
    wait_for_benchmarks(OTHER_BENCHMARKS, WAIT_MINUTES)
    print("waiting for a quiet machine (other processes under 0.1 core) ...", flush=True)
    if not wait_quiet(OTHER_LIMIT):
        print("   still busy after 120 s: measuring anyway, disturbed runs will be retried", flush=True)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sentinel-ab-")))
        results = run_ab(plan, checkouts, tools, stack, tmp)
    publish(plan, render(plan, checkouts, results, tools), results)
    if results.failures:
        print("\n".join(["", "failures:", *results.failures]))
        return 1
    return 0


if __name__ == "__main__":
    run(main, PROG, "processes stopped, scratch data dropped")
