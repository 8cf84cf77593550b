"""The admin as a client of the services (CONVENTIONS 12): the base every domain ModelAdmin uses.

Subclasses write through services in `save_model`, `save_formset`, `delete_model` and
`delete_queryset`. This base makes a service's refusal (a `DomainError`) look like any other
validation error instead of a 500, and keeps "nothing changed" true when it happens:

- on the add/change form, the admin's own transaction rolls back and the form is shown again with
  the user's input and the refusal on the field it names (or at the top);
- on the delete page and on changelist actions ("delete selected" included), everything the
  request did is rolled back, and the refusal is shown as an error message.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from accounts.login_limiter import Lockout, login_failure_record, login_lockout, login_success_record
from accounts.models import LoginFailureReason, RateLimitOverrides
from accounts.services import login_failure_log
from core.errors import DomainError, TooManyRequests
from core.http import client_ip

_REFUSAL = "_sentinel_service_refusal"

security_logger = logging.getLogger("sentinel.security")


def site_configure(site: admin.AdminSite) -> None:
    """Sentinel's name on the admin, and no navigation sidebar: at 1280 px it takes a quarter of
    the width from the changelists, and the home page and breadcrumbs already lead everywhere."""
    site.site_header = "Sentinel"
    site.site_title = "Sentinel admin"
    site.index_title = "Administration"
    site.enable_nav_sidebar = False


# --- the admin's login door, under the failed-login limiter of `POST /auth/token` -----------------


class LimitedAdminLoginForm(AdminAuthenticationForm):
    """The admin's login form, counted by the same failed-login limiter as `POST /auth/token`
    (SPEC 1, `accounts.login_limiter`): one budget per username and per client IP across both doors.

    - A username or IP that is locked is refused *before* the password is checked, with the wait
      in whole seconds in the message (`lockout` is then set, for the view's 429).
    - A wrong password (or an unknown or inactive user: `authenticate` returned nobody) is one
      failure against the username and the IP, and logged like the API's failures (`login_failed`
      on `sentinel.security`, which the insight engine's brute-force detector reads).
    - A successful staff login clears the username's count, as the API's does.
    - A right password of a user who is not staff is refused by the admin but is no guess: it is
      neither counted nor does it clear anything (like the API's refusal of a deactivated tenant).

    The username is taken as the client sent it (cut to 150 characters), as `TokenView` takes it,
    so that both doors key the same counts; the limiter folds case and surrounding spaces.
    """

    lockout: Lockout | None = None

    def clean(self) -> dict[str, Any]:
        username = str(self.data.get("username", ""))[:150]
        ip = client_ip(self.request) if self.request is not None else "unknown"
        lockout = login_lockout(username=username, ip=ip)
        if lockout is not None:
            self.lockout = lockout
            login_failure_log(username=username, ip=ip, reason=LoginFailureReason.LOCKED_OUT, door="admin")
            security_logger.warning(
                "login refused: too many failures",
                extra={"username": username, "client_ip": ip, "by": lockout.subject, "door": "admin"},
            )
            raise ValidationError(
                "Too many failed logins from this account or address; try again in %(seconds)d seconds.",
                code="too_many_failed_logins",
                params={"seconds": lockout.retry_after},
            )
        try:
            cleaned = super().clean()
        except ValidationError:
            if self.user_cache is None:  # the password did not match (confirm_login_allowed did not refuse)
                login_failure_record(username=username, ip=ip)
                login_failure_log(username=username, ip=ip, reason=LoginFailureReason.BAD_CREDENTIALS, door="admin")
                security_logger.warning(
                    "login failed",
                    extra={"event": "login_failed", "username": username, "client_ip": ip, "door": "admin"},
                )
            raise
        if self.user_cache is not None:
            login_success_record(username=username)
        return cleaned


class SentinelAdminSite(admin.AdminSite):
    """Django's admin site with the limited login form (`AdminSite.login_form`), and a refused
    login answered `429 Too Many Requests` with the same `Retry-After` and RateLimit headers as the
    API's (`TooManyRequests.headers`), the login page still shown with the error on it.

    Installed as the default site (`admin.site`) by `accounts.apps.SentinelAdminConfig`
    (`AdminConfig.default_site`), so every app's `@admin.register` lands on it.
    """

    login_form = LimitedAdminLoginForm

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return login_lockout_answer(request, super().login(request, extra_context))


def login_lockout_answer(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """`response` (a login page rendered by a `LimitedAdminLoginForm` view) turned into a
    `429 Too Many Requests` with the API's `Retry-After` and RateLimit headers when the POSTed
    form was refused for a lockout; any other response is returned as it is. Shared by the
    admin's login and the dashboard's `/login/`, so both doors refuse alike."""
    form = (getattr(response, "context_data", None) or {}).get("form")
    lockout = getattr(form, "lockout", None)
    if request.method == "POST" and isinstance(lockout, Lockout):
        refusal = TooManyRequests(
            "Too many failed logins; try again later.",
            retry_after=lockout.retry_after,
            code="too_many_failed_logins",
            limit=lockout.state(),
        )
        response.status_code = refusal.status_code
        for name, value in refusal.headers():
            response[name] = value
    return response


# --- compact changelist columns (issue 8, item 12: the admin reads well at 1280 px) ---------------


def short_time(value: datetime | None) -> SafeString | str:
    """`30 Nov 15:43` in the current time zone (with the year when it is not this one), the full
    time in the tooltip; "—" for no time."""
    if value is None:
        return "—"
    local = timezone.localtime(value)
    shape = "%d %b %H:%M" if local.year == timezone.localtime().year else "%d %b %Y"
    return format_html('<span title="{}">{}</span>', local.isoformat(timespec="seconds"), local.strftime(shape))


def shorten(text: str, limit: int) -> SafeString | str:
    """`text` cut to `limit` characters with an ellipsis, the whole of it in the tooltip."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return format_html('<span title="{}">{}…</span>', text, text[: limit - 1])


def limits_text(obj: RateLimitOverrides, *, inherited: str) -> str:
    """An object's rate-limit overrides in one short column: `burst 40 @12.5/s · 1200/60s`;
    `inherited` (what applies instead) when none is set."""
    burst, refill, requests, window_ms = obj.burst_capacity, obj.refill_rate, obj.base_rate_limit, obj.window_ms
    parts = []
    if burst is not None or refill is not None:
        rate = f" @{refill:g}/s" if refill is not None else ""
        parts.append(f"burst {burst if burst is not None else '·'}{rate}")
    if requests is not None or window_ms is not None:
        window = f"/{window_ms / 1000:g}s" if window_ms is not None else "/window"
        parts.append(f"{requests if requests is not None else '·'}{window}")
    return " · ".join(parts) or inherited


def copy_saved(obj: Any, saved: Any) -> None:
    """The admin keeps using the object it passed to save_model (log entry, redirect, message):
    give it what the service stored."""
    obj.pk = saved.pk
    obj.__dict__.update({k: v for k, v in saved.__dict__.items() if not k.startswith("_")})


def changed_values(form: forms.ModelForm, fields: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The cleaned values of the form's fields among `fields` that the user changed."""
    return {name: form.cleaned_data[name] for name in fields if name in form.changed_data}


def _refusal_messages(error: DomainError) -> dict[str | None, list[str]]:
    """The refusal by form field, from the `details` services give (`{field: [messages]}`)."""
    details = error.details if isinstance(error.details, dict) else {}
    placed: dict[str | None, list[str]] = {}
    for field, value in details.items():
        texts = value if isinstance(value, list) else [value]
        placed[str(field)] = [str(text) for text in texts if isinstance(text, str)] or [error.message]
    return placed or {None: [error.message]}


def _with_refusal(form_class: type[forms.ModelForm], error: DomainError) -> type[forms.ModelForm]:
    """`form_class`, failing validation with the service's refusal."""

    class RefusedForm(form_class):  # type: ignore[valid-type, misc]
        def clean(self) -> dict[str, Any]:
            data = super().clean() or {}
            for field, texts in _refusal_messages(error).items():
                target = field if field in self.fields else None
                for text in texts:
                    self.add_error(target, text)
            return data

    RefusedForm.__name__ = form_class.__name__
    return RefusedForm


class ServiceModelAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """A ModelAdmin whose writes go through services; see the module docstring."""

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as error:
            if request.method != "POST" or hasattr(request, _REFUSAL):
                raise
            # The service refused inside the view's transaction, which has rolled back. Run the
            # view again on the same input with the refusal as a validation error: the form comes
            # back filled in, with the message, and an invalid form saves nothing.
            setattr(request, _REFUSAL, error)
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form_class = super().get_form(request, obj, change=change, **kwargs)
        error = getattr(request, _REFUSAL, None)
        return form_class if error is None else _with_refusal(form_class, error)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except DomainError as error:  # the view's transaction rolled back: nothing was deleted
            self.message_user(request, f"Not deleted: {error.message}", messages.ERROR)
            opts = self.opts
            return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[object_id]))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if request.method != "POST":
            return super().changelist_view(request, extra_context)
        try:
            # All or nothing: an action over many objects ("delete selected" included) that a
            # service refuses for one of them changes none, log entries included.
            with transaction.atomic():
                return super().changelist_view(request, extra_context)
        except DomainError as error:
            self.message_user(request, f"Nothing was changed: {error.message}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
