"""`GET /ai/insight`: the status and sentences each caller may see, and the optional LLM
phrasing against a real local server that speaks the OpenAI chat-completions API (well, slowly,
or in garbage)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone
from pytest_django import Settings
from rest_framework.test import APIClient

from accounts.models import Tenant, User
from observability.insight.phrasing import completions_url
from observability.models import Incident
from rules.tests.sinks import Answer, HttpSink, http_sink
from tests.support.net import free_port

pytestmark = pytest.mark.django_db

Api = Callable[..., APIClient]
REPHRASED = "Critical: one address is flooding the API at 1,240 requests a minute, and 97 % of it is refused."


def completion(text: str) -> bytes:
    """A chat-completions answer, as OpenAI's API shapes it."""
    return json.dumps(
        {
            "id": "c1",
            "object": "chat.completion",
            "model": "test-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        }
    ).encode()


# The local endpoint's behaviours: a good answer; one held far beyond the client's timeout; an
# answer that is not JSON; JSON of another shape. (rules' HTTP sink records each request.)
LLM_ANSWERS = {
    "ok": Answer(200, {"content-type": "application/json"}, completion(REPHRASED)),
    "slow": Answer(200, {"content-type": "application/json"}, completion(REPHRASED)),
    "garbage": Answer(200, {"content-type": "application/json"}, b"<html>definitely not JSON"),
    "wrong_shape": Answer(200, {"content-type": "application/json"}, b'{"error": "nope", "choices": []}'),
}


@contextmanager
def llm_server(mode: str = "ok") -> Iterator[HttpSink]:
    """A real local HTTP server answering POST /v1/chat/completions as `mode` says; its `url`
    is the OpenAI-style base (``.../v1``)."""
    with http_sink(answers=[LLM_ANSWERS[mode]], hold={1: 10.0} if mode == "slow" else None) as sink:
        sink.url = f"{sink.url}/v1"
        yield sink


@pytest.fixture(autouse=True)
def _no_cached_phrasing() -> Iterator[None]:
    def forget() -> None:
        if hasattr(cache, "delete_pattern"):
            cache.delete_pattern("observability:insight:*")
        else:
            cache.clear()

    forget()
    yield
    forget()


@pytest.fixture
def flood(tenant_a: Tenant) -> Incident:
    now = timezone.now()
    return Incident.objects.create(
        kind="flood_ip",
        subject="203.0.113.9",
        severity="critical",
        first_seen=now,
        last_seen=now,
        summary="Traffic from 203.0.113.9 is 14× its 1-hour baseline: 1,240 req/min; 97 % answered 429.",  # noqa: RUF001
        evidence={"rate_per_min": 1240.0, "limited_share": 0.97},
    )


@pytest.fixture
def tenant_errors(tenant_a: Tenant) -> Incident:
    now = timezone.now()
    return Incident.objects.create(
        kind="error_spike",
        subject="/wonderland/api",
        tenant_uuid=tenant_a.uuid,
        severity="warning",
        first_seen=now,
        last_seen=now,
        evidence={"error_share": 0.2},
        summary="Route /wonderland/api answers 5xx to 20 % of requests (20 of 100 in 1 minute) against a "
        "1-hour baseline of 0.4 %.",
    )


def with_llm(settings: Settings, url: str, **more: Any) -> None:
    settings.SENTINEL_INSIGHT = {
        **settings.SENTINEL_INSIGHT,
        "LLM_URL": url,
        "LLM_MODEL": "test-model",
        "LLM_API_KEY": "sk-operator",
        "LLM_TIMEOUT_SECONDS": 0.5,
        **more,
    }


def test_all_clear_without_incidents(api: Api, alice: User) -> None:
    answer = api(alice).get("/ai/insight").json()
    assert (answer["status"], answer["summary"], answer["phrasing"], answer["findings"]) == (
        "ok",
        "All clear: no open incidents.",
        "plain",
        [],
    )


def test_each_caller_sees_the_status_of_what_they_may_see(
    api: Api, alice: User, bob: User, mallory: User, staff: User, flood: Incident, tenant_errors: Incident
) -> None:
    for_staff = api(staff).get("/ai/insight").json()
    assert for_staff["status"] == "critical"
    assert for_staff["sentences"] == ["Critical: 2 open incidents (1 critical).", flood.summary, tenant_errors.summary]
    assert [finding["kind"] for finding in for_staff["findings"]] == ["flood_ip", "error_spike"]
    for_alice = api(alice).get("/ai/insight").json()
    assert (for_alice["status"], [f["id"] for f in for_alice["findings"]]) == ("degraded", [tenant_errors.pk])
    assert "20 % of requests" in for_alice["summary"]
    assert api(bob).get("/ai/insight").json()["findings"] == for_alice["findings"]
    assert api(mallory).get("/ai/insight").json()["status"] == "ok"
    assert api().get("/ai/insight").status_code == 401


def test_an_llm_rephrases_the_summary_once_per_set_of_findings(
    api: Api, staff: User, settings: Settings, flood: Incident
) -> None:
    with llm_server() as llm:
        with_llm(settings, llm.url)
        first = api(staff).get("/ai/insight").json()
        second = api(staff).get("/ai/insight").json()
    assert (first["summary"], first["phrasing"], first["llm_error"]) == (REPHRASED, "llm", None)
    assert second["summary"] == REPHRASED
    assert llm.count() == 1  # the refresh used the cached phrasing
    [request] = llm.received
    body = json.loads(request.body)
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-operator"
    assert body["model"] == "test-model"
    sent = json.loads(body["messages"][1]["content"])
    assert sent["findings"] == [
        {
            "kind": "flood_ip",
            "subject": "203.0.113.9",
            "severity": "critical",
            "summary": flood.summary,
            "evidence": flood.evidence,
        }
    ]


@pytest.mark.parametrize(
    ("mode", "error"),
    [("slow", "timeout"), ("garbage", "JSONDecodeError"), ("wrong_shape", "not a chat-completions answer")],
)
def test_a_slow_or_garbled_llm_leaves_the_plain_summary(
    api: Api, staff: User, settings: Settings, flood: Incident, mode: str, error: str
) -> None:
    with llm_server(mode) as llm:
        with_llm(settings, llm.url)
        answer = api(staff).get("/ai/insight").json()
        again = api(staff).get("/ai/insight").json()
    assert (answer["phrasing"], answer["summary"]) == ("plain", " ".join(answer["sentences"]))
    assert error in answer["llm_error"]
    assert again["phrasing"] == "plain" and llm.count() == 1  # the failure is remembered a while


def test_an_unreachable_llm_leaves_the_plain_summary(
    api: Api, staff: User, settings: Settings, flood: Incident
) -> None:
    with_llm(settings, f"http://127.0.0.1:{free_port()}")
    answer = api(staff).get("/ai/insight").json()
    assert answer["phrasing"] == "plain" and answer["llm_error"].startswith("ConnectError")


def test_the_completions_url_of_a_base() -> None:
    assert completions_url("https://api.openai.com/v1") == "https://api.openai.com/v1/chat/completions"
    assert completions_url("http://llm:8000/") == "http://llm:8000/v1/chat/completions"
    assert completions_url("http://x/v1/chat/completions") == "http://x/v1/chat/completions"
