"""The worker's check pipeline in-process: a batch handed over runs on the pipeline's event loop
against a real local server, and its reports are written together, flips handed on after the
commit; the checks metrics count each check."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import Tenant
from core.egress import EgressPolicy
from monitors import metrics
from monitors.checks import CheckPipeline
from monitors.engine.runner import CheckRunner
from monitors.models import CheckResult, Flip, Monitor
from monitors.scheduler import monitors_claim

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server answering 200 on / and 503 elsewhere; the paths it was asked for."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200 if self.path == "/" else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def counted(outcome: str) -> float:
    return float(metrics.checks.labels(outcome=outcome)._value.get())


def test_a_batch_runs_on_the_pipeline_and_is_written_with_its_flips_handed_on(
    tenant_a: Tenant, server: tuple[str, list[str]]
) -> None:
    url, seen = server
    now = timezone.now()
    Monitor.objects.bulk_create(
        Monitor(
            tenant=tenant_a,
            name=f"m{n}",
            target=f"{url}/" if n % 4 else f"{url}/broken",
            failure_threshold=1,
            success_threshold=1,
            next_due_at=now,
        )
        for n in range(20)
    )
    claims = monitors_claim(now=timezone.now(), lookahead_seconds=0, margin_seconds=30, limit=100)
    flipped: list[int] = []
    before = (counted("up"), counted("down"))
    pipeline = CheckPipeline(
        runner_factory=lambda: CheckRunner(egress=EgressPolicy(allow_loopback=True), concurrency=8),
        write_rows=100,
        flush_seconds=0.05,
        on_flips=flipped.extend,
    )
    try:
        handed = pipeline.submit(claims)
        assert pipeline.drain(timeout=30)
    finally:
        pipeline.close(timeout=5)

    states = dict(Monitor.objects.values_list("name", "state"))
    assert handed == len(seen) == CheckResult.objects.count() == 20
    assert states == {f"m{n}": "up" if n % 4 else "down" for n in range(20)}
    assert sorted(flipped) == sorted(Flip.objects.values_list("pk", flat=True)) and len(flipped) == 20
    assert not Monitor.objects.filter(claimed_until__isnull=False).exists()
    assert (counted("up") - before[0], counted("down") - before[1]) == (15, 5)
