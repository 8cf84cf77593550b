"""Logs as an operator reads them: every line of every long-running process (web, Celery worker,
beat, event stream) is one JSON object; a request is logged once, with its correlation id, which
the worker's lines for the tasks it queued carry too; Python warnings come out as JSON lines;
LOG_LEVEL is obeyed. Real processes, their real output."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from accounts.api.serializers import TokenSerializer
from accounts.models import User
from tests.support.net import http_request
from tests.support.processes import celery_worker, child_env, python_command, running_process, web_server
from tests.support.redis_keys import key_prefix
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# Imported by every Python process started with this folder first on PYTHONPATH: each process
# calls warnings.warn once it is up (web: on its first request; worker: when ready; beat: when its
# scheduler starts), as library code would, with nothing of Sentinel's around the call.
WARNING_PROBE = """
import warnings

from celery import signals
from django.core.signals import request_started


def probe(kind):
    def warn(**_):
        warnings.warn(f"sentinel-test-probe {kind}", UserWarning, stacklevel=1)

    return warn


request_started.connect(probe("web"), weak=False)
signals.worker_ready.connect(probe("worker"), weak=False)
signals.beat_init.connect(probe("beat"), weak=False)
"""


@pytest.fixture
def probe_path(tmp_path: Path) -> str:
    folder = tmp_path / "probe"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(WARNING_PROBE)
    return f"{folder}:{child_env()['PYTHONPATH']}"


def json_lines(log: IO[bytes]) -> list[dict[str, Any]]:
    """Every line the process wrote, each parsed as JSON; a line that is not a JSON object fails."""
    entries = []
    for line in Path(log.name).read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"{Path(log.name).name}: not a JSON line: {line!r}")
        assert isinstance(entry, dict), line
        entries.append(entry)
    return entries


def warned(log: IO[bytes], kind: str) -> bool:
    return any(
        entry["logger"] == "py.warnings" and f"sentinel-test-probe {kind}" in entry["message"]
        for entry in json_lines(log)
    )


@contextlib.contextmanager
def log_files(folder: Path, *names: str) -> Iterator[list[IO[bytes]]]:
    """One file per process in `folder`, kept after the processes stop so their last lines count."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(open(folder / f"{name}.log", "w+b")) for name in names]


def test_every_process_writes_json_lines_and_a_request_once_with_its_correlation_id(
    probe_path: str, tmp_path: Path, alice: User
) -> None:
    # The processes' own broker queue (a key prefix on Redis, a folder in embedded mode)
    env = {
        "PYTHONPATH": probe_path,
        "LOG_LEVEL": "info",
        "CACHE_KEY_PREFIX": key_prefix("logs"),
        "SENTINEL_VAR_DIR": str(tmp_path),
    }
    token = TokenSerializer.get_token(alice).access_token
    event_headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "x-correlation-id": "logs-test-event",
    }
    # A schedule file of the test's own: beat's shelve removes a file it cannot read and creates a
    # new one in its place (`--schedule /dev/null` once replaced the machine's /dev/null).
    schedule = str(tmp_path / "celerybeat-schedule")
    beat_command = python_command("-m", "celery", "-A", "sentinel_site", "beat", "--schedule", schedule)
    stream_command = python_command("manage.py", "consume_events", "--block-ms", "200")
    names = ("web", "worker", "beat", "stream")
    with log_files(tmp_path, *names) as (web_log, worker_log, beat_log, stream_log):
        with contextlib.ExitStack() as stack:
            port, _ = stack.enter_context(web_server(log=web_log, **env))
            stack.enter_context(celery_worker(name="logs", log=worker_log, **env))
            stack.enter_context(running_process(beat_command, env=child_env(**env), name="beat", log=beat_log))
            stack.enter_context(running_process(stream_command, env=child_env(**env), name="stream", log=stream_log))

            # When requests carrying correlation ids reach Django: one answered, one not found
            found = http_request(port, "GET", "/health", headers={"x-correlation-id": "logs-test-found"})
            missing = http_request(port, "GET", "/no/such/page", headers={"x-correlation-id": "logs-test-missing"})
            # and an event whose evaluation the worker runs
            event = http_request(port, "POST", "/events", body=b'{"type": "order"}', headers=event_headers)
            wait_until(
                lambda: any(entry.get("correlation_id") == "logs-test-event" for entry in json_lines(worker_log)),
                timeout=30,
                what="the worker's line for the event's task",
            )

            # Then every process's warning arrives as a JSON line, and the stream's first line
            for log, kind in ((web_log, "web"), (worker_log, "worker"), (beat_log, "beat")):
                wait_until(lambda log=log, kind=kind: warned(log, kind), timeout=30, what=f"the {kind} warning line")
            wait_until(lambda: json_lines(stream_log), timeout=30, what="the stream's first line")

        # and every line any of them wrote, start-up and shut-down included, is a JSON object
        logs = dict(zip(names, map(json_lines, (web_log, worker_log, beat_log, stream_log)), strict=True))

    assert (found[0], missing[0], event[0]) == (200, 404, 202)
    # each request exactly once, by the access log, with its id, status and duration
    for correlation_id, status in (("logs-test-found", 200), ("logs-test-missing", 404), ("logs-test-event", 202)):
        lines = [entry for entry in logs["web"] if entry.get("correlation_id") == correlation_id]
        access = [entry for entry in lines if entry["logger"] == "sentinel.access"]
        assert [entry["status"] for entry in access] == [status]
        assert access[0]["duration_ms"] >= 0
        if correlation_id != "logs-test-event":  # queuing a task may log (kombu); these two log nothing else
            assert lines == access
    # the task the event request queued is logged by the worker under the request's id
    task_lines = [entry["message"] for entry in logs["worker"] if entry.get("correlation_id") == "logs-test-event"]
    assert any("rules.tasks.events_evaluate" in message and "succeeded" in message for message in task_lines)
    assert any(entry["message"].endswith(" ready.") for entry in logs["worker"])
    assert any(entry["logger"] == "celery.beat" for entry in logs["beat"])


def test_log_level_is_obeyed(probe_path: str, tmp_path: Path) -> None:
    # given a web process at LOG_LEVEL=warning
    with log_files(tmp_path, "web") as [log]:
        with web_server(log=log, PYTHONPATH=probe_path, LOG_LEVEL="warning") as (port, _):
            http_request(port, "GET", "/health", headers={"x-correlation-id": "logs-test-quiet"})
            wait_until(lambda: warned(log, "web"), timeout=30, what="the web warning line")
        entries = json_lines(log)

    # then its warnings are written, and nothing below (no info line: no access line, no start-up chatter)
    assert entries
    assert {entry["level"] for entry in entries} <= {"warning", "error", "critical"}
    assert not [entry for entry in entries if entry.get("correlation_id") == "logs-test-quiet"]
