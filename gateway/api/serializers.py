from __future__ import annotations

from rest_framework import serializers

from accounts.api.scoping import TenantOwnedSerializer, TenantRefField
from gateway.models import Route


class RouteSerializer(TenantOwnedSerializer):
    tenant = TenantRefField(required=False, allow_null=True)
    targets = serializers.ListField(child=serializers.CharField(max_length=500), min_length=1, max_length=16)
    methods = serializers.ListField(child=serializers.CharField(max_length=10), required=False, max_length=7)

    class Meta:
        model = Route
        fields = [
            "id",
            "tenant",
            "name",
            "path_prefix",
            "targets",
            "methods",
            "auth_mode",
            "strip_prefix",
            "timeout_ms",
            "burst_capacity",
            "refill_rate",
            "window_ms",
            "base_rate_limit",
            "max_body_bytes",
            "allow_tenant_header",
            "active",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        extra_kwargs = {"path_prefix": {"validators": []}}

    def to_representation(self, instance: Route) -> dict:
        data = super().to_representation(instance)
        data["tenant"] = instance.tenant_id
        return data
