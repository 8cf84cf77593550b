from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from accounts import services
from accounts.models import DEFAULT_SCOPES, ApiKey, Membership, Scope, Tenant, Tier, User


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


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ["username", "email", "tenant_link", "role", "is_staff", "is_active", "last_login", "date_joined"]
    list_filter = ["is_staff", "is_superuser", "is_active", "membership__role", "membership__tenant__tier"]
    search_fields = ["username", "email", "first_name", "last_name", "membership__tenant__slug"]
    list_select_related = ["membership__tenant"]
    inlines = [UserMembershipInline]
    actions = ["deactivate_users"]

    @admin.display(description="tenant", ordering="membership__tenant__name")
    def tenant_link(self, obj: User) -> str:
        tenant = obj.tenant
        return tenant.slug if tenant else "—"

    @admin.display(description="role", ordering="membership__role")
    def role(self, obj: User) -> str:
        membership = getattr(obj, "membership", None)
        return membership.role if membership else "—"

    @admin.action(description="Deactivate the selected users (they can no longer log in)")
    def deactivate_users(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        count = queryset.exclude(pk=request.user.pk).update(is_active=False)
        self.message_user(request, f"Deactivated {count} user(s).", messages.SUCCESS)


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
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "tier", "active", "members", "active_keys", "overrides", "created_at"]
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
        ("History", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    inlines = [MembershipInline, ApiKeyInline]
    actions = ["activate", "deactivate", "make_vital", "make_standard", "make_economy"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                member_total=Count("memberships", distinct=True),
                active_key_total=Count("api_keys", filter=Q(api_keys__revoked=False), distinct=True),
            )
        )

    @admin.display(description="members", ordering="member_total")
    def members(self, obj: Tenant) -> int:
        return obj.member_total  # type: ignore[attr-defined]

    @admin.display(description="active keys", ordering="active_key_total")
    def active_keys(self, obj: Tenant) -> int:
        return obj.active_key_total  # type: ignore[attr-defined]

    @admin.display(description="overrides")
    def overrides(self, obj: Tenant) -> str:
        values = obj.rate_limit_overrides()
        return ", ".join(f"{name.lower()}={value}" for name, value in values.items()) or "—"

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
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role", "tenant__tier"]
    search_fields = ["user__username", "user__email", "tenant__name", "tenant__slug"]
    list_select_related = ["user", "tenant"]
    autocomplete_fields = ["user", "tenant"]


class ApiKeyStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("revoked", "Revoked"), ("expired", "Expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> QuerySet[ApiKey]:
        now = timezone.now()
        if self.value() == "active":
            return queryset.filter(revoked=False).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        if self.value() == "revoked":
            return queryset.filter(revoked=True)
        if self.value() == "expired":
            return queryset.filter(revoked=False, expires_at__lte=now)
        return queryset


class ApiKeyCreationForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=Scope.choices, initial=DEFAULT_SCOPES, widget=forms.CheckboxSelectMultiple, required=False
    )

    class Meta:
        model = ApiKey
        fields = ["tenant", "name", "scopes", "expires_at"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "tenant", "prefix", "scopes", "status", "last_used_at", "expires_at", "created_at"]
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
            super().save_model(request, obj, form, change)
            return
        key, raw = services.api_key_create(
            tenant=form.cleaned_data["tenant"],
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"] or list(DEFAULT_SCOPES),
            created_by=request.user if isinstance(request.user, User) else None,
            expires_at=form.cleaned_data["expires_at"],
        )
        obj.pk = key.pk
        obj.__dict__.update({k: v for k, v in key.__dict__.items() if not k.startswith("_")})
        self.message_user(
            request, f"API key created. Copy the secret now, it is not shown again: {raw}", messages.WARNING
        )

    @admin.display(description="status")
    def status(self, obj: ApiKey) -> str:
        return obj.status

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            services.api_key_revoke(api_key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)
