"""The floors of docs/architecture.md hold: no production import goes against its arrows table,
and no two parts import each other, directly or around a loop."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
NOT_PRODUCTION = {"tests", "bench", "node_modules", "migrations", ".venv", ".git", "var", "static", "templates"}


def allowed_arrows() -> dict[str, set[str]]:
    """``{part: {parts it may import}}`` from the table between the ``arrows`` markers."""
    text = DOC.read_text()
    table = text.split("<!-- arrows:start -->")[1].split("<!-- arrows:end -->")[0]
    arrows: dict[str, set[str]] = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2:
            arrows[cells[0].strip("`")] = set(re.findall(r"`([\w.]+)`", cells[1]))
    return arrows


def part_of(module: str, parts: set[str]) -> str | None:
    """The longest part name that is ``module`` or prefixes it; None outside the project."""
    pieces = module.split(".")
    for length in range(len(pieces), 0, -1):
        candidate = ".".join(pieces[:length])
        if candidate in parts:
            return candidate
    return None


def production_modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        if NOT_PRODUCTION & set(relative.parts) or relative.name == "conftest.py":
            continue
        yield ".".join(relative.with_suffix("").parts).removesuffix(".__init__"), path


def imports_of(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every module ``module`` imports, with its line: function-local and TYPE_CHECKING ones too."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            for alias in node.names:  # `from gateway import services` names a module too
                yield f"{base}.{alias.name}", node.lineno


def project_arrows() -> dict[tuple[str, str], list[str]]:
    """``{(from part, to part): ["file:line imports module", ...]}`` between different parts."""
    parts = set(allowed_arrows())
    found: dict[tuple[str, str], list[str]] = {}
    for module, path in production_modules():
        source = part_of(module, parts)
        if source is None:
            continue
        for imported, line in imports_of(module, path):
            target = part_of(imported, parts)
            if target is not None and target != source:
                where = f"{path.relative_to(ROOT)}:{line} imports {imported}"
                found.setdefault((source, target), []).append(where)
    return found


def test_the_document_names_every_app_and_package_of_the_project() -> None:
    parts = set(allowed_arrows())
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}

    assert packages <= parts, f"parts missing from docs/architecture.md: {sorted(packages - parts)}"
    assert {"gateway.engine", "rules.dsl"} <= parts


def test_no_import_goes_against_the_arrows_of_the_document() -> None:
    arrows = allowed_arrows()

    forbidden = {
        (source, target): where for (source, target), where in project_arrows().items() if target not in arrows[source]
    }

    lines = [
        f"{source} -> {target}: {', '.join(where)}\n  ({source} may import: {', '.join(sorted(arrows[source]))})"
        for (source, target), where in sorted(forbidden.items())
    ]
    assert not forbidden, (
        "imports the floors forbid (docs/architecture.md, 'Who may import whom'):\n"
        + "\n".join(lines)
        + "\nMove the code to a floor both may use (core, for what every app shares), let sentinel_site hand it"
        " in (as it hands the proxy its sinks), or, if the arrow is right, add it to the table."
    )


def test_no_cycle_between_parts() -> None:
    graph: dict[str, set[str]] = {}
    for source, target in project_arrows():
        graph.setdefault(source, set()).add(target)

    cycles = [component for component in strongly_connected(graph) if len(component) > 1]

    assert not cycles, f"parts that import each other (docs/architecture.md forbids any loop): {cycles}"


def test_production_never_imports_the_test_support_or_the_benchmarks() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {imported}"
        for module, path in production_modules()
        for imported, line in imports_of(module, path)
        if imported.split(".")[0] in ("tests", "bench", "conftest")
    ]

    assert not offenders, offenders


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the strongly connected components of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return components


def test_the_checker_sees_a_forbidden_arrow_and_a_cycle() -> None:
    parts = set(allowed_arrows())

    assert part_of("gateway.engine.proxy", parts) == "gateway.engine"
    assert part_of("gateway.admin", parts) == "gateway"
    assert part_of("django.db", parts) is None
    assert "gateway" not in allowed_arrows()["accounts"]
    assert sorted(strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}})) == [["a", "b"], ["c"]]
