"""A benchmark's data and Sentinel's environment: the bench database on the local PostgreSQL
(dropped and created, or created when missing), Redis keys under the bench's prefix, the
environment of ``manage.py`` in production mode, and ``manage.py`` itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.common import REPO, BenchError

# Settings of the caller's shell that would change what is measured; the servers get their defaults.
DROPPED_SETTINGS = ("DJANGO_DEBUG", "DB_CONN_MAX_AGE", "JWT_SIGNING_KEY", "GATEWAY_FORCED_PRESSURE", "ENABLE_TRACING")


def _admin_url(database_url: str) -> tuple[str, str]:
    """(URL of the server's `postgres` database, name of the bench database)."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise BenchError(f"bench database name {name!r}: use lower-case letters, digits and _")
    return urlunsplit(parts._replace(path="/postgres")), name


@contextlib.contextmanager
def _admin(database_url: str) -> Iterator[tuple[Any, str]]:
    """(an autocommit connection to the server's `postgres` database, the bench database's name);
    BenchError when PostgreSQL refuses."""
    import psycopg

    admin, name = _admin_url(database_url)
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            yield conn, name
    except psycopg.Error as exc:
        raise BenchError(f"PostgreSQL at {admin}: {exc}") from exc


def recreate_database(database_url: str, *, create: bool = True) -> None:
    """Drops the bench database (its sessions too) and, with `create`, makes it anew."""
    from psycopg import sql

    with _admin(database_url) as (conn, name):
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if create:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def ensure_database(database_url: str) -> bool:
    """Creates the bench database when missing (an existing one is kept); True when it did."""
    from psycopg import sql

    with _admin(database_url) as (conn, name):
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return True


def redis_client(redis_url: str) -> Any:
    """A connected redis-py client; BenchError when Redis does not answer."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise BenchError(f"Redis at {redis_url}: {exc}") from exc
    return client


def delete_keys(client: Any, pattern: str) -> int:
    """Every key matching `pattern` (a SCAN pattern under the bench's prefix), and none other: the
    same Redis may serve a real Sentinel. The number deleted."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
    return int(deleted)


def server_env(
    *, database_url: str, redis_url: str, key_prefix: str, secret_key: str, workers: int = 1, **extra: str
) -> dict[str, str]:
    """The environment of `manage.py` in production mode with `workers` web processes, Redis keys
    under `key_prefix`, `DROPPED_SETTINGS` left out and `extra` added."""
    env = {name: value for name, value in os.environ.items() if name not in DROPPED_SETTINGS}
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": secret_key,
            "CACHE_KEY_PREFIX": key_prefix,
            "LOG_LEVEL": "warning",
            "WEB_CONCURRENCY": str(workers),
            "DJANGO_SETTINGS_MODULE": "sentinel_site.settings",
            "PYTHONPATH": str(REPO),
            **extra,
        }
    )
    return env


def manage(args: list[str], env: dict[str, str], root: Path = REPO) -> str:
    """`manage.py <args>`'s stdout, run in `root` (another checkout's code: an earlier commit
    extracted); BenchError with its output when it fails."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        where = "" if root == REPO else f" in {root}"
        raise BenchError(f"manage.py {args[0]}{where} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return result.stdout
