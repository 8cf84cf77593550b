"""Sending one delivery to its channel: Slack, Discord, a signed webhook or e-mail.

Every send carries the delivery's idempotency key (`X-Sentinel-Idempotency-Key` for HTTP, the
Message-ID for e-mail): a worker killed after the receiver got a message but before it recorded
the success sends it again on recovery with the same key, so a receiver can drop the repeat.
Sentinel itself never sends a delivery again once a success is recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.mail import EmailMessage
from django.core.validators import validate_email
from django.forms import ValidationError as FormValidationError

from core.egress import EgressDenied, guarded_transport
from core.egress_django import egress_policy, egress_refusal_record
from sentinel_site.errors import DomainError

if TYPE_CHECKING:
    from rules.models import Delivery, NotificationChannel

SIGNATURE_HEADER = "X-Sentinel-Signature"
IDEMPOTENCY_HEADER = "X-Sentinel-Idempotency-Key"


class DeliveryFailed(Exception):
    """The channel did not accept the message; the text says why (kept as `last_error`).
    ``permanent``: sending again cannot succeed, so the delivery is dead at once."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


def validate_target(kind: str, target: str) -> None:
    """An e-mail address for e-mail channels, an http(s) URL for the others."""
    if kind == "email":
        try:
            validate_email(target)
        except FormValidationError:
            raise DomainError("The target must be an e-mail address.", details={"target": target[:200]}) from None
        return
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DomainError("The target must be an http or https URL.", details={"target": target[:200]})


def payload(delivery: Delivery) -> dict[str, Any]:
    """What a webhook receives: the rule, the event and the rendered message."""
    match = delivery.match
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


def send(channel: NotificationChannel, delivery: Delivery) -> None:
    """Sends or raises DeliveryFailed."""
    if channel.kind == "email":
        _send_email(channel, delivery)
        return
    if channel.kind == "slack":
        body = {"text": delivery.message}
    elif channel.kind == "discord":
        body = {"content": delivery.message[:2000]}  # Discord refuses longer content
    else:
        body = payload(delivery)
    raw = json.dumps(body, separators=(",", ":"), default=str).encode()
    headers = {"content-type": "application/json", IDEMPOTENCY_HEADER: delivery.idempotency_key}
    if channel.kind == "webhook" and channel.secret:
        headers[SIGNATURE_HEADER] = sign(channel.secret, raw)
    try:
        _post(channel.target, raw, headers)
    except EgressDenied as denied:
        tenant = str(channel.tenant.uuid)
        egress_refusal_record(kind="channel", stage="connect", tenant=tenant, target=channel.target, denied=denied)
        raise DeliveryFailed(str(denied), permanent=True) from denied


def _client(timeout: float) -> httpx.Client:
    """The HTTP client of one send: every connection held to the egress policy (channels always
    belong to a tenant), checked against the address actually connected to (core.egress), and
    redirects never followed, so a receiver cannot bounce a delivery somewhere the policy refuses."""
    return httpx.Client(timeout=timeout, follow_redirects=False, transport=guarded_transport(egress_policy()))


def _post(url: str, body: bytes, headers: dict[str, str]) -> None:
    """POSTs ``body``; raises DeliveryFailed, or EgressDenied when the policy refuses the address."""
    conf: dict[str, Any] = settings.SENTINEL_RULES
    timeout = float(conf["DELIVERY_TIMEOUT_SECONDS"])
    try:
        with _client(timeout) as client:
            response = client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
    if not 200 <= response.status_code < 300:
        raise DeliveryFailed(f"HTTP {response.status_code}: {response.text[:300]}")


def _send_email(channel: NotificationChannel, delivery: Delivery) -> None:
    subject = f"[Sentinel] {delivery.match.rule.name}"
    message = EmailMessage(
        subject=subject,
        body=delivery.message,
        to=[channel.target],
        headers={"Message-ID": f"<{delivery.idempotency_key}@sentinel>", IDEMPOTENCY_HEADER: delivery.idempotency_key},
    )
    try:
        message.send(fail_silently=False)
    except Exception as exc:  # smtplib and socket errors alike: the attempt failed
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
