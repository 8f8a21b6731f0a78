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

from apikeys.errors import ERRORS
from apikeys.scopes import all_resources

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
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    detail = schema["components"]["schemas"]["ErrorDetail"]
    assert set(detail["required"]) == {"type", "code", "message", "request_id", "doc_url"}
    codes = schema["components"]["schemas"]["CodeEnum"]["enum"]
    assert set(codes) == set(ERRORS)
    documented: set[str] = set()
    for method, path, operation in _operations(schema):
        for status, response in operation["responses"].items():
            assert "X-Request-Id" in response["headers"], (method, path, status)
            if int(status) >= 400:
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/Error"
                documented |= set(re.findall(r"`([a-z_]+)`", response["description"]))
        if operation.get("security") not in (None, [], [{}]):
            assert {"400", "401", "403", "404", "429", "500"} <= set(operation["responses"])
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
    # 405 answers methods an operation does not have, so no operation lists it.
    assert documented == set(ERRORS) - {"method_not_allowed"}


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
