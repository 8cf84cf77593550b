"""The hot paths stay plain Python (CONVENTIONS 5): every module of ``gateway/engine``,
``rules/dsl`` and ``monitors/engine``, imported alone in a fresh interpreter with Django
unconfigured, loads no Django and no Sentinel module but its own package's, the hot paths it
builds on (``HOT_PATH_BASES``) and the ground floor's Django-free ones.

The modules are listed by walking the packages, so a new module is covered the day it is added.
"""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys
from functools import cache

import pytest

from tests.support.processes import BASE_DIR

HOT_PATHS = ("gateway.engine", "rules.dsl", "monitors.engine", "fraud.engine", "fraud.brain")
GROUND_FLOOR = "core"
# Hot paths a hot path may build on (docs/architecture.md's arrows): monitors' conditions are DSL.
HOT_PATH_BASES = {
    "monitors.engine": ("rules.dsl",),
    # The brain client sits behind the gateway engine's shared breaker; both speak the generated stubs.
    "fraud.engine": ("gateway.engine", "fraud.protos"),
    "fraud.brain": ("fraud.engine", "fraud.protos"),
}
# Libraries that exist to serve Django: a hot path may not use them, even in a deferred import.
DJANGO_WORLD = frozenset({"django", "rest_framework", "channels", "channels_redis", "django_redis"})
# Top-level packages of this repository (apps, the site, the ground floor, test support).
PROJECT = frozenset(path.parent.name for path in BASE_DIR.glob("*/__init__.py"))

# What a module does beyond being imported, where importing alone would not load all it uses.
EXERCISE = {
    "rules.dsl": "import rules.dsl; rules.dsl.compile_rule('when a > 1 then notify(\"slack:#x\")')",
    "monitors.engine.runner": "import rules.dsl; rules.dsl.compile_condition('status == 200')",
}

CHILD = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
exec(sys.argv[2])
print(json.dumps(sorted(sys.modules)))
"""


def modules_of(package: str) -> list[str]:
    """``package`` and every module and subpackage under it, by walking its folder."""
    folder = BASE_DIR.joinpath(*package.split("."))
    return [package, *(info.name for info in pkgutil.walk_packages([str(folder)], prefix=f"{package}."))]


def package_of(module: str) -> str:
    return next(package for package in HOT_PATHS if module == package or module.startswith(f"{package}."))


@cache
def source_imports(module: str) -> frozenset[str]:
    """Dotted names of everything the module's source imports, deferred (function-local) imports
    included: ``from core import errors`` gives ``core`` and ``core.errors``."""
    path = BASE_DIR.joinpath(*module.split("."))
    source = (path / "__init__.py") if path.is_dir() else path.with_suffix(".py")
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return frozenset(names)


def imports_of(module: str) -> frozenset[str]:
    """Top-level names of everything the module's source imports, deferred imports included."""
    return frozenset(name.split(".")[0] for name in source_imports(module))


def project_module(name: str) -> bool:
    """Is ``name`` a module of this repository (not a class or function imported from one)?"""
    path = BASE_DIR.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def is_allowed(loaded: str, package: str) -> bool:
    """May a module of ``package`` have ``loaded`` in its interpreter? Its own package, the hot
    paths it builds on and the packages above them, yes; a ground-floor module whose source imports
    nothing of Django nor of an app, yes; any other Sentinel module, no."""
    for own in (package, *HOT_PATH_BASES.get(package, ())):
        if loaded == own or loaded.startswith(f"{own}.") or own.startswith(f"{loaded}."):
            return True
    if loaded.split(".")[0] == GROUND_FLOOR:
        return not imports_of(loaded) & (DJANGO_WORLD | (PROJECT - {GROUND_FLOOR}))
    return False


def loaded_by_importing(module: str) -> list[str]:
    """``sys.modules`` of a fresh interpreter, run from the repository with no
    ``DJANGO_SETTINGS_MODULE``, after importing ``module`` (and running its ``EXERCISE``)."""
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(BASE_DIR)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, module, EXERCISE.get(module, "")],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


@pytest.mark.parametrize("module", [module for package in HOT_PATHS for module in modules_of(package)])
def test_a_hot_path_module_loads_no_django_and_no_app(module: str) -> None:
    # Given a fresh interpreter without Django settings, when it imports the module
    loaded = loaded_by_importing(module)

    # Then nothing of Django is loaded, nor any Sentinel module outside the module's own package
    # and the ground floor's Django-free modules
    assert [name for name in loaded if name.split(".")[0] in DJANGO_WORLD] == []
    sentinel = [name for name in loaded if name.split(".")[0] in PROJECT]
    assert [name for name in sentinel if not is_allowed(name, package_of(module))] == []


@pytest.mark.parametrize("module", [module for package in HOT_PATHS for module in modules_of(package)])
def test_a_hot_path_module_names_no_django_and_no_app_even_in_a_deferred_import(module: str) -> None:
    # An import inside a function is not run by importing the module, so read the source too
    named = source_imports(module)

    assert sorted(name for name in named if name.split(".")[0] in DJANGO_WORLD) == []
    sentinel = [name for name in named if name.split(".")[0] in PROJECT and project_module(name)]
    assert [name for name in sentinel if not is_allowed(name, package_of(module))] == []


def test_the_boundary_tells_the_ground_floors_django_side_from_its_plain_side() -> None:
    # The check above would pass vacuously if it let every ground-floor module through
    assert is_allowed("core.errors", "gateway.engine")
    assert not is_allowed("core.egress_django", "gateway.engine")
    assert not is_allowed("gateway.models", "gateway.engine")
    assert not is_allowed("gateway.engine.proxy", "rules.dsl")
    assert not is_allowed("core.api_errors", "gateway.engine")
    assert is_allowed("rules.dsl.compiler", "monitors.engine")
    assert not is_allowed("rules.models", "monitors.engine")
    assert not is_allowed("monitors.models", "monitors.engine")
    assert not is_allowed("monitors.engine.runner", "rules.dsl")
