"""Every recipe in docs/recipes/ loads, issues the vendor's keys and answers `me` through
the vendor's header with the vendor's scopes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from django.test import override_settings

from apikeys import catalogue
from apikeys.scopes import preset_scopes, presets
from apikeys.services import apikey_create
from orgs.actors import Actor
from orgs.models import Organization
from tests.apikeys.api.conftest import ApiClient

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "recipes"


@dataclass(frozen=True)
class Vendor:
    scopes: list[str]  # what the vendor's docs grant
    stored: list[str]  # what the key then holds
    secret_starts: str
    header: str  # "Authorization" means Bearer
    also: dict[str, str]  # other vendor headers sent with the call


VENDORS = {
    "reevit": Vendor(
        scopes=["payments:write", "connections:read", "webhooks:write", "api_keys:read"],
        stored=[
            "api_keys:read",
            "connections:read",
            "payments:read",
            "payments:write",
            "webhooks:read",
            "webhooks:write",
        ],
        secret_starts="pfk_test_",
        header="X-Reevit-Key",
        also={"X-Org-Id": "{org}", "X-Reevit-Client-Version": "reevit-node/3.2.0"},
    ),
    "revkeen": Vendor(
        scopes=["checkout:write", "customers:read", "finance:read"],
        stored=["checkout:write", "customers:read", "finance:read"],
        secret_starts="rk_sandbox_",
        header="x-revkeen-key",
        also={},
    ),
    "payment-gateway": Vendor(
        scopes=["checkout:create", "transaction:read", "invoice:*"],
        stored=["checkout:create", "invoice:*", "transaction:read"],
        secret_starts="sk_test_",
        header="Authorization",
        also={},
    ),
    "remitflex": Vendor(
        scopes=["payments:write"],
        stored=["payments:read", "payments:write"],
        secret_starts="rf_test_",
        header="Authorization",
        also={},
    ),
    "reevo": Vendor(
        scopes=["contacts:write", "users:read", "mailbox:read"],
        stored=["contacts:read", "contacts:write", "mailbox:read", "users:read"],
        secret_starts="rv_test_",
        header="x-api-key",
        also={},
    ),
}


def test_every_recipe_has_a_page_and_a_test() -> None:
    files = {path.stem for path in RECIPES.glob("*.toml")}
    assert files == set(VENDORS)
    readme = (RECIPES / "README.md").read_text()
    for name in files:
        assert (RECIPES / f"{name}.md").is_file(), name
        assert f"]({name}.md)" in readme, name


@pytest.mark.parametrize("name", sorted(VENDORS))
def test_a_recipe_issues_the_vendors_key_and_me_answers_through_its_header(
    name: str, org: Organization
) -> None:
    vendor = VENDORS[name]
    with override_settings(LATCHKEY_CATALOGUE=str(RECIPES / f"{name}.toml")):
        key, secret = apikey_create(
            actor=Actor.system(),
            org=org,
            name=f"{name} key",
            environment="test",
            scopes=vendor.scopes,
        )
        assert secret.startswith(vendor.secret_starts)
        headers = {h: v.format(org=org.public_id) for h, v in vendor.also.items()}
        if vendor.header == "Authorization":
            client = ApiClient(secret, **headers)
        else:
            client = ApiClient(**{vendor.header: secret}, **headers)
        response = client.get("me")
        assert response.status_code == 200, response.content
        assert response.json()["key"]["id"] == key.public_id
        assert response.json()["key"]["scopes"] == vendor.stored
        if vendor.header != "Authorization" and "Authorization" not in (
            catalogue.current().wire.key_headers
        ):
            refused = ApiClient(secret).get("me")
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "missing_api_key"


def test_remitflex_levels_are_presets() -> None:
    with override_settings(LATCHKEY_CATALOGUE=str(RECIPES / "remitflex.toml")):
        levels = {p.name: set(preset_scopes(p)) for p in presets()}
        assert {"read", "write", "admin"} <= set(levels)
        assert all(s.endswith(":read") for s in levels["read"])
        assert levels["read"] < levels["write"] < levels["admin"]
        assert "api_keys:write" in levels["admin"]
        assert "api_keys:write" not in levels["write"]


def test_payment_gateway_actions_imply_nothing() -> None:
    from apikeys.scopes import has_scope, normalize_scopes

    with override_settings(LATCHKEY_CATALOGUE=str(RECIPES / "payment-gateway.toml")):
        assert normalize_scopes(["invoice:execute"]) == ["invoice:execute"]
        assert not has_scope({"invoice:update"}, "invoice:read")
        assert has_scope({"invoice:*"}, "invoice:execute")
        route = catalogue.current().route_for("POST", "/v1/transactions/tr_1/refund")
        assert route is not None and route.scope == "transaction:execute"
