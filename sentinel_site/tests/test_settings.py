"""The settings module in each run mode, evaluated afresh with a given environment."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

SETTINGS = Path(__file__).resolve().parents[1] / "settings.py"
MODE_VARIABLES = ["DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DJANGO_DEBUG", "ALLOWED_HOSTS", "LOG_LEVEL"]


def load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **env: str) -> dict[str, Any]:
    for name in MODE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SENTINEL_VAR_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
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
    assert conf["CHANNEL_LAYERS"]["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer"
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
