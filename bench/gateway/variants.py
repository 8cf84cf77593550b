"""One Sentinel process in several configurations, measured in the same run so the figures compare:
tracing off (the plain proxy), tracing on with the default sampler, tracing on sampling every trace,
the request log off, and the code of an earlier commit (``--baseline``, e.g. the head before
tracing was added, to show what tracing off costs).

Every configuration's server runs for the whole phase (1 web process each, idle while another is
loaded); each is warmed up once, then the configurations are loaded in turn, round after round
(``--rounds``), each run preceded by one warm-up round: a drift of the shared machine then shows
as a spread between the rounds of one configuration, not as a difference between configurations.
The 1-minute load average is read before each run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO, BenchError
from bench.common.processes import Service, answers, stop_service, wait_serving
from bench.common.scratch import delete_keys, recreate_database, redis_client
from bench.gateway.config import TENANT_LIMITS, Plan
from bench.gateway.load import Load
from bench.gateway.measure import Bench, Results, Target, VariantRow, measured, warm_up
from bench.gateway.servers import sentinel_env, start_otlp_sink
from tests.support.net import free_port

# The target names of the phase's rows, in the order each round runs them.
OFF = "tracing off"
DEFAULT = "tracing on, default sampler"
EVERY = "tracing on, every trace"
NO_LOG = "tracing off, request log off"
BASELINE = "commit {commit}"
# The operator's sampler variables, unset for the default's row (whatever the caller's shell says).
_SAMPLER_VARIABLES = ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG")
BASELINE_KEY_PREFIX = "sentinel-bench-baseline"


@dataclass(frozen=True)
class Variant:
    """One configuration: its row name, its environment over the bench's, the tree it runs from."""

    name: str
    env: dict[str, str]
    root: Path = REPO
    jwt: str | None = None  # the baseline has its own database, so its own token


def variants(sink_endpoint: str) -> list[Variant]:
    """The configurations of the current code, in the order each round runs them."""
    traced = {"ENABLE_TRACING": "true", "OTLP_ENDPOINT": sink_endpoint}
    return [
        Variant(OFF, {}),
        Variant(DEFAULT, traced),
        Variant(EVERY, {**traced, "OTEL_TRACES_SAMPLER": "parentbased_always_on"}),
        Variant(NO_LOG, {"REQUEST_LOG_ENABLED": "false"}),
    ]


def _manage_in(root: Path, args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise BenchError(f"manage.py {args[0]} in {root} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return result.stdout


def _generate_stubs(root: Path) -> None:
    """The gRPC stubs `make protos` generates (not in git): from that code's own proto, when it has one."""
    proto = Path("fraud/protos/fraud.proto")
    if not (root / proto).exists():
        return
    args = ["-I", ".", "--python_out=.", "--pyi_out=.", "--grpc_python_out=.", str(proto)]
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", *args], cwd=root, check=True, timeout=120)


def baseline_variant(bench: Bench, commit: str, upstream_url: str) -> Variant:
    """The code of `commit` extracted (``git archive``) under the run's temporary folder, with a
    database (``<scratch>_baseline``) and Redis prefix of its own, migrated and set up by that code's
    own ``bench_setup``; both dropped when the run ends."""
    root = bench.tmp / f"sentinel-{commit}"
    root.mkdir()
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, timeout=120)
    if archive.returncode != 0:
        raise BenchError(f"git archive {commit}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True, timeout=120)
    _generate_stubs(root)
    database_url = bench.plan.database_url.rstrip("/") + "_baseline"
    recreate_database(database_url)
    bench.stack.callback(recreate_database, database_url, create=False)
    env = {"DATABASE_URL": database_url, "PYTHONPATH": str(root), "CACHE_KEY_PREFIX": BASELINE_KEY_PREFIX}
    full_env = sentinel_env(bench.plan, bench.secret_key, 1, **env)
    _manage_in(root, ["migrate", "--noinput"], full_env)
    output = _manage_in(
        root, ["bench_setup", "--upstream", upstream_url, "--limits", json.dumps(TENANT_LIMITS)], full_env
    )
    jwt = str(json.loads(output.strip().splitlines()[-1])["jwt"])
    return Variant(BASELINE.format(commit=commit), env, root, jwt)


@contextlib.contextmanager
def _server(plan: Plan, secret_key: str, variant: Variant, jwt: str, tmp: Path) -> Iterator[tuple[Service, int]]:
    port = free_port()
    env = sentinel_env(plan, secret_key, 1, **variant.env)
    for name in _SAMPLER_VARIABLES:
        if name not in variant.env:
            env.pop(name, None)
    name = "variant-" + "".join(c if c.isalnum() else "-" for c in variant.name)
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve", "--port", str(port)],
            cwd=variant.root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    service = Service(name, process, log)
    try:
        auth = {"Authorization": f"Bearer {jwt}"}
        ready = lambda: answers(port, "/proxy/", auth, times=5)  # noqa: E731
        wait_serving(ready, what=f"Sentinel ({variant.name})", service=service)
        yield service, port
    finally:
        stop_service(service)


def run_variants(bench: Bench, upstream_url: str, rounds: int, baseline: str | None, results: Results) -> None:
    """Starts every configuration, warms each up, then runs `rounds` interleaved rounds of the
    saturation load; the rows go to `results.variants`."""
    sink, endpoint = start_otlp_sink(bench.stack, bench.tmp)
    chosen = variants(endpoint)
    if baseline:
        print(f"-> preparing the baseline {baseline} (git archive, its own database) ...", flush=True)
        chosen.append(baseline_variant(bench, baseline, upstream_url))
        client = redis_client(bench.plan.redis_url)
        bench.stack.callback(delete_keys, client, f"{BASELINE_KEY_PREFIX}:*")
    with contextlib.ExitStack() as servers:
        targets: list[tuple[Target, Load]] = []
        for variant in chosen:
            jwt = variant.jwt or bench.jwt
            service, port = servers.enter_context(_server(bench.plan, bench.secret_key, variant, jwt, bench.tmp))
            roots = {**bench.roots, "srv": service.pid}
            if "ENABLE_TRACING" in variant.env:
                roots["sink"] = sink.pid
            target = Target(variant.name, "1", f"http://127.0.0.1:{port}/proxy/", roots, must_be_clean=True)
            load = Load(bench.load.wrk, jwt)
            print(f"-> {variant.name}: warm-up", flush=True)
            warm_up(bench.plan, load, target.url)
            targets.append((target, load))
        for number in range(1, rounds + 1):
            for target, load in targets:
                load.closed(target.url, connections=bench.plan.connections, duration=bench.plan.warmup)
                load_average = os.getloadavg()[0]
                run = functools.partial(
                    load.closed, target.url, connections=bench.plan.connections, duration=bench.plan.duration
                )
                row = measured(bench.plan, target, run)
                results.variants.append(VariantRow(number, load_average, row))
                if row.load.non2xx or row.load.socket_errors:
                    results.failures.append(f"{target.name}: {row.load.non2xx} non-2xx in `{row.load.command}`")
                print(
                    f"   round {number}, {target.name}: {row.load.rps:,.0f} req/s, "
                    f"{row.cores['srv'] / row.load.rps * 1e6:,.0f} µs/req, load average {load_average:.2f}",
                    flush=True,
                )
