"""The process's local state under ``var/``: where it is, and the one file settings need to exist.

Importing the settings writes nothing. What embedded mode needs on disk is made by whoever starts
the process: ``local_state_prepare()`` writes the secret key before Django reads the settings (it
is a setting), called by every entry point (``manage.py``, ``sentinel_site/asgi.py``, the Celery
app, the test settings) and by ``make install``; the folders that settings name (the SQLite
database's, the broker's, the metrics') are made by ``core.apps.CoreConfig.ready()``.

Django-free but for ``ImproperlyConfigured``, so the settings module and ``manage.py`` can use it
before Django is set up.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from core.env import env_bool, env_str

BASE_DIR = Path(__file__).resolve().parent.parent


def var_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``SENTINEL_VAR_DIR``, else ``var/`` at the project's root; absolute."""
    return Path(env_str("SENTINEL_VAR_DIR", environ=environ) or BASE_DIR / "var").resolve()


def embedded_mode(environ: Mapping[str, str] = os.environ) -> bool:
    """True when no external service is configured (neither ``DATABASE_URL`` nor ``REDIS_URL``)."""
    return env_str("DATABASE_URL", environ=environ) is None and env_str("REDIS_URL", environ=environ) is None


def secret_key_file_wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """True when settings take the key from ``var/secret_key``: no ``SECRET_KEY`` in the
    environment, and embedded mode or ``DJANGO_DEBUG`` (production mode refuses to start instead).

    Raises ``ImproperlyConfigured`` when ``DJANGO_DEBUG`` is not a boolean."""
    if env_str("SECRET_KEY", environ=environ):
        return False
    return embedded_mode(environ) or env_bool("DJANGO_DEBUG", False, environ=environ)


def secret_key_file(directory: Path) -> Path:
    return directory / "secret_key"


def secret_key_read(directory: Path) -> str | None:
    """The key kept in ``directory``, or None when there is no key file (yet)."""
    try:
        return secret_key_file(directory).read_text().strip() or None
    except FileNotFoundError:
        return None


def local_state_prepare(environ: Mapping[str, str] = os.environ) -> None:
    """Writes ``var/secret_key`` (50 random URL-safe bytes, mode 0600) when settings will want it
    and it does not exist yet; creates ``var/`` for it. Safe to call in every process: two
    processes starting together keep one key (O_EXCL), and an existing key is never replaced.

    Raises ``ImproperlyConfigured`` on a junk ``DJANGO_DEBUG``, ``OSError`` when ``var/`` cannot be
    written."""
    if not secret_key_file_wanted(environ):
        return
    directory = var_dir(environ)
    path = secret_key_file(directory)
    if path.exists():
        return
    var_dir_ensure(directory)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(50))


def var_dir_ensure(directory: Path) -> None:
    """Creates ``directory`` (var/) readable by its owner only: it holds the key, the embedded
    database and the first-run credentials. One that exists is left as the operator set it.
    Raises ``OSError`` when it cannot be created."""
    if directory.exists():
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)  # mkdir's mode passes through the umask
