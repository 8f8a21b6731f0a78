"""A key never grants more than it holds: scopes and environments
(docs/product.md#api-keys, ADR 0043)."""

from __future__ import annotations

import pytest

from apikeys.models import ApiKey
from orgs.models import KycStatus, Organization
from tests.apikeys.api.conftest import ApiClient, KeyMaker, assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def approved_org(org: Organization) -> Organization:
    org.kyc_status = KycStatus.APPROVED
    org.save(update_fields=["kyc_status"])
    return org


def test_key_cannot_create_a_key_with_a_scope_it_lacks(
    org: Organization, make_api_key: KeyMaker
) -> None:
    _, secret = make_api_key(org, ["api_keys:write", "members:read"])
    response = ApiClient(secret).post(
        "api-keys", {"name": "Wider", "scopes": ["members:write", "api_keys:read"]}
    )
    error = assert_error(response, 403, "insufficient_scope")
    assert error["required_scope"] == "members:write"
    assert not ApiKey.objects.filter(name="Wider").exists()


def test_key_can_create_a_key_with_a_subset_of_its_scopes(
    org: Organization, make_api_key: KeyMaker
) -> None:
    _, secret = make_api_key(org, ["api_keys:write", "members:write"])
    response = ApiClient(secret).post("api-keys", {"name": "Narrow", "scopes": ["members:read"]})
    assert response.status_code == 201
    assert response.json()["scopes"] == ["members:read"]


def test_test_key_cannot_create_a_live_key(
    approved_org: Organization, make_api_key: KeyMaker
) -> None:
    _, secret = make_api_key(approved_org, environment="test")
    response = ApiClient(secret).post(
        "api-keys", {"name": "Live", "environment": "live", "scopes": ["members:read"]}
    )
    error = assert_error(response, 403, "environment_not_allowed")
    assert error["param"] == "environment"


def test_live_key_creation_before_kyc_approval_is_refused(
    approved_org: Organization, make_api_key: KeyMaker
) -> None:
    _, live_secret = make_api_key(approved_org, environment="live")
    approved_org.kyc_status = KycStatus.PENDING
    approved_org.save(update_fields=["kyc_status"])
    response = ApiClient(live_secret).post(
        "api-keys", {"name": "Live", "environment": "live", "scopes": ["members:read"]}
    )
    assert_error(response, 403, "environment_not_allowed")
    test_key = ApiClient(live_secret).post(
        "api-keys", {"name": "Test", "environment": "test", "scopes": ["members:read"]}
    )
    assert test_key.status_code == 201


def test_live_key_creates_live_keys_once_kyc_is_approved(
    approved_org: Organization, make_api_key: KeyMaker
) -> None:
    _, live_secret = make_api_key(approved_org, environment="live")
    response = ApiClient(live_secret).post(
        "api-keys", {"name": "Live 2", "environment": "live", "scopes": ["members:read"]}
    )
    assert response.status_code == 201
    assert response.json()["secret"].startswith("lk_live_")


def test_test_key_never_sees_or_touches_live_keys(
    approved_org: Organization, make_api_key: KeyMaker
) -> None:
    live, _ = make_api_key(approved_org, environment="live", name="Production")
    test, secret = make_api_key(approved_org, environment="test")
    client = ApiClient(secret)
    listed = [k["id"] for k in client.get("api-keys").json()["results"]]
    assert test.public_id in listed and live.public_id not in listed
    for method, suffix in [
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/rotate"),
        ("POST", "/revoke"),
    ]:
        response = client.request(method, f"api-keys/{live.public_id}{suffix}", {})
        assert_error(response, 404, "not_found")
    live.refresh_from_db()
    assert live.revoked_at is None and live.deleted_at is None and live.rotated_at is None


def test_live_key_manages_test_keys(approved_org: Organization, make_api_key: KeyMaker) -> None:
    test, _ = make_api_key(approved_org, environment="test", scopes=["members:read"])
    _, live_secret = make_api_key(approved_org, environment="live")
    client = ApiClient(live_secret)
    assert test.public_id in [k["id"] for k in client.get("api-keys").json()["results"]]
    assert client.post(f"api-keys/{test.public_id}/revoke").status_code == 200


def test_key_cannot_rotate_a_key_holding_scopes_it_lacks(
    org: Organization, make_api_key: KeyMaker
) -> None:
    powerful, _ = make_api_key(org, ["members:write", "api_keys:write"], name="Powerful")
    _, weak = make_api_key(org, ["api_keys:write"])
    response = ApiClient(weak).post(f"api-keys/{powerful.public_id}/rotate", {})
    error = assert_error(response, 403, "insufficient_scope")
    assert error["required_scope"] == "members:read"
    powerful.refresh_from_db()
    assert powerful.rotated_at is None
    assert ApiKey.objects.filter(predecessor=powerful).count() == 0


def test_a_key_cannot_rotate_a_key_into_one_that_outlives_it(
    org: Organization, make_api_key: KeyMaker
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    permanent, _ = make_api_key(org, ["members:read"], name="Permanent")
    expiring, secret = make_api_key(org, ["api_keys:write", "members:write"], name="Expiring")
    soon = timezone.now() + timedelta(hours=1)
    ApiKey.objects.filter(pk=expiring.pk).update(expires_at=soon)
    response = ApiClient(secret).post(f"api-keys/{permanent.public_id}/rotate", {})
    error = assert_error(response, 400, "validation_error")
    assert "outlives" in error["message"]
    permanent.refresh_from_db()
    assert permanent.rotated_at is None
    assert not ApiKey.objects.filter(predecessor=permanent).exists()
    # A key that expires no later than the caller may be rotated by it, itself included.
    shorter, _ = make_api_key(org, ["members:read"], name="Shorter")
    ApiKey.objects.filter(pk=shorter.pk).update(expires_at=soon - timedelta(minutes=5))
    assert ApiClient(secret).post(f"api-keys/{shorter.public_id}/rotate", {}).status_code == 201
    itself = ApiClient(secret).post(f"api-keys/{expiring.public_id}/rotate", {})
    assert itself.status_code == 201
    assert itself.json()["expires_at"] is not None


def test_key_rotates_a_key_whose_scopes_it_holds(org: Organization, make_api_key: KeyMaker) -> None:
    target, _ = make_api_key(org, ["members:read"], name="Reader")
    _, secret = make_api_key(org, ["api_keys:write", "members:write"])
    response = ApiClient(secret).post(f"api-keys/{target.public_id}/rotate", {})
    assert response.status_code == 201
    assert response.json()["predecessor_id"] == target.public_id
