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
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO, BenchError
from bench.common.processes import Service, answers, stop_service, wait_serving
from bench.common.scratch import delete_keys, recreate_database, redis_client
from bench.gateway.config import Plan
from bench.gateway.load import Load
from bench.gateway.measure import Bench, Results, Target, check_clean, round_run, warm_up
from bench.gateway.servers import prepare_data, sentinel_env, start_otlp_sink
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


def _generate_stubs(root: Path) -> None:
    """The gRPC stubs `make protos` generates (not in git): from that code's own proto, when it has one."""
    proto = Path("fraud/protos/fraud.proto")
    if not (root / proto).exists():
        return
    args = ["-I", ".", "--python_out=.", "--pyi_out=.", "--grpc_python_out=.", str(proto)]
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", *args], cwd=root, check=True, timeout=120)


def extract_commit(commit: str, root: Path) -> None:
    """The code of `commit` in the new folder `root`: ``git archive``, then the gRPC stubs (git
    archive lacks them, and without them the web process dies on import)."""
    root.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, timeout=120)
    if archive.returncode != 0:
        raise BenchError(f"git archive {commit}: {archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True, timeout=120)
    _generate_stubs(root)


def commit_variant(
    plan: Plan,
    secret_key: str,
    stack: contextlib.ExitStack,
    commit: str,
    upstream_url: str,
    *,
    name: str,
    root: Path,
    database_url: str,
    key_prefix: str,
) -> Variant:
    """The code of `commit` extracted in `root`, with a database (`database_url`) and Redis keys
    (under `key_prefix`) of its own, migrated and set up by that code's own ``bench_setup``; the
    database is dropped and the keys deleted when `stack` closes."""
    extract_commit(commit, root)
    stack.callback(recreate_database, database_url, create=False)
    client = redis_client(plan.redis_url)
    delete_keys(client, f"{key_prefix}:*")  # a run interrupted before its cleanup left some
    stack.callback(delete_keys, client, f"{key_prefix}:*")
    env = {"DATABASE_URL": database_url, "PYTHONPATH": str(root), "CACHE_KEY_PREFIX": key_prefix}
    jwt = prepare_data(database_url, sentinel_env(plan, secret_key, 1, **env), upstream_url, root)
    return Variant(name, env, root, jwt)


def baseline_variant(bench: Bench, commit: str, upstream_url: str) -> Variant:
    """``--baseline``: the code of `commit` (`commit_variant`) under the run's temporary folder,
    with the database ``<scratch>_baseline`` and the Redis prefix `BASELINE_KEY_PREFIX`."""
    return commit_variant(
        bench.plan,
        bench.secret_key,
        bench.stack,
        commit,
        upstream_url,
        name=BASELINE.format(commit=commit),
        root=bench.tmp / f"sentinel-{commit}",
        database_url=bench.plan.database_url.rstrip("/") + "_baseline",
        key_prefix=BASELINE_KEY_PREFIX,
    )


@contextlib.contextmanager
def serve_variant(plan: Plan, secret_key: str, variant: Variant, jwt: str, tmp: Path) -> Iterator[tuple[Service, int]]:
    """`manage.py serve` (1 web process) of `variant`, from its tree and with its environment, up
    and serving the bench route: (it, its port); stopped when the block ends."""
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
    with contextlib.ExitStack() as servers:
        targets: list[tuple[Target, Load]] = []
        for variant in chosen:
            jwt = variant.jwt or bench.jwt
            service, port = servers.enter_context(serve_variant(bench.plan, bench.secret_key, variant, jwt, bench.tmp))
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
                run = round_run(bench.plan, load, target, number)
                results.variants.append(run)
                row = run.row
                check_clean(target, row.load, results.failures)
                print(
                    f"   round {number}, {target.name}: {row.load.rps:,.0f} req/s, "
                    f"{row.cores['srv'] / row.load.rps * 1e6:,.0f} µs/req, load average {run.load_average:.2f}",
                    flush=True,
                )
