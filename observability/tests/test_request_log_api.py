"""`GET /api/v1/request-logs[/<id>]`: the tenant wall, every filter, cursor pages, bad input."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import services as accounts_services
from accounts.models import Tenant, User
from gateway import services as gateway_services
from observability.models import Decision, RequestLog
from observability.tests.request_log_rows import log_row, log_rows, minutes_ago

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]
URL = "/api/v1/request-logs"


def ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def id_of(rows: list[RequestLog]) -> list[int]:
    return [row.pk for row in rows]


@pytest.fixture
def wall(tenant_a: Tenant, tenant_b: Tenant) -> dict[str, list[RequestLog]]:
    """Two rows of tenant A, one of tenant B and one of an anonymous caller, newest first."""
    a_old, a_new = (
        log_row(time=minutes_ago(4), tenant_uuid=tenant_a.uuid),
        log_row(time=minutes_ago(1), tenant_uuid=tenant_a.uuid),
    )
    b = log_row(time=minutes_ago(2), tenant_uuid=tenant_b.uuid)
    anonymous = log_row(time=minutes_ago(3), decision=Decision.AUTH_FAILED, status=401)
    log_rows([a_old, a_new, b, anonymous])
    return {"a": [a_new, a_old], "b": [b], "anonymous": [anonymous], "all": [a_new, b, anonymous, a_old]}


# --- the wall ------------------------------------------------------------------------------------


def test_tenant_users_read_their_tenants_rows_and_staff_read_all(
    api: Api, wall: dict[str, list[RequestLog]], alice: User, bob: User, mallory: User, staff: User
) -> None:
    assert ids(api(alice).get(URL)) == id_of(wall["a"])
    assert ids(api(bob).get(URL)) == id_of(wall["a"])
    assert ids(api(mallory).get(URL)) == id_of(wall["b"])
    assert ids(api(staff).get(URL)) == id_of(wall["all"])  # the anonymous caller's row included


def test_another_tenants_row_is_not_found(
    api: Api, wall: dict[str, list[RequestLog]], alice: User, mallory: User
) -> None:
    row = wall["a"][0]

    assert api(mallory).get(f"{URL}/{row.pk}").status_code == 404
    assert api(alice).get(f"{URL}/{wall['anonymous'][0].pk}").status_code == 404
    mine = api(alice).get(f"{URL}/{row.pk}")
    assert mine.status_code == 200
    assert mine.json()["correlation_id"] == row.correlation_id
    assert mine.json()["path"] == row.path


def test_a_row_reads_back_with_every_field_of_spec_3(api: Api, tenant_a: Tenant, alice: User) -> None:
    row = log_rows([
        log_row(
            tenant_uuid=tenant_a.uuid, method="POST", path="/orders/7?x=1", status=429, decision=Decision.LIMITED,
            reason="tenant_rate", latency_ms=1.25, upstream="", upstream_latency_ms=None, client_ip="2001:db8::1",
            user_agent="curl/8.5", bytes_in=512, bytes_out=96, trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        )
    ])[0]  # fmt: skip

    body = api(alice).get(f"{URL}/{row.pk}").json()

    assert body["tenant_uuid"] == str(tenant_a.uuid)
    assert (body["method"], body["path"], body["status"], body["decision"]) == ("POST", "/orders/7?x=1", 429, "limited")
    assert (body["reason"], body["latency_ms"], body["upstream_latency_ms"]) == ("tenant_rate", 1.25, None)
    assert (body["client_ip"], body["user_agent"], body["bytes_in"], body["bytes_out"]) == (
        "2001:db8::1",
        "curl/8.5",
        512,
        96,
    )
    assert body["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_strangers_are_refused(api: Api, wall: dict[str, list[RequestLog]], tenant_a: Tenant) -> None:
    loner = User.objects.create_user(username="loner", password="x")

    assert api().get(URL).status_code == 401
    refused = api(loner).get(URL)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"


def test_an_api_key_reads_its_tenants_log_with_the_read_scope_only(
    api: Api, wall: dict[str, list[RequestLog]], tenant_a: Tenant
) -> None:
    _key, reader = accounts_services.api_key_create(tenant=tenant_a, name="grafana", scopes=["api:read"])
    _key, data_plane = accounts_services.api_key_create(tenant=tenant_a, name="checkout")  # proxy, events, transactions

    assert ids(api(api_key=reader).get(URL)) == id_of(wall["a"])
    assert api(api_key=reader).get(f"{URL}/{wall['b'][0].pk}").status_code == 404
    assert api(api_key=data_plane).get(URL).status_code == 403


def test_staff_choose_a_tenant_by_slug_or_uuid_and_others_only_their_own(
    api: Api, wall: dict[str, list[RequestLog]], tenant_a: Tenant, tenant_b: Tenant, staff: User, alice: User
) -> None:
    assert ids(api(staff).get(URL, {"tenant": "evil"})) == id_of(wall["b"])
    assert ids(api(staff).get(URL, {"tenant": str(tenant_a.uuid)})) == id_of(wall["a"])
    assert ids(api(alice).get(URL, {"tenant": "wonderland"})) == id_of(wall["a"])
    assert ids(api(alice).get(URL, {"tenant": str(tenant_a.uuid).upper()})) == id_of(wall["a"])
    assert api(alice).get(URL, {"tenant": "evil"}).status_code == 403
    unknown = api(staff).get(URL, {"tenant": "nobody"})
    assert unknown.status_code == 400
    assert "tenant" in unknown.json()["error"]["details"]


def test_a_read_only_resource(api: Api, wall: dict[str, list[RequestLog]], alice: User, staff: User) -> None:
    row = wall["a"][0]
    for client in (api(alice), api(staff)):
        assert client.post(URL, {"path": "/x"}, format="json").status_code == 405
        assert client.delete(f"{URL}/{row.pk}").status_code == 405
        assert client.patch(f"{URL}/{row.pk}", {"status": 200}, format="json").status_code == 405
    assert RequestLog.objects.filter(pk=row.pk).exists()


# --- filters -------------------------------------------------------------------------------------


@pytest.fixture
def variety(tenant_a: Tenant) -> dict[str, RequestLog]:
    """One row of tenant A for each thing a filter can pick, a minute apart."""
    route = gateway_services.route_create(
        tenant=tenant_a, name="payments", path_prefix="/wonderland/payments/", targets=["http://127.0.0.1:9"]
    )

    def at(minutes: int, **fields: Any) -> RequestLog:
        return log_row(time=minutes_ago(minutes), tenant_uuid=tenant_a.uuid, **fields)

    rows = {
        "old": at(90),
        "route": at(50, route_id=route.pk, route=route.path_prefix, path=f"{route.path_prefix}9"),
        "gone_route": at(45, route_id=999, route="/retired/", path="/retired/1"),
        "not_found": at(40, status=404),
        "bad_gateway": at(30, status=502, decision=Decision.UPSTREAM_ERROR),
        "limited": at(20, status=429, decision=Decision.LIMITED, reason="tenant_rate"),
        "shed": at(15, status=503, decision=Decision.SHED),
        "ipv6": at(10, client_ip="2001:db8::42"),
        "post": at(5, method="POST", path="/invoices/1", correlation_id="trace-me-please"),
    }
    log_rows(list(rows.values()))
    return rows


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status": "404"}, ["not_found"]),
        ({"status": "404,502"}, ["bad_gateway", "not_found"]),
        ({"status": ["429", "404"]}, ["limited", "not_found"]),
        ({"status": "5xx"}, ["shed", "bad_gateway"]),
        ({"status": "4XX,503"}, ["shed", "limited", "not_found"]),
        ({"decision": "limited"}, ["limited"]),
        ({"decision": "shed,upstream_error"}, ["shed", "bad_gateway"]),
        ({"client_ip": "2001:db8:0::42"}, ["ipv6"]),  # written another way, the same address
        ({"correlation_id": "trace-me-please"}, ["post"]),
        ({"path_prefix": "/invoices/"}, ["post"]),
        ({"path_prefix": "/invoices/%"}, []),  # LIKE wildcards are matched as text
        ({"method": "post"}, ["post"]),
        ({"route": "/wonderland/payments/"}, ["route"]),  # through the route's id
        ({"route": "/wonderland/payments"}, ["route"]),  # the prefix without its closing slash
        ({"route": "/retired/"}, ["gone_route"]),  # no such route any more: the recorded prefix
        ({"route": "999"}, ["gone_route"]),
    ],
)
def test_each_filter_picks_its_rows(
    api: Api, alice: User, variety: dict[str, RequestLog], query: dict[str, Any], expected: list[str]
) -> None:
    assert ids(api(alice).get(URL, query)) == [variety[name].pk for name in expected]


def test_a_route_filter_by_id_follows_the_route(api: Api, alice: User, variety: dict[str, RequestLog]) -> None:
    route_id = variety["route"].route_id

    assert ids(api(alice).get(URL, {"route": str(route_id)})) == [variety["route"].pk]


def test_a_time_range_includes_since_and_excludes_until(api: Api, alice: User, variety: dict[str, RequestLog]) -> None:
    since, until = variety["bad_gateway"].time, variety["shed"].time

    in_range = ids(api(alice).get(URL, {"since": since.isoformat(), "until": until.isoformat()}))

    assert in_range == [variety["limited"].pk, variety["bad_gateway"].pk]


def test_times_without_an_offset_are_utc_and_a_date_is_its_midnight(api: Api, alice: User, tenant_a: Tenant) -> None:
    rows = log_rows([
        log_row(time=timezone.now().replace(year=2026, month=3, day=1, hour=23, minute=30), tenant_uuid=tenant_a.uuid),
        log_row(time=timezone.now().replace(year=2026, month=3, day=2, hour=0, minute=30), tenant_uuid=tenant_a.uuid),
    ])  # fmt: skip

    assert ids(api(alice).get(URL, {"since": "2026-03-02"})) == [rows[1].pk]
    assert ids(api(alice).get(URL, {"until": "2026-03-02T00:00:00"})) == [rows[0].pk]
    assert ids(api(alice).get(URL, {"until": "2026-03-02T01:00:00+01:00"})) == [rows[0].pk]


def test_filters_combine(api: Api, alice: User, variety: dict[str, RequestLog]) -> None:
    query = {"status": "4xx,5xx", "since": variety["bad_gateway"].time.isoformat(), "decision": "limited,shed"}

    assert ids(api(alice).get(URL, query)) == [variety["shed"].pk, variety["limited"].pk]


def test_filters_never_cross_the_wall(api: Api, mallory: User, variety: dict[str, RequestLog]) -> None:
    assert ids(api(mallory).get(URL, {"correlation_id": "trace-me-please"})) == []


# --- pages ---------------------------------------------------------------------------------------


@pytest.fixture
def crowded(tenant_a: Tenant) -> list[RequestLog]:
    """23 rows, newest first, of which 9 share one timestamp and 4 another: the ties a keyset on
    time alone would split, repeat or skip."""
    now = timezone.now().replace(microsecond=0)
    times = [now] * 9 + [now - timedelta(seconds=1)] * 4 + [now - timedelta(seconds=n) for n in range(2, 12)]
    rows = log_rows([log_row(time=moment, tenant_uuid=tenant_a.uuid) for moment in times])
    return sorted(rows, key=lambda row: (row.time, row.pk), reverse=True)


def walk(client: APIClient, url: str, link: str) -> list[list[int]]:
    pages = []
    while url:
        response = client.get(url)
        pages.append(ids(response))
        url = response.json()[link]
    return pages


def test_next_links_visit_every_row_once_in_order(api: Api, alice: User, crowded: list[RequestLog]) -> None:
    client = api(alice)

    pages = walk(client, f"{URL}?page_size=4", "next")

    assert [len(page) for page in pages] == [4, 4, 4, 4, 4, 3]
    assert [row_id for page in pages for row_id in page] == id_of(crowded)


def test_previous_links_walk_back_to_the_first_page(api: Api, alice: User, crowded: list[RequestLog]) -> None:
    client = api(alice)
    forward = walk(client, f"{URL}?page_size=4", "next")
    last = client.get(f"{URL}?page_size=4")
    for _ in range(len(forward) - 1):
        last = client.get(last.json()["next"])

    backward = walk(client, last.json()["previous"], "previous")

    assert backward == forward[-2::-1]
    assert client.get(f"{URL}?page_size=4").json()["previous"] is None


def test_links_keep_the_filters(api: Api, alice: User, crowded: list[RequestLog]) -> None:
    response = api(alice).get(URL, {"page_size": 2, "method": "GET", "status": "2xx"})

    query = parse_qs(urlsplit(response.json()["next"]).query)
    assert (query["page_size"], query["method"], query["status"]) == (["2"], ["GET"], ["2xx"])
    assert "cursor" in query


def test_a_page_is_fifty_rows_unless_asked(api: Api, alice: User, tenant_a: Tenant) -> None:
    log_rows([log_row(time=minutes_ago(n), tenant_uuid=tenant_a.uuid) for n in range(60)])

    first = api(alice).get(URL)
    assert len(ids(first)) == 50
    assert first.json()["next"] is not None
    assert len(ids(api(alice).get(URL, {"page_size": 500}))) == 60


def test_new_rows_do_not_shift_the_next_page(
    api: Api, alice: User, tenant_a: Tenant, crowded: list[RequestLog]
) -> None:
    client = api(alice)
    first = client.get(f"{URL}?page_size=5")

    log_rows([log_row(tenant_uuid=tenant_a.uuid) for _ in range(3)])  # traffic goes on

    assert ids(client.get(first.json()["next"])) == id_of(crowded[5:10])


# --- bad input -----------------------------------------------------------------------------------


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-02-30T10:00:00Z"}, "until"),
        ({"since": "2026-03-02", "until": "2026-03-01"}, "until"),
        ({"client_ip": "198.51.100.300"}, "client_ip"),
        ({"client_ip": "198.51.100.0/24"}, "client_ip"),
        ({"client_ip": "fe80::1%eth0"}, "client_ip"),
        ({"until": "9999-12-31T23:00:00-05:00"}, "until"),
        ({"decision": "forwarded,maybe"}, "decision"),
        ({"status": "abc"}, "status"),
        ({"status": "700"}, "status"),
        ({"status": "6xx"}, "status"),
        ({"status": "²00"}, "status"),
        ({"method": "GET /"}, "method"),
        ({"path_prefix": "/a\x00b"}, "path_prefix"),
        ({"correlation_id": "x" * 129}, "correlation_id"),
        ({"route": "12345678901234567890"}, "route"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": _cursor("o|yesterday|1")}, "cursor"),
        ({"cursor": _cursor("o|2026-03-01T00:00:00|1")}, "cursor"),  # no time zone
        ({"cursor": _cursor("x|2026-03-01T00:00:00+00:00|1")}, "cursor"),
        ({"cursor": _cursor("o|2026-03-01T00:00:00+00:00|-1")}, "cursor"),
        ({"cursor": "%%%"}, "cursor"),
        ({"cursor": _cursor("o|9999-12-31T23:00:00-05:00|1")}, "cursor"),
        ({"page_size": "0"}, "page_size"),
        ({"page_size": "501"}, "page_size"),
        ({"page_size": "ten"}, "page_size"),
        ({"statuss": "500"}, "statuss"),  # a typo is not a filter silently dropped
        ({"status": "500", "client": "1.2.3.4"}, "client"),
    ],
)
def test_bad_input_is_a_400_that_names_it(
    api: Api, alice: User, staff: User, query: dict[str, str], field: str
) -> None:
    for client in (api(alice), api(staff)):
        response = client.get(URL, query)

        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert error["code"] == "validation_error"
        assert field in error["details"], error


@pytest.mark.parametrize("bad_id", ["abc", "99999999999999999999", "-1"])
def test_a_bad_id_is_a_404(api: Api, alice: User, bad_id: str) -> None:
    response = api(alice).get(f"{URL}/{bad_id}")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# --- the schema ----------------------------------------------------------------------------------


def test_the_schema_documents_the_filters_and_the_cursor_page(api: Api, staff: User) -> None:
    schema = api(staff).get("/api/schema/", {"format": "json"}).json()

    listing = schema["paths"][URL]["get"]
    names = {parameter["name"] for parameter in listing["parameters"]}
    assert names >= {"since", "until", "route", "status", "decision", "client_ip", "correlation_id", "path_prefix",
                     "method", "tenant", "cursor", "page_size"}  # fmt: skip
    assert "page" not in names  # no offsets
    page = schema["components"]["schemas"][
        listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    ]
    assert set(page["properties"]) == {"next", "previous", "results"}
    assert "count" not in page["properties"]
    assert "404" in schema["paths"][f"{URL}/{{id}}"]["get"]["responses"]
