"""The error contract: every failure is the error shape of docs/api.md with a request id, and bad
input of any kind is a 4xx, never a 500."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import Client, override_settings
from django.test.client import RequestFactory

from apikeys import exceptions
from apikeys.api_base import MAX_BODY_BYTES
from apikeys.errors import ERRORS, ApiError, error_body
from apikeys.models import ApiKey
from tests.apikeys.api.conftest import ApiClient, assert_error

pytestmark = pytest.mark.django_db


def test_every_code_in_the_table_has_a_known_type_and_a_message() -> None:
    types = {
        "authentication_error",
        "permission_error",
        "rate_limit_error",
        "idempotency_error",
        "invalid_request_error",
        "api_error",
    }
    for code, spec in ERRORS.items():
        assert spec.type in types, code
        assert 400 <= spec.status < 600 and spec.message, code
    spec_codes = {
        "missing_api_key", "invalid_api_key", "api_key_revoked", "api_key_expired",
        "insufficient_scope", "org_mismatch", "org_suspended", "environment_not_allowed",
        "rate_limited", "quota_exceeded", "idempotency_key_missing", "idempotency_key_invalid",
        "idempotency_key_in_use", "idempotency_key_reused", "validation_error",
        "conflicting_credentials", "malformed_json", "not_found", "method_not_allowed",
        "internal_error", "service_unavailable",
    }  # fmt: skip
    assert spec_codes <= set(ERRORS)


def test_an_unknown_code_cannot_be_raised() -> None:
    with pytest.raises(KeyError):
        ApiError("made_up")
    with pytest.raises(KeyError):
        error_body("made_up", request_id="r")


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"{bad json", "application/json"),
        (b'{"name": "x",}', "application/json"),
        (b"\xff\xfe{}", "application/json"),
        (b'{"name": NaN}', "application/json"),
        (b'{"name": Infinity}', "application/json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b'{"grace_period": 1' + b"0" * 5000 + b"}", "application/json"),
    ],
    ids=["syntax", "trailing-comma", "invalid-utf8", "nan", "infinity", "deep", "huge-int"],
)  # fmt: skip
def test_malformed_bodies_are_400_malformed_json(
    full_client: ApiClient, raw: bytes, content_type: str
) -> None:
    response = full_client.post("api-keys", raw=raw, content_type=content_type)
    assert_error(response, 400, "malformed_json")


def test_json_is_read_as_utf8_whatever_charset_the_header_claims(full_client: ApiClient) -> None:
    raw = '{"name": "Caf\u00e9", "scopes": ["members:read"]}'.encode()
    response = full_client.post("api-keys", raw=raw, content_type="application/json; charset=bogus")
    assert response.status_code == 201
    assert response.json()["name"] == "Caf\u00e9"


def test_a_body_over_the_limit_is_413(full_client: ApiClient) -> None:
    raw = b'{"name": "' + b"a" * (MAX_BODY_BYTES + 10) + b'"}'
    assert_error(full_client.post("api-keys", raw=raw), 413, "request_too_large")


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_body_that_is_not_json_is_415(full_client: ApiClient, content_type: str) -> None:
    response = full_client.post("api-keys", raw=b"name=x", content_type=content_type)
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "x\u0000y", "scopes": []}, "name"),
        ({"name": "line\nbreak", "scopes": []}, "name"),
        ({"name": "\ud800", "scopes": []}, "name"),
        ({"name": 123, "scopes": []}, "name"),
        ({"name": "x" * 101, "scopes": []}, "name"),
        ({"name": "ok", "scopes": "members:read"}, "scopes"),
        ({"name": "ok", "scopes": [1]}, "scopes.0"),
        ({"name": "ok", "scopes": ["x" * 81]}, "scopes.0"),
        ({"name": "ok", "scopes": ["members:read"] * 65}, "scopes"),
        ({"name": "ok", "scopes": ["nonsense"]}, "scopes"),
        ({"name": "ok", "scopes": ["audit_log:write"]}, "scopes"),
        ({"name": "ok", "scopes": [], "environment": "prod"}, "environment"),
        ({"name": "ok", "scopes": [], "environment": 1}, "environment"),
        ({"name": "ok", "scopes": [], "expires_at": "yesterday"}, "expires_at"),
        ({"name": "ok", "scopes": [], "expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "ok", "scopes": [], "expires_at": "9999-12-31T23:59:59-23:00"}, "expires_at"),
        ({"name": "ok", "scopes": [], "expires_at": 1700000000}, "expires_at"),
        ({"name": "ok", "scopes": [], "colour": "red"}, "colour"),
        ({"scopes": []}, "name"),
    ],
)
def test_invalid_fields_are_400_validation_error_naming_the_field(
    full_client: ApiClient, body: dict[str, Any], param: str
) -> None:
    before = ApiKey.objects.count()
    response = full_client.post("api-keys", body)
    error = assert_error(response, 400, "validation_error")
    assert error["param"] == param, error
    assert error["type"] == "invalid_request_error"
    if "errors" in error:
        assert error["errors"][0]["param"] == param
    assert ApiKey.objects.count() == before


@pytest.mark.parametrize("body", [[], "text", 42, None, True])
def test_a_body_that_is_not_an_object_is_400(full_client: ApiClient, body: Any) -> None:
    response = full_client.request("POST", "api-keys", raw=__import__("json").dumps(body))
    assert_error(response, 400, "validation_error")


@pytest.mark.parametrize(
    "grace", [-1, 604_801, "60", 1.5, True, None, 10**30], ids=lambda v: repr(v)[:20]
)
def test_bad_grace_period_is_400(full_client: ApiClient, full_key: Any, grace: Any) -> None:
    response = full_client.post(f"api-keys/{full_key[0].public_id}/rotate", {"grace_period": grace})
    error = assert_error(response, 400, "validation_error")
    assert error["param"] == "grace_period"


@pytest.mark.parametrize(
    "query",
    [
        {"since": "not-a-date"},
        {"until": "2024-13-01"},
        {"since": "2024-02-01T00:00:00Z", "until": "2024-01-01T00:00:00Z"},
        {"action": "x" * 65},
        {"actor": ""},
        {"action": "a\u0000b"},
        {"unknown": "1"},
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "ten"},
        {"cursor": "%%%"},
        {"cursor": "bm90IGEgY3Vyc29y"},
        {"cursor": "cD1ub3QtYS1kYXRl"},
        {"cursor": "bz05OTk5OTk="},
    ],
)
def test_bad_filters_and_cursors_are_400_validation_error(
    full_client: ApiClient, query: dict[str, str]
) -> None:
    response = full_client.get("audit-events", query=query)
    error = assert_error(response, 400, "validation_error")
    assert error["param"] in query or error["param"] == "until"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nope",
        "/api/v1/members/",
        "/api/v1/members/not-an-id",
        "/api/v1/api-keys/key_%00abc",
        "/api/v1/api-keys/key_doesnotexist",
        "/api/v1/members/mem_doesnotexist",
    ],
)
def test_unknown_paths_and_ids_are_404_not_found(full_client: ApiClient, path: str) -> None:
    assert_error(full_client.get(path), 404, "not_found")


def test_actions_on_unknown_ids_are_404(full_client: ApiClient) -> None:
    for path in ["api-keys/key_doesnotexist/rotate", "api-keys/key_doesnotexist/revoke"]:
        assert_error(full_client.post(path, {}), 404, "not_found")
    assert_error(full_client.delete("members/mem_doesnotexist"), 404, "not_found")
    assert_error(full_client.patch("members/mem_doesnotexist", {"role": "admin"}), 404, "not_found")


def test_paths_outside_v1_under_api_are_json_404() -> None:
    response = Client().get("/api/v2/anything")
    assert_error(response, 404, "not_found")


def test_django_level_handlers_answer_json_under_api_and_html_elsewhere() -> None:
    factory = RequestFactory()
    api_request = factory.get("/api/v1/x")
    api_request.request_id = "req_handlers01"  # type: ignore[attr-defined]
    for response, status in [
        (exceptions.handler500(api_request), 500),
        (exceptions.handler404(api_request, Exception()), 404),
        (exceptions.handler400(api_request, Exception()), 400),
    ]:
        assert response.status_code == status
        body = __import__("json").loads(response.content)
        assert body["error"]["request_id"] == "req_handlers01"
        assert "Traceback" not in response.content.decode()
    page_request = factory.get("/o/acme/")
    assert exceptions.handler404(page_request, Exception()).status_code == 404
    assert not exceptions.handler404(page_request, Exception())["Content-Type"].startswith(
        "application/json"
    )


def test_an_unexpected_exception_is_500_internal_error_logged_with_the_request_id(
    full_client: ApiClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(**kwargs: Any) -> None:
        raise RuntimeError("database on fire: secret-detail")

    monkeypatch.setattr("apikeys.api.apikey_create", explode)
    with caplog.at_level(logging.ERROR, logger="apikeys.api"):
        response = full_client.post("api-keys", {"name": "x", "scopes": ["members:read"]})
    error = assert_error(response, 500, "internal_error")
    assert error["type"] == "api_error"
    assert "secret-detail" not in response.content.decode()
    assert "RuntimeError" not in response.content.decode()
    record = next(r for r in caplog.records if error["request_id"] in r.getMessage())
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError


def test_request_id_is_taken_from_a_sane_header_and_replaced_otherwise(
    full_client: ApiClient,
) -> None:
    sane = full_client.get("me", headers={"X-Request-Id": "trace-12345678"})
    assert sane["X-Request-Id"] == "trace-12345678"
    insane = full_client.get("nope", headers={"X-Request-Id": "bad id <script>"})
    assert insane["X-Request-Id"] != "bad id <script>"
    assert insane.json()["error"]["request_id"] == insane["X-Request-Id"]


@override_settings(DEBUG=True)
def test_unknown_api_paths_are_json_even_in_debug(full_client: ApiClient) -> None:
    assert_error(full_client.get("/api/v1/definitely/not/here"), 404, "not_found")


def test_every_response_carries_request_id_and_no_store(full_client: ApiClient) -> None:
    for response in [
        full_client.get("me"),
        full_client.get("nope"),
        ApiClient().get("me"),
        ApiClient().get("ping"),
        full_client.post("api-keys", raw=b"{"),
    ]:
        assert response["X-Request-Id"].startswith("req_")
        assert response["Cache-Control"] == "no-store"


def test_too_many_query_parameters_is_a_400(full_client: ApiClient) -> None:
    query = "&".join(f"p{n}=1" for n in range(1500))
    response = full_client.get(f"/api/v1/audit-events?{query}")
    assert_error(response, 400, "validation_error")


def test_overlong_header_values_are_refused_not_crashed(full_client: ApiClient) -> None:
    huge = "x" * 20_000
    assert_error(ApiClient(huge).get("me"), 401, "invalid_api_key")
    assert_error(full_client.get("me", headers={"X-Org-Id": huge}), 403, "org_mismatch")
    response = full_client.get("me", headers={"X-Client-Version": huge})
    assert_error(response, 400, "validation_error")
