"""The brain's component of `GET /health` (SPEC 7), named in SENTINEL_HEALTH_COMPONENTS."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.conf import sentinel_settings

# A health probe must answer fast even when the brain hangs: /health is polled by load balancers.
CHECK_TIMEOUT_SECONDS = 0.5


def check_brain() -> dict[str, Any]:
    """The standard grpc.health.v1 Check of the brain at BRAIN_ADDRESS: {"status": "ok"} when it
    answers SERVING, else {"status": "down", "error": why}, with its `address`. Never raises.

    Informative only (not critical for the 200/503 of /health): with the brain down transactions
    are still answered, approved unscored (fail-open), so a web process stays useful."""
    address = sentinel_settings.fraud.BRAIN_ADDRESS
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=CHECK_TIMEOUT_SECONDS
            )
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        name = code.name if code is not None else type(exc).__name__
        return {"status": "down", "address": address, "error": name}
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        status_name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return {"status": "down", "address": address, "error": status_name}
    return {"status": "ok", "address": address}
