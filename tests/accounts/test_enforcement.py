from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import PlatformRole, User
from orgs.models import Organization, Role
from tests.accounts.helpers import confirmed_totp, totp_code
from tests.conftest import signed_in_client, verified_client
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(db: None) -> User:
    return UserFactory.create(email="ops@latchkey.test", platform_role=PlatformRole.PLATFORM_ADMIN)


@pytest.fixture
def strict_org(org: Organization) -> Organization:
    org.require_two_factor = True
    org.save()
    return org


def _member(org: Organization, email: str) -> User:
    return MembershipFactory.create(
        org=org, user=UserFactory.create(email=email), role=Role.MEMBER
    ).user


def assert_not_held(response: Any) -> None:
    """The middleware let the request through (whatever the page itself answers)."""
    location = str(response.get("Location", ""))
    assert location != "/account/security/"
    assert not location.startswith("/login/2fa/")


def test_staff_without_a_factor_are_sent_to_enrol(staff: User) -> None:
    client = signed_in_client(staff)
    for path in ("/platform/", "/platform/kyc/", "/platform/organizations/"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"] == "/account/security/"
    page = client.get("/account/security/")
    assert page.status_code == 200
    assert "Platform staff need a second factor" in page.content.decode()


def test_staff_with_an_unverified_factor_are_sent_to_verify(staff: User) -> None:
    device = confirmed_totp(staff)
    client = signed_in_client(staff)
    response = client.get("/platform/kyc/")
    assert response.status_code == 302
    assert response["Location"] == "/login/2fa/?next=%2Fplatform%2Fkyc%2F"
    verified = client.post(
        "/login/2fa/", {"otp_token": totp_code(device), "next": "/platform/kyc/"}
    )
    assert verified["Location"] == "/platform/kyc/"
    assert client.get("/platform/kyc/").status_code == 200


def test_verified_staff_reach_the_platform(staff: User) -> None:
    client = verified_client(staff)
    response = client.get("/platform/")
    assert response.status_code == 200


def test_staff_elsewhere_are_not_held_back(staff: User) -> None:
    client = signed_in_client(staff)
    assert_not_held(client.get("/"))
    assert client.get("/account/security/").status_code == 200


def test_non_staff_on_platform_paths_are_left_to_the_console(user: User) -> None:
    client = signed_in_client(user)
    response = client.get("/platform/")
    assert response.get("Location") not in {"/account/security/"}
    assert not str(response.get("Location", "")).startswith("/login/2fa/")


def test_members_of_an_org_requiring_two_factor_are_sent_to_enrol(
    strict_org: Organization,
) -> None:
    client = signed_in_client(_member(strict_org, "m@acme.test"))
    for path in ("/", "/o/acme/", "/o/acme/api-keys/"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"] == "/account/security/"
    security = client.get("/account/security/")
    assert security.status_code == 200
    assert "requires two-factor" in security.content.decode()
    assert client.post("/account/totp/start/").status_code == 302
    assert client.get("/account/totp/").status_code == 200
    assert client.get("/api/v1/ping").status_code == 200
    assert client.get("/login/").status_code == 200
    assert client.post("/logout/").status_code == 302


def test_enrolling_lets_the_member_in(strict_org: Organization) -> None:
    member = _member(strict_org, "m@acme.test")
    client = signed_in_client(member)
    client.post("/account/totp/start/")
    device = TOTPDevice.objects.get(user=member)
    client.post("/account/totp/", {"otp_token": totp_code(device)})
    assert_not_held(client.get("/"))
    assert client.get("/o/acme/").status_code == 200


def test_a_member_with_an_unverified_factor_is_sent_to_verify(strict_org: Organization) -> None:
    member = _member(strict_org, "m@acme.test")
    confirmed_totp(member)
    client = signed_in_client(member)
    response = client.get("/o/acme/")
    assert response.status_code == 302
    assert response["Location"] == "/login/2fa/?next=%2Fo%2Facme%2F"


def test_verified_members_and_members_of_other_orgs_pass(
    strict_org: Organization, other_org: Organization
) -> None:
    verified = verified_client(_member(strict_org, "v@acme.test"))
    assert_not_held(verified.get("/"))
    assert verified.get("/o/acme/").status_code == 200
    relaxed = signed_in_client(_member(other_org, "r@globex.test"))
    assert_not_held(relaxed.get("/"))
    assert relaxed.get("/o/globex/").status_code == 200


def test_the_api_is_never_touched(strict_org: Organization, client: Client) -> None:
    client.force_login(_member(strict_org, "m@acme.test"))
    response: Any = client.get("/api/v1/ping")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
