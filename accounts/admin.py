from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count, Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils import timezone

from accounts import services
from accounts.admin_base import (
    ServiceModelAdmin,
    changed_values,
    copy_saved,
    limits_text,
    short_time,
    site_configure,
)
from accounts.models import (
    DEFAULT_SCOPES,
    ApiKey,
    ApiKeyQuerySet,
    LoginFailure,
    Membership,
    Role,
    Scope,
    Tenant,
    Tier,
    User,
    api_key_active_q,
)
from core.errors import DomainError

site_configure(admin.site)

TENANT_FIELDS = ("name", "slug", "tier", "active", *services.TENANT_OVERRIDE_FIELDS, *services.TENANT_FRAUD_FIELDS)


def memberships_save(formset: BaseInlineFormSet) -> None:  # type: ignore[type-arg]
    """Saves a membership inline through the services, so the last-admin rule holds here too.

    Additions and promotions first, then demotions and moves, then removals: "make B admin, make
    A member" in one save keeps an admin at every step, as the services check at each one.
    """
    formset.save(commit=False)  # fills new_objects, changed_objects, deleted_objects; writes nothing
    for membership in formset.new_objects:
        services.membership_add(tenant=membership.tenant, user=membership.user, role=membership.role)
    changed = sorted((obj for obj, _ in formset.changed_objects), key=lambda obj: obj.role != Role.ADMIN)
    for membership in changed:
        services.membership_update(membership=membership, role=membership.role, tenant=membership.tenant)
    for membership in formset.deleted_objects:
        services.membership_remove(membership=membership)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]
    fields = ["user", "role", "created_at"]
    readonly_fields = ["created_at"]


