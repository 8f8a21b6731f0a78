"""The gateway door (`/gateway/auth`): the API's pipeline answering forward-auth."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from django.test import Client, override_settings

from apikeys import usage
from apikeys.services import apikey_create, apikey_revoke
from orgs.actors import Actor
from orgs.models import Organization
from tests.apikeys.guards.conftest import set_limits
from tests.apikeys.helpers import cyclic_garbage

PRODUCT = Path(__file__).resolve().parents[1] / "catalogues" / "product.toml"


@pytest.fixture
def product() -> Iterator[None]:
    with override_settings(LATCHKEY_CATALOGUE=str(PRODUCT)):
        yield


def ask(method: str, uri: str, secret: str | None = None, **headers: str) -> object:
    sent = {"X-Original-Method": method, "X-Original-URI": uri, **headers}
    if secret is not None:
        sent["X-Product-Key"] = secret
    return Client().get("/gateway/auth", headers=sent)


def test_an_allowed_request_is_200_with_the_latchkey_headers(
    product: None, org: Organization
) -> None:
    key, secret = apikey_create(
        actor=Actor.system(), org=org, name="Svc", environment="test", scopes=["payments:write"]
    )
    response = ask("POST", "/v1/payments/pay_1/refund?x=1", secret, **{"X-Product-Actor": "u7"})
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert response.content == b""  # type: ignore[attr-defined]
    h = response.headers  # type: ignore[attr-defined]
    assert h["X-Latchkey-Org-Id"] == org.public_id
    assert h["X-Latchkey-Org-Slug"] == org.slug
    assert h["X-Latchkey-Key-Id"] == key.public_id
    assert h["X-Latchkey-Environment"] == "test"
    assert h["X-Latchkey-Scopes"] == "payments:read payments:write"
    assert h["X-Latchkey-Actor-Id"] == "u7"
    assert "X-RateLimit-Remaining" in h
    recent = usage.recent_requests(key_pk=key.pk)[0]
    assert (recent["status"], recent["method"], recent["path"]) == (
        200,
        "POST",
        "/v1/payments/pay_1/refund",
    )


def test_denials_carry_the_api_status_body_and_codes(product: None, org: Organization) -> None:
    _, reader = apikey_create(
        actor=Actor.system(), org=org, name="R", environment="test", scopes=["payments:read"]
    )
    missing = ask("GET", "/v1/payments")
    assert missing.status_code == 401  # type: ignore[attr-defined]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")  # type: ignore[attr-defined]
    assert missing.headers["X-Latchkey-Error-Code"] == "missing_api_key"  # type: ignore[attr-defined]
    scope = ask("POST", "/v1/payments/p/refund", reader)
    assert scope.status_code == 403  # type: ignore[attr-defined]
    body = json.loads(scope.content)  # type: ignore[attr-defined]
    assert body["error"]["code"] == "insufficient_scope"
    assert body["error"]["required_scope"] == "payments:write"
    assert json.loads(scope.headers["X-Latchkey-Error"]) == body  # type: ignore[attr-defined]
    unknown = ask("GET", "/v1/customers", reader)
    assert unknown.status_code == 404  # type: ignore[attr-defined]
    assert json.loads(unknown.content)["error"]["code"] == "route_not_found"  # type: ignore[attr-defined]


def test_deny_status_403_maps_every_denial_and_keeps_the_real_one(
    product: None, org: Organization
) -> None:
    response = ask("GET", "/v1/payments", None, **{"X-Latchkey-Deny-Status": "403"})
    assert response.status_code == 403  # type: ignore[attr-defined]
    assert response.headers["X-Latchkey-Status"] == "401"  # type: ignore[attr-defined]
    assert json.loads(response.content)["error"]["code"] == "missing_api_key"  # type: ignore[attr-defined]


def test_limits_and_revocation_hold_through_the_gateway(product: None, org: Organization) -> None:
    set_limits(org, per_minute=2, burst=100, monthly=0)
    key, secret = apikey_create(
        actor=Actor.system(), org=org, name="L", environment="test", scopes=["payments:read"]
    )
    assert ask("GET", "/v1/payments", secret).status_code == 200  # type: ignore[attr-defined]
    assert ask("GET", "/v1/payments", secret).status_code == 200  # type: ignore[attr-defined]
    limited = ask("GET", "/v1/payments", secret)
    assert limited.status_code == 429  # type: ignore[attr-defined]
    assert int(limited.headers["Retry-After"]) >= 1  # type: ignore[attr-defined]
    assert limited.headers["X-Latchkey-Error-Code"] == "rate_limited"  # type: ignore[attr-defined]
    apikey_revoke(key=key, actor=Actor.system())
    revoked = ask("GET", "/v1/payments", secret)
    assert revoked.status_code == 401  # type: ignore[attr-defined]
    assert revoked.headers["X-Latchkey-Error-Code"] == "api_key_revoked"  # type: ignore[attr-defined]


def test_the_path_after_the_door_and_forwarded_headers_are_understood(
    product: None, org: Organization
) -> None:
    _, secret = apikey_create(
        actor=Actor.system(), org=org, name="F", environment="test", scopes=["payments:write"]
    )
    client = Client()
    rest = client.post("/gateway/auth/v1/payments/p1/refund", headers={"X-Product-Key": secret})
    assert rest.status_code == 200
    forwarded = client.get(
        "/gateway/auth",
        headers={
            "X-Product-Key": secret,
            "X-Forwarded-Method": "POST",
            "X-Forwarded-Uri": "/v1/payments/p1/refund",
        },
    )
    assert forwarded.status_code == 200
    absolute = ask("POST", "https://api.example.com/v1/payments/p%31/refund?x=1", secret)
    assert absolute.status_code == 200  # type: ignore[attr-defined]


def test_dot_segments_and_encoded_slashes_are_refused(product: None, org: Organization) -> None:
    _, secret = apikey_create(
        actor=Actor.system(), org=org, name="D", environment="test", scopes=["payments:read"]
    )
    for uri in ("/v1/payments/../admin", "/v1/payments/./x", "/v1/payments/a%2F..%2Fb"):
        response = ask("GET", uri, secret)
        assert response.status_code == 400, uri  # type: ignore[attr-defined]
        assert json.loads(response.content)["error"]["code"] == "validation_error"  # type: ignore[attr-defined]


def test_a_system_key_is_refused_before_any_route_is_looked_up(product: None, db: None) -> None:
    from accounts.models import PlatformRole
    from apikeys.services import system_apikey_create
    from tests.factories import UserFactory

    owner = UserFactory.create(platform_role=PlatformRole.PLATFORM_OWNER)
    _, secret = system_apikey_create(
        name="Sys", scopes=["keys:verify"], actor=Actor.for_user(owner)
    )
    for uri in ("/v1/payments", "/v1/no-such-route"):
        response = ask("GET", uri, secret)
        assert response.status_code == 403, uri  # type: ignore[attr-defined]
        assert json.loads(response.content)["error"]["code"] == "insufficient_scope"  # type: ignore[attr-defined]


def test_the_door_leaves_no_cycles(product: None, org: Organization) -> None:
    """Allowed or denied, the door's view, its admission and the request are freed by
    reference counting when the response is closed (ADR 0104)."""
    _, secret = apikey_create(
        actor=Actor.system(), org=org, name="Svc", environment="test", scopes=["payments:read"]
    )
    for sent, expected in ((secret, 200), (secret[:-4] + "AAAA", 401)):
        response: Any = ask("GET", "/v1/payments/pay_1", sent)
        assert response.status_code == expected
        left = cyclic_garbage(partial(ask, "GET", "/v1/payments/pay_1", sent))
        assert (expected, left) == (expected, [])
