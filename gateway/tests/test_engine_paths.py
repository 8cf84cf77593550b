"""Request paths across routes (issue 8 item 2): what is routed is what is forwarded.

A public route `/pub/` and a key-protected route `/admin/` on the same backend (`/svc/public`,
`/svc/admin`): no spelling of a path routed to `/pub/` may be read by a backend as a path outside
`/svc/public/`. Every path either normalises to one path used for both routing and forwarding
(merged slashes) or is refused with UnsafePath (400), per `parse_path`'s table.
"""

from __future__ import annotations

import itertools
from urllib.parse import unquote_to_bytes

import pytest

from gateway.engine.rewrites import upstream_url
from gateway.engine.routes import RequestPath, RouteSpec, RouteTable, UnsafePath, parse_path

PUBLIC = RouteSpec(id=1, name="public", path_prefix="/pub/", targets=("http://backend/svc/public",), auth_mode="none")
ADMIN = RouteSpec(id=2, name="admin", path_prefix="/admin/", targets=("http://backend/svc/admin",), auth_mode="api_key")
KEPT = RouteSpec(id=3, name="kept", path_prefix="/keep/", targets=("http://backend",), strip_prefix=False)
TABLE = RouteTable([PUBLIC, ADMIN, KEPT])


def forwarded(raw_path: str) -> tuple[str, str]:
    """(route name, URL the upstream is asked for) of a path the gateway accepts."""
    path = parse_path(raw_path)
    route = TABLE.match(path.decoded)
    assert route is not None, raw_path
    return route.name, str(upstream_url(route.targets[0], route.upstream_path(path.raw), b""))


@pytest.mark.parametrize(
    "raw_path",
    [
        # the example, and dot segments in every spelling
        "/pub/..;/admin/secret",
        "/pub/../admin/secret",
        "/pub/./admin",
        "/pub/%2e%2e/admin/secret",
        "/pub/%2E%2e/admin/secret",
        "/pub/%2E%2E/admin/secret",
        "/pub/.%2e/admin/secret",
        "/pub/%2e./admin/secret",
        "/pub/%2e/admin",
        "/pub/x/..",
        "/pub/x/.",
        "/pub/x/%2e%2e",
        "/pub/.../admin",
        "/pub/..%20/admin",
        "/pub/%20/admin",
        # ";" path parameters, literal or encoded, on dot segments and on any other segment
        "/pub/..;jsessionid=x/admin/secret",
        "/pub/..%3b/admin/secret",
        "/pub/..%3B/admin/secret",
        "/pub/%2e%2e;/admin/secret",
        "/pub;x/secret",
        "/admin;x/secret",
        "/pub/a;b/c",
        "/pub/a%3bb",
        # encoded separators and backslashes
        "/pub/..%2fadmin/secret",
        "/pub/a%2fb",
        "/pub/a%2Fb",
        "/pub/..%5cadmin",
        "/pub/a%5Cb",
        "/pub/..\\admin",
        "/pub/a\\b",
        # control characters, encoded or raw
        "/pub/a%00b",
        "/pub/..%00/admin",
        "/pub/a%0d%0aSet-Cookie:x",
        "/pub/a%09",
        "/pub/a%7f",
        "/pub/a\x00b",
        "/pub/a\tb",
        # double encoding: a backend decoding twice finds "..", "/" or ";"
        "/pub/%252e%252e/admin/secret",
        "/pub/%252E%252E/admin/secret",
        "/pub/a%252fb",
        "/pub/%25%32%65",
        # not UTF-8: overlong "." and "/", lone continuation bytes, surrogates
        "/pub/%c0%ae%c0%ae/admin/secret",
        "/pub/%c0%af",
        "/pub/%e0%80%ae",
        "/pub/%80",
        "/pub/%ed%a0%80",
        # Unicode that NFKC folds to dots or separators
        "/pub/%ef%bc%8e%ef%bc%8e/admin",
        "/pub/%e2%80%a5/admin",
        "/pub/a%ef%bc%8fb",
        # malformed escapes
        "/pub/%",
        "/pub/a%2",
        "/pub/%zz",
        "/pub/%+1",
        "/pub/% 1",
        # raw non-ASCII, and targets that are not a path
        "/pub/café",
        "pub/x",
        "*",
        "",
    ],
)
def test_ambiguous_paths_are_refused(raw_path: str) -> None:
    with pytest.raises(UnsafePath):
        parse_path(raw_path)


