"""`python -m bench.logread`: reading the request log on PostgreSQL at a million rows.

A measurement, not a test. It fills a bench database (dropped and made anew, `--database-url`)
with `--rows` request-log rows over 14 days (one `INSERT ... SELECT generate_series`, then
ANALYZE), then prints:

- the plan of each read the API makes (`EXPLAIN ANALYZE` of the selector's query with its LIMIT):
  the node it starts from, whether it sorts, its execution time;
- the wall time of `GET /api/v1/request-logs` (first page, a cursor page, filters) and of the
  admin changelist (first page, page 50, a day of the date hierarchy, a filter, a search),
  through Django's test client in this process (no server: what is timed is the view and its
  queries), each the median of `--repeat` calls after one warm-up;
- what Django's own date hierarchy query (`SELECT DISTINCT date_trunc(...)` over a month) would
  cost, against the index probes the admin runs instead.

The figures are printed as Markdown; they are not written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from bench.common import BenchError
from bench.common.scratch import recreate_database

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/sentinel_bench_logread"
DAYS = 14


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.logread", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to write (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=15, help="calls timed per figure (median; default 15)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--keep", action="store_true", help="keep the bench database at the end")
    return parser.parse_args(argv)


def django_setup(args: argparse.Namespace) -> None:
    """Sentinel's settings in production mode on the bench database, in this process."""
    os.environ.update(
        {
            "DATABASE_URL": args.database_url,
            "REDIS_URL": args.redis_url,
            "SECRET_KEY": secrets.token_urlsafe(32),
            "CACHE_KEY_PREFIX": "bench-logread",
            "ALLOWED_HOSTS": "testserver",
            "LOG_LEVEL": "warning",
            "DJANGO_SETTINGS_MODULE": "sentinel_site.settings",
        }
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


# --- the data --------------------------------------------------------------------------------------

# One row every DAYS/rows seconds back from now; five callers in turn (four tenants and anonymous
# callers), ten routes, a thousand client addresses, one request in 40 limited, one in 200 failing
# upstream, one in 100 not found. Tenant 0 (whose member reads) has routes 1 and 6 and the
# addresses whose last number is a multiple of 5: the filters below pick values it has.
FILL_SQL = """
INSERT INTO observability_requestlog (
    time, correlation_id, trace_id, tenant_uuid, tenant_key, tier, principal, route_id, route, method,
    path, status, decision, reason, latency_ms, upstream, upstream_latency_ms, client_ip, user_agent,
    bytes_in, bytes_out, breaker_transition)
SELECT
    now() - (g * %(step)s) * interval '1 second',
    md5(g::text), '', (%(tenants)s::uuid[])[1 + g %% 5], '', 'standard', '', 1 + g %% 10,
    '/route-' || (1 + g %% 10) || '/', CASE WHEN g %% 7 = 0 THEN 'POST' ELSE 'GET' END,
    '/route-' || (1 + g %% 10) || '/items/' || (g %% 5000),
    CASE WHEN g %% 40 = 0 THEN 429 WHEN g %% 200 = 5 THEN 502 WHEN g %% 100 = 3 THEN 404 ELSE 200 END,
    CASE WHEN g %% 40 = 0 THEN 'limited' WHEN g %% 200 = 5 THEN 'upstream_error' ELSE 'forwarded' END,
    CASE WHEN g %% 40 = 0 THEN 'tenant_rate' ELSE '' END,
    (g %% 97) * 0.7, 'http://upstream:8080', (g %% 97) * 0.6,
    ('10.0.' || (g %% 1000) / 250 || '.' || (g %% 250))::inet, 'bench/1.0', 200, 1200, ''
FROM generate_series(1, %(rows)s) AS g
"""


def fill(rows: int) -> dict[str, Any]:
    """The bench's tenants, users and rows; the uuids and users the measurements use."""
    from django.db import connection

    from accounts import services as accounts

    tenants = [accounts.tenant_create(name=f"Bench {n}", slug=f"bench-{n}") for n in range(4)]
    member = accounts.user_create(username="bench-member", password=secrets.token_urlsafe(16))
    accounts.membership_add(tenant=tenants[0], user=member)
    staff = accounts.user_create(
        username="bench-staff", password=secrets.token_urlsafe(16), is_staff=True, is_superuser=True
    )
    uuids = [str(tenant.uuid) for tenant in tenants] + [None]  # g % 5 == 4: anonymous
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(FILL_SQL, {"step": DAYS * 86400 / rows, "tenants": uuids, "rows": rows})
        cursor.execute("ANALYZE observability_requestlog")
    print(f"filled {rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
    return {"tenant": tenants[0], "member": member, "staff": staff}


# --- plans -------------------------------------------------------------------------------------------


def plan_summary(queryset: Any) -> tuple[str, str]:
    """(the plan's nodes down to the first scan, one line; its execution time) for EXPLAIN ANALYZE."""
    text = queryset.explain(analyze=True)
    lines = [line.strip().removeprefix("->  ") for line in text.splitlines()]
    nodes = []
    for line in lines:
        if line and "(cost=" in line:
            nodes.append(line.split("  (cost=")[0])
            if "Scan" in line:
                break
    executed = next((line.split(": ")[1] for line in lines if line.startswith("Execution Time")), "?")
    return " → ".join(nodes), executed


def explain_reads(people: dict[str, Any]) -> list[tuple[str, str, str]]:
    from django.utils import timezone

    from observability import selectors
    from observability.models import RequestLog
    from observability.selectors import LogPosition, RequestLogFilters

    tenant = people["tenant"].uuid
    week_ago = timezone.now() - timedelta(days=DAYS / 2)
    middle = RequestLog.objects.filter(time__lte=week_ago).order_by("-time", "-id").values("time", "id").first()
    assert middle is not None
    reads: dict[str, Any] = {
        "staff, first page": selectors.request_logs_for(tenant_uuid=None, everyone=True),
        "tenant, first page": selectors.request_logs_for(tenant_uuid=tenant),
        "tenant, a page deep in the log (cursor)": selectors.request_logs_after(
            selectors.request_logs_for(tenant_uuid=tenant), position=LogPosition(**middle)
        ),
    }
    filters = {
        "status=502": RequestLogFilters(statuses=(502,)),
        "status=5xx": RequestLogFilters(status_classes=(5,)),
        "decision=limited": RequestLogFilters(decisions=("limited",)),
        "client_ip": RequestLogFilters(client_ip="10.0.1.5"),
        "route (id)": RequestLogFilters(route_id=1),
        "correlation_id": RequestLogFilters(correlation_id="e4da3b7fbbce2345d7772b0674a318d5"),
        "since a week ago": RequestLogFilters(since=week_ago),
        "path_prefix": RequestLogFilters(path_prefix="/route-1/items/42"),
        "path_prefix matching nothing (the worst case)": RequestLogFilters(path_prefix="/nowhere/"),
    }
    for name, chosen in filters.items():
        reads[f"tenant, {name}"] = selectors.request_logs_for(tenant_uuid=tenant, filters=chosen)
    return [(name, *plan_summary(queryset[:51])) for name, queryset in reads.items()]


# --- timings -----------------------------------------------------------------------------------------


def median_ms(call: Callable[[], Any], repeat: int) -> float:
    call()  # warm-up: connections, caches, the first plan
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def fetch(client: Any, url: str, query: dict[str, str] | None = None) -> Callable[[], Any]:
    def call() -> Any:
        response = client.get(url, query or {})
        if response.status_code != 200:
            raise BenchError(f"GET {url} {query}: {response.status_code} {response.content[:300]!r}")
        return response

    return call


def time_reads(people: dict[str, Any], repeat: int) -> list[tuple[str, float]]:
    from django.test import Client

    from observability.models import RequestLog

    member, staff = Client(), Client()
    member.force_login(people["member"])
    staff.force_login(people["staff"])
    api, admin = "/api/v1/request-logs", "/admin/observability/requestlog/"
    second = fetch(member, api)().json()["next"].split("?", 1)[1]
    day = RequestLog.objects.order_by("time").values_list("time", flat=True).first()
    assert day is not None
    cases = [
        ("API, tenant member, first page (50)", fetch(member, api)),
        ("API, tenant member, next page (cursor)", fetch(member, f"{api}?{second}")),
        ("API, tenant member, status=5xx", fetch(member, api, {"status": "5xx"})),
        ("API, tenant member, client_ip", fetch(member, api, {"client_ip": "10.0.1.5"})),
        ("API, staff, first page (500)", fetch(staff, api, {"page_size": "500"})),
        ("admin, first page (100)", fetch(staff, admin)),
        ("admin, page 50", fetch(staff, admin, {"p": "50"})),
        ("admin, one day of the date hierarchy", fetch(staff, admin, _day_query(day))),
        ("admin, decision=limited", fetch(staff, admin, {"decision__exact": "limited"})),
        ("admin, search by client IP", fetch(staff, admin, {"q": "10.0.1.5"})),
        ("admin, search by path prefix", fetch(staff, admin, {"q": "/route-1/items/42"})),
    ]
    return [(name, median_ms(call, repeat)) for name, call in cases]


def _day_query(moment: Any) -> dict[str, str]:
    from django.utils import timezone

    local = timezone.localtime(moment + timedelta(days=1))  # the oldest whole day
    return {"time__year": str(local.year), "time__month": str(local.month), "time__day": str(local.day)}


def date_hierarchy_costs(repeat: int) -> list[tuple[str, float]]:
    """The days of the month a week ago, as the admin lists them once a month is chosen (the month
    as the range the admin filters by): Django's `datetimes()` against the admin's probes."""
    from django.utils import timezone

    from observability.admin import TimeProbingQuerySet, _next_period
    from observability.models import RequestLog

    start = timezone.localtime(timezone.now() - timedelta(days=DAYS / 2))
    start = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    month = {"time__gte": start, "time__lt": _next_period(start, "month")}
    django_way = RequestLog.objects.filter(**month)
    probing = TimeProbingQuerySet(RequestLog).filter(**month)
    return [
        (
            "days of a month (date hierarchy), Django's SELECT DISTINCT",
            median_ms(lambda: list(django_way.datetimes("time", "day")), repeat),
        ),
        (
            "days of a month (date hierarchy), the admin's index probes",
            median_ms(lambda: list(probing.datetimes("time", "day")), repeat),
        ),
    ]


# --- the run -----------------------------------------------------------------------------------------


def report(rows: int, plans: list[tuple[str, str, str]], timings: list[tuple[str, float]]) -> str:
    lines = [f"### Reading the request log ({rows:,} rows over {DAYS} days, PostgreSQL)", ""]
    lines += ["| read (LIMIT 51) | plan, down to its first scan | executed |", "|---|---|---|"]
    lines += [f"| {name} | {shape} | {executed} |" for name, shape, executed in plans]
    lines += ["", "| request | median ms |", "|---|---:|"]
    lines += [f"| {name} | {ms:.1f} |" for name, ms in timings]
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    recreate_database(args.database_url)
    try:
        django_setup(args)
        people = fill(args.rows)
        plans = explain_reads(people)
        timings = time_reads(people, args.repeat) + date_hierarchy_costs(args.repeat)
        print(report(args.rows, plans, timings))
    finally:
        from django.db import connections

        connections.close_all()
        if not args.keep:
            recreate_database(args.database_url, create=False)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        print(f"bench.logread: {exc}", file=sys.stderr)
        sys.exit(1)
