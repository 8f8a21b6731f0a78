"""Key authentication: headers, the order of checks, and the refusal codes of docs/api.md."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apikeys.authentication import ApiKeyPrincipal, ApiKeyUser, resolve_api_key
from apikeys.keys import checksum, generate_secret
from apikeys.services import apikey_delete, apikey_revoke, apikey_rotate
from orgs.actors import Actor
from orgs.models import AuditEvent, Organization, OrgStatus
from tests.apikeys.api.conftest import ApiClient, KeyMaker, assert_error
from tests.apikeys.helpers import frozen_clock

pytestmark = pytest.mark.django_db


def test_no_key_is_401_missing_api_key_with_a_bare_bearer_challenge() -> None:
    response = ApiClient().get("me")
    assert_error(response, 401, "missing_api_key")
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_bearer_and_x_api_key_headers_both_authenticate(full_key: Any) -> None:
    _, secret = full_key
    assert ApiClient(secret).get("me").status_code == 200
    assert ApiClient(**{"X-API-Key": secret}).get("me").status_code == 200
    assert ApiClient(secret, **{"X-API-Key": secret}).get("me").status_code == 200
    lower = ApiClient(**{"Authorization": f"bearer {secret}"}).get("me")
    assert lower.status_code == 200


def test_two_different_keys_are_400_conflicting_credentials(
    org: Organization, make_api_key: KeyMaker
) -> None:
    _, first = make_api_key(org)
    _, second = make_api_key(org)
    response = ApiClient(first, **{"X-API-Key": second}).get("me")
    assert_error(response, 400, "conflicting_credentials")
    garbage = ApiClient(first, **{"X-API-Key": "lk_test_nonsense"}).get("me")
    assert_error(garbage, 400, "conflicting_credentials")


@pytest.mark.parametrize(
    "authorization",
    ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "Token abc", "Bearer\tlk", ""],
)
def test_malformed_authorization_header_is_401_invalid_api_key(authorization: str) -> None:
    response = ApiClient(**{"Authorization": authorization}).get("me")
    error = assert_error(response, 401, "invalid_api_key")
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert error["type"] == "authentication_error"


def _with_bad_checksum(secret: str) -> str:
    body = secret[: -len(checksum("lk", "test", "x"))]
    good = secret[len(body) :]
    bad = ("0" if good[0] != "0" else "1") + good[1:]
    return body + bad


@pytest.mark.parametrize(
    "make_raw",
    [
        lambda s: _with_bad_checksum(s),
        lambda s: s[:-1],
        lambda s: s + "x",
        lambda s: s.replace("lk_test_", "xx_test_"),
        lambda s: "lk_prod_" + s[8:],
        lambda s: "x" * 5000,
        lambda s: "lk_test_é" + s[9:],
    ],
)
def test_malformed_or_bad_checksum_keys_are_refused_before_any_query(
    full_key: Any, make_raw: Any
) -> None:
    raw = make_raw(full_key[1])
    with CaptureQueriesContext(connection) as queries:
        response = ApiClient(raw).get("me")
    assert_error(response, 401, "invalid_api_key")
    assert len(queries) == 0


def test_well_formed_unknown_key_is_401_invalid_api_key() -> None:
    response = ApiClient(generate_secret("test")).get("me")
    assert_error(response, 401, "invalid_api_key")


def test_revoked_key_is_401_api_key_revoked(full_key: Any) -> None:
    key, secret = full_key
    apikey_revoke(key=key, actor=Actor.system())
    response = ApiClient(secret).get("me")
    assert_error(response, 401, "api_key_revoked")
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_deleted_key_is_401_invalid_api_key(full_key: Any) -> None:
    key, secret = full_key
    apikey_delete(key=key, actor=Actor.system())
    assert_error(ApiClient(secret).get("me"), 401, "invalid_api_key")


def test_expired_key_is_401_api_key_expired(org: Organization, make_api_key: KeyMaker) -> None:
    with frozen_clock() as clock:
        _, secret = make_api_key(org, expires_at=timezone.now() + timedelta(hours=1))
        assert ApiClient(secret).get("me").status_code == 200
        clock.advance(timedelta(hours=1))
        assert_error(ApiClient(secret).get("me"), 401, "api_key_expired")


def test_rotated_key_works_in_grace_then_is_expired(full_key: Any) -> None:
    key, old_secret = full_key
    with frozen_clock() as clock:
        _, new_secret = apikey_rotate(key=key, grace=timedelta(minutes=10), actor=Actor.system())
        assert ApiClient(old_secret).get("me").status_code == 200
        assert ApiClient(new_secret).get("me").status_code == 200
        clock.advance(timedelta(minutes=10, seconds=1))
        assert_error(ApiClient(old_secret).get("me"), 401, "api_key_expired")
        assert ApiClient(new_secret).get("me").status_code == 200


def test_key_of_a_suspended_org_is_403_org_suspended(org: Organization, full_key: Any) -> None:
    org.status = OrgStatus.SUSPENDED
    org.save(update_fields=["status"])
    error = assert_error(ApiClient(full_key[1]).get("me"), 403, "org_suspended")
    assert error["type"] == "permission_error"


def test_a_revoked_key_of_a_suspended_org_reports_the_revocation(
    org: Organization, full_key: Any
) -> None:
    apikey_revoke(key=full_key[0], actor=Actor.system())
    org.status = OrgStatus.SUSPENDED
    org.save(update_fields=["status"])
    assert_error(ApiClient(full_key[1]).get("me"), 401, "api_key_revoked")


@pytest.mark.parametrize("named", ["id", "slug"])
def test_x_org_id_naming_the_keys_org_is_accepted(
    org: Organization, full_key: Any, named: str
) -> None:
    value = org.public_id if named == "id" else org.slug
    response = ApiClient(full_key[1], **{"X-Org-Id": value}).get("me")
    assert response.status_code == 200


@pytest.mark.parametrize("value", ["other", "org_000000000000000000000000", "globex", ""])
def test_x_org_id_naming_another_org_is_403_org_mismatch(
    other_org: Organization, full_key: Any, value: str
) -> None:
    response = ApiClient(full_key[1], **{"X-Org-Id": value}).get("organization")
    assert_error(response, 403, "org_mismatch")


def test_x_org_id_is_checked_after_authentication() -> None:
    response = ApiClient(**{"X-Org-Id": "globex"}).get("organization")
    assert_error(response, 401, "missing_api_key")


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Actor-Id", "a" * 256),
        ("X-Actor-Id", "bad\x7fvalue"),
        ("X-Actor-Id", "caf\u00e9"),
        ("X-Client-Version", "v" * 256),
        ("X-Client-Version", "1.0\x01"),
    ],
)
def test_invalid_client_headers_are_400_validation_error_naming_the_header(
    full_key: Any, header: str, value: str
) -> None:
    response = ApiClient(full_key[1], **{header: value}).get("me")
    error = assert_error(response, 400, "validation_error")
    assert error["param"] == header


def test_actor_id_is_recorded_on_audit_events(full_key: Any) -> None:
    client = ApiClient(full_key[1], **{"X-Actor-Id": "user-42", "X-Client-Version": "sdk/1.2"})
    response = client.post("api-keys", {"name": "From CI", "scopes": ["members:read"]})
    assert response.status_code == 201
    event = AuditEvent.objects.get(action="api_key.created", target_id=response.json()["id"])
    assert event.actor_type == "api_key"
    assert event.actor_id == full_key[0].public_id
    assert event.external_actor_id == "user-42"
    assert event.request_id == response["X-Request-Id"]


def test_request_user_is_the_key_not_a_person(full_key: Any, rf: Any) -> None:
    from apikeys.api_base import AnyKeyApiView
    from apikeys.guard import notes

    seen: dict[str, Any] = {}

    class Probe(AnyKeyApiView):
        def get(self, request: Any) -> Any:
            from rest_framework.response import Response

            seen["user"], seen["auth"] = request.user, request.auth
            admission = notes(request).admission
            assert admission is not None
            seen["client_version"] = admission.client_version
            seen["external_actor_id"] = admission.external_actor_id
            return Response({})

    request = rf.get(
        "/api/v1/probe",
        HTTP_AUTHORIZATION=f"Bearer {full_key[1]}",
        HTTP_X_CLIENT_VERSION="cli/3",
    )
    request.request_id = "req_probe0001"
    assert Probe.as_view()(request).status_code == 200
    assert isinstance(seen["user"], ApiKeyUser)
    assert seen["user"].is_authenticated and not seen["user"].is_staff
    assert isinstance(seen["auth"], ApiKeyPrincipal)
    assert seen["auth"].public_id == full_key[0].public_id
    assert seen["client_version"] == "cli/3"
    assert seen["external_actor_id"] == ""


def test_resolve_api_key_returns_an_immutable_principal_without_secrets(full_key: Any) -> None:
    key, secret = full_key
    principal = resolve_api_key(secret)
    assert principal is not None
    assert principal.public_id == key.public_id
    assert principal.org_slug == "acme"
    assert principal.scopes == frozenset(key.scopes)
    assert secret not in repr(principal)
    with pytest.raises(AttributeError):
        principal.name = "changed"  # type: ignore[misc]
    assert resolve_api_key(generate_secret("test")) is None
