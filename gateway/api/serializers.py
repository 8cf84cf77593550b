from __future__ import annotations

from rest_framework import serializers

from accounts.api.scoping import TenantOwnedSerializer, TenantRefField
from gateway.models import ROUTE_FIELDS, Route


class RouteSerializer(TenantOwnedSerializer):
    tenant = TenantRefField(required=False, allow_null=True)
    targets = serializers.ListField(child=serializers.CharField(max_length=500), min_length=1, max_length=16)
    methods = serializers.ListField(child=serializers.CharField(max_length=10), required=False, max_length=7)

    class Meta:
        model = Route
        fields = ["id", "tenant", *ROUTE_FIELDS, "targets", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]
        extra_kwargs = {"path_prefix": {"validators": []}}
