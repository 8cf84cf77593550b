"""The monitors app's site-level pages, included at the site root: the public status pages."""

from __future__ import annotations

from django.urls import path

from monitors.views import badge_view, status_json_view, status_page_view

urlpatterns = [
    path("status/<slug:slug>/", status_page_view, name="monitors-status-page"),
    path("status/<slug:slug>/status.json", status_json_view, name="monitors-status-json"),
    path("status/<slug:slug>/badge/<int:monitor_id>.json", badge_view, name="monitors-status-badge"),
]
