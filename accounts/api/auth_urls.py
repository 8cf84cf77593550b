from __future__ import annotations

from django.urls import path

from accounts.api.views import MeView, SignupView, TokenRefreshView, TokenView

urlpatterns = [
    path("signup", SignupView.as_view(), name="auth-signup"),
    path("token", TokenView.as_view(), name="auth-token"),
    path("token/refresh", TokenRefreshView.as_view(), name="auth-token-refresh"),
    path("me", MeView.as_view(), name="auth-me"),
]
