from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from drf_spectacular.utils import OpenApiResponse, extend_schema
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.admin_base import LimitedAdminLoginForm, login_lockout_answer
from observability.dashboard.scopes import ScopeDenied, ScopeNotFound, scope_for, tenant_choices
from observability.health import health_report


class HealthComponentSerializer(serializers.Serializer):
    """One component's check; each check may add keys of its own (observability.health)."""

    status = serializers.ChoiceField(choices=["ok", "down", "skipped", "unknown", "stale"])
    latency_ms = serializers.FloatField(required=False, help_text="How long the check took.")
    error = serializers.CharField(required=False, help_text="Why it is down.")
    detail = serializers.CharField(required=False)


class HealthSerializer(serializers.Serializer):
    """The body of `GET /health`, with either status code."""

    status = serializers.ChoiceField(choices=["ok", "unhealthy"])
    mode = serializers.ChoiceField(choices=["embedded", "production"])
    components = serializers.DictField(
        child=HealthComponentSerializer(), help_text="database, redis, broker (critical) and worker."
    )


class AlwaysJson(BaseContentNegotiation):
    """JSON whatever the client's Accept says: a probe that asks for text/plain still gets the
    report rather than a 406 (as before /health was a DRF view)."""

    def select_parser(self, request: Request, parsers: list[BaseParser]) -> BaseParser | None:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        return renderers[0], renderers[0].media_type


class HealthView(APIView):
    """`GET /health`: every component's state; 200 when all critical ones work, else 503."""

    # A DRF view only so that the schema documents it: no authentication, permission or
    # throttle stands in front of it, so probes reach it however the API is configured.
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = AlwaysJson
    serializer_class = HealthSerializer

    @extend_schema(
        responses={
            200: OpenApiResponse(HealthSerializer, description="Every critical component works."),
            503: OpenApiResponse(HealthSerializer, description="A critical component is down; it says which."),
        }
    )
    def get(self, request: Request) -> Response:
        healthy, report = health_report()
        return Response(report, status=200 if healthy else 503)


health = never_cache(HealthView.as_view())


def metrics_view(
    *, collectors: Sequence[Collector] = (), declare: Sequence[Callable[[], None]] = ()
) -> Callable[[HttpRequest], HttpResponse]:
    """The `GET /metrics` view: every process's samples (the multiprocess files), then what
    `collectors` read at scrape time (fleet-wide gauges such as the gateway's breaker states; the
    site names them in its URLconf, so observability needs to know no app).

    `declare` runs first, each callable creating at zero the series that configuration makes known
    now (the gateway's routes): so they are in this scrape, before their first event.

    A collector or declaration that raises makes the scrape a 500: each must catch its own failures.
    """

    @never_cache
    @require_safe
    def metrics(request: HttpRequest) -> HttpResponse:
        for series_declare in declare:
            series_declare()
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        for collector in collectors:
            registry.register(collector)
        return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    return metrics


@login_required
@require_safe
def dashboard_page(request: HttpRequest) -> HttpResponse:
    """`/dashboard/`: the live dashboard page (the figures come over `/ws/dashboard/`). Staff see
    the fleet and may pick a tenant (`?tenant=<slug>`); anyone else sees their own tenant."""
    slug = request.GET.get("tenant") or None
    try:
        view = scope_for(request.user, tenant_slug=slug)  # type: ignore[arg-type]
    except ScopeDenied as exc:
        # A TemplateResponse: the page for people, which the API error middleware leaves as it is.
        return TemplateResponse(request, "observability/dashboard_denied.html", {"reason": str(exc)}, status=403)
    except ScopeNotFound as exc:
        return TemplateResponse(request, "observability/dashboard_denied.html", {"reason": str(exc)}, status=404)
    context = {
        "view": view,
        "tenants": tenant_choices() if request.user.is_staff else [],
        "socket_path": "/ws/dashboard/" + (f"?{urlencode({'tenant': view.tenant_slug})}" if slug else ""),
    }
    return render(request, "observability/dashboard.html", context)


class DashboardLoginForm(LimitedAdminLoginForm):
    """The admin's login form with its failed-login limiter (one budget with `POST /auth/token`),
    open to every active user: the dashboard is the tenants' too, not only staff's."""

    def confirm_login_allowed(self, user: Any) -> None:
        AuthenticationForm.confirm_login_allowed(self, user)


class DashboardLoginView(LoginView):
    """`/login/` (settings.LOGIN_URL): Django's login view, where `/dashboard/` sends visitors; a
    locked-out username or address gets the page with the error as a 429 with `Retry-After`, as
    the admin's login does (`login_lockout_answer`)."""

    form_class = DashboardLoginForm
    template_name = "observability/login.html"
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return login_lockout_answer(request, super().post(request, *args, **kwargs))


dashboard_login = DashboardLoginView.as_view()
