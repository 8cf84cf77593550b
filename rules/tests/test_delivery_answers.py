"""A receiver's answer decides what happens next: one attempt through the service against real
local servers (rules/tests/sinks.py), and the delivery's status, next attempt and reason after it.

- dead at once: the receiver refused for good (attempts 1, `... permanent, not retried`);
- backoff: a transient failure, retried after `retry_delay(1)`;
- asked: the receiver asked for a delay; the next attempt is at exactly that delay, capped at
  DELIVERY_MAX_RETRY_AFTER_SECONDS.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import Tenant, User
from core.conf import sentinel_settings
from rules import services
from rules.models import Delivery, DeliveryStatus, Event, NotificationChannel
from rules.tests.sinks import Answer, http_sink, self_signed_tls, smtp_sink
from tests.support.net import free_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db

NAMES = {"webhook": "orders", "slack": "#alerts", "discord": "ops", "email": "oncall"}


@pytest.fixture
def tenant(alice: User) -> Tenant:
    return alice.membership.tenant


def one_delivery(tenant: Tenant, target: str, kind: str = "webhook") -> Delivery:
    """A delivery waiting for its first attempt, to a channel of `kind` at `target`."""
    name = NAMES[kind]
    services.channel_create(tenant=tenant, kind=kind, name=name, target=target)
    services.rule_create(tenant=tenant, name=f"to {name}", dsl=f'when type == "order" then notify("{kind}:{name}")')
    event = Event.objects.create(tenant=tenant, type="order", payload={"type": "order", "amount": 900})
    services.events_evaluate(event_ids=[event.pk])
    return Delivery.objects.get(channel__name=name, match__event=event)


@dataclass
class Attempt:
    delivery: Delivery
    started: datetime
    finished: datetime


def attempt(delivery: Delivery) -> Attempt:
    started = timezone.now()
    after = services.delivery_attempt(delivery_id=delivery.pk)
    finished = timezone.now()
    assert after is not None
    return Attempt(after, started, finished)


def assert_dead_at_once(result: Attempt, reason_start: str) -> None:
    delivery = result.delivery
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DEAD, 1), delivery.last_error
    assert delivery.last_error.startswith(reason_start), delivery.last_error
    assert delivery.last_error.endswith(": permanent, not retried"), delivery.last_error


def assert_backed_off(result: Attempt, reason_start: str) -> None:
    delivery = result.delivery
    base = sentinel_settings.rules.DELIVERY_BACKOFF_SECONDS
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 1), delivery.last_error
    assert delivery.last_error.startswith(reason_start), delivery.last_error
    assert delivery.last_error.endswith(": transient, retried with backoff"), delivery.last_error
    # retry_delay(1): base times a random factor in [0.5, 1].
    assert result.started + timedelta(seconds=base / 2) <= delivery.next_attempt_at
    assert delivery.next_attempt_at <= result.finished + timedelta(seconds=base)


def assert_waits(result: Attempt, seconds: float, reason_start: str) -> None:
    """The next attempt is `seconds` after the failure was recorded, which happened between the
    start and the end of the attempt."""
    delivery = result.delivery
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 1), delivery.last_error
    assert delivery.last_error.startswith(reason_start), delivery.last_error
    wait = timedelta(seconds=seconds)
    assert result.started + wait <= delivery.next_attempt_at <= result.finished + wait, delivery.last_error


PERMANENT = [
    pytest.param(Answer(400, body=b"bad"), "HTTP 400 Bad Request (bad)", id="400"),
    pytest.param(Answer(401), "HTTP 401 Unauthorized", id="401"),
    pytest.param(Answer(403), "HTTP 403 Forbidden", id="403"),
    pytest.param(Answer(404), "HTTP 404 Not Found", id="404"),
    pytest.param(Answer(405), "HTTP 405 Method Not Allowed", id="405"),
    pytest.param(Answer(410, body=b"Gone"), "HTTP 410 Gone", id="410"),
    pytest.param(Answer(413), "HTTP 413 Request Entity Too Large", id="413"),
    pytest.param(Answer(414), "HTTP 414 Request-URI Too Long", id="414"),
    pytest.param(Answer(415), "HTTP 415 Unsupported Media Type", id="415"),
    pytest.param(Answer(422), "HTTP 422 Unprocessable Entity", id="422"),
    # 4xx the issue does not list: the client erred, the same message meets the same answer.
    pytest.param(Answer(402), "HTTP 402 Payment Required", id="402-unlisted"),
    pytest.param(Answer(406), "HTTP 406 Not Acceptable", id="406-unlisted"),
    pytest.param(Answer(418), "HTTP 418 I'm a Teapot", id="418-unlisted"),
    pytest.param(Answer(431), "HTTP 431 Request Header Fields Too Large", id="431-unlisted"),
    pytest.param(Answer(451), "HTTP 451 Unavailable For Legal Reasons", id="451-unlisted"),
    pytest.param(Answer(499), "HTTP 499 (no standard meaning)", id="499-undefined"),
    # A 429 that carries a Slack refusal is the refusal, not a rate limit.
    pytest.param(
        Answer(429, body=b"invalid_token"), "HTTP 429 Too Many Requests (invalid_token)", id="429-slack-refusal"
    ),
    # Redirects are not followed (shared decision 4): the Location is named for the operator.
    *[
        pytest.param(
            Answer(code, headers={"Location": "https://elsewhere.example/hook"}, body=b""),
            f"HTTP {code} {phrase} to https://elsewhere.example/hook: redirects are not followed",
            id=f"{code}-redirect",
        )
        for code, phrase in [
            (301, "Moved Permanently"),
            (302, "Found"),
            (303, "See Other"),
            (307, "Temporary Redirect"),
            (308, "Permanent Redirect"),
        ]
    ],
]


@pytest.mark.parametrize(("answer", "reason"), PERMANENT)
def test_a_permanent_refusal_ends_the_delivery_at_the_first_attempt(
    tenant: Tenant, answer: Answer, reason: str
) -> None:
    with http_sink(answers=[answer]) as sink:
        delivery = one_delivery(tenant, sink.url + "/hook")

        result = attempt(delivery)

    assert_dead_at_once(result, reason)
    assert sink.count() == 1


TRANSIENT = [
    pytest.param(Answer(408), "HTTP 408 Request Timeout", id="408"),
    pytest.param(Answer(409), "HTTP 409 Conflict", id="409"),
    pytest.param(Answer(421), "HTTP 421 Misdirected Request", id="421"),
    pytest.param(Answer(423), "HTTP 423 Locked", id="423"),
    pytest.param(Answer(425), "HTTP 425 Too Early", id="425"),
    pytest.param(Answer(429, body=b""), "HTTP 429 Too Many Requests", id="429-without-delay"),
    pytest.param(Answer(500, body=b"rollup_error"), "HTTP 500 Internal Server Error (rollup_error)", id="500"),
    pytest.param(Answer(501), "HTTP 501 Not Implemented", id="501"),
    pytest.param(Answer(502), "HTTP 502 Bad Gateway", id="502"),
    pytest.param(Answer(503), "HTTP 503 Service Unavailable", id="503-without-delay"),
    pytest.param(Answer(504), "HTTP 504 Gateway Timeout", id="504"),
    pytest.param(Answer(507), "HTTP 507 Insufficient Storage", id="507"),
    pytest.param(Answer(599), "HTTP 599 (no standard meaning)", id="599-undefined"),
    # Unreadable delays are ignored, and the usual backoff applies.
    pytest.param(Answer(503, headers={"Retry-After": "soon"}), "HTTP 503", id="retry-after-unreadable"),
    pytest.param(Answer(429, headers={"Retry-After": "-5"}), "HTTP 429", id="retry-after-negative"),
    pytest.param(Answer(429, body=b'{"retry_after": "a while"}'), "HTTP 429", id="retry_after-not-a-number"),
    pytest.param(Answer(drop="reset"), "ReadError", id="connection-reset"),
    pytest.param(Answer(drop="close"), "RemoteProtocolError", id="closed-without-answer"),
]


@pytest.mark.parametrize(("answer", "reason"), TRANSIENT)
def test_a_transient_failure_is_retried_with_backoff(tenant: Tenant, answer: Answer, reason: str) -> None:
    with http_sink(answers=[answer]) as sink:
        delivery = one_delivery(tenant, sink.url + "/hook")

        result = attempt(delivery)

    assert_backed_off(result, reason)
    assert sink.count() == 1


def test_a_receiver_that_does_not_answer_in_time_is_retried_with_backoff(tenant: Tenant, settings: Any) -> None:
    settings.SENTINEL_RULES = {**settings.SENTINEL_RULES, "DELIVERY_TIMEOUT_SECONDS": 0.3}
    with http_sink(hold={1: 3.0}) as sink:
        delivery = one_delivery(tenant, sink.url + "/hook")

        result = attempt(delivery)

    assert_backed_off(result, "ReadTimeout")


def test_a_refused_connection_is_retried_with_backoff(tenant: Tenant) -> None:
    delivery = one_delivery(tenant, f"http://127.0.0.1:{free_port()}/hook")  # nothing listens there

    assert_backed_off(attempt(delivery), "ConnectError")


def test_a_name_that_no_longer_resolves_is_retried_with_backoff(tenant: Tenant) -> None:
    delivery = one_delivery(tenant, "http://127.0.0.1:9/hook")
    # The name resolved when the channel was saved; since then its DNS record went away
    # (.invalid never resolves: RFC 6761 6.4).
    NotificationChannel.objects.filter(pk=delivery.channel_id).update(target="http://sentinel-test.invalid/hook")

    assert_backed_off(attempt(delivery), "ConnectError: sentinel-test.invalid does not resolve")


def test_a_certificate_that_cannot_be_verified_is_permanent(tenant: Tenant, tmp_path: Path) -> None:
    with http_sink(tls=self_signed_tls(tmp_path)) as sink:
        delivery = one_delivery(tenant, sink.url + "/hook")

        result = attempt(delivery)

    assert_dead_at_once(result, "TLS certificate refused (ConnectError: [SSL: CERTIFICATE_VERIFY_FAILED]")
    assert sink.count() == 0  # refused during the handshake: no request was ever sent


@pytest.mark.parametrize("target", ["ftp://files.example/hook", "http://[::1/hook", "http:///hook"])
def test_a_target_no_client_can_use_is_permanent(tenant: Tenant, target: str) -> None:
    delivery = one_delivery(tenant, "http://127.0.0.1:9/hook")
    NotificationChannel.objects.filter(pk=delivery.channel_id).update(target=target)  # saved by older code

    assert_dead_at_once(attempt(delivery), "invalid target (")


# --- Delays the receiver asks for ---------------------------------------------------------------


ASKED = [
    pytest.param(Answer(429, headers={"Retry-After": "7"}), 7.0, "HTTP 429 Too Many Requests", id="429-seconds"),
    pytest.param(Answer(503, headers={"Retry-After": "12"}), 12.0, "HTTP 503 Service Unavailable", id="503-seconds"),
    pytest.param(Answer(503, headers={"Retry-After": "0"}), 0.0, "HTTP 503", id="503-now"),
    pytest.param(Answer(502, headers={"Retry-After": "9"}), 9.0, "HTTP 502", id="502-seconds"),
    # Discord's bucket headers without Retry-After: empty until X-RateLimit-Reset-After.
    pytest.param(
        Answer(429, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "4.25"}),
        4.25,
        "HTTP 429",
        id="reset-after-only",
    ),
]


@pytest.mark.parametrize(("answer", "seconds", "reason"), ASKED)
def test_the_next_attempt_is_at_the_delay_the_receiver_asked_for(
    tenant: Tenant, answer: Answer, seconds: float, reason: str
) -> None:
    with http_sink(answers=[answer]) as sink:
        delivery = one_delivery(tenant, sink.url + "/hook")

        result = attempt(delivery)

    assert_waits(result, seconds, reason)
    assert f"the receiver asked to wait {seconds:g} s" in result.delivery.last_error


def test_slack_rate_limit_is_obeyed(tenant: Tenant) -> None:
    # Slack API "Rate Limits": HTTP 429 "and a Retry-After header containing the number of
    # seconds until you can retry", incoming webhooks included.
    slack_429 = Answer(429, headers={"Retry-After": "30"}, body=b"rate_limited")
    with http_sink(answers=[slack_429]) as sink:
        delivery = one_delivery(tenant, sink.url + "/services/T0/B0/x", kind="slack")

        result = attempt(delivery)

    assert_waits(result, 30, "HTTP 429 Too Many Requests (rate_limited): the receiver asked to wait 30 s")
    assert json.loads(sink.received[0].body) == {"text": delivery.message}


@pytest.mark.parametrize(
    "slack_error", ["channel_not_found", "channel_is_archived", "invalid_token", "no_service", "action_prohibited"]
)
@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_slack_refusals_are_permanent(tenant: Tenant, slack_error: str, status: int) -> None:
    with http_sink(answers=[Answer(status, body=slack_error.encode())]) as sink:
        delivery = one_delivery(tenant, sink.url + "/services/T0/B0/x", kind="slack")

        result = attempt(delivery)

    assert_dead_at_once(result, f"HTTP {status} ")
    assert f"({slack_error})" in result.delivery.last_error


def discord_429(retry_after: float, header: str, scope: str, is_global: bool) -> Answer:
    """Discord's rate-limit answer (developer docs, "Rate Limits", "Exceeding A Rate Limit")."""
    body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
    headers = {
        "Content-Type": "application/json",
        "Retry-After": header,
        "X-RateLimit-Limit": "5",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset-After": "1.5",
        "X-RateLimit-Scope": scope,
    }
    return Answer(429, headers=headers, body=json.dumps(body).encode())


