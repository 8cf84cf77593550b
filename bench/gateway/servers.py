"""The servers under test and their data: the scratch PostgreSQL database and the bench tenant
(``manage.py bench_setup``), Redis keys under the bench prefix, the mock upstream, nginx in front
of it (``nginx.conf.tmpl``), and ``manage.py serve`` in production mode with 1 or 2 processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from bench.common import REPO
from bench.common.processes import Service, answers, start_service, stop_service, wait_serving
from bench.common.scratch import delete_keys, manage, recreate_database, server_env
from bench.gateway.config import KEY_PREFIX, TENANT_LIMITS, Plan
from bench.gateway.tools import Tools
from tests.support.net import free_port

NGINX_TEMPLATE = Path(__file__).with_name("nginx.conf.tmpl")


# --- Sentinel's environment and its data ---------------------------------------------------------


def delete_bench_keys(client: Any) -> int:
    """Every key under the bench prefix, and none other (the same Redis may serve a real Sentinel)."""
    return delete_keys(client, f"{KEY_PREFIX}:*")


def sentinel_env(plan: Plan, secret_key: str, workers: int = 1, **extra: str) -> dict[str, str]:
    """The environment of `manage.py` in production mode with `workers` web processes, and `extra`."""
    return server_env(
        database_url=plan.database_url,
        redis_url=plan.redis_url,
        key_prefix=KEY_PREFIX,
        secret_key=secret_key,
        workers=workers,
        # The token is minted once; it must outlive the whole run.
        JWT_ACCESS_MINUTES="240",
        **extra,
    )


def prepare_data(database_url: str, env: dict[str, str], upstream_url: str, root: Path = REPO) -> str:
    """Scratch database (`database_url`, also in `env`), migrations, tenant + user + route, by the
    code in `root` (this checkout, or an earlier commit extracted); returns the user's access token."""
    recreate_database(database_url)
    manage(["migrate", "--noinput"], env, root)
    args = ["bench_setup", "--upstream", upstream_url, "--limits", json.dumps(TENANT_LIMITS)]
    output = manage(args, env, root)
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


def start_otlp_sink(stack: contextlib.ExitStack, tmp: Path) -> tuple[Service, str]:
    """`bench.gateway.otlp_sink` on a free port, stopped when `stack` closes: (it, its base URL)."""
    port = free_port()
    args = [sys.executable, "-m", "bench.gateway.otlp_sink", "--port", str(port)]
    sink = start_service("otlp-sink", args, env=dict(os.environ), logdir=tmp)
    stack.callback(stop_service, sink)
    wait_serving(lambda: answers(port, "/"), what="the OTLP sink", service=sink)
    return sink, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def sentinel(
    plan: Plan, secret_key: str, workers: int, jwt: str, tmp: Path, **extra_env: str
) -> Iterator[tuple[Service, int]]:
    """`manage.py serve` with `workers` processes (`extra_env` added to its environment), up and
    serving the bench route: (it, its port)."""
    port = free_port()
    env = sentinel_env(plan, secret_key, workers, **extra_env)
    args = [sys.executable, "manage.py", "serve", "--port", str(port)]
    name = f"sentinel-{workers}" + ("-tracing" if extra_env else "")
    service = start_service(name, args, env=env, logdir=tmp)
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
