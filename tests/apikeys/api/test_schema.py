"""The OpenAPI document: valid, complete, and generated from the registry and error table."""

from __future__ import annotations

import json
import re
from io import StringIO
from typing import Any

import pytest
import yaml
from django.core.management import call_command
from django.test import Client
from django.urls import resolve
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apikeys.errors import ERRORS
from apikeys.schema import IDEMPOTENCY_KEY_MAX_LENGTH, IDEMPOTENCY_KEY_PATTERN
from apikeys.scopes import all_resources, all_scopes
from orgs.actors import Actor
from tests.apikeys.api.conftest import ApiClient

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    out = StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json",
                 stdout=out)  # fmt: skip
    return json.loads(out.getvalue())


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
    ]


def test_schema_generates_without_warnings_and_validates(schema: dict[str, Any]) -> None:
    assert schema["openapi"].startswith("3.")
    assert all(path.startswith("/api/v1/") for path in schema["paths"])


def test_security_schemes_cover_both_headers(schema: dict[str, Any]) -> None:
    schemes = schema["components"]["securitySchemes"]
    assert schemes["BearerAuth"] == {**schemes["BearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["ApiKeyHeader"]["in"] == "header"
    assert schemes["ApiKeyHeader"]["name"] == "X-API-Key"


def test_each_operation_names_the_scope_its_view_enforces(schema: dict[str, Any]) -> None:
    for method, path, operation in _operations(schema):
        url = re.sub(r"\{[a-z_]+\}", "key_abc", path)
        view_class = resolve(url).func.view_class  # type: ignore[attr-defined]
        if view_class.public:
            assert "x-required-scope" not in operation
            assert operation.get("security") in (None, [], [{}])
            continue
        expected = view_class().required_scope_for(method)
        assert operation["x-required-scope"] == expected, (method, path)
        assert (f"`{expected}`" if expected else "any valid key") in operation["description"]
        assert {"BearerAuth": []} in operation["security"]
        assert {"ApiKeyHeader": []} in operation["security"]


def test_scopes_in_the_schema_come_from_the_registry(schema: dict[str, Any]) -> None:
    known = {
        scope
        for system in (False, True)
        for resource in all_resources(system)
        for scope in resource.scopes
    }
    for _, _, operation in _operations(schema):
        scope = operation.get("x-required-scope")
        assert scope is None or scope in known


def test_every_error_response_uses_the_error_shape(schema: dict[str, Any]) -> None:
    schemas = schema["components"]["schemas"]
    # `Error` would clash with a generated client's own names (ADR 0080).
    assert "Error" not in schemas
    error = schemas["ApiError"]
    assert error["required"] == ["error"]
    detail = schemas["ErrorDetail"]
    assert set(detail["required"]) == {"type", "code", "message", "request_id", "doc_url"}
    # New codes may appear (docs/api.md): a generated client must take one it does not know.
    assert detail["properties"]["code"] == {**detail["properties"]["code"], "type": "string"}
    assert "enum" not in detail["properties"]["code"] and "CodeEnum" not in schemas
    documented: set[str] = set()
    for method, path, operation in _operations(schema):
        for status, response in operation["responses"].items():
            assert "X-Request-Id" in response["headers"], (method, path, status)
            if int(status) >= 400:
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ApiError"
                documented |= set(re.findall(r"`([a-z_]+)`", response["description"]))
        assert "405" in operation["responses"], (method, path)
        if operation.get("security") not in (None, [], [{}]):
            assert {"400", "401", "403", "404", "429", "500"} <= set(operation["responses"])
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    assert documented == set(ERRORS)


def test_schema_is_served_as_json_and_yaml() -> None:
    client = Client()
    as_json = client.get("/api/schema/?format=json")
    assert as_json.status_code == 200 and as_json.json()["info"]["title"] == "Latchkey API"
    as_yaml = client.get("/api/schema/")
    assert as_yaml.status_code == 200
    assert yaml.safe_load(as_yaml.content)["paths"]["/api/v1/me"]


def test_docs_page_loads_swagger_from_the_sidecar_without_inline_code() -> None:
    response = Client().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "//cdn" not in html and "unpkg" not in html and "jsdelivr" not in html
    assert "<style" not in html
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    script = Client().get("/api/docs/?script=")
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.content.decode()
    assert "script-src 'self'" in response["Content-Security-Policy"]


def test_docs_api_md_lists_every_error_code_and_resource() -> None:
    from django.conf import settings

    text = (settings.BASE_DIR / "docs" / "api.md").read_text()
    for code, spec in ERRORS.items():
        assert f"| {spec.status} | {spec.type} | `{code}` |" in text, code
    for system in (False, True):
        for resource in all_resources(system):
            assert f"`{resource.name}" in text, resource.name


# ---- a client generated from the document needs no hand edits (ADR 0080) ----------------


def _validator(schema: dict[str, Any]) -> Any:
    from openapi_core import OpenAPI

    return OpenAPI.from_dict(schema)


class _Request:
    """openapi-core's Request protocol for an operation of the document (no body)."""

    def __init__(self, method: str, path: str, headers: dict[str, str] | None = None) -> None:
        from django.conf import settings
        from openapi_core.datatypes import RequestParameters
        from werkzeug.datastructures import Headers, ImmutableMultiDict

        self.host_url = settings.SITE_URL
        self.path = path
        self.method = method.lower()
        self.body = None
        self.content_type = ""
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(), header=Headers(headers or {}), cookie=ImmutableMultiDict()
        )


class _Response:
    """openapi-core's Response protocol for a Django test client response."""

    def __init__(self, response: Any) -> None:
        from werkzeug.datastructures import Headers

        self.status_code = response.status_code
        self.content_type = response["Content-Type"]
        self.headers = Headers(list(response.headers.items()))
        self.data = response.content


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


@pytest.fixture
def system_secret(db: None) -> str:
    from accounts.models import PlatformRole
    from apikeys.services import system_apikey_create
    from tests.factories import UserFactory

    owner = UserFactory.create(
        email="root@latchkey.test", platform_role=PlatformRole.PLATFORM_OWNER
    )
    _, secret = system_apikey_create(
        name="Platform bot", scopes=all_scopes(system=True), actor=Actor.for_user(owner)
    )
    return secret


def test_servers_names_the_deployment(schema: dict[str, Any]) -> None:
    from django.conf import settings

    assert schema["servers"] == [{"url": settings.SITE_URL, "description": "This deployment."}]


def test_idempotency_key_is_declared_as_the_server_accepts_it(schema: dict[str, Any]) -> None:
    for method, path, operation in _operations(schema):
        declared = [p for p in operation.get("parameters", []) if p["name"] == "Idempotency-Key"]
        if method == "GET":
            assert declared == [], (method, path)
            continue
        # A question, and reports from anyone (leaks): no Idempotency-Key (docs/api.md).
        if path in ("/api/v1/keys/verify", "/api/v1/leaked-keys", "/api/v1/secret-scanning/github"):
            assert declared == [], (method, path)
            continue
        assert len(declared) == 1, (method, path)
        assert declared[0]["required"] is True and declared[0]["in"] == "header"
        assert declared[0]["schema"] == {
            "type": "string",
            "minLength": 1,
            "maxLength": IDEMPOTENCY_KEY_MAX_LENGTH,
            "pattern": IDEMPOTENCY_KEY_PATTERN,
        }


def _fill(path: str) -> str:
    return re.sub(r"\{[a-z_]+\}", lambda m: m.group(0)[1:4] + "_" + "A" * 24, path)


def test_every_mutation_declared_to_need_idempotency_key_is_refused_without_one(
    schema: dict[str, Any], org: Any, full_key: Any, system_secret: str
) -> None:
    """The declaration follows the API's enforcement, both ways."""
    org.custom_per_minute = org.custom_burst = org.custom_monthly = 0  # unlimited
    org.save(update_fields=["custom_per_minute", "custom_burst", "custom_monthly"])
    for method, path, operation in _operations(schema):
        if method == "GET":
            continue
        declared = any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", []))
        secret = system_secret if "/platform/" in path or "/keys/" in path else full_key[1]
        client = ApiClient(secret)
        response = client.client.generic(
            method, _fill(path), "{}", content_type="application/json", headers=client.headers
        )
        refused = response.status_code == 400 and (
            response.json()["error"]["code"] == "idempotency_key_missing"
        )
        assert refused == declared, (method, path, response.status_code, response.content[:300])


def _parse_header(value: str) -> bool:
    from apikeys import idempotency

    try:
        idempotency.parse_header(value)
    except idempotency.IdempotencyError:
        return False
    return True


def _pattern_accepts(value: str) -> bool:
    return (
        1 <= len(value) <= IDEMPOTENCY_KEY_MAX_LENGTH
        and re.search(IDEMPOTENCY_KEY_PATTERN, value) is not None
    )


# Characters a header value can hold (no CR or LF), the quoting ones over-represented.
HEADER_CHARACTERS = st.sampled_from(['"', "\\", " ", "\t", "a", "~", "!", "\x7f", "é", "\x00"])


@given(
    st.one_of(
        st.text(alphabet=HEADER_CHARACTERS, max_size=12),
        st.text(
            alphabet=st.characters(min_codepoint=1, max_codepoint=300, exclude_characters="\r\n"),
            max_size=40,
        ),
    )
)
@hypothesis_settings(max_examples=400, deadline=None, database=None)
def test_idempotency_key_pattern_agrees_with_the_servers_parser(value: str) -> None:
    # HTTP strips whitespace around a field value: the pattern describes what is left.
    value = value.strip(" \t")
    assert _pattern_accepts(value) == _parse_header(value), repr(value)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("a" * 255, True),
        ("a" * 256, False),
        ('"' + "a" * 255 + '"', True),
        ('"' + "a" * 256 + '"', False),
        ('"' + '\\"' * 255 + '"', True),  # 512 characters on the wire
        ('"' + '\\"' * 256 + '"', False),
        ('"' + "\\\\" * 255 + '"', True),
        ('"abc\\x"', False),
        ('"a"b"', False),
        ('a"b"', True),
        ('""', False),
        ('" "', True),
        ("a b", True),
        ("\x7f", False),
    ],
)
def test_idempotency_key_pattern_at_its_edges(value: str, accepted: bool) -> None:
    assert _parse_header(value) is accepted
    assert _pattern_accepts(value) is accepted