class UserMembershipInline(admin.StackedInline):
    model = Membership
    extra = 0
    max_num = 1
    autocomplete_fields = ["tenant"]
    fields = ["tenant", "role"]


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = ["name", "prefix", "scopes", "revoked", "expires_at", "last_used_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are made through the API-key page, which shows the secret once


class MembershipsThroughServices(ServiceModelAdmin):
    """Saves a membership inline through the membership services (last admin kept)."""

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        if formset.model is Membership:
            memberships_save(formset)
        else:
            super().save_formset(request, form, formset, change)


@admin.register(User)
class UserAdmin(MembershipsThroughServices, DjangoUserAdmin):
    list_display = ["username", "email", "tenant_link", "role", "is_staff", "is_active", "last_seen"]
    list_filter = ["is_staff", "is_superuser", "is_active", "membership__role", "membership__tenant__tier"]
    search_fields = ["username", "email", "first_name", "last_name", "membership__tenant__slug"]
    list_select_related = ["membership__tenant"]
    readonly_fields = ("last_login", "date_joined")
    inlines = [UserMembershipInline]
    actions = ["deactivate_users", "activate_users"]

    @admin.display(description="tenant", ordering="membership__tenant__name")
    def tenant_link(self, obj: User) -> str:
        tenant = obj.tenant
        return tenant.slug if tenant else "—"

    @admin.display(description="role", ordering="membership__role")
    def role(self, obj: User) -> str:
        membership = getattr(obj, "membership", None)
        return membership.role if membership else "—"

    @admin.display(description="last login", ordering="last_login")
    def last_seen(self, obj: User) -> Any:
        return short_time(obj.last_login)

    def save_model(self, request: HttpRequest, obj: User, form: forms.ModelForm, change: bool) -> None:
        by = request.user if isinstance(request.user, User) else None
        if not change:
            data = form.cleaned_data
            password = data.get("password1") if data.get("set_usable_password", True) else None
            copy_saved(obj, services.user_create(username=data["username"], password=password))
            return
        stored = User.objects.get(pk=obj.pk)
        saved = services.user_update(user=stored, **changed_values(form, services.USER_FIELDS))
        if "is_active" in form.changed_data:
            if form.cleaned_data["is_active"]:
                saved = services.user_activate(user=saved)
            else:
                saved = services.user_deactivate(user=saved, by=by)
        copy_saved(obj, saved)

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        services.user_delete(user=obj, by=request.user if isinstance(request.user, User) else None)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            self.delete_model(request, user)

    @admin.action(description="Deactivate the selected users (logins, refresh tokens and sessions end)")
    def deactivate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        by = request.user if isinstance(request.user, User) else None
        done, refused = 0, []
        for user in queryset:
            try:
                services.user_deactivate(user=user, by=by)
                done += 1
            except DomainError as exc:
                refused.append(f"{user.username}: {exc.message}")
        self.message_user(request, f"Deactivated {done} user(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, "Not deactivated: " + "; ".join(refused), messages.WARNING)

    @admin.action(description="Activate the selected users")
    def activate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            services.user_activate(user=user)
        self.message_user(request, f"Activated {queryset.count()} user(s).", messages.SUCCESS)


class OverridesFilter(admin.SimpleListFilter):
    title = "rate-limit overrides"
    parameter_name = "overrides"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Has overrides"), ("no", "Uses the settings")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> QuerySet[Tenant]:
        has_any = (
            Q(burst_capacity__isnull=False)
            | Q(refill_rate__isnull=False)
            | Q(window_ms__isnull=False)
            | Q(base_rate_limit__isnull=False)
        )
        if self.value() == "yes":
            return queryset.filter(has_any)
        if self.value() == "no":
            return queryset.exclude(has_any)
        return queryset


@admin.register(Tenant)
class TenantAdmin(MembershipsThroughServices):
    list_display = ["name", "slug", "tier", "active", "members", "active_keys", "overrides", "created"]
    list_filter = ["tier", "active", OverridesFilter, "created_at"]
    search_fields = ["name", "slug", "uuid"]
    readonly_fields = ["uuid", "created_at", "updated_at"]
    prepopulated_fields = {"slug": ["name"]}
    fieldsets = [
        (None, {"fields": ["name", "slug", "uuid", "tier", "active"]}),
        (
            "Rate-limit overrides (empty: use the settings)",
            {"fields": ["burst_capacity", "refill_rate", "window_ms", "base_rate_limit"]},
        ),
        (
            "Fraud thresholds (empty: use the settings; review must not exceed decline)",
            {"fields": list(services.TENANT_FRAUD_FIELDS)},
        ),
        ("History", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    inlines = [MembershipInline, ApiKeyInline]
    actions = ["activate", "deactivate", "make_vital", "make_standard", "make_economy"]

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name in services.TENANT_FRAUD_FIELDS and field is not None:
            # A threshold is a fraud score, not a count: say its scale on the label.
            field.label = f"{db_field.verbose_name.capitalize()} (score 0 to 1)"
        return field

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                member_total=Count("memberships", distinct=True),
                active_key_total=Count("api_keys", filter=api_key_active_q("api_keys__"), distinct=True),
            )
        )

    @admin.display(description="members", ordering="member_total")
    def members(self, obj: Tenant) -> int:
        return obj.member_total  # type: ignore[attr-defined]

    @admin.display(description="keys", ordering="active_key_total")
    def active_keys(self, obj: Tenant) -> int:
        return obj.active_key_total  # type: ignore[attr-defined]

    @admin.display(description="limits")
    def overrides(self, obj: Tenant) -> str:
        return limits_text(obj, inherited="settings")

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Tenant) -> Any:
        return short_time(obj.created_at)

    def save_model(self, request: HttpRequest, obj: Tenant, form: forms.ModelForm, change: bool) -> None:
        # Through the service: the running proxies pick up a new tier or limit within a second.
        if change:
            saved = services.tenant_update(tenant=Tenant.objects.get(pk=obj.pk), **changed_values(form, TENANT_FIELDS))
        else:
            saved = services.tenant_create(**{name: form.cleaned_data[name] for name in TENANT_FIELDS})
        copy_saved(obj, saved)

    def delete_model(self, request: HttpRequest, obj: Tenant) -> None:
        services.tenant_delete(tenant=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            services.tenant_delete(tenant=tenant)

    def _set(self, request: HttpRequest, queryset: QuerySet[Tenant], label: str, **changes: Any) -> None:
        for tenant in queryset:
            services.tenant_update(tenant=tenant, **changes)
        self.message_user(request, f"{label}: {queryset.count()} tenant(s).", messages.SUCCESS)

    @admin.action(description="Activate the selected tenants")
    def activate(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._set(request, queryset, "Activated", active=True)

    @admin.action(description="Deactivate the selected tenants (logins and keys stop working)")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._set(request, queryset, "Deactivated", active=False)

    @admin.action(description="Set tier: vital")
    def make_vital(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._set(request, queryset, "Now vital", tier=Tier.VITAL)

    @admin.action(description="Set tier: standard")
    def make_standard(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._set(request, queryset, "Now standard", tier=Tier.STANDARD)

    @admin.action(description="Set tier: economy")
    def make_economy(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._set(request, queryset, "Now economy", tier=Tier.ECONOMY)


@admin.register(Membership)
class MembershipAdmin(ServiceModelAdmin):
    list_display = ["user", "tenant_slug", "role", "created"]
    list_filter = ["role", "tenant__tier"]
    search_fields = ["user__username", "user__email", "tenant__name", "tenant__slug"]
    list_select_related = ["user", "tenant"]
    autocomplete_fields = ["user", "tenant"]

    @admin.display(description="tenant", ordering="tenant__slug")
    def tenant_slug(self, obj: Membership) -> str:
        return obj.tenant.slug

    @admin.display(description="since", ordering="created_at")
    def created(self, obj: Membership) -> Any:
        return short_time(obj.created_at)

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None) -> list[str]:
        # A membership is one user's place: to move someone else in, add their own membership.
        return ["user", "created_at"] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Membership, form: forms.ModelForm, change: bool) -> None:
        data = form.cleaned_data
        if change:
            stored = Membership.objects.get(pk=obj.pk)
            saved = services.membership_update(membership=stored, role=data["role"], tenant=data["tenant"])
        else:
            saved = services.membership_add(tenant=data["tenant"], user=data["user"], role=data["role"])
        copy_saved(obj, saved)

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        services.membership_remove(membership=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        for membership in queryset:
            services.membership_remove(membership=membership)


class ApiKeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("revoked", "Revoked"), ("expired", "Expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        if self.value() == "active":
            assert isinstance(queryset, ApiKeyQuerySet)  # ApiKey's manager makes every one of its querysets one
            return queryset.active()
        if self.value() == "revoked":
            return queryset.filter(revoked=True)
        if self.value() == "expired":
            return queryset.filter(revoked=False, expires_at__lte=timezone.now())
        return queryset


class ApiKeyCreationForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, initial=DEFAULT_SCOPES, widget=forms.CheckboxSelectMultiple, required=False
    )

    class Meta:
        model = ApiKey
        fields = ["tenant", "name", "scopes", "expires_at"]


@admin.register(ApiKey)
class ApiKeyAdmin(ServiceModelAdmin):
    list_display = ["name", "tenant_slug", "prefix", "scope_list", "status", "last_used", "expires"]
    list_filter = [ApiKeyStatusFilter, "tenant__tier", "created_at"]
    search_fields = ["name", "prefix", "tenant__name", "tenant__slug"]
    list_select_related = ["tenant", "created_by"]
    autocomplete_fields = ["tenant"]
    # The hash is never shown; the secret was never stored.
    readonly_fields = [
        "tenant",
        "prefix",
        "scopes",
        "revoked",
        "revoked_at",
        "last_used_at",
        "created_by",
        "created_at",
    ]
    fields = ["tenant", "name", "prefix", "scopes", "expires_at", "revoked", "revoked_at", "last_used_at", "created_by"]
    actions = ["revoke"]

    def get_form(self, request: HttpRequest, obj: ApiKey | None = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyCreationForm
            kwargs["fields"] = ApiKeyCreationForm.Meta.fields
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return list(self.readonly_fields) if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return list(self.fields) if obj is not None else list(ApiKeyCreationForm.Meta.fields)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm, change: bool) -> None:
        if change:
            stored = ApiKey.objects.get(pk=obj.pk)
            copy_saved(obj, services.api_key_update(api_key=stored, **changed_values(form, ["name", "expires_at"])))
            return
        key, raw = services.api_key_create(
            tenant=form.cleaned_data["tenant"],
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"] or list(DEFAULT_SCOPES),
            created_by=request.user if isinstance(request.user, User) else None,
            expires_at=form.cleaned_data["expires_at"],
        )
        copy_saved(obj, key)
        self.message_user(
            request, f"API key created. Copy the secret now, it is not shown again: {raw}", messages.WARNING
        )

    def delete_model(self, request: HttpRequest, obj: ApiKey) -> None:
        services.api_key_delete(api_key=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            services.api_key_delete(api_key=key)

    @admin.display(description="tenant", ordering="tenant__slug")
    def tenant_slug(self, obj: ApiKey) -> str:
        return obj.tenant.slug

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes) or "—"

    @admin.display(description="last used", ordering="last_used_at")
    def last_used(self, obj: ApiKey) -> Any:
        return short_time(obj.last_used_at)

    @admin.display(description="expires", ordering="expires_at")
    def expires(self, obj: ApiKey) -> Any:
        return short_time(obj.expires_at) if obj.expires_at else "never"

    @admin.display(description="status")
    def status(self, obj: ApiKey) -> str:
        return obj.status

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            services.api_key_revoke(api_key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)


@admin.register(LoginFailure)
class LoginFailureAdmin(admin.ModelAdmin):
    """Failed logins, as the insight engine's brute-force detector counts them: read-only
    records (the login doors write them), purged after INSIGHT_LOGIN_FAILURE_RETENTION_SECONDS."""

    list_display = ["time", "username", "client_ip", "reason", "door"]
    list_filter = ["reason", "door"]
    search_fields = ["username", "client_ip"]
    date_hierarchy = "time"
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
