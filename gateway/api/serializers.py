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


# --- circuit breakers (documentation of /circuit/status and /circuit/reset) ----------------------


class BreakerSerializer(serializers.Serializer):
    """One upstream's breaker, as gateway.breaker_state.breaker_states reports it."""

    upstream = serializers.CharField(help_text="The upstream's base URL (grpc://host:port for the fraud brain).")
    name = serializers.CharField(required=False, help_text="Only for breakers that are not a route's: 'fraud-brain'.")
    routes = serializers.ListField(child=serializers.CharField(), help_text="Path prefixes of the routes using it.")
    state = serializers.ChoiceField(choices=["closed", "open", "half_open"])
    state_code = serializers.IntegerField(help_text="0 closed, 1 open, 2 half-open (the metric's encoding).")
    failures = serializers.IntegerField(help_text="Failures in the current window.")
    total = serializers.IntegerField(help_text="Requests in the current window.")
    opened_at_ms = serializers.IntegerField(allow_null=True, help_text="Unix time in ms when it opened, or null.")
    probes_in_flight = serializers.IntegerField(help_text="Half-open probes now in flight.")


class CircuitStatusSerializer(serializers.Serializer):
    breakers = BreakerSerializer(many=True)


class CircuitResetSerializer(serializers.Serializer):
    upstream = serializers.URLField(max_length=500)


class CircuitResetResultSerializer(serializers.Serializer):
    upstream = serializers.CharField()
    reset = serializers.BooleanField(help_text="False when the breaker was already closed.")
    state = serializers.ChoiceField(choices=["closed", "open", "half_open"])
    state_code = serializers.IntegerField()
    failures = serializers.IntegerField()
    total = serializers.IntegerField()
    opened_at_ms = serializers.IntegerField(allow_null=True)
    probes_in_flight = serializers.IntegerField()