def test_response_headers_are_declared_where_the_api_sends_them(schema: dict[str, Any]) -> None:
    rate_limit = {"RateLimit", "RateLimit-Policy"} | {
        f"X-RateLimit-{part}" for part in ("Limit", "Remaining", "Reset")
    }
    for method, path, operation in _operations(schema):
        guarded = operation.get("security") not in (None, [], [{}])
        idempotent = any(p["name"] == "Idempotency-Key" for p in operation.get("parameters", []))
        for status, response in operation["responses"].items():
            headers = response["headers"]
            assert headers["X-Request-Id"]["required"] is True
            assert (rate_limit <= set(headers)) is guarded, (method, path, status)
            replayable = idempotent and status.startswith("2")
            assert ("Idempotent-Replayed" in headers) is replayable, (method, path, status)
            if status in ("409", "429", "503"):
                assert headers["Retry-After"]["schema"]["type"] == "integer"
            if status == "429":
                assert headers["Retry-After"]["required"] is True
            if status == "405":
                assert headers["Allow"]["required"] is True


def test_the_rate_limit_headers_sent_are_the_declared_ones(
    schema: dict[str, Any], full_client: ApiClient
) -> None:
    response = full_client.get("me")
    sent = {name for name in response.headers if "ratelimit" in name.lower()}
    declared = set(schema["paths"]["/api/v1/me"]["get"]["responses"]["200"]["headers"])
    assert sent and sent <= declared


