from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from fraud.api.urls import transaction_urlpatterns
from gateway.api.views import CircuitResetView, CircuitStatusView
from gateway.metrics import BreakerStateCollector, request_counts_flush, route_series_declare
from monitors.metrics import MonitorsUpCollector
from observability.api.dashboard import DashboardStatsView
from observability.api.urls import insight_urlpatterns
from observability.views import dashboard_login, dashboard_page, health, metrics_view
from rules.api.urls import event_urlpatterns

urlpatterns = [
    path("", TemplateView.as_view(template_name="index.html"), name="home"),
    path("admin/", admin.site.urls),
    path("auth/", include("accounts.api.auth_urls")),
    path("api/v1/", include("accounts.api.urls")),
    path("api/v1/", include("gateway.api.urls")),
    path("api/v1/", include("rules.api.urls")),
    path("api/v1/", include("observability.api.urls")),
    path("api/v1/", include("monitors.api.urls")),
    path("api/v1/", include("fraud.api.urls")),
    path("", include(event_urlpatterns)),
    path("", include(insight_urlpatterns)),
    path("", include(transaction_urlpatterns)),
    path("", include("monitors.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema")),
    path("health", health, name="health"),
    path("login/", dashboard_login, name="login"),
    path("dashboard/", dashboard_page, name="dashboard"),
    path("stats/dashboard", DashboardStatsView.as_view(), name="stats-dashboard"),
    path("circuit/status", CircuitStatusView.as_view(), name="circuit-status"),
    path("circuit/reset", CircuitResetView.as_view(), name="circuit-reset"),
    # django-prometheus' metrics and Sentinel's, summed over every process (multiprocess mode),
    # the apps' fleet-wide gauges read at scrape time, and each route's series at zero.
    path(
        "metrics",
        metrics_view(
            collectors=[BreakerStateCollector(), MonitorsUpCollector()],
            declare=[request_counts_flush, route_series_declare],
        ),
        name="metrics",
    ),
]

handler400 = "core.api_errors.handler400"
handler403 = "core.api_errors.handler403"
handler404 = "core.api_errors.handler404"
handler500 = "core.api_errors.handler500"

admin.site.site_header = "Sentinel administration"
admin.site.site_title = "Sentinel"
admin.site.index_title = "Gateway, observability, rules, monitors and fraud"
