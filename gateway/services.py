"""Writes of the gateway domain: routes and their targets."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.db import transaction

from accounts.models import Tenant
from core.config_version import config_version_bump
from core.egress import EgressDenied, guarded_transport
from core.egress_django import egress_policy, egress_refusal_record
from core.errors import Conflict, DomainError
from core.paths import reserved_prefixes
from gateway.models import ROUTE_FIELDS, Route, RouteTarget, Upstream

_PREFIX_CHARS = re.compile(r"/[A-Za-z0-9._~\-/]*")
MAX_TARGETS = 16
HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def _invalid(field: str, message: str) -> DomainError:
    return DomainError(message, details={field: [message]}, code="validation_error")


def normalize_path_prefix(prefix: str, *, tenant: Tenant | None) -> str:
    """A clean prefix ending in "/", outside Sentinel's own paths, and for a tenant's route inside
    `/<tenant slug>/`, so one tenant cannot capture the paths another tenant's clients call.

    Raises DomainError (400 `validation_error`, field `path_prefix`) for any other prefix."""
    prefix = prefix.strip()
    if not _PREFIX_CHARS.fullmatch(prefix):
        raise _invalid("path_prefix", "Start with / and use letters, digits and . _ ~ - / only.")
    if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        raise _invalid("path_prefix", "No empty, '.' or '..' segments.")
    if not prefix.endswith("/"):
        prefix += "/"
    if prefix == "/" or any(prefix == f"{r}/" or prefix.startswith(f"{r}/") for r in reserved_prefixes()):
        raise _invalid("path_prefix", f"{prefix} is one of Sentinel's own paths.")
    if tenant is not None and not prefix.startswith(f"/{tenant.slug}/"):
        raise _invalid("path_prefix", f"A route of tenant {tenant.slug} must start with /{tenant.slug}/.")
    return prefix


def normalize_targets(targets: list[str]) -> list[str]:
    """The target URLs without trailing "/" or repeats, in their round-robin order.

    Raises DomainError (400 `validation_error`, field `targets`) for none, more than MAX_TARGETS,
    or a URL that is not plain http(s) (no credentials, query or fragment)."""
    if not targets:
        raise _invalid("targets", "Name at least one target URL.")
    if len(targets) > MAX_TARGETS:
        raise _invalid("targets", f"At most {MAX_TARGETS} targets.")
    cleaned: list[str] = []
    for raw in targets:
        url = str(raw).strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _invalid("targets", f"{raw!r} is not an http(s) URL.")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise _invalid("targets", f"{raw!r}: no credentials, query or fragment in a target.")
        if url not in cleaned:
            cleaned.append(url)
    return cleaned


def route_targets_check(*, tenant: Tenant | None, targets: list[str]) -> None:
    """The egress policy's save-time check (SPEC 7, core.egress) of a tenant's route targets.

    Every address each target resolves to must be public unicast or in EGRESS_ALLOWED_NETWORKS;
    platform routes (no tenant) are exempt. A name that does not resolve now passes (the proxy
    checks what it connects to). Raises DomainError ``egress_denied`` (400) naming the address and
    the rule; the refusal is logged and counted."""
    if tenant is None:
        return
    policy = egress_policy()
    for target in targets:
        try:
            policy.check_target(target)
        except EgressDenied as denied:
            egress_refusal_record(kind="route", stage="save", tenant=str(tenant.uuid), target=target, denied=denied)
            raise DomainError(
                denied.message, details={"field": "targets", **denied.details()}, code="egress_denied"
            ) from None


def normalize_methods(methods: list[str]) -> list[str]:
    """The HTTP methods upper-cased, sorted, without repeats (empty: every method is allowed).

    Raises DomainError (400 `validation_error`, field `methods`) for a method not in HTTP_METHODS."""
    upper = sorted({str(method).upper() for method in methods})
    unknown = [method for method in upper if method not in HTTP_METHODS]
    if unknown:
        raise _invalid("methods", f"Unknown methods: {', '.join(unknown)}.")
    return upper


def _set_targets(route: Route, targets: list[str]) -> None:
    route.route_targets.all().delete()
    for position, url in enumerate(targets):
        upstream, _ = Upstream.objects.get_or_create(url=url)
        RouteTarget.objects.create(route=route, upstream=upstream, position=position)


def _check_fields(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(ROUTE_FIELDS)
    if unknown:
        raise DomainError(f"Unknown route fields: {', '.join(sorted(unknown))}.")
    if "methods" in fields:
        fields["methods"] = normalize_methods(fields["methods"] or [])
    return fields


@transaction.atomic
def route_create(*, tenant: Tenant | None, name: str, path_prefix: str, targets: list[str], **fields: Any) -> Route:
    """A route of `tenant` (None: a platform route) to `targets`, with any of ROUTE_FIELDS in
    `fields`; every proxy loads it within a second of the commit.

    Raises DomainError (400) for a bad prefix, target, method or unknown field, or a target the
    egress policy refuses (`egress_denied`); Conflict (409) when a route already serves the prefix."""
    prefix = normalize_path_prefix(path_prefix, tenant=tenant)
    if Route.objects.filter(path_prefix=prefix).exists():
        raise Conflict(f"A route already serves {prefix}.", details={"path_prefix": ["Already in use."]})
    cleaned = normalize_targets(targets)
    route_targets_check(tenant=tenant, targets=cleaned)
    route = Route.objects.create(tenant=tenant, name=name, path_prefix=prefix, **_check_fields(fields))
    _set_targets(route, cleaned)
    transaction.on_commit(config_version_bump)
    return route


@transaction.atomic
def route_update(*, route: Route, targets: list[str] | None = None, **fields: Any) -> Route:
    """Changes the given ROUTE_FIELDS and, when `targets` is given, replaces the targets; every
    proxy loads the change within a second of the commit. A route keeps its tenant.

    Raises DomainError (400) as `route_create` does; Conflict (409) when another route serves the
    new prefix."""
    fields = _check_fields(fields)
    if "path_prefix" in fields:
        fields["path_prefix"] = normalize_path_prefix(fields["path_prefix"], tenant=route.tenant)
        if Route.objects.filter(path_prefix=fields["path_prefix"]).exclude(pk=route.pk).exists():
            raise Conflict("Another route serves this prefix.", details={"path_prefix": ["Already in use."]})
    for field, value in fields.items():
        setattr(route, field, value)
    route.save()
    if targets is not None:
        cleaned = normalize_targets(targets)
        route_targets_check(tenant=route.tenant, targets=cleaned)
        _set_targets(route, cleaned)
    transaction.on_commit(config_version_bump)
    return route


@transaction.atomic
def route_delete(*, route: Route) -> None:
    """Deletes the route (its upstreams stay, see `upstream_delete`); every proxy stops serving it
    within a second of the commit."""
    route.delete()
    transaction.on_commit(config_version_bump)


def upstream_delete(*, upstream: Upstream) -> None:
    """Deletes an upstream no route uses (its breaker state expires on its own).

    Raises Conflict (409) while a route still forwards to it: change the route's targets first.
    """
    paths = sorted(upstream.routes.values_list("path_prefix", flat=True))
    if paths:
        raise Conflict(f"{upstream.url} is a target of {', '.join(paths)}.", details={"upstream": paths})
    upstream.delete()


def route_ensure_default(*, downstream_url: str) -> Route:
    """The default `/proxy/` route to DOWNSTREAM_URL (SPEC 2.2), created once; later edits stay."""
    existing = Route.objects.filter(path_prefix="/proxy/").first()
    if existing is not None:
        return existing
    return route_create(
        tenant=None,
        name="Default proxy",
        path_prefix="/proxy/",
        targets=[downstream_url],
        auth_mode="jwt_or_api_key",
        strip_prefix=True,
        allow_tenant_header=False,
    )


@dataclass(frozen=True)
class TargetProbe:
    """One target's answer to a live route test."""

    target: str
    status: int | None
    latency_ms: float
    error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.status is not None and self.status < 500


def route_probe(*, route: Route, path: str = "/", timeout_s: float = 5.0) -> list[TargetProbe]:
    """GETs `path` on each of the route's targets directly, as the proxy would after stripping
    the prefix: an operator's check that the targets answer, without the gateway's limits or
    breaker in the way (and without counting towards either). A tenant's route is probed under the
    egress policy, as the proxy would connect: a refused target reports the refusal."""
    probes = []
    transport = guarded_transport(egress_policy()) if route.tenant_id is not None else None
    with httpx.Client(timeout=timeout_s, follow_redirects=False, transport=transport) as client:
        for target in route.targets:
            started = time.perf_counter()
            try:
                response = client.get(target.rstrip("/") + path, headers={"user-agent": "sentinel-route-test"})
            except (httpx.HTTPError, EgressDenied) as exc:
                elapsed = (time.perf_counter() - started) * 1000
                probes.append(TargetProbe(target, None, round(elapsed, 1), f"{type(exc).__name__}: {exc}"[:200]))
                continue
            elapsed = (time.perf_counter() - started) * 1000
            probes.append(TargetProbe(target, response.status_code, round(elapsed, 1)))
    return probes