def test_a_405_answer_matches_the_405_every_operation_declares(
    schema: dict[str, Any], full_client: ApiClient
) -> None:
    response = full_client.post("me", {})
    assert response.status_code == 405 and response["Allow"] == "GET, HEAD"
    _validator(schema).validate_response(_Request("GET", "/api/v1/me"), _Response(response))


def test_no_nullable_without_a_type_beside_it(schema: dict[str, Any]) -> None:
    """OAS 3.0.3: `nullable` means nothing without `type` in the same schema object."""
    for node in _walk(schema):
        if node.get("nullable") is True:
            assert "type" in node, node


def test_null_organization_and_limits_of_a_system_key_validate(
    schema: dict[str, Any], system_secret: str, full_client: ApiClient
) -> None:
    validator = _validator(schema)
    for client in (ApiClient(system_secret), full_client):
        response = client.get("me")
        assert response.status_code == 200
        validator.validate_response(_Request("GET", "/api/v1/me"), _Response(response))
    assert ApiClient(system_secret).get("me").json()["organization"] is None
    kyc = full_client.get("kyc")
    assert kyc.json()["application"] is None
    validator.validate_response(_Request("GET", "/api/v1/kyc"), _Response(kyc))


def _enum_of(schema: dict[str, Any], component: str, field: str) -> list[str]:
    schemas = schema["components"]["schemas"]
    prop = schemas[component]["properties"][field]
    ref = prop.get("$ref") or prop["allOf"][0]["$ref"]
    return list(schemas[ref.rsplit("/", 1)[1]]["enum"])


