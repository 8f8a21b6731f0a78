"""Every endpoint, method and caller: no key, a key with the wrong scope, read scope, write
scope, and a full-access key of another org. Status and error code for each cell."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from apikeys.models import ApiKey
from orgs.models import Membership, Organization, Role
from tests.apikeys.api.conftest import ApiClient, KeyMaker, assert_error
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # `{member}` and `{key}` are filled with objects of the test org
    resource: str | None  # None: any valid key
    success: int
    body: dict[str, Any] | None = None

    @property
    def is_detail(self) -> bool:
        return "{" in self.path

    @property
    def is_read(self) -> bool:
        return self.method == "GET"

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


ENDPOINTS = [
    Endpoint("GET", "me", None, 200),
    Endpoint("GET", "organization", "organization", 200),
    Endpoint("PATCH", "organization", "organization", 200, {"name": "Renamed"}),
    Endpoint("GET", "members", "members", 200),
    Endpoint("POST", "members", "members", 201, {"email": "new@example.com", "role": "member"}),
    Endpoint("GET", "members/{member}", "members", 200),
    Endpoint("PATCH", "members/{member}", "members", 200, {"role": "admin"}),
    Endpoint("DELETE", "members/{member}", "members", 204),
    Endpoint("GET", "api-keys", "api_keys", 200),
    Endpoint("POST", "api-keys", "api_keys", 201, {"name": "New", "scopes": ["api_keys:read"]}),
    Endpoint("GET", "api-keys/{key}", "api_keys", 200),
    Endpoint("PATCH", "api-keys/{key}", "api_keys", 200, {"allowed_ips": ["10.0.0.0/8"]}),
    Endpoint("DELETE", "api-keys/{key}", "api_keys", 204),
    Endpoint("POST", "api-keys/{key}/rotate", "api_keys", 201, {"grace_period": 0}),
    Endpoint("POST", "api-keys/{key}/revoke", "api_keys", 200),
    Endpoint("GET", "audit-events", "audit_log", 200),
]

CALLERS = ["no_key", "wrong_scope", "read_scope", "write_scope", "other_org"]


@dataclass
class World:
    org: Organization
    member: Membership
    target_key: ApiKey
    clients: dict[str, ApiClient]

    def path(self, endpoint: Endpoint) -> str:
        return endpoint.path.format(member=self.member.public_id, key=self.target_key.public_id)


def _scopes_for(resource: str | None, action: str) -> list[str]:
    if resource is None:
        return ["usage:read"]
    if resource == "audit_log":  # read-only: its strongest scope is read
        return ["audit_log:read"]
    return [f"{resource}:{action}"]


def _world(endpoint: Endpoint, org: Organization, other_org: Organization, make: KeyMaker) -> World:
    member = MembershipFactory.create(org=org, role=Role.MEMBER)
    target_key, _ = make(org, ["api_keys:read"], name="Target")
    clients = {"no_key": ApiClient()}
    _, wrong = make(org, ["usage:read"] if endpoint.resource != "usage" else ["kyc:read"])
    clients["wrong_scope"] = ApiClient(wrong)
    _, read = make(org, _scopes_for(endpoint.resource, "read"))
    clients["read_scope"] = ApiClient(read)
    _, write = make(org, _scopes_for(endpoint.resource, "write"))
    clients["write_scope"] = ApiClient(write)
    _, foreign = make(other_org)
    clients["other_org"] = ApiClient(foreign)
    return World(org=org, member=member, target_key=target_key, clients=clients)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_endpoint_answers_each_caller_as_specified(
    endpoint: Endpoint,
    caller: str,
    org: Organization,
    other_org: Organization,
    make_api_key: KeyMaker,
) -> None:
    world = _world(endpoint, org, other_org, make_api_key)
    response = world.clients[caller].request(endpoint.method, world.path(endpoint), endpoint.body)

    if caller == "no_key":
        assert_error(response, 401, "missing_api_key")
        return
    if caller == "other_org":
        if endpoint.is_detail:
            assert_error(response, 404, "not_found")
        else:
            # Collections are the caller's own org: nothing of this org shows through.
            assert response.status_code == endpoint.success, response.content[:300]
            content = response.content.decode()
            assert org.public_id not in content
            assert world.member.public_id not in content
            assert world.target_key.public_id not in content
        return
    if endpoint.resource is None:
        assert response.status_code == endpoint.success
        return
    required = f"{endpoint.resource}:{'read' if endpoint.is_read else 'write'}"
    allowed = caller == "write_scope" or (caller == "read_scope" and endpoint.is_read)
    if allowed:
        assert response.status_code == endpoint.success, response.content[:300]
        if response.status_code != 204:
            assert "error" not in response.json()
    else:
        error = assert_error(response, 403, "insufficient_scope")
        assert error["required_scope"] == required


PATHS = sorted({endpoint.path for endpoint in ENDPOINTS})


@pytest.mark.parametrize("path", PATHS)
def test_undeclared_methods_are_405_with_allow_after_authentication(
    path: str, org: Organization, make_api_key: KeyMaker
) -> None:
    member = MembershipFactory.create(org=org, role=Role.MEMBER)
    key, secret = make_api_key(org)
    url = path.format(member=member.public_id, key=key.public_id)
    declared = {e.method for e in ENDPOINTS if e.path == path}
    for method in {"GET", "POST", "PATCH", "DELETE", "PUT", "OPTIONS"} - declared:
        response = ApiClient(secret).request(method, url, {})
        assert_error(response, 405, "method_not_allowed")
        allow = {m.strip() for m in response["Allow"].split(",")}
        assert declared <= allow and method not in allow
        assert_error(ApiClient().request(method, url, {}), 401, "missing_api_key")


def test_head_is_served_like_get_with_read_scope(org: Organization, make_api_key: KeyMaker) -> None:
    _, read = make_api_key(org, ["members:read"])
    _, wrong = make_api_key(org, ["usage:read"])
    assert ApiClient(read).request("HEAD", "members").status_code == 200
    assert ApiClient(wrong).request("HEAD", "members").status_code == 403
