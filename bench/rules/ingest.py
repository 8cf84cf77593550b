"""Part 3: ingest through a real web process. ``manage.py serve`` (1 process, production mode) on
the bench database, a new user, tenant and ``events:write`` API key, then batches of events posted
to ``POST /events`` from keep-alive connections, and the stored events counted in ``rules_event``.

No Celery worker runs: the evaluation tasks stay queued in Redis and are deleted with every other
key under the run's prefix at the end.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import BenchError
from bench.common.cpu import CpuUse, cpu_between, cpu_snapshot
from bench.common.processes import Service, start_service, stop_service, wait_serving
from bench.common.quiet import wait_for_benchmarks
from bench.common.scratch import delete_keys, ensure_database, manage, recreate_database, redis_client, server_env
from bench.rules.config import KEY_PREFIX, OTHER_BENCHMARKS, OTHER_LIMIT, SERVERS, Plan
from bench.rules.workload import ingest_batches
from tests.support.net import free_port


@dataclass(frozen=True)
class Load:
    """A run of `post_batches`: its wall seconds, requests, 202 answers, sorted latencies (s) and
    what went wrong (answers other than 202, connection errors)."""

    wall: float
    requests: int
    accepted: int
    latencies: list[float]
    problems: list[str]


@dataclass
class _Client:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


def _post(conn: http.client.HTTPConnection, api_key: str, body: bytes) -> tuple[int, bytes]:
    """One `POST /events` on `conn`: (status, body)."""
    conn.request("POST", "/events", body=body, headers={"X-API-Key": api_key, "Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read()


def _post_until(port: int, api_key: str, bodies: list[bytes], first: int, step: int, deadline: float) -> _Client:
    """One keep-alive connection posting bodies `first`, `first + step`, ... back to back until
    `deadline` (time.monotonic)."""
    client = _Client()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    sent = first
    try:
        while time.monotonic() < deadline:
            body = bodies[sent % len(bodies)]
            sent += step
            started = time.perf_counter()
            try:
                status, text = _post(conn, api_key, body)
            except (OSError, http.client.HTTPException) as exc:
                client.errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            client.latencies.append(time.perf_counter() - started)
            client.statuses[status] += 1
            if status != 202 and len(client.errors) < 3:
                client.errors.append(f"{status}: {text[:200]!r}")
    finally:
        conn.close()
    return client


def post_batches(port: int, api_key: str, bodies: list[bytes], connections: int, duration: float) -> Load:
    """`connections` threads, each with one keep-alive connection, posting its next batch as soon as
    the previous one is answered, for `duration` seconds (requests in flight then are finished)."""
    clients: list[_Client] = []
    go = threading.Event()
    deadline = 0.0

    def run(number: int) -> None:
        go.wait()
        clients.append(_post_until(port, api_key, bodies, number, connections, deadline))

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(connections)]
    for thread in threads:
        thread.start()
    started = time.monotonic()
    deadline = started + duration
    go.set()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    statuses = sum((c.statuses for c in clients), Counter())
    problems = [error for c in clients for error in c.errors]
    if set(statuses) - {202}:
        problems.insert(0, f"answers other than 202: {dict(statuses)}")
    return Load(wall, sum(statuses.values()), statuses[202], sorted(x for c in clients for x in c.latencies), problems)


def percentile(ordered: list[float], q: float) -> float:
    """The `q` quantile (0 to 1) of sorted values; NaN when there are none."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass(frozen=True)
class IngestResult:
    """The measured run: its load, the events stored meanwhile, the CPU used (groups `web`, `pg`,
    `redis`, `bench`, `other`), the evaluation tasks left queued (no worker; -1 when unknown), and
    whether the run created the bench database."""

    load: Load
    stored: int
    cpu: CpuUse
    queued_tasks: int
    database_created: bool

    @property
    def events_per_s(self) -> float:
        return self.stored / self.load.wall

    @property
    def other_cores(self) -> float:
        return self.cpu.cores["other"]

    def us_per_event(self, group: str) -> float:
        """µs of CPU of `group` per stored event."""
        return self.cpu.seconds(group) / max(1, self.stored) * 1e6

    def cores(self, group: str) -> float:
        return self.cpu.cores[group]