def test_statuses_plans_and_kyc_states_are_enums_of_the_models_choices(
    schema: dict[str, Any],
) -> None:
    from apikeys.models import KeyStatus
    from orgs.models import KycStatus, OrgStatus
    from orgs.plans import Plan

    assert _enum_of(schema, "ApiKey", "status") == KeyStatus.values
    assert _enum_of(schema, "ApiKeyWithSecret", "status") == KeyStatus.values
    assert _enum_of(schema, "MeOrganization", "plan") == Plan.values
    assert _enum_of(schema, "MeOrganization", "kyc_status") == KycStatus.values
    assert _enum_of(schema, "MeOrganization", "status") == OrgStatus.values
    listing = schema["paths"]["/api/v1/api-keys"]["get"]["parameters"]
    status = next(p for p in listing if p["name"] == "status")
    assert status["schema"] == {"$ref": "#/components/schemas/ApiKeyStatusEnum"}


def test_me_is_an_object_like_every_resource(schema: dict[str, Any]) -> None:
    me = schema["components"]["schemas"]["Me"]
    assert "object" in me["required"] and me["properties"]["object"]["type"] == "string"


def test_the_key_environment_may_be_left_out_when_creating_a_key(
    schema: dict[str, Any], api_client_with_scopes: Any
) -> None:
    body = schema["components"]["schemas"]["ApiKeyCreateRequest"]
    assert "environment" not in body["required"]
    assert body["properties"]["environment"]["default"] == "test"
    client = api_client_with_scopes("api_keys:write", "usage:read")
    created = client.post("api-keys", {"name": "No environment", "scopes": ["usage:read"]})
    assert created.status_code == 201 and created.json()["environment"] == "test"


def test_kyc_upload_is_typed_as_fields_and_binary_file_parts(schema: dict[str, Any]) -> None:
    schemas = schema["components"]["schemas"]
    content = schema["paths"]["/api/v1/kyc"]["post"]["requestBody"]["content"]
    form = schemas[content["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]
    as_json = schemas[content["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
    assert form["properties"]["documents"]["type"] == "array"
    assert form["properties"]["documents"]["items"] == {"type": "string", "format": "binary"}
    assert set(form["properties"]) == set(as_json["properties"])
    assert form["required"] == as_json["required"]
    for name in set(form["properties"]) - {"documents"}:
        assert form["properties"][name] == as_json["properties"][name], name


def test_pagination_examples_are_links_the_api_follows(schema: dict[str, Any]) -> None:
    from django.conf import settings
    from rest_framework.request import Request
    from rest_framework.test import APIRequestFactory

    from apikeys.pagination import ApiCursorPagination

    lists = 0
    for method, path, operation in _operations(schema):
        if method != "GET":
            continue
        ref = operation["responses"]["200"]["content"]["application/json"]["schema"].get("$ref")
        component = schema["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else {}
        if set(component.get("properties", {})) != {"next", "previous", "results"}:
            continue
        lists += 1
        for name, position in (("next", 0), ("previous", 1)):
            example = component["properties"][name]["example"]
            assert example.startswith(f"{settings.SITE_URL}{path}?cursor="), example
            request = Request(APIRequestFactory().get(example))
            cursor = ApiCursorPagination().cursor_of(request)
            assert cursor[position] and not cursor[1 - position]
    assert lists >= 6