@pytest.mark.parametrize(
    ("answer", "seconds", "source"),
    [
        # The body's float is later than the rounded header: the later signal wins.
        pytest.param(discord_429(2.5, "2", "user", False), 2.5, "retry_after 2.5 s in the body, scope user", id="user"),
        pytest.param(discord_429(64.57, "65", "user", False), 65.0, "Retry-After: 65", id="header-rounded-up"),
        pytest.param(discord_429(1336.57, "1337", "shared", False), 1337.0, "Retry-After: 1337", id="shared-resource"),
        pytest.param(
            discord_429(3.25, "3", "global", True), 3.25, "retry_after 3.25 s in the body, scope global", id="global"
        ),
    ],
)
def test_discord_rate_limit_is_obeyed(tenant: Tenant, answer: Answer, seconds: float, source: str) -> None:
    with http_sink(answers=[answer]) as sink:
        delivery = one_delivery(tenant, sink.url + "/api/webhooks/1/x", kind="discord")

        result = attempt(delivery)

    assert_waits(result, seconds, "HTTP 429 Too Many Requests (You are being rate limited.)")
    assert f"the receiver asked to wait {seconds:g} s ({source})" in result.delivery.last_error


def test_discord_unknown_webhook_is_permanent(tenant: Tenant) -> None:
    # Discord: "If a webhook returns a 404 status you should not attempt to use it again".
    unknown = Answer(
        404, headers={"Content-Type": "application/json"}, body=b'{"message": "Unknown Webhook", "code": 10015}'
    )
    with http_sink(answers=[unknown]) as sink:
        delivery = one_delivery(tenant, sink.url + "/api/webhooks/1/x", kind="discord")

        result = attempt(delivery)

    assert_dead_at_once(result, "HTTP 404 Not Found (Unknown Webhook, code 10015)")


