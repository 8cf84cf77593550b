"""The servers under test and their data: the scratch PostgreSQL database and the bench tenant
(``manage.py bench_setup``), Redis keys under the bench prefix, the mock upstream, nginx in front
of it (``nginx.conf.tmpl``), and ``manage.py serve`` in production mode with 1 or 2 processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.gateway.config import KEY_PREFIX, REPO, TENANT_LIMITS, BenchError, Plan
from bench.gateway.processes import Service, answers, start_service, stop_service, wait_serving
from bench.gateway.tools import Tools
from tests.support.net import free_port

NGINX_TEMPLATE = Path(__file__).with_name("nginx.conf.tmpl")
# Settings of the caller's shell that would change what is measured; the servers get their defaults.
DROPPED_SETTINGS = ("DJANGO_DEBUG", "JWT_SIGNING_KEY", "GATEWAY_FORCED_PRESSURE", "ENABLE_TRACING")


# --- Scratch database and Redis -----------------------------------------------------------------


def _admin_url(database_url: str) -> tuple[str, str]:
    """(URL of the server's `postgres` database, name of the scratch database)."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise BenchError(f"scratch database name {name!r}: use lower-case letters, digits and _")
    return urlunsplit(parts._replace(path="/postgres")), name


def recreate_database(database_url: str, *, create: bool = True) -> None:
    """Drops the scratch database (its sessions too) and, with `create`, makes it anew."""
    import psycopg
    from psycopg import sql

    admin, name = _admin_url(database_url)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            if create:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.Error as exc:
        raise BenchError(f"PostgreSQL at {admin}: {exc}") from exc


def redis_client(redis_url: str) -> Any:
    """A connected redis-py client; BenchError when Redis does not answer."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BenchError(f"Redis at {redis_url}: {exc}") from exc
    return client


def delete_bench_keys(client: Any) -> int:
    """Every key under the bench prefix, and none other (the same Redis may serve a real Sentinel)."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{KEY_PREFIX}:*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    return deleted


# --- Sentinel's environment and its data ---------------------------------------------------------


def sentinel_env(plan: Plan, secret_key: str, workers: int = 1) -> dict[str, str]:
    """The environment of `manage.py` in production mode with `workers` web processes."""
    env = {name: value for name, value in os.environ.items() if name not in DROPPED_SETTINGS}
    env.update(
        {
            "DATABASE_URL": plan.database_url,
            "REDIS_URL": plan.redis_url,
            "SECRET_KEY": secret_key,
            "CACHE_KEY_PREFIX": KEY_PREFIX,
            "LOG_LEVEL": "warning",
            "WEB_CONCURRENCY": str(workers),
            # The token is minted once; it must outlive the whole run.
            "JWT_ACCESS_MINUTES": "240",
            "DJANGO_SETTINGS_MODULE": "sentinel_site.settings",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def manage(args: list[str], env: dict[str, str]) -> str:
    """`manage.py <args>`'s stdout; BenchError with its output when it fails."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise BenchError(f"manage.py {args[0]} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return result.stdout


def prepare_data(plan: Plan, env: dict[str, str], upstream_url: str) -> str:
    """Scratch database, migrations, tenant + user + route; returns the user's access token."""
    recreate_database(plan.database_url)
    manage(["migrate", "--noinput"], env)
    output = manage(["bench_setup", "--upstream", upstream_url, "--limits", json.dumps(TENANT_LIMITS)], env)
    return str(json.loads(output.strip().splitlines()[-1])["jwt"])


# --- Servers ------------------------------------------------------------------------------------


def nginx_config(tmp: Path, port: int, upstream_port: int) -> Path:
    """1 worker, keep-alive both ways, no access log; everything it writes stays in `tmp`."""
    user_line = ""
    if os.geteuid() == 0:
        # A root master would switch its worker to `nobody`; keep the worker as the current user.
        user_line = f"user {pwd.getpwuid(os.getuid()).pw_name};"
    text = Template(NGINX_TEMPLATE.read_text()).substitute(
        user_line=user_line, tmp=tmp, port=port, upstream_port=upstream_port
    )
    conf = tmp / "nginx.conf"
    conf.write_text(text)
    return conf


@dataclass
class Servers:
    """The reference servers: the mock upstream, and nginx in front of it when installed."""

    upstream: Service
    upstream_port: int
    nginx: Service | None
    nginx_port: int


def start_reference_servers(
    stack: contextlib.ExitStack, tools: Tools, tmp: Path, env: dict[str, str], upstream_port: int
) -> Servers:
    """The mock upstream on `upstream_port` and nginx on a free port, stopped when `stack` closes."""
    args = [sys.executable, "-m", "gateway.mock_upstream", "--port", str(upstream_port)]
    upstream = start_service("upstream", args, env=env, logdir=tmp)
    stack.callback(stop_service, upstream)
    wait_serving(lambda: answers(upstream_port, "/health"), what="the mock upstream", service=upstream)
    nginx, nginx_port = None, free_port()
    if tools.nginx:
        conf = nginx_config(tmp, nginx_port, upstream_port)
        args = [tools.nginx, "-p", str(tmp), "-e", str(tmp / "nginx-error.log"), "-c", str(conf)]
        nginx = start_service("nginx", args, env=env, logdir=tmp)
        stack.callback(stop_service, nginx)
        wait_serving(lambda: answers(nginx_port, "/"), what="nginx", service=nginx)
    return Servers(upstream, upstream_port, nginx, nginx_port)


@contextlib.contextmanager
def sentinel(plan: Plan, secret_key: str, workers: int, jwt: str, tmp: Path) -> Iterator[tuple[Service, int]]:
    """`manage.py serve` with `workers` processes, up and serving the bench route: (it, its port)."""
    port = free_port()
    env = sentinel_env(plan, secret_key, workers)
    args = [sys.executable, "manage.py", "serve", "--port", str(port)]
    service = start_service(f"sentinel-{workers}", args, env=env, logdir=tmp)
    try:
        auth = {"Authorization": f"Bearer {jwt}"}
        # The route is in the table once /proxy/ answers 200 from the mock (before: Django's 404).
        wait_serving(
            lambda: answers(port, "/proxy/", auth, times=5 * workers),
            what=f"Sentinel ({workers} process(es)) to proxy /proxy/",
            service=service,
        )
        yield service, port
    finally:
        stop_service(service)
