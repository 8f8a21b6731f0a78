"""The catalogue's wire words through the API: key headers, org/client/actor headers,
environment words, key metadata, `GET scopes` and the OpenAPI text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import override_settings

from apikeys import usage
from apikeys.models import ApiKey
from orgs.models import AuditEvent, Organization
from tests.apikeys.api.conftest import ApiClient
from tests.factories import ApiKeyFactory

PRODUCT = Path(__file__).resolve().parents[1] / "catalogues" / "product.toml"


@pytest.fixture
def product() -> Iterator[None]:
    with override_settings(LATCHKEY_CATALOGUE=str(PRODUCT)):
        yield


def _key(org: Organization, scopes: list[str]) -> tuple[ApiKey, str]:
    return ApiKeyFactory.pair(org=org, name="Wire", scopes=scopes)


def test_the_declared_key_header_carries_the_key(product: None, org: Organization) -> None:
    key, secret = _key(org, ["payments:write"])
    assert secret.startswith("pfk_sandbox_")
    response = ApiClient(**{"X-Product-Key": secret}).get("me")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["key"]["id"] == key.public_id
    assert body["key"]["environment"] == "test"
    assert body["key"]["scopes"] == ["payments:read", "payments:write"]
    # Authorization is the catalogue's second header: it works too.
    assert ApiClient(secret).get("me").status_code == 200


def test_a_header_the_catalogue_does_not_list_carries_no_key(
    product: None, org: Organization
) -> None:
    _, secret = _key(org, ["payments:read"])
    response = ApiClient(**{"X-API-Key": secret}).get("me")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "missing_api_key"
    assert "'X-Product-Key: <key>' or 'Authorization: Bearer <key>'" in error["message"]


def test_two_declared_headers_with_different_keys_conflict(
    product: None, org: Organization
) -> None:
    _, first = _key(org, ["payments:read"])
    _, second = _key(org, ["payments:read"])
    response = ApiClient(first, **{"X-Product-Key": second}).get("me")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "conflicting_credentials"
    assert "X-Product-Key and Authorization" in error["message"]
    # The same key in both is fine.
    assert ApiClient(first, **{"X-Product-Key": first}).get("me").status_code == 200


def test_the_org_header_follows_the_catalogue(
    product: None, org: Organization, other_org: Organization
) -> None:
    _, secret = _key(org, ["payments:read"])
    client = ApiClient(secret)
    assert client.get("me", headers={"X-Organization-Id": org.public_id}).status_code == 200
    assert client.get("me", headers={"X-Organization-Id": org.slug}).status_code == 200
    refused = client.get("me", headers={"X-Organization-Id": other_org.public_id})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "org_mismatch"
    assert "X-Organization-Id" in refused.json()["error"]["message"]
    # The default name means nothing under this catalogue.
    assert client.get("me", headers={"X-Org-Id": other_org.public_id}).status_code == 200


def test_client_version_and_actor_headers_follow_the_catalogue(
    product: None, org: Organization
) -> None:
    key, secret = _key(org, ["api_keys:write"])
    client = ApiClient(
        secret, **{"X-Product-Client-Version": "sdk-py/2.1.0", "X-Product-Actor": "user_77"}
    )
    created = client.post(
        "api-keys", {"name": "Child", "environment": "test", "scopes": ["api_keys:read"]}
    )
    assert created.status_code == 201, created.content
    recent = usage.recent_requests(key_pk=key.pk)
    assert recent[0]["client_version"] == "sdk-py/2.1.0"
    event = AuditEvent.objects.get(action="api_key.created", target_id=created.json()["id"])
    assert event.external_actor_id == "user_77"
    bad = client.get("me", headers={"X-Product-Client-Version": "\u00e9" * 3})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "X-Product-Client-Version"


def test_keys_issued_before_the_words_changed_keep_working(org: Organization) -> None:
    _, secret = _key(org, ["usage:read"])
    assert secret.startswith("lk_test_")
    with override_settings(LATCHKEY_CATALOGUE=str(PRODUCT)):
        response = ApiClient(secret).get("me")
        assert response.status_code == 200
        assert response.json()["key"]["environment"] == "test"
        _, new_secret = _key(org, ["usage:read"])
        assert new_secret.startswith("pfk_sandbox_")
    # And back: the key issued under the catalogue's words still works without it.
    assert ApiClient(new_secret).get("me").status_code == 200


def test_meta_is_set_at_creation_and_returned_by_me(org: Organization) -> None:
    _, parent = _key(org, ["api_keys:write", "usage:read"])
    meta = {"tenant": "t_42", "plan": {"name": "pro", "seats": 5}, "tags": ["a", "b"]}
    created = ApiClient(parent).post(
        "api-keys",
        {"name": "Tenant key", "environment": "test", "scopes": ["usage:read"], "meta": meta},
    )
    assert created.status_code == 201, created.content
    assert created.json()["meta"] == meta
    me = ApiClient(created.json()["secret"]).get("me").json()
    assert me["key"]["meta"] == meta
    listed = ApiClient(parent).get(f"api-keys/{created.json()['id']}").json()
    assert listed["meta"] == meta


def test_meta_over_two_kilobytes_or_not_an_object_is_refused(org: Organization) -> None:
    _, parent = _key(org, ["api_keys:write", "usage:read"])
    client = ApiClient(parent)
    body = {"name": "Big", "environment": "test", "scopes": ["usage:read"]}
    # {"k":"…"} is 8 bytes of JSON around the value: 2040 characters make exactly 2048.
    exact = client.post("api-keys", {**body, "meta": {"k": "x" * 2040}})
    assert exact.status_code == 201, exact.content
    over = client.post("api-keys", {**body, "meta": {"k": "x" * 2041}})
    assert over.status_code == 400
    assert over.json()["error"]["code"] == "validation_error"
    assert over.json()["error"]["param"] == "meta"
    assert "2049 bytes" in over.json()["error"]["message"]
    # Multi-byte characters count as the bytes they take.
    assert client.post("api-keys", {**body, "meta": {"k": "\u00e9" * 1021}}).status_code == 400
    # PostgreSQL's jsonb refuses NUL and unpaired surrogates: a clear 400, never a 500.
    for unstorable in ({"k": "a\u0000b"}, {"k\u0000": 1}, {"k": ["\ud800"]}):
        refused = client.post("api-keys", {**body, "meta": unstorable})
        assert refused.status_code == 400, unstorable
        assert refused.json()["error"]["param"] == "meta"
    for not_an_object in (["a"], "text", 3):
        refused = client.post("api-keys", {**body, "meta": not_an_object})
        assert refused.status_code == 400, not_an_object
        assert refused.json()["error"]["code"] == "validation_error"
    assert ApiKey.objects.filter(name="Big").count() == 1


def test_scopes_lists_resources_actions_and_presets(product: None, org: Organization) -> None:
    _, secret = _key(org, ["finance:read"])
    body = ApiClient(secret).get("scopes").json()
    assert body["object"] == "scope_catalogue"
    resources = {r["name"]: r for r in body["resources"]}
    assert resources["invoices"]["actions"] == ["create", "read", "update", "delete", "execute"]
    assert resources["invoices"]["implies"] == {
        "update": ["read"],
        "delete": ["read"],
        "execute": ["read", "update"],
    }
    assert resources["payments"]["label"] == "Payments"
    assert resources["payments"]["description"] == "View, create, confirm and refund payments."
    assert resources["checkout"]["actions"] == ["write"]
    assert "tenants" not in resources  # a system resource
    presets = {p["name"]: p for p in body["presets"]}
    assert set(presets) == {"read_only", "full_access", "billing"}
    assert presets["billing"]["scopes"][0] == "payments:read"
    assert "create" in body["actions"] and "execute" in body["actions"]


def test_the_schema_names_the_catalogues_headers_and_scopes(product: None, db: None) -> None:
    schema = json.loads(ApiClient().get("/api/schema/?format=json").content)
    schemes = schema["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"]["name"] == "X-Product-Key"
    assert schemes["BearerAuth"]["bearerFormat"].startswith("pfk_<live|sandbox|sys>_")
    assert "X-API-Key" not in json.dumps(schemes)
    assert "`invoices` | create, read, update, delete, execute" in schema["info"]["description"]
    listed = {entry["resource"]: entry for entry in schema["x-latchkey-scopes"]}
    assert listed["checkout"]["actions"] == ["write"]
    me = schema["paths"]["/api/v1/me"]["get"]
    names = {p["name"] for p in me["parameters"]}
    assert {"X-Organization-Id", "X-Product-Client-Version", "X-Product-Actor"} <= names


def test_dashboard_pages_name_the_catalogues_headers(
    product: None, org: Organization, owner: object
) -> None:
    from tests.conftest import signed_in_client

    _, secret = _key(org, ["api_keys:write"])
    client = ApiClient(secret, **{"X-Product-Actor": "user_77"})
    body = {"name": "Child", "environment": "test", "scopes": ["api_keys:read"]}
    assert client.post("api-keys", body).status_code == 201
    page = signed_in_client(owner).get(f"/o/{org.slug}/audit/")  # type: ignore[arg-type]
    assert b'title="X-Product-Actor sent with the request"' in page.content
    assert b"X-Actor-Id" not in page.content
