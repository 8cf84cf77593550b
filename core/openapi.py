"""drf-spectacular extensions and hooks: Sentinel's auth classes and fields, the spec's path
spelling, and the SPEC 7 error shape documented on every operation.

The schema is checked in `make test` (`manage.py spectacular --fail-on-warn --validate`) and
fuzzed by schemathesis (sentinel_site/tests/test_openapi_fuzz.py), so what it says is what the
API answers.
"""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class TenantJWTScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.TenantJWTAuthentication"
    name = "jwtAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return build_bearer_security_scheme_object(
            header_name="Authorization",
            token_prefix="Bearer",  # noqa: S106 - an auth scheme name, not a password
            bearer_format="JWT",
        )


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "header", "name": "X-API-Key"}


class TenantRefFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "accounts.api.scoping.TenantRefField"

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        if direction == "response":
            return {"type": "integer", "description": "The owning tenant's id."}
        return {"type": "string", "description": "Staff only: the tenant's id, uuid or slug."}


# --- the SPEC 7 error ----------------------------------------------------------------------------


class ErrorBodySerializer(serializers.Serializer[Any]):
    """What went wrong: a stable code, a message for humans, and details when there are any."""

    # Documentation only: core.errors.error_body builds the body.

    code = serializers.CharField(help_text="Machine-readable, e.g. `validation_error`, `not_found`.")
    message = serializers.CharField(help_text="For humans.")
    details = serializers.JSONField(
        allow_null=True, help_text="Anything more: field errors for a 400, `retry_after` for a 429, else null."
    )


class ErrorSerializer(serializers.Serializer[Any]):
    """The body of every error Sentinel answers, 4xx and 5xx alike (SPEC 7)."""

    error = ErrorBodySerializer()


ERROR_COMPONENT = "Error"

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "The request is not valid (the details name each bad field).",
    401: "No credentials, or they are wrong or expired.",
    403: "The credentials do not allow this (role, API-key scope or tenant).",
    404: "No such object, or it belongs to another tenant; also a page past the last.",
    409: "The object conflicts with an existing one (a name already taken).",
    413: "The request body is larger than API_MAX_BODY_BYTES.",
    415: "The request body is not JSON.",
    429: "Too many requests; Retry-After says when to try again.",
    503: "A component Sentinel depends on is down.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    """`extend_schema(responses={...})` entries for errors a view documents itself (a 404, 409 or
    429 the generic rules of `document_errors` would not infer)."""
    return {code: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code]) for code in codes}


def _error_response(code: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": ERROR_DESCRIPTIONS[code],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}},
    }
    if code == 429:
        response["headers"] = {
            "Retry-After": {"schema": {"type": "integer", "minimum": 1}, "description": "Whole seconds to wait."}
        }
    return response


def _inferred_error_codes(path: str, operation: dict[str, Any]) -> set[int]:
    """The 4xx any operation of this kind can answer, whatever its view: every request can be
    malformed (400); one that needs credentials can lack or misuse them (401, 403); one that names
    an object, or a page of a list, can miss (404); one with a body can be too big or not JSON."""
    codes = {400}
    security = operation.get("security")
    if security and {} not in security:
        codes |= {401, 403}
    parameters = operation.get("parameters", [])
    if re.search(r"\{\w+\}", path) or any(p.get("name") == "page" for p in parameters):
        codes.add(404)
    if "requestBody" in operation:
        codes |= {413, 415}
    return codes


def document_errors(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: every operation lists the 4xx it can answer, each with the SPEC 7 body.

    Codes a view documents itself (with `error_responses`) are kept as they are. The `Error`
    component is registered by those views (the circuit and token endpoints always do).
    """
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    if ERROR_COMPONENT not in schemas:
        raise RuntimeError("no view documents an error with error_responses(): the Error component is missing")
    for path, item in result["paths"].items():
        for method, operation in item.items():
            if method not in ("get", "put", "post", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            for code in sorted(_inferred_error_codes(path, operation)):
                responses.setdefault(str(code), _error_response(code))
            operation["responses"] = dict(sorted(responses.items()))
    return result


def strip_trailing_slashes(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Documents `/api/v1/tenants`, as the spec spells it; the router accepts both spellings."""
    result["paths"] = {
        (path.rstrip("/") if path.startswith("/api/v1/") else path): item for path, item in result["paths"].items()
    }
    return result
