"""OpenAPI generation (drf-spectacular): security schemes, the error shape on every
operation, request/response headers, and each operation's scope from the registry.

`ApiAutoSchema` is REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]. For every operation it adds:
- `x-required-scope` (and a line in the description) computed by the view from the scope
  registry, the same function the permission check uses;
- the error responses that operation can return, each with the `Error` schema and the
  list of codes from `apikeys.errors.ERRORS`;
- the `X-Request-Id` response header, and the optional request headers of SPEC section 6.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from apikeys.api_base import KEY_KIND_SYSTEM, ApiView
from apikeys.catalogue import AUTHORIZATION, current
from apikeys.errors import ERRORS, IDEMPOTENCY_ERROR
from apikeys.guard.pipeline import MAX_CLIENT_HEADER_LENGTH
from apikeys.permissions import ANY_SCOPE
from apikeys.scopes import get_resource

# What the pipeline's client-header step (`apikeys.guard.pipeline`) accepts: printable
# ASCII, at most 255 characters.
CLIENT_HEADER_PATTERN = rf"^[ -~]{{0,{MAX_CLIENT_HEADER_LENGTH}}}$"
MUTATING_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
BODY_METHODS = frozenset({"POST", "PATCH", "PUT"})


def security_schemes() -> list[tuple[str, dict[str, Any]]]:
    """One OpenAPI security scheme per key header of the catalogue's `[wire]`, in order."""
    catalogue = current()
    word = catalogue.wire.word
    key_format = (
        f"{catalogue.prefix}_<{word('live')}|{word('test')}|{word('sys')}>_"
        "<32 base62><6 base62 checksum>"
    )
    others = [h for h in catalogue.wire.key_headers if h.lower() != AUTHORIZATION]
    schemes = []
    for header in catalogue.wire.key_headers:
        if header.lower() == AUTHORIZATION:
            schemes.append(
                (
                    "BearerAuth",
                    {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": key_format,
                        "description": "An API key in `Authorization: Bearer <key>`.",
                    },
                )
            )
            continue
        position = others.index(header)
        schemes.append(
            (
                "ApiKeyHeader" if position == 0 else f"ApiKeyHeader{position + 1}",
                {
                    "type": "apiKey",
                    "in": "header",
                    "name": header,
                    "description": f"An API key ({key_format}) in `{header}`. Sending two "
                    "key headers with different keys is 400 `conflicting_credentials`.",
                },
            )
        )
    return schemes


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """The key goes in any one of the catalogue's key headers."""

    target_class = "apikeys.authentication.ApiKeyAuthentication"

    @property
    def name(self) -> list[str]:  # type: ignore[override]
        return [name for name, _ in security_schemes()]

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[Any]]]:
        return [{name: []} for name in self.name]

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return [definition for _, definition in security_schemes()]


class ErrorFieldSerializer(serializers.Serializer[Any]):
    param = serializers.CharField(help_text="The field or parameter at fault ('' for the body).")
    code = serializers.CharField()
    message = serializers.CharField()


class ErrorDetailSerializer(serializers.Serializer[Any]):
    type = serializers.ChoiceField(choices=sorted({spec.type for spec in ERRORS.values()}))
    code = serializers.ChoiceField(choices=list(ERRORS))
    message = serializers.CharField()
    request_id = serializers.CharField(help_text="Also in the X-Request-Id header.")
    doc_url = serializers.URLField(
        help_text="The errors page's section on this code: its cause and how to fix it."
    )
    param = serializers.CharField(required=False, help_text="The field or header at fault.")
    required_scope = serializers.CharField(
        required=False, help_text="With `insufficient_scope`: the scope that was needed."
    )
    reason = serializers.CharField(
        required=False, help_text="A finer machine-readable reason from the service."
    )
    # DRF moves declared fields off the class; the name only shadows Serializer.errors for mypy.
    errors = ErrorFieldSerializer(  # type: ignore[assignment]
        many=True, required=False, help_text="With `validation_error`: every field at fault."
    )


class ErrorSerializer(serializers.Serializer[Any]):
    error = ErrorDetailSerializer()


def _codes(*statuses: int, exclude_types: frozenset[str] = frozenset()) -> dict[int, list[str]]:
    by_status: dict[int, list[str]] = {status: [] for status in statuses}
    for code, spec in ERRORS.items():
        if spec.status in by_status and spec.type not in exclude_types:
            by_status[spec.status].append(code)
    return by_status


def error_codes_for(method: str, *, public: bool) -> dict[int, list[str]]:
    """Status → codes an operation can answer with (every one is documented)."""
    if public:
        return {500: ["internal_error"], 503: ["service_unavailable"]}
    method = method.upper()
    if method in MUTATING_METHODS:
        codes = _codes(400, 401, 403, 404, 409, 422, 429, 500, 503)
        if method not in BODY_METHODS:
            codes[400] = [c for c in codes[400] if c != "malformed_json"]
        else:
            codes |= _codes(413, 415)
        return codes
    codes = _codes(400, 401, 403, 404, 429, 500, 503, exclude_types=frozenset({IDEMPOTENCY_ERROR}))
    codes[400] = [c for c in codes[400] if c != "malformed_json"]
    codes[403] = [c for c in codes[403] if c not in ("environment_not_allowed",)]
    return codes


