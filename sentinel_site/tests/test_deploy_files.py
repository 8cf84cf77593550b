"""docker-compose.yml, the Dockerfile, the Procfile and Prometheus' configuration agree with each
other and with the settings (SPEC 0 and 8): read as files, no Docker needed."""

from __future__ import annotations

import ast
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
# SPEC 8's services (the mock upstream is `upstream`, the fraud brain `brain`), and Jaeger.
REQUIRED_SERVICES = {"postgres", "redis", "web", "worker", "beat", "upstream", "brain", "prometheus", "jaeger"}
# Environment read by the libraries in the image rather than by Sentinel's code: the OpenTelemetry
# SDK's own variables (OTEL_*) and the interpreter's (PYTHON*).
LIBRARY_PREFIXES = ("OTEL_", "PYTHON")
_ENV_READERS = {"env_str", "env_bool", "env_int", "env_float", "env_list", "env_choice", "getenv"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if line.strip() and not line.startswith("#"))


def dockerfile_instructions(name: str) -> list[str]:
    """The arguments of every `name` instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    return [line.split(None, 1)[1] for line in text.splitlines() if line.upper().startswith(name + " ")]


def dockerfile_env() -> dict[str, str]:
    pairs = " ".join(dockerfile_instructions("ENV"))
    return dict(pair.split("=", 1) for pair in shlex.split(pairs))


def expand(command: str, env: dict[str, str]) -> list[str]:
    """A shell line's words, each ${VAR:-default} replaced by VAR's value in `env`, else its default."""
    return shlex.split(_VARIABLE.sub(lambda m: env.get(m.group(1), m.group(2) or ""), command))


@cache
def names_the_code_reads() -> frozenset[str]:
    """Every environment variable Sentinel's production code reads (env helpers, os.environ)."""
    names: set[str] = set()
    for path in ROOT.glob("**/*.py"):
        parts = path.relative_to(ROOT).parts
        if parts[0] in {".venv", "bench", "tests", "node_modules"} or "tests" in parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names.update(_read_name(node))
    return frozenset(names)


def _read_name(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        function = node.func
        called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
        environ = isinstance(function, ast.Attribute) and "environ" in ast.unparse(function.value)
        if called in _ENV_READERS or (environ and called in {"get", "setdefault", "pop"}):
            return [str(node.args[0].value)]
    subscript = isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
    if subscript and "environ" in ast.unparse(node.value):  # type: ignore[attr-defined]
        return [str(node.slice.value)]  # type: ignore[attr-defined]
    return []


def app_services() -> dict[str, dict[str, Any]]:
    """The services that run Sentinel's image (the others are postgres, redis, jaeger, prometheus)."""
    return {name: service for name, service in compose()["services"].items() if "build" in service}


def test_every_service_of_the_spec_is_in_compose() -> None:
    missing = REQUIRED_SERVICES - set(compose()["services"])

    assert missing == set()


@pytest.mark.parametrize("name", sorted(app_services()))
def test_every_environment_variable_of_a_sentinel_service_is_one_the_code_reads(name: str) -> None:
    environment = app_services()[name].get("environment", {})

    unread = [key for key in environment if key not in names_the_code_reads() and not key.startswith(LIBRARY_PREFIXES)]

    assert unread == [], f"{name} sets variables nothing reads: {unread}"


def test_depends_on_names_services_that_exist() -> None:
    services = compose()["services"]
    for name, service in services.items():
        assert set(service.get("depends_on", {})) <= set(services), name


@pytest.mark.parametrize("process", ["web", "worker", "beat", "upstream", "stream", "brain"])
def test_a_compose_service_runs_its_procfile_line(process: str) -> None:
    service = compose()["services"][process]
    # The service's values as compose interpolates them from an empty shell (their defaults).
    values = {key: " ".join(expand(str(value), {})) for key, value in service.get("environment", {}).items()}
    env = {**dockerfile_env(), **values}

    assert expand(service["command"], env) == expand(procfile()[process], env)


def test_the_images_command_and_port_are_the_procfiles_web() -> None:
    env = dockerfile_env()
    command = " ".join(ast.literal_eval(dockerfile_instructions("CMD")[-1])[2:])  # sh -c "<line>"

    assert expand(command.removeprefix("exec "), env) == expand(procfile()["web"], env)
    assert dockerfile_instructions("EXPOSE") == [env["PORT"]]


def test_web_sends_traces_to_jaeger_which_accepts_otlp() -> None:
    services = compose()["services"]
    web, jaeger = services["web"]["environment"], services["jaeger"]

    assert web["OTLP_ENDPOINT"] == "http://jaeger:4318"
    assert expand(web["ENABLE_TRACING"], {}) == ["true"]
    assert str(jaeger["environment"]["COLLECTOR_OTLP_ENABLED"]) == "true"
    assert "4318" in [str(port) for port in jaeger.get("expose", [])]
    assert "16686:16686" in jaeger["ports"]


def test_prometheus_scrapes_webs_metrics() -> None:
    service = compose()["services"]["prometheus"]
    mounted = [volume.split(":") for volume in service["volumes"] if volume.startswith("./")]
    config_file = next(ROOT / source for source, target, *_ in mounted if target == "/etc/prometheus/prometheus.yml")

    jobs = yaml.safe_load(config_file.read_text())["scrape_configs"]

    targets = [
        (job.get("metrics_path", "/metrics"), target)
        for job in jobs
        for group in job["static_configs"]
        for target in group["targets"]
    ]
    assert ("/metrics", "web:8000") in targets
    assert "web" in compose()["services"]["web"]["environment"]["ALLOWED_HOSTS"].split(",")
