"""The settings module in each run mode, evaluated afresh with a given environment."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from prometheus_client import values

from core.local_state import local_state_prepare

SETTINGS = Path(__file__).resolve().parents[1] / "settings.py"
MODE_VARIABLES = ["DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DJANGO_DEBUG", "ALLOWED_HOSTS", "LOG_LEVEL"]


def load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, prepare: bool = True, **env: str) -> dict[str, Any]:
    """The settings as a process sees them: its entry point's preparation (unless ``prepare`` is
    False), then the module."""
    for name in MODE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SENTINEL_VAR_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if prepare:
        local_state_prepare()
    return runpy.run_path(str(SETTINGS))


def test_no_environment_means_embedded_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conf = load(monkeypatch, tmp_path)

    assert conf["EMBEDDED_MODE"] is True
    assert conf["DEBUG"] is False
    assert conf["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"
    assert conf["DATABASES"]["default"]["NAME"] == str(tmp_path / "sentinel.sqlite3")
    assert conf["CACHES"]["default"]["BACKEND"].endswith("LocMemCache")
    assert conf["CHANNEL_LAYERS"]["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"
    assert conf["CELERY_BROKER_URL"] == "filesystem://"
    # Absolute folders, or processes started elsewhere would not find each other.
    assert Path(conf["CELERY_BROKER_TRANSPORT_OPTIONS"]["control_folder"]).is_absolute()


def test_embedded_mode_generates_one_secret_key_and_keeps_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = load(monkeypatch, tmp_path)["SECRET_KEY"]
    second = load(monkeypatch, tmp_path)["SECRET_KEY"]

    assert len(first) >= 50
    assert first == second
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_urls_switch_to_postgres_and_redis(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    conf = load(
        monkeypatch,
        tmp_path,
        DATABASE_URL="postgres://u:p@db.example:5433/sentinel",
        REDIS_URL="redis://cache.example:6379/2",
        SECRET_KEY="from-the-environment-and-long-enough-1234",
        ALLOWED_HOSTS="api.example.com, admin.example.com",
    )

    db = conf["DATABASES"]["default"]
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["HOST"], db["PORT"], db["NAME"]) == ("db.example", 5433, "sentinel")
    assert conf["CACHES"]["default"]["BACKEND"] == "django_redis.cache.RedisCache"
    assert conf["CHANNEL_LAYERS"]["default"]["BACKEND"] == "core.channel_layer.RedisChannelLayer"
    assert conf["CELERY_BROKER_URL"] == "redis://cache.example:6379/2"
    assert conf["SECRET_KEY"] == "from-the-environment-and-long-enough-1234"
    assert conf["ALLOWED_HOSTS"] == ["api.example.com", "admin.example.com"]
    assert conf["EMBEDDED_MODE"] is False


def test_production_mode_requires_a_secret_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY"):
        load(monkeypatch, tmp_path, DATABASE_URL="postgres://u@localhost/sentinel")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BURST_CAPACITY", "lots"),
        ("REFILL_RATE", "nan"),
        ("BREAKER_FAILURE_THRESHOLD", "1.5"),
        ("PRESSURE_STRAIN_WEIGHT", "-1"),
        ("PRESSURE_WINDOW_S", "0"),
        ("RATE_LIMIT_FAIL_MODE", "sideways"),
        ("DJANGO_DEBUG", "maybe"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_junk_settings_fail_at_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match=name):
        load(monkeypatch, tmp_path, **{name: value})


def test_gateway_settings_have_the_spec_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gateway = load(monkeypatch, tmp_path)["SENTINEL_GATEWAY"]

    assert gateway == {
        "DOWNSTREAM_URL": "http://localhost:8080",
        "TENANT_HEADER": "x-tenant-id",
        "BURST_CAPACITY": 20,
        "REFILL_RATE": 10.0,
        "WINDOW_MS": 60000,
        "BASE_RATE_LIMIT": 100,
        "SLO_LATENCY_THRESHOLD": 200,
        "REQUEST_TIMEOUT_MS": 30000,
        "BREAKER_FAILURE_THRESHOLD": 0.5,
        "BREAKER_CONSECUTIVE_FAILURES": 10,
        "BREAKER_COOLDOWN_MS": 30000,
        "BREAKER_HALF_OPEN_MAX_REQUESTS": 5,
        "RATE_LIMIT_FAIL_MODE": "open",
        "CAPACITY": 512,
        "SHED_STANDARD_AT": 90.0,
        "SHED_ECONOMY_AT": 70.0,
        "SHED_HYSTERESIS": 10.0,
        "PRESSURE_SMOOTHING_MS": 1000,
        "PRESSURE_WINDOW_S": 10.0,
        "PRESSURE_MIN_SAMPLES": 50,
        "PRESSURE_MIN_RATE": 10.0,
        "PRESSURE_STRAIN_WEIGHT": 1.0,
        "FORCED_PRESSURE": None,
    }


def test_a_short_secret_key_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ImproperlyConfigured, match="32 characters"):
        load(monkeypatch, tmp_path, SECRET_KEY="too-short")


def test_importing_the_settings_writes_nothing_and_patches_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # given embedded mode, its key already written, and nothing else under var/
    (tmp_path / "secret_key").write_text("k" * 50)
    metrics_folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    value_class = values.ValueClass

    # when the module is imported with no entry point before it
    conf = load(monkeypatch, tmp_path, prepare=False)

    # then it read the key, created no folder, and left prometheus_client and the environment alone
    assert conf["SECRET_KEY"] == "k" * 50
    assert [path.name for path in tmp_path.iterdir()] == ["secret_key"]
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") == metrics_folder
    assert values.ValueClass is value_class


def test_embedded_mode_without_a_key_file_names_the_file_and_who_writes_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"secret_key does not exist: `make install` writes it"):
        load(monkeypatch, tmp_path, prepare=False)
    assert not (tmp_path / "secret_key").exists()


def test_manage_py_migrate_needs_no_setup_on_a_fresh_clone(tmp_path: Path) -> None:
    # given embedded mode and no var/ folder at all (a fresh clone, no `make install`)
    var = tmp_path / "var"
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {*MODE_VARIABLES, "DJANGO_SETTINGS_MODULE", "PROMETHEUS_MULTIPROC_DIR"}
    }
    env.update({"SENTINEL_VAR_DIR": str(var), "LOG_LEVEL": "warning"})

    # when the first command a newcomer might type runs
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=SETTINGS.parents[1],
        env=env,
        capture_output=True,
        timeout=240,
        check=False,
    )

    # then it worked, and made the key, the database and the embedded broker's folders under var/
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-3000:]
    assert (var / "secret_key").stat().st_mode & 0o077 == 0
    assert (var / "sentinel.sqlite3").is_file()
    assert (var / "celery" / "queue").is_dir() and (var / "celery" / "control").is_dir()
    assert (var / "prometheus").is_dir()
