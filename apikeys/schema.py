"""OpenAPI generation (drf-spectacular): security schemes, the error shape on every
operation, request/response headers, and each operation's scope from the registry.

`ApiAutoSchema` is REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]. For every operation it adds:
- `x-required-scope` (and a line in the description) computed by the view from the scope
  registry, the same function the permission check uses;
- the error responses that operation can return (405 included), each with the `ApiError`
  schema and the list of codes from `apikeys.errors.ERRORS`;
- the response headers the API sends: `X-Request-Id` on every response, the rate-limit
  headers once a key is known, `Idempotent-Replayed` on mutations' successes,
  `Retry-After`, `WWW-Authenticate` and `Allow` on the errors that carry them;
- the request headers of docs/api.md, `Idempotency-Key` required wherever the API
  enforces it, with the pattern `apikeys.idempotency.parse_header` accepts.

`describe_catalogue`, the postprocessing hook, finishes the document so that a client
generated from it needs no hand edits (ADR 0080): the catalogue's scopes, `servers`,
nullable references valid under OAS 3.0.3, and real pagination examples.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerFieldExtension,
)
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from apikeys import idempotency
from apikeys.api_base import KEY_KIND_SYSTEM, ApiView
from apikeys.catalogue import AUTHORIZATION, current
from apikeys.errors import ERRORS, IDEMPOTENCY_ERROR
from apikeys.guard.pipeline import MAX_CLIENT_HEADER_LENGTH
from apikeys.pagination import DEFAULT_LIMIT, encode_cursor
from apikeys.permissions import ANY_SCOPE
from apikeys.scopes import get_resource

# What the pipeline's client-header step (`apikeys.guard.pipeline`) accepts: printable
# ASCII, at most 255 characters.
CLIENT_HEADER_PATTERN = rf"^[ -~]{{0,{MAX_CLIENT_HEADER_LENGTH}}}$"
MUTATING_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
BODY_METHODS = frozenset({"POST", "PATCH", "PUT"})

# What `apikeys.idempotency.parse_header` accepts, as the field value arrives (RFC 9110:
# without the surrounding whitespace HTTP strips). Either the plain form, 1 to 255
# printable ASCII characters that neither start with `"` nor start or end with a space,
# or the quoted structured-field form: 1 to 255 printable characters between double
# quotes, `"` and `\` escaped as `\"` and `\\`. The key itself is at most 255 characters;
# quoted and escaped it may take 2 + 2 x 255 on the wire, hence the maxLength. A test
# holds the pattern to `parse_header` (tests/apikeys/api/test_schema.py).
_KEY_MAX = idempotency.MAX_LENGTH
IDEMPOTENCY_KEY_PATTERN = (
    rf"^(?:[!#-~](?:[ -~]{{0,{_KEY_MAX - 2}}}[!-~])?"
    rf'|"(?:[ !#-\[\]-~]|\\["\\]){{1,{_KEY_MAX}}}")$'
)
IDEMPOTENCY_KEY_MAX_LENGTH = 2 + 2 * _KEY_MAX


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


class NamedEnumFieldExtension(OpenApiSerializerFieldExtension):
    """`apikeys.serializers.NamedEnumField`: a reference to one enum component of its own
    name, wherever the field appears. (drf-spectacular names enums after the field, and
    `status` already names four other choice sets.)"""

    target_class = "apikeys.serializers.NamedEnumField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        field = self.target
        component = ResolvedComponent(
            name=field.enum_name,
            type=ResolvedComponent.SCHEMA,
            object=field.enum_name,
            schema={"type": "string", "enum": list(field.choices)},
        )
        auto_schema.registry.register_on_missing(component)
        return dict(component.ref)


class ErrorFieldSerializer(serializers.Serializer[Any]):
    param = serializers.CharField(help_text="The field or parameter at fault ('' for the body).")
    code = serializers.CharField()
    message = serializers.CharField()


class ErrorDetailSerializer(serializers.Serializer[Any]):
    type = serializers.ChoiceField(choices=sorted({spec.type for spec in ERRORS.values()}))
    # A string, not an enum: new codes may appear (docs/api.md), and a generated client
    # must parse them rather than fail; the codes each operation answers with are listed
    # in its responses.
    code = serializers.CharField(
        help_text="Machine-readable: one of the errors table's codes (docs/api.md). New codes "
        "may appear; handle one you do not know by `type` and the HTTP status."
    )
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


class ApiErrorSerializer(serializers.Serializer[Any]):
    """Every error response: `{"error": {...}}`. (Named `ApiError`, not `Error`: a
    generated client's model `Error` clashes with its own local names.)"""

    error = ErrorDetailSerializer()


def _codes(*statuses: int, exclude_types: frozenset[str] = frozenset()) -> dict[int, list[str]]:
    by_status: dict[int, list[str]] = {status: [] for status in statuses}
    for code, spec in ERRORS.items():
        if spec.status in by_status and spec.type not in exclude_types:
            by_status[spec.status].append(code)
    return by_status


def requires_idempotency_key(view: ApiView, method: str) -> bool:
    """Whether the API refuses `method` on `view` without an `Idempotency-Key`: every
    mutation of a guarded view runs under the idempotency protocol
    (`ApiView.around_handler`), except on views that answer a question through POST
    (`idempotency_key_required = False`: the verify API)."""
    if view.public or method.upper() not in idempotency.MUTATING_METHODS:
        return False
    return bool(getattr(view, "idempotency_key_required", True))


def error_codes_for(method: str, *, public: bool, idempotent: bool = True) -> dict[int, list[str]]:
    """Status → codes an operation can answer with (every one is documented).

    405 is every operation's: a method its path does not have. `idempotent`: the
    operation runs under the idempotency protocol (its idempotency errors are listed).
    """
    if public:
        return {405: ["method_not_allowed"], 500: ["internal_error"], 503: ["service_unavailable"]}
    method = method.upper()
    if method in MUTATING_METHODS:
        excluded = frozenset() if idempotent else frozenset({IDEMPOTENCY_ERROR})
        codes = _codes(400, 401, 403, 404, 405, 409, 422, 429, 500, 503, exclude_types=excluded)
        if method not in BODY_METHODS:
            codes[400] = [c for c in codes[400] if c != "malformed_json"]
        else:
            codes |= _codes(413, 415)
        return {status: codes[status] for status in sorted(codes)}
    codes = _codes(
        400, 401, 403, 404, 405, 429, 500, 503, exclude_types=frozenset({IDEMPOTENCY_ERROR})
    )
    codes[400] = [c for c in codes[400] if c != "malformed_json"]
    codes[403] = [c for c in codes[403] if c not in ("environment_not_allowed",)]
    return codes


def _header(description: str, schema: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    header: dict[str, Any] = {"description": description, "schema": schema}
    if required:
        header["required"] = True
    return header


REQUEST_ID_HEADER = {
    "X-Request-Id": _header(
        "The request's id (the caller's X-Request-Id when it is sane).",
        {"type": "string"},
        required=True,
    )
}

# What `apikeys.ratelimit.LimitResult.headers` sends once the key is known (a window
# without a limit, 0, is left out), on every response of a guarded operation.
RATE_LIMIT_HEADERS = {
    "X-RateLimit-Limit": _header(
        "Requests per minute this key may make.", {"type": "integer", "minimum": 1}
    ),
    "X-RateLimit-Remaining": _header(
        "Requests left in the current minute window.", {"type": "integer", "minimum": 0}
    ),
    "X-RateLimit-Reset": _header(
        "When the minute window ends, in UTC epoch seconds.", {"type": "integer", "minimum": 0}
    ),
    "RateLimit": _header(
        'IETF form of the minute window: `"minute";r=<remaining>;t=<seconds to reset>`.',
        {"type": "string", "pattern": r'^"minute";r=[0-9]+;t=[0-9]+$'},
    ),
    "RateLimit-Policy": _header(
        'The key\'s windows, e.g. `"burst";q=10;w=1, "minute";q=60;w=60`.',
        {
            "type": "string",
            "pattern": r'^"[a-z]+";q=[0-9]+;w=[0-9]+(, "[a-z]+";q=[0-9]+;w=[0-9]+)*$',
        },
    ),
}

REPLAYED_HEADER = {
    idempotency.REPLAYED_HEADER: _header(
        "`true` when this is the stored response of an earlier request with the same "
        "Idempotency-Key (nothing was done again); absent otherwise.",
        {"type": "string", "enum": ["true"]},
    )
}


def _retry_after(when: str, *, required: bool = False) -> dict[str, Any]:
    return {
        "Retry-After": _header(
            f"Seconds to wait before retrying{when}.",
            {"type": "integer", "minimum": 0},
            required=required,
        )
    }


ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": _header(
            '`Bearer realm="api"`, with `error="invalid_token"` for a key that was sent but '
            "refused.",
            {"type": "string"},
            required=True,
        )
    },
    405: {
        "Allow": _header(
            "The methods the path has, e.g. `GET, POST, HEAD`.", {"type": "string"}, required=True
        )
    },
    409: _retry_after(" (with `idempotency_key_in_use`: 1)"),
    429: _retry_after("", required=True),
    503: _retry_after(""),
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
        if requires_idempotency_key(view, self.method):
            parameters.append(
                OpenApiParameter(
                    idempotency.HEADER,
                    {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
                        "pattern": IDEMPOTENCY_KEY_PATTERN,
                    },
                    OpenApiParameter.HEADER,
                    required=True,
                    description="A new unique value per operation (a UUID, say), the same "
                    "when you retry it: the same key with the same request replays the "
                    "stored response for 24 hours. 1 to 255 printable ASCII characters, plain "
                    'or as a quoted string (`"abc"`, with `\\"` and `\\\\` escaped).',
                )
            )
        return parameters

    def _get_response_bodies(self, direction: Any = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        view = self._api_view()
        if view is None:
            for response in responses.values():
                response.setdefault("headers", {}).update(REQUEST_ID_HEADER)
            return responses
        idempotent = requires_idempotency_key(view, self.method)
        error_ref = self.resolve_serializer(ApiErrorSerializer, "response").ref
        codes_by_status = error_codes_for(self.method, public=view.public, idempotent=idempotent)
        for status, codes in codes_by_status.items():
            if not codes or str(status) in responses:
                continue
            listed = ", ".join(f"`{code}`" for code in codes)
            responses[str(status)] = {
                "description": f"Error: {listed}.",
                "content": {"application/json": {"schema": error_ref}},
                "headers": dict(ERROR_HEADERS.get(status, {})),
            }
        for code, response in responses.items():
            headers = response.setdefault("headers", {})
            if idempotent and code.startswith("2"):
                headers.update(REPLAYED_HEADER)
            if not view.public:
                headers.update(RATE_LIMIT_HEADERS)
            headers.update(REQUEST_ID_HEADER)
        return responses


def describe_catalogue(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (settings' POSTPROCESSING_HOOKS, after the enum
    hook): the deployment's key headers, scopes and presets in the document's description
    and as `x-latchkey-scopes` for tools, then the finishing a client generator needs
    (ADR 0080): `servers`, nullable references, pagination examples."""
    _describe_scopes(result)
    result["servers"] = [{"url": settings.SITE_URL, "description": "This deployment."}]
    _nullable_references(result)
    _pagination_examples(result)
    return result


def _describe_scopes(result: dict[str, Any]) -> None:
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


# Matches null only, under OAS 3.0.3's `nullable` (meaningful only beside `type`).
NULL_ONLY: dict[str, Any] = {"type": "object", "nullable": True, "enum": [None]}


def _nullable_references(node: Any) -> None:
    """`{"allOf": [{"$ref": X}], "nullable": true}` (drf-spectacular's nullable nested
    serializer) allows no null under OAS 3.0.3: `nullable` has no effect without `type`
    beside it, and the referenced schema refuses null. Rewritten as
    `{"oneOf": [{"$ref": X}, NULL_ONLY]}`, which validators accept for null and clients
    generate as `X | None`."""
    if isinstance(node, list):
        for item in node:
            _nullable_references(item)
        return
    if not isinstance(node, dict):
        return
    all_of = node.get("allOf")
    if (
        node.get("nullable") is True
        and "type" not in node
        and isinstance(all_of, list)
        and len(all_of) == 1
        and set(all_of[0]) == {"$ref"}
    ):
        del node["nullable"], node["allOf"]
        node["oneOf"] = [all_of[0], dict(NULL_ONLY)]
    for key, value in node.items():
        if isinstance(value, dict) and set(value) == {"allOf"} and len(value["allOf"]) == 1:
            # A reference wrapped in `allOf` with nothing beside it: the reference itself.
            node[key] = value = value["allOf"][0]
        _nullable_references(value)


# The type prefix of each list's rows, by the last segment of its path (for examples).
_LIST_ID_PREFIXES = {
    "api-keys": "key",
    "members": "mem",
    "invitations": "inv",
    "audit-events": "evt",
    "endpoints": "whe",
    "deliveries": "whd",
    "organizations": "org",
    "kyc-applications": "kyc",
}


def _example_row_id(path: str, tail: str) -> str:
    segments = [part for part in path.split("/") if part and not part.startswith("{")]
    prefix = _LIST_ID_PREFIXES.get(segments[-1] if segments else "", "obj")
    return f"{prefix}_{tail}"


def _pagination_examples(result: dict[str, Any]) -> None:
    """Each list's `next` / `previous` example: a link as the API writes it for that
    list (instead of drf-spectacular's placeholder)."""
    schemas = result.get("components", {}).get("schemas", {})
    prefix = "#/components/schemas/"
    for path, item in result.get("paths", {}).items():
        get = item.get("get") or {}
        content = get.get("responses", {}).get("200", {}).get("content", {})
        ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
        component = schemas.get(ref.removeprefix(prefix)) if ref.startswith(prefix) else None
        if component is None or set(component.get("properties", {})) != {
            "next",
            "previous",
            "results",
        }:
            continue
        url = f"{settings.SITE_URL}{path}"
        links = {
            "next": encode_cursor(following=_example_row_id(path, "7yQ2mLk9TzR4vXbN1cW8pD3s")),
            "previous": encode_cursor(preceding=_example_row_id(path, "3hF6sJ0aPq5wEr2tYu9iOk4l")),
        }
        for name, cursor in links.items():
            query = urlencode({"cursor": cursor, "limit": DEFAULT_LIMIT})
            component["properties"][name]["example"] = f"{url}?{query}"