@pytest.mark.parametrize(
    ("raw_path", "route", "url"),
    [
        ("/pub/orders/7", "public", "http://backend/svc/public/orders/7"),
        ("/pub", "public", "http://backend/svc/public/"),
        ("/pub/", "public", "http://backend/svc/public/"),
        # doubled slashes are merged for routing and forwarding alike (Envoy's merge_slashes)
        ("/pub//orders", "public", "http://backend/svc/public/orders"),
        ("//pub///orders//7/", "public", "http://backend/svc/public/orders/7/"),
        ("/admin//secret", "admin", "http://backend/svc/admin/secret"),
        # the client's escapes reach the upstream as sent: "%3D" is not "=" (RFC 3986 2.2)
        ("/pub/a%3Db%2Bc", "public", "http://backend/svc/public/a%3Db%2Bc"),
        ("/pub/caf%C3%A9/%3F%23", "public", "http://backend/svc/public/caf%C3%A9/%3F%23"),
        ("/pub/100%25", "public", "http://backend/svc/public/100%25"),
        # encoded unreserved characters route by what they mean (RFC 3986 6.2.2.2)
        ("/%70ub/x", "public", "http://backend/svc/public/x"),
        ("/%61dmin/secret", "admin", "http://backend/svc/admin/secret"),
        # dots inside names are no dot segments
        ("/pub/.well-known/x", "public", "http://backend/svc/public/.well-known/x"),
        ("/pub/..x/a.b/x..", "public", "http://backend/svc/public/..x/a.b/x.."),
        ("/pub/a%2ejson", "public", "http://backend/svc/public/a%2ejson"),
        # a route that keeps its prefix forwards the whole (merged) path
        ("/keep//a/%41", "kept", "http://backend/keep/a/%41"),
    ],
)
def test_accepted_paths_are_forwarded_as_routed(raw_path: str, route: str, url: str) -> None:
    assert forwarded(raw_path) == (route, url)


def test_a_merged_path_says_it_changed() -> None:
    assert parse_path("/pub//x") == RequestPath("/pub/x", "/pub/x", changed=True)
    assert parse_path("/pub/x") == RequestPath("/pub/x", "/pub/x", changed=False)
    assert parse_path("/pub/caf%C3%A9") == RequestPath("/pub/caf%C3%A9", "/pub/café", changed=False)


def backend_view(url: str) -> list[bytes]:
    """How a lenient backend could read the forwarded path: decoded twice, ";" parameters
    stripped (Tomcat), "\\" as "/", dot segments resolved (RFC 3986 5.2.4)."""
    path = url.split("//", 1)[1].partition("/")[2]
    octets = unquote_to_bytes(unquote_to_bytes(path))
    segments: list[bytes] = []
    for segment in octets.replace(b"\\", b"/").split(b"/"):
        segment = segment.split(b";", 1)[0]
        if segment == b"..":
            if segments:
                segments.pop()
        elif segment not in (b".", b""):
            segments.append(segment)
    return segments


def test_no_combination_of_hostile_pieces_escapes_the_routes_prefix() -> None:
    # Every path of up to three pieces after /pub/: accepted ones must stay under /svc/public
    # however leniently the backend reads them, and be forwarded to the route that matched.
    pieces = ["..", ".", "%2e", "%2E%2e", ";", "%3b", "%2f", "%5c", "\\", "", "%252e", "%c0%ae", "admin", "x"]
    accepted = 0
    for combination in itertools.product(pieces, repeat=3):
        raw_path = "/pub/" + "/".join(combination)
        try:
            route, url = forwarded(raw_path)
        except UnsafePath:
            continue
        accepted += 1
        assert route == "public", raw_path
        assert backend_view(url)[:2] == [b"svc", b"public"], (raw_path, url)
    assert accepted > 0  # the check above did run on something
