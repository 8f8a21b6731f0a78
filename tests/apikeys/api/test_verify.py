"""The verify API: a system key with `keys:verify` asks about another key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from accounts.models import PlatformRole
from apikeys import usage
from apikeys.services import apikey_create, apikey_revoke, system_apikey_create
from orgs.actors import Actor
from orgs.models import Organization
from tests.apikeys.api.conftest import ApiClient
from tests.apikeys.guards.conftest import set_limits
from tests.factories import UserFactory

PRODUCT = Path(__file__).resolve().parents[1] / "catalogues" / "product.toml"


@pytest.fixture
def product() -> Iterator[None]:
    with override_settings(LATCHKEY_CATALOGUE=str(PRODUCT)):
        yield


def system_key(scopes: list[str]) -> str:
    owner = UserFactory.create(platform_role=PlatformRole.PLATFORM_OWNER)
    _, secret = system_apikey_create(name="Verifier", scopes=scopes, actor=Actor.for_user(owner))
    return secret


@pytest.fixture
def verifier(db: None) -> ApiClient:
    return ApiClient(system_key(["keys:verify"]))


def verify(client: ApiClient, **body: Any) -> Any:
    return client.post("keys/verify", body)


def test_a_valid_key_with_its_scopes_is_valid_and_counted(
    product: None, verifier: ApiClient, org: Organization
) -> None:
    key, secret = apikey_create(
        actor=Actor.system(),
        org=org,
        name="Svc",
        environment="test",
        scopes=["payments:write"],
        meta={"t": 1},
    )
    # No Idempotency-Key: a verification is a question, answered every time.
    response = verifier.client.post(
        "/api/v1/keys/verify",
        {"key": secret, "scopes": ["payments:write"]},
        content_type="application/json",
        headers={"Authorization": verifier.headers["Authorization"]},
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["valid"] is True and body["code"] is None
    assert body["key"]["id"] == key.public_id
    assert body["organization"]["id"] == org.public_id
    assert body["scopes"] == ["payments:read", "payments:write"]
    assert body["meta"] == {"t": 1}
    assert body["rate_limit"]["limit"] == org.limits.per_minute
    assert body["rate_limit"]["remaining"] == org.limits.per_minute - 1
    assert usage.recent_requests(key_pk=key.pk)[0]["status"] == 200


def test_refusals_are_200_with_the_apis_code(
    product: None, verifier: ApiClient, org: Organization
) -> None:
    key, secret = apikey_create(
        actor=Actor.system(), org=org, name="R", environment="test", scopes=["payments:read"]
    )
    scope = verify(verifier, key=secret, scopes=["payments:write"]).json()
    assert (scope["valid"], scope["code"]) == (False, "insufficient_scope")
    route = verify(verifier, key=secret, method="POST", path="/v1/payments/p/refund").json()
    assert (route["valid"], route["code"]) == (False, "insufficient_scope")
    ok = verify(verifier, key=secret, method="GET", path="/v1/payments/p").json()
    assert ok["valid"] is True
    bad = verify(verifier, key="pfk_test_nope").json()
    assert bad == {
        "valid": False,
        "code": "invalid_api_key",
        "key": None,
        "organization": None,
        "scopes": [],
        "meta": {},
        "rate_limit": None,
    }
    apikey_revoke(key=key, actor=Actor.system())
    assert verify(verifier, key=secret).json()["code"] == "api_key_revoked"


def test_a_system_key_is_never_valid_and_nothing_is_recorded_for_it(
    verifier: ApiClient, db: None
) -> None:
    from apikeys.keys import key_digest
    from apikeys.models import ApiKey, KeyUsageHour

    other = system_key(["keys:verify"])
    answer = verify(verifier, key=other).json()
    assert (answer["valid"], answer["code"], answer["key"]) == (False, "invalid_api_key", None)
    usage.fold()
    verified = ApiKey.objects.get(digest=key_digest(other))
    assert not KeyUsageHour.objects.filter(api_key=verified).exists()
    assert usage.recent_requests(key_pk=verified.pk) == []


def test_limits_of_the_verified_key_apply(verifier: ApiClient, org: Organization) -> None:
    set_limits(org, per_minute=2, burst=100, monthly=0)
    _, secret = apikey_create(
        actor=Actor.system(), org=org, name="L", environment="test", scopes=["usage:read"]
    )
    assert verify(verifier, key=secret).json()["valid"] is True
    assert verify(verifier, key=secret).json()["valid"] is True
    third = verify(verifier, key=secret).json()
    assert (third["valid"], third["code"]) == (False, "rate_limited")
    assert third["rate_limit"]["remaining"] == 0


def test_a_malformed_call_is_400(product: None, verifier: ApiClient) -> None:
    for body in (
        {},
        {"key": 3},
        {"key": "x", "method": "GET"},
        {"key": "x", "scopes": ["payments:read"], "method": "GET", "path": "/v1/payments"},
        {"key": "x", "scopes": ["nope:read"]},
        {"key": "x", "extra": 1},
    ):
        response = verify(verifier, **body)
        assert response.status_code == 400, body
        assert response.json()["error"]["code"] == "validation_error", body
    unknown = verify(verifier, key="x", method="GET", path="/v1/customers")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "route_not_found"


def test_only_system_keys_with_keys_verify_may_ask(org: Organization) -> None:
    _, org_secret = apikey_create(
        actor=Actor.system(), org=org, name="O", environment="test", scopes=["usage:read"]
    )
    assert verify(ApiClient(org_secret), key=org_secret).status_code == 403
    other = ApiClient(system_key(["platform_kyc:read"]))
    refused = verify(other, key=org_secret)
    assert refused.status_code == 403
    assert refused.json()["error"]["required_scope"] == "keys:verify"


def test_verify_answers_conform_to_the_schema(verifier: ApiClient, org: Organization) -> None:
    import schemathesis

    from tests.apikeys.api.test_schemathesis import CHECKS
    from tests.wsgi import application

    _, secret = apikey_create(
        actor=Actor.system(), org=org, name="S", environment="test", scopes=["usage:read"]
    )
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    operation = schema["/api/v1/keys/verify"]["POST"]
    bodies: list[Any] = [
        {"key": secret, "scopes": ["usage:read"]},
        {"key": secret, "scopes": ["members:read"]},
        {"key": "nonsense"},
    ]
    for body in bodies:
        case = operation.Case(
            headers={"Authorization": verifier.headers["Authorization"]}, body=body
        )
        response = case.call_and_validate(checks=CHECKS)
        assert response.status_code == 200
