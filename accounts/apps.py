from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps  # the module: a class here would be a candidate default


class SentinelAdminConfig(admin_apps.AdminConfig):
    """`django.contrib.admin` with Sentinel's site as `admin.site` (Django's documented way to
    override the default site): its login is under the failed-login limiter."""

    default = False  # `accounts` in INSTALLED_APPS still means AccountsConfig
    default_site = "accounts.admin_base.SentinelAdminSite"


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and tenancy"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the OpenAPI descriptions of the auth classes and fields defined here.
        import core.openapi  # noqa: F401