@pytest.mark.parametrize(
    ("seconds", "kind", "answer"),
    [
        (7200, "slack", Answer(429, headers={"Retry-After": "7200"}, body=b"rate_limited")),
        (86400, "discord", discord_429(86400.0, "86400", "shared", False)),
        (10**9, "webhook", Answer(503, headers={"Retry-After": str(10**9)})),
    ],
    ids=["slack", "discord", "webhook"],
)
def test_a_longer_delay_than_the_maximum_is_cut_to_the_maximum(
    tenant: Tenant, settings: Any, seconds: int, kind: str, answer: Answer
) -> None:
    settings.SENTINEL_RULES = {**settings.SENTINEL_RULES, "DELIVERY_MAX_RETRY_AFTER_SECONDS": 600.0}
    with http_sink(answers=[answer]) as sink:
        delivery = one_delivery(tenant, sink.url + "/hook", kind=kind)

        result = attempt(delivery)

    assert_waits(result, 600, "HTTP 429" if kind != "webhook" else "HTTP 503")
    assert f"asked to wait {seconds:g} s" in result.delivery.last_error
    assert "waiting the maximum of 600 s (DELIVERY_MAX_RETRY_AFTER_SECONDS)" in result.delivery.last_error


# --- Retry-After as an HTTP-date (RFC 9110 10.2.3, 5.6.7) ---------------------------------------