def count_events(database_url: str, tenant_id: int) -> int:
    """Rows in `rules_event` for the tenant."""
    import psycopg

    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM rules_event WHERE tenant_id = %s", (tenant_id,)).fetchone()
    return int(row[0]) if row else 0


def create_bench_tenant(env: dict[str, str], name: str) -> tuple[int, str]:
    """A user `name` with a tenant of their own and an `events:write` key: (tenant id, key)."""
    setup = json.loads(manage(["bench_rules_setup", "--name", name], env).strip().splitlines()[-1])
    return int(setup["tenant_id"]), str(setup["api_key"])


def _accepting(port: int, api_key: str, body: bytes) -> bool:
    """True once a batch is accepted (202); anything else raises, for the wait's message."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        status, text = _post(conn, api_key, body)
    finally:
        conn.close()
    if status != 202:
        raise BenchError(f"{status}: {text[:300]!r}")
    return True


def _measure(plan: Plan, web: Service, port: int, tenant_id: int, api_key: str) -> tuple[Load, int, CpuUse]:
    """A warm-up, then the measured run: (its load, the events stored, the CPU used). Taken again
    (twice at most) when other processes took the cores meanwhile."""
    bodies = ingest_batches(32)
    wait_serving(lambda: _accepting(port, api_key, bodies[0]), what="POST /events to be accepted", service=web)
    post_batches(port, api_key, bodies, plan.connections, plan.ingest_warmup)
    for attempt in range(3):
        stored_before = count_events(plan.database_url, tenant_id)
        before = cpu_snapshot()
        load = post_batches(port, api_key, bodies, plan.connections, plan.ingest_seconds)
        use = cpu_between(before, cpu_snapshot(), {"web": web.pid}, named=SERVERS)
        stored = count_events(plan.database_url, tenant_id) - stored_before
        if web.process.poll() is not None:
            raise BenchError(f"the web process exited during the run:\n{web.tail()}")
        if use.cores["other"] <= OTHER_LIMIT or attempt == 2:
            break
        print(f"   disturbed ({use.cores['other']:.2f} core elsewhere); again", flush=True)
        wait_for_benchmarks(OTHER_BENCHMARKS, plan.wait_minutes)
        time.sleep(2)
    return load, stored, use


def _queued_tasks(client: Any, prefix: str) -> int:
    """Tasks waiting in Celery's default queue (a list under the broker's global_keyprefix)."""
    with contextlib.suppress(Exception):
        return int(client.llen(f"{prefix}:celery:celery"))
    return -1


def _clean_redis(client: Any, prefix: str) -> int:
    """Deletes every key under the run's prefix; the evaluation tasks that were queued there."""
    queued = _queued_tasks(client, prefix)
    delete_keys(client, f"{prefix}:*")
    delete_keys(client, prefix)
    left = [k.decode() for k in client.scan_iter(match=f"*{prefix}*", count=1000)]
    if left:
        print(f"warning: Redis keys left under {prefix}: {left[:5]}", file=sys.stderr)
    return queued


def measure_ingest(plan: Plan) -> IngestResult:
    """The bench database (created when missing) migrated, a bench tenant, the web process, then
    the measured run; the web process stopped and the run's Redis keys deleted whatever happens."""
    created = ensure_database(plan.database_url)
    client = redis_client(plan.redis_url)
    prefix = f"{KEY_PREFIX}-{secrets.token_hex(4)}"
    try:
        with tempfile.TemporaryDirectory(prefix="sentinel-bench-rules-") as tmp_name:
            tmp = Path(tmp_name)
            env = server_env(
                database_url=plan.database_url,
                redis_url=plan.redis_url,
                key_prefix=prefix,
                secret_key=secrets.token_urlsafe(48),
                PROMETHEUS_MULTIPROC_DIR=str(tmp / "prometheus"),
            )
            manage(["migrate", "--noinput"], env)
            tenant_id, api_key = create_bench_tenant(env, prefix)
            port = free_port()
            args = [sys.executable, "manage.py", "serve", "--port", str(port)]
            web = start_service("serve", args, env=env, logdir=tmp)
            try:
                load, stored, use = _measure(plan, web, port, tenant_id, api_key)
            finally:
                stop_service(web)
    finally:
        queued = _clean_redis(client, prefix)
        client.close()
        if created:  # a database the run made is the run's to remove; one that was there stays
            recreate_database(plan.database_url, create=False)
    return IngestResult(load, stored, use, queued, created)
