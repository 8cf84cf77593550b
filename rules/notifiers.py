"""Sending one delivery to its channel: Slack, Discord, a signed webhook or e-mail.

Every send carries the delivery's idempotency key (`X-Sentinel-Idempotency-Key` for HTTP, the
Message-ID for e-mail): a worker killed after the receiver got a message but before it recorded
the success sends it again on recovery with the same key, so a receiver can drop the repeat.
Sentinel itself never sends a delivery again once a success is recorded.

A receiver's answer decides what happens next (`classify_answer`, `classify_transport_error`,
`classify_smtp_error`): a permanent refusal ends the delivery at once, a transient failure is
retried with backoff, and a receiver's request to wait (`Retry-After`, Discord's `retry_after`)
is obeyed up to `DELIVERY_MAX_RETRY_AFTER_SECONDS`. The table is in the README ("Rules and
notifications"); the sources are named where each rule is made.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import smtplib
import ssl
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.core.mail import EmailMessage
from django.core.validators import validate_email
from django.forms import ValidationError as FormValidationError

from core.conf import sentinel_settings
from core.egress import EgressDenied, guarded_transport
from core.egress_django import egress_policy, egress_refusal_record
from core.errors import DomainError
from rules.models import ChannelKind, Delivery, NotificationChannel

SIGNATURE_HEADER = "X-Sentinel-Signature"
IDEMPOTENCY_HEADER = "X-Sentinel-Idempotency-Key"


class DeliveryFailed(Exception):
    """The channel did not accept the message.

    `str(exc)` says what the receiver answered (e.g. `HTTP 410 Gone`); the service adds what
    follows from it and keeps the whole as the delivery's `last_error`. `permanent` is true when
    sending the same message again cannot succeed (the delivery is dead at once). `retry_after`
    is the delay in seconds the receiver asked for, uncapped (None when it asked for nothing),
    and `retry_source` names the header or field it came from.
    """

    def __init__(
        self, reason: str, *, permanent: bool = False, retry_after: float | None = None, retry_source: str = ""
    ) -> None:
        super().__init__(reason)
        self.permanent = permanent
        self.retry_after = retry_after
        self.retry_source = retry_source


def validate_target(kind: str, target: str) -> None:
    """An e-mail address for e-mail channels, an http(s) URL for the others."""
    if kind == ChannelKind.EMAIL:
        try:
            validate_email(target)
        except FormValidationError:
            raise DomainError("The target must be an e-mail address.", details={"target": target[:200]}) from None
        return
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DomainError("The target must be an http or https URL.", details={"target": target[:200]})


def payload(delivery: Delivery) -> dict[str, Any]:
    """What a webhook receives: the rule, the match, the event and the rendered message; for a
    delivery no rule produced (a monitor's alert), ``{delivery_id, idempotency_key, alert:
    {title, **context}, message}`` instead."""
    match = delivery.match
    if match is None:
        return {
            "delivery_id": delivery.pk,
            "idempotency_key": delivery.idempotency_key,
            "alert": {**delivery.context, "title": delivery.title},
            "message": delivery.message,
        }
    return {
        "delivery_id": delivery.pk,
        "idempotency_key": delivery.idempotency_key,
        "rule": {"id": match.rule_id, "name": match.rule.name},
        "match": {"id": match.pk, "group": match.group_key, "matched_at": match.matched_at.isoformat()},
        "event": {"id": match.event_id, "type": match.event.type, "payload": match.event.payload},
        "message": delivery.message,
    }


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send(channel: NotificationChannel, delivery: Delivery) -> float | None:
    """Sends or raises DeliveryFailed. Returns, after a success, how many seconds the receiver
    said it will refuse further messages (`bucket_empty_for`), else None."""
    if channel.kind == ChannelKind.EMAIL:
        _send_email(channel, delivery)
        return None
    if channel.kind == ChannelKind.SLACK:
        body = {"text": delivery.message}
    elif channel.kind == ChannelKind.DISCORD:
        body = {"content": delivery.message[:2000]}  # Discord refuses longer content
    else:
        body = payload(delivery)
    raw = json.dumps(body, separators=(",", ":"), default=str).encode()
    headers = {"content-type": "application/json", IDEMPOTENCY_HEADER: delivery.idempotency_key}
    if channel.kind == ChannelKind.WEBHOOK and channel.secret:
        headers[SIGNATURE_HEADER] = sign(channel.secret, raw)
    try:
        return _post(channel.target, raw, headers)
    except EgressDenied as denied:
        tenant = str(channel.tenant.uuid)
        egress_refusal_record(kind="channel", stage="connect", tenant=tenant, target=channel.target, denied=denied)
        raise DeliveryFailed(str(denied), permanent=True) from denied


def _client(timeout: float) -> httpx.Client:
    """The HTTP client of one send: every connection held to the egress policy (channels always
    belong to a tenant), checked against the address actually connected to (core.egress), and
    redirects never followed, so a receiver cannot bounce a delivery somewhere the policy refuses."""
    return httpx.Client(timeout=timeout, follow_redirects=False, transport=guarded_transport(egress_policy()))


def _post(url: str, body: bytes, headers: dict[str, str]) -> float | None:
    """POSTs ``body``; returns how long the receiver asked to pause after a success (or None).
    Raises DeliveryFailed as the answer means it, or EgressDenied when the policy refuses the address."""
    timeout = sentinel_settings.rules.DELIVERY_TIMEOUT_SECONDS
    try:
        with _client(timeout) as client:
            response = client.post(url, content=body, headers=headers)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is no HTTPError
        raise classify_transport_error(exc) from exc
    refusal = classify_answer(response.status_code, response.headers, response.content)
    if refusal is not None:
        raise refusal
    return bucket_empty_for(response.headers)


def _send_email(channel: NotificationChannel, delivery: Delivery) -> None:
    about = delivery.match.rule.name if delivery.match is not None else delivery.title or "Notification"
    subject = f"[Sentinel] {about}"
    message = EmailMessage(
        subject=subject,
        body=delivery.message,
        to=[channel.target],
        headers={"Message-ID": f"<{delivery.idempotency_key}@sentinel>", IDEMPOTENCY_HEADER: delivery.idempotency_key},
    )
    try:
        message.send(fail_silently=False)
    except Exception as exc:  # smtplib and socket errors alike: the attempt failed
        raise classify_smtp_error(exc) from exc


# --- What a receiver's answer means -------------------------------------------------------------
#
# RFC 9110 15.5: a 4xx says the client erred, so the same request will meet the same answer;
# 15.6: a 5xx says the server erred or is unable for now. The exceptions to that rule are the
# 4xx answers that describe a moment rather than the request (below).

# 4xx answers that describe a moment, not the request: retried with backoff (or after the delay
# the receiver asked for).
#   408 Request Timeout: the server gave up waiting for the request (RFC 9110 15.5.9).
#   409 Conflict: "a conflict with the current state of the target resource" (15.5.10): that
#       state can change, e.g. a concurrent request with the same idempotency key is still in
#       progress at the receiver. Retried, bounded by DELIVERY_MAX_ATTEMPTS.
#   421 Misdirected Request: "the client MAY retry the request over a different connection"
#       (15.5.20); each attempt opens a new one.
#   423 Locked: a lock on the resource (RFC 4918 11.3); locks are released.
#   425 Too Early: sent so that the request is repeated later (RFC 8470 5.2).
#   429 Too Many Requests: a rate limit (RFC 6585 4), with Retry-After when the receiver knows.
TRANSIENT_4XX = frozenset({408, 409, 421, 423, 425, 429})

# The documented refusals of a request itself. Every other 4xx (402, 406, 407, 411, 412, 417,
# 418, 426, 428, 431, 451, and codes no RFC defines) is permanent as well: the client erred,
# and sending the identical message again only spends attempts (and, on Discord, counts toward
# the invalid-request limit). This set only names them in the README's table.
PERMANENT_4XX = frozenset({400, 401, 403, 404, 405, 410, 413, 414, 415, 422})

# Slack incoming webhooks answer these strings as the body of a 4xx (Slack API changelog
# 2016-05-17 "Improving error conditions for Incoming Webhooks",
# https://api.slack.com/changelog/2016-05-17-changes-to-errors-for-incoming-webhooks, and
# "Sending messages using incoming webhooks", section "Handling errors"): invalid_payload and
# user_not_found (400), action_prohibited (403), channel_not_found (404), channel_is_archived
# (410), and for a removed, disabled or revoked webhook invalid_token, no_service, no_team,
# no_active_hooks. Each means the webhook or its channel is unusable until someone changes it:
# permanent whatever the 4xx status. (Slack's 429 is its rate limit, with Retry-After: Slack API
# "Rate Limits", https://api.slack.com/docs/rate-limits, "including Incoming Webhooks".)
SLACK_PERMANENT_ERRORS = frozenset(
    {
        "invalid_payload",
        "user_not_found",
        "action_prohibited",
        "channel_not_found",
        "channel_is_archived",
        "invalid_token",
        "no_service",
        "no_team",
        "no_active_hooks",
    }
)

_DELAY_SECONDS = re.compile(r"\d{1,12}(?:\.\d{1,6})?")  # RFC 9110 delay-seconds, plus decimals
_SLACK_STYLE_BODY = re.compile(r"[a-z][a-z0-9_]{1,63}")


def classify_answer(
    status: int, headers: Mapping[str, str], body: bytes, *, now: datetime | None = None
) -> DeliveryFailed | None:
    """What an HTTP answer means: None for a 2xx, else the DeliveryFailed to raise.

    - 2xx: accepted.
    - 3xx: permanent, naming the Location: notification clients never follow redirects (the
      target might move to an address the egress policy forbids); the channel's target must be
      updated instead.
    - 4xx in TRANSIENT_4XX, 5xx, and anything outside 100-599: transient; the delay the
      receiver asks for (`receiver_delay`) goes with it.
    - Any other 4xx, or a 4xx whose body is one of Slack's SLACK_PERMANENT_ERRORS: permanent.
      Discord documents its 404 for a deleted webhook ("Unknown Webhook", code 10015) as a
      signal never to use the webhook again (discord-api-docs, docs/topics/rate-limits.md,
      "Invalid Request Limit"; https://discord.com/developers/docs/topics/rate-limits).

    `now` (UTC) is the clock for Retry-After in HTTP-date form; the default is the current time.
    """
    if 200 <= status < 300:
        return None
    detail = _answer_detail(body)
    reason = f"HTTP {status} {_phrase(status)}" + (f" ({detail})" if detail else "")
    if 300 <= status < 400:
        location = headers.get("location") or "(no Location)"
        return DeliveryFailed(f"{reason} to {location[:300]}: redirects are not followed", permanent=True)
    if 400 <= status < 500 and (status not in TRANSIENT_4XX or detail in SLACK_PERMANENT_ERRORS):
        return DeliveryFailed(reason, permanent=True)
    asked = receiver_delay(headers, body, now=now)
    if asked is None:
        return DeliveryFailed(reason)
    return DeliveryFailed(reason, retry_after=asked[0], retry_source=asked[1])


def receiver_delay(headers: Mapping[str, str], body: bytes, *, now: datetime | None = None) -> tuple[float, str] | None:
    """The delay a receiver asked for, in seconds (>= 0, uncapped), with its source; or None.

    Signals read, the longest wins (obeying every one of them):
    - `Retry-After` (RFC 9110 10.2.3): delay-seconds, or an HTTP-date. A date counts from the
      answer's own `Date` header when there is one, so a receiver whose clock is off still gets
      the wait it meant; without one, from `now`. A date in the past asks for no wait.
    - Discord's 429 body `{"retry_after": <seconds, float>, "global": bool}` (Discord developer
      docs, "Rate Limits", "Rate Limit Response Structure": "rely on the Retry-After header or
      retry_after field to determine when to retry").
    - `X-RateLimit-Reset-After` (seconds, decimals allowed) when `X-RateLimit-Remaining` is 0:
      Discord's bucket is empty until then (same page, "Header Format").
    Unreadable values are ignored (the normal backoff applies).
    """
    found: list[tuple[float, str]] = []
    retry_after = (headers.get("retry-after") or "").strip()
    if retry_after:
        seconds = _retry_after_seconds(retry_after, headers.get("date"), now)
        if seconds is not None:
            found.append((seconds, f"Retry-After: {retry_after[:40]}"))
    discord = _json_object(body)
    asked = discord.get("retry_after")
    if isinstance(asked, int | float) and not isinstance(asked, bool) and 0 <= asked < 1e12:
        scope = headers.get("x-ratelimit-scope") or ("global" if discord.get("global") else "")
        found.append((float(asked), f"retry_after {asked:g} s in the body" + (f", scope {scope}" if scope else "")))
    empty_for = bucket_empty_for(headers)
    if empty_for is not None:
        found.append((empty_for, f"X-RateLimit-Reset-After: {empty_for:g}"))
    return max(found, key=lambda item: item[0]) if found else None


def bucket_empty_for(headers: Mapping[str, str]) -> float | None:
    """After an accepted message: the seconds until the receiver takes another, when it said its
    allowance is used up (`X-RateLimit-Remaining: 0` with `X-RateLimit-Reset-After`, Discord
    developer docs, "Rate Limits", "Header Format"); else None."""
    reset_after = (headers.get("x-ratelimit-reset-after") or "").strip()
    if (headers.get("x-ratelimit-remaining") or "").strip() == "0" and _DELAY_SECONDS.fullmatch(reset_after):
        return float(reset_after)
    return None


def _retry_after_seconds(value: str, date_header: str | None, now: datetime | None) -> float | None:
    if _DELAY_SECONDS.fullmatch(value):
        return float(value)
    at = _http_date(value)
    if at is None:
        return None
    reference = _http_date(date_header or "") or now or datetime.now(UTC)
    return max(0.0, (at - reference).total_seconds())


def _http_date(value: str) -> datetime | None:
    """IMF-fixdate, RFC 850 or asctime (RFC 9110 5.6.7), always UTC; None when unreadable."""
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def _json_object(body: bytes) -> dict[str, Any]:
    if not body.lstrip().startswith(b"{"):
        return {}
    try:
        parsed = json.loads(body[:65536])
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _answer_detail(body: bytes) -> str:
    """A short, one-line account of an error body: Slack's error string, Discord's message and
    code, or the start of any other text."""
    text = body[:2000].decode("utf-8", "replace").strip()
    if _SLACK_STYLE_BODY.fullmatch(text):
        return text
    parsed = _json_object(body)
    if parsed:
        message, code = parsed.get("message") or parsed.get("error"), parsed.get("code")
        if isinstance(message, str) and message:
            return f"{message[:200]}, code {code}" if isinstance(code, int) else message[:200]
    return " ".join(text.split())[:200]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "(no standard meaning)"


def classify_transport_error(exc: httpx.HTTPError | httpx.InvalidURL) -> DeliveryFailed:
    """An attempt that got no HTTP answer.

    Permanent: a TLS certificate the client cannot verify (expired, self-signed, wrong name:
    nothing changes it but the receiver's operator), and an invalid target (a URL httpx cannot
    use). Transient: timeouts, connection refused or reset, a closed connection, DNS failure
    (`httpx.ConnectError` over `socket.gaierror`: resolvers fail for a while too).
    """
    reason = f"{type(exc).__name__}: {exc}"[:500]
    if _caused_by(exc, ssl.SSLCertVerificationError):
        return DeliveryFailed(f"TLS certificate refused ({reason})", permanent=True)
    if isinstance(exc, httpx.InvalidURL | httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        return DeliveryFailed(f"invalid target ({reason})", permanent=True)
    return DeliveryFailed(reason)


def classify_smtp_error(exc: BaseException) -> DeliveryFailed:
    """An e-mail attempt the SMTP server (or the way to it) refused.

    SMTP reply codes (RFC 5321 4.2.1): 5yz is a permanent negative completion reply, 4yz a
    transient one; a message refused for every recipient takes the recipients' codes. A server
    lacking what the settings require (STARTTLS, AUTH) or a TLS certificate that cannot be
    verified is permanent; connection errors, timeouts and disconnects are transient, and so is
    anything unforeseen (bounded by DELIVERY_MAX_ATTEMPTS).
    """
    reason = f"{type(exc).__name__}: {exc}"[:500]
    codes: list[int] = []
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [int(answer[0]) for answer in exc.recipients.values()]
    elif isinstance(exc, smtplib.SMTPResponseException):
        codes = [int(exc.smtp_code)]
    if codes:
        permanent = all(500 <= code < 600 for code in codes)
        return DeliveryFailed(f"SMTP {'/'.join(map(str, sorted(set(codes))))} ({reason})", permanent=permanent)
    if isinstance(exc, smtplib.SMTPNotSupportedError) or _caused_by(exc, ssl.SSLCertVerificationError):
        return DeliveryFailed(reason, permanent=True)
    return DeliveryFailed(reason)


def classify_unexpected_error(exc: BaseException) -> DeliveryFailed:
    """An error no classifier above knows. A DomainError is Sentinel refusing the target itself
    (e.g. `validate_target`, or a policy that forbids the address): permanent. Anything else is
    transient, so it is retried, and bounded by DELIVERY_MAX_ATTEMPTS."""
    reason = f"{type(exc).__name__}: {exc}"[:500]
    if isinstance(exc, DomainError):
        return DeliveryFailed(f"invalid target ({reason})", permanent=True)
    return DeliveryFailed(reason)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is `exc` or anywhere in its chain of causes (httpx wraps httpcore, which
    wraps the ssl or socket error)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