def imf_fixdate(at: datetime) -> str:
    return format_datetime(at.astimezone(UTC), usegmt=True)


def rfc850_date(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%A, %d-%b-%y %H:%M:%S GMT")


def asctime_date(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%a %b %e %H:%M:%S %Y")


@pytest.mark.parametrize("form", [imf_fixdate, rfc850_date, asctime_date], ids=["IMF-fixdate", "RFC-850", "asctime"])
def test_a_retry_after_date_is_the_time_of_the_next_attempt(tenant: Tenant, form: Any) -> None:
    at = (timezone.now() + timedelta(seconds=40)).replace(microsecond=0)
    with http_sink(answers=[Answer(503, headers={"Retry-After": form(at)})]) as sink:
        delivery = one_delivery(tenant, sink.url + "/hook")

        result = attempt(delivery)

    assert result.delivery.status == DeliveryStatus.FAILED
    # No earlier than the date; later only by the moments between reading the answer and
    # recording it.
    assert at <= result.delivery.next_attempt_at <= at + timedelta(seconds=1), result.delivery.last_error
    assert "Retry-After: " in result.delivery.last_error


def test_a_retry_after_date_counts_from_the_receivers_own_clock(tenant: Tenant) -> None:
    # The receiver's clock is an hour behind ours; its Date and Retry-After agree on 25 s.
    receiver_now = (timezone.now() - timedelta(hours=1)).replace(microsecond=0)
    headers = {"Date": imf_fixdate(receiver_now), "Retry-After": imf_fixdate(receiver_now + timedelta(seconds=25))}
    with http_sink(answers=[Answer(429, headers=headers)]) as sink:
        delivery = one_delivery(tenant, sink.url + "/hook")

        result = attempt(delivery)

    assert_waits(result, 25, "HTTP 429 Too Many Requests: the receiver asked to wait 25 s")


def test_a_retry_after_date_in_the_past_retries_at_once(tenant: Tenant) -> None:
    past = timezone.now() - timedelta(minutes=5)
    with http_sink(answers=[Answer(503, headers={"Retry-After": imf_fixdate(past)})]) as sink:
        delivery = one_delivery(tenant, sink.url + "/hook")

        result = attempt(delivery)

    assert_waits(result, 0, "HTTP 503 Service Unavailable: the receiver asked to wait 0 s")


# --- Attempts and the last one --------------------------------------------------------------


def test_the_last_attempt_of_a_transient_failure_says_it_was_the_last(tenant: Tenant) -> None:
    with http_sink(answers=[Answer(503, headers={"Retry-After": "5"})]) as sink:
        delivery = one_delivery(tenant, sink.url + "/hook")
        max_attempts = sentinel_settings.rules.DELIVERY_MAX_ATTEMPTS
        Delivery.objects.filter(pk=delivery.pk).update(attempts=max_attempts - 1)

        result = attempt(delivery)

    assert result.delivery.status == DeliveryStatus.DEAD
    assert result.delivery.last_error == (
        f"HTTP 503 Service Unavailable: attempt {max_attempts} of {max_attempts} was the last"
    )


def test_a_success_after_a_refusal_clears_the_reason(tenant: Tenant) -> None:
    with http_sink(answers=[Answer(429, headers={"Retry-After": "0"}), Answer(204, body=b"")]) as sink:
        delivery = one_delivery(tenant, sink.url + "/hook")
        attempt(delivery)

        result = attempt(delivery)

    assert (result.delivery.status, result.delivery.attempts, result.delivery.last_error) == (
        DeliveryStatus.SENT,
        2,
        "",
    )


# --- E-mail: SMTP replies (RFC 5321 4.2.1) ------------------------------------------------------


@pytest.fixture
def smtp_settings(settings: Any) -> Iterator[Any]:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_TIMEOUT = 5
    yield settings


@pytest.mark.parametrize(
    ("rcpt", "data", "outcome", "reason"),
    [
        pytest.param(["550 5.1.1 No such user"], [], "dead", "SMTP 550", id="rcpt-550"),
        pytest.param(["553 5.1.3 Bad address syntax"], [], "dead", "SMTP 553", id="rcpt-553"),
        pytest.param([], ["554 5.7.1 Message rejected as spam"], "dead", "SMTP 554", id="data-554"),
        pytest.param([], ["552 5.3.4 Message too big"], "dead", "SMTP 552", id="data-552"),
        pytest.param(["450 4.2.1 Mailbox busy"], [], "backoff", "SMTP 450", id="rcpt-450"),
        pytest.param(["451 4.7.1 Greylisted, try again later"], [], "backoff", "SMTP 451", id="rcpt-451-greylisting"),
        pytest.param([], ["452 4.3.1 Insufficient storage"], "backoff", "SMTP 452", id="data-452"),
        pytest.param([], ["421 4.3.2 Service shutting down"], "backoff", "SMTP 421", id="data-421"),
    ],
)
def test_smtp_replies_are_classified_like_http_answers(
    tenant: Tenant, smtp_settings: Any, rcpt: list[str], data: list[str], outcome: str, reason: str
) -> None:
    with smtp_sink(rcpt_replies=rcpt, data_replies=data) as smtp:
        smtp_settings.EMAIL_PORT = smtp.port
        delivery = one_delivery(tenant, "oncall@example.com", kind="email")

        result = attempt(delivery)

    if outcome == "dead":
        assert_dead_at_once(result, reason)
    else:
        assert_backed_off(result, reason)
    assert smtp.messages == []


def test_an_smtp_server_that_cannot_be_reached_is_retried_with_backoff(tenant: Tenant, smtp_settings: Any) -> None:
    smtp_settings.EMAIL_PORT = free_port()  # nothing listens there
    delivery = one_delivery(tenant, "oncall@example.com", kind="email")

    assert_backed_off(attempt(delivery), "ConnectionRefusedError")


def test_an_smtp_server_that_hangs_up_is_retried_with_backoff(tenant: Tenant, smtp_settings: Any) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        smtp_settings.EMAIL_PORT = listener.getsockname()[1]
        delivery = one_delivery(tenant, "oncall@example.com", kind="email")
        # Accepts the connection and closes it before the greeting.
        import threading

        def hang_up() -> None:
            connection, _ = listener.accept()
            connection.close()

        threading.Thread(target=hang_up, daemon=True).start()

        result = attempt(delivery)

    assert_backed_off(result, "SMTPServerDisconnected")


def test_an_accepted_email_is_sent(tenant: Tenant, smtp_settings: Any) -> None:
    with smtp_sink() as smtp:
        smtp_settings.EMAIL_PORT = smtp.port
        delivery = one_delivery(tenant, "oncall@example.com", kind="email")

        result = attempt(delivery)

    assert result.delivery.status == DeliveryStatus.SENT
    assert len(smtp.messages) == 1


# --- A receiver's pause holds every delivery to it ----------------------------------------------


def two_deliveries(tenant: Tenant, target: str, kind: str = "webhook") -> tuple[Delivery, Delivery]:
    """Two deliveries to one channel (two matches of a rule without cooldown)."""
    name = NAMES[kind]
    services.channel_create(tenant=tenant, kind=kind, name=name, target=target)
    services.rule_create(
        tenant=tenant, name="big", dsl=f'when type == "order" then notify("{kind}:{name}")', cooldown_seconds=0
    )
    events = [Event.objects.create(tenant=tenant, type="order", payload={"type": "order", "n": n}) for n in (1, 2)]
    services.events_evaluate(event_ids=[event.pk for event in events])
    first, second = Delivery.objects.order_by("pk")
    return first, second


def test_a_rate_limit_holds_the_other_deliveries_to_the_same_receiver_without_using_their_attempts(
    tenant: Tenant,
) -> None:
    with http_sink(answers=[Answer(429, headers={"Retry-After": "30"}, body=b"rate_limited"), Answer(200)]) as sink:
        first, second = two_deliveries(tenant, sink.url + "/services/T0/B0/x", kind="slack")
        limited = attempt(first).delivery

        held = attempt(second).delivery

    assert sink.count() == 1  # the second message was not sent into the rate limit
    assert (held.status, held.attempts) == (DeliveryStatus.PENDING, 0)
    assert held.next_attempt_at == limited.next_attempt_at
    assert held.last_error.startswith("not sent: the receiver asked for a pause until ")


def test_an_empty_bucket_announced_with_a_success_holds_the_next_delivery(tenant: Tenant) -> None:
    # Discord announces on each answer what is left of the webhook's allowance.
    empty = Answer(
        204, headers={"X-RateLimit-Limit": "5", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset-After": "4.5"}
    )
    with http_sink(answers=[empty, Answer(204)]) as sink:
        first, second = two_deliveries(tenant, sink.url + "/api/webhooks/1/x", kind="discord")
        sent = attempt(first)

        held = attempt(second).delivery

    assert sent.delivery.status == DeliveryStatus.SENT
    assert sink.count() == 1
    assert (held.status, held.attempts) == (DeliveryStatus.PENDING, 0)
    wait = timedelta(seconds=4.5)
    assert sent.started + wait <= held.next_attempt_at <= sent.finished + wait


def test_a_pause_holds_only_its_own_receiver_and_ends(tenant: Tenant) -> None:
    with http_sink(answers=[Answer(503, headers={"Retry-After": "1"}), Answer(200)]) as sink, http_sink() as other:
        first, second = two_deliveries(tenant, sink.url + "/hook")
        elsewhere = one_delivery(tenant, other.url, kind="slack")
        attempt(first)

        assert attempt(elsewhere).delivery.status == DeliveryStatus.SENT
        assert attempt(second).delivery.status == DeliveryStatus.PENDING
        wait_until(
            lambda: services.receiver_paused_until(target=sink.url + "/hook") is None, timeout=10, what="the end"
        )
        resumed = attempt(second).delivery

    assert (resumed.status, resumed.attempts) == (DeliveryStatus.SENT, 1)
    assert (sink.count(), other.count()) == (2, 1)


def test_a_pause_is_never_longer_than_the_maximum(tenant: Tenant, settings: Any) -> None:
    settings.SENTINEL_RULES = {**settings.SENTINEL_RULES, "DELIVERY_MAX_RETRY_AFTER_SECONDS": 60.0}
    now = timezone.now()

    end = services.receiver_pause(target="https://hooks.example/x", seconds=10**9, now=now)

    assert end == now + timedelta(seconds=60)


def test_an_error_no_classifier_knows_is_transient_unless_sentinel_refused_the_target() -> None:
    from core.errors import DomainError
    from rules import notifiers

    refused = notifiers.classify_unexpected_error(DomainError("The target must be an http or https URL."))
    unknown = notifiers.classify_unexpected_error(RuntimeError("boom"))

    assert (refused.permanent, str(refused)) == (
        True,
        "invalid target (DomainError: The target must be an http or https URL.)",
    )
    assert (unknown.permanent, unknown.retry_after, str(unknown)) == (False, None, "RuntimeError: boom")
