"""The proxy's route table: longest-prefix matching, prefix stripping, round robin (hostile paths:
test_engine_paths.py)."""

from __future__ import annotations

from gateway.engine.routes import RouteSpec, RouteTable


def spec(route_id: int, prefix: str, **kw: object) -> RouteSpec:
    return RouteSpec(id=route_id, name=f"r{route_id}", path_prefix=prefix, targets=("http://a",), **kw)  # type: ignore[arg-type]


def test_the_longest_prefix_wins() -> None:
    table = RouteTable([spec(1, "/api/"), spec(2, "/api/orders/"), spec(3, "/proxy/")])

    assert table.match("/api/orders/42").id == 2
    assert table.match("/api/users").id == 1
    assert table.match("/api/orders").id == 2  # without the trailing slash
    assert table.match("/apix/") is None
    assert table.match("/") is None


def test_prefix_stripping() -> None:
    stripped = spec(1, "/proxy/")
    kept = spec(2, "/keep/", strip_prefix=False)

    assert stripped.upstream_path("/proxy/status/503") == "/status/503"
    assert stripped.upstream_path("/proxy") == "/"
    assert kept.upstream_path("/keep/a/b") == "/keep/a/b"


def test_methods_filter() -> None:
    assert spec(1, "/a/", methods=frozenset({"GET"})).allows_method("GET")
    assert not spec(1, "/a/", methods=frozenset({"GET"})).allows_method("POST")
    assert spec(1, "/a/").allows_method("DELETE")


def test_targets_rotate_round_robin() -> None:
    route = RouteSpec(id=1, name="r", path_prefix="/r/", targets=("http://a", "http://b", "http://c"))

    firsts = [route.targets_in_turn()[0] for _ in range(6)]

    assert firsts == ["http://a", "http://b", "http://c"] * 2
    assert sorted(route.targets_in_turn()) == ["http://a", "http://b", "http://c"]