REQUEST_ID_HEADER = {
    "X-Request-Id": {
        "description": "The request's id (the caller's X-Request-Id when it is sane).",
        "schema": {"type": "string"},
        "required": True,
    }
}


ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": '`Bearer realm="api"`, with `error="invalid_token"` for a '
            "key that was sent but refused.",
            "schema": {"type": "string"},
            "required": True,
        }
    },
    429: {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "schema": {"type": "integer"},
        }
    },
}


class ApiAutoSchema(AutoSchema):
    def _api_view(self) -> ApiView | None:
        return self.view if isinstance(self.view, ApiView) else None

    def required_scope(self) -> str | None:
        view = self._api_view()
        if view is None or view.public:
            return None
        return view.required_scope_for(self.method)

    def get_tags(self) -> list[str]:
        view = self._api_view()
        if view is not None and view.resource not in (None, ANY_SCOPE):
            return [str(view.resource)]
        return ["meta"]

    def get_description(self) -> str:  # type: ignore[override]
        description = super().get_description() or ""
        view = self._api_view()
        if view is None:
            return description
        if view.public:
            line = "**Authentication:** none."
        else:
            scope = self.required_scope()
            if scope is None:
                line = "**Required scope:** none; any valid key."
            else:
                system = view.key_kind == KEY_KIND_SYSTEM
                resource = get_resource(scope.partition(":")[0], system=system)
                guards = f" — {resource.description}" if resource and resource.description else ""
                line = f"**Required scope:** `{scope}`{guards}"
        return f"{description}\n\n{line}".strip()

    def get_extensions(self) -> dict[str, Any]:
        extensions = dict(super().get_extensions())
        view = self._api_view()
        if view is not None and not view.public:
            extensions["x-required-scope"] = self.required_scope()
        return extensions

    def get_override_parameters(self) -> list[Any]:
        parameters = list(super().get_override_parameters())
        view = self._api_view()
        if view is None or view.public:
            return parameters
        wire = current().wire
        parameters += [
            OpenApiParameter(
                wire.org_header,
                str,
                OpenApiParameter.HEADER,
                description="The key's organisation (`org_…` id or slug); any other value "
                "is 403 `org_mismatch`.",
            ),
            OpenApiParameter(
                wire.client_version_header,
                str,
                OpenApiParameter.HEADER,
                pattern=CLIENT_HEADER_PATTERN,
                description="Your client's version, recorded in usage (printable ASCII, "
                "at most 255 characters).",
            ),
            OpenApiParameter(
                wire.actor_header,
                str,
                OpenApiParameter.HEADER,
                pattern=CLIENT_HEADER_PATTERN,
                description="Your own user id, recorded on audit events (printable ASCII, "
                "at most 255 characters).",
            ),
        ]
        if self.method in MUTATING_METHODS:
            parameters.append(
                OpenApiParameter(
                    "Idempotency-Key",
                    str,
                    OpenApiParameter.HEADER,
                    description="Makes a retry safe: the same key with the same request "
                    "replays the stored response for 24 hours.",
                )
            )
        return parameters

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        view = self._api_view()
        if view is not None:
            error_ref = self.resolve_serializer(ErrorSerializer, "response").ref
            for status, codes in error_codes_for(self.method, public=view.public).items():
                if not codes or str(status) in responses:
                    continue
                listed = ", ".join(f"`{code}`" for code in codes)
                responses[str(status)] = {
                    "description": f"Error: {listed}.",
                    "content": {"application/json": {"schema": error_ref}},
                    "headers": dict(ERROR_HEADERS.get(status, {})),
                }
        for response in responses.values():
            response.setdefault("headers", {}).update(REQUEST_ID_HEADER)
        return responses


def describe_catalogue(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: the deployment's key headers, scopes and
    presets in the document's description, and as `x-latchkey-scopes` for tools."""
    catalogue = current()
    lines = [
        "",
        "",
        f"**Keys** are sent as {catalogue.key_headers_text()}.",
        "",
        "**Scopes** are `<resource>:<action>`; `<resource>:*` grants every action of the "
        "resource. `GET /api/v1/scopes` returns this table as data.",
        "",
        "| resource | actions | implies | key kind | what it guards |",
        "|---|---|---|---|---|",
    ]
    listed: list[dict[str, Any]] = []
    for system in (False, True):
        for resource in catalogue.resources_of(system=system):
            implied = {
                a: sorted(resource.grants(a) - {a})
                for a in resource.actions
                if resource.grants(a) - {a}
            }
            implies_text = "; ".join(f"{a} → {', '.join(t)}" for a, t in implied.items())
            described = " ".join(resource.description.split()).replace("|", "\\|")
            lines.append(
                f"| `{resource.name}` | {', '.join(resource.actions)} | {implies_text or '—'} "
                f"| {'system' if system else 'organisation'} | {described} |"
            )
            listed.append(
                {
                    "resource": resource.name,
                    "actions": list(resource.actions),
                    "implies": implied,
                    "system": system,
                }
            )
    info = result.setdefault("info", {})
    info["description"] = str(info.get("description", "")) + "\n".join(lines)
    result["x-latchkey-scopes"] = listed
    return result
