"""`POST sign-in-links` (docs/api.md): a single-use link for a member, for the operator's
own pages; capped lifetime, the usual confirmation page, never for platform staff."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import PlatformRole
from orgs.models import AuditEvent, Organization
from tests.apikeys.api.conftest import ApiClient, KeyMaker, assert_error
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def linker(org: Organization, make_api_key: KeyMaker) -> ApiClient:
    _, secret = make_api_key(org, ["sign_in_links:create"])
    return ApiClient(secret)


def test_a_member_gets_a_single_use_link_that_signs_them_in(
    org: Organization, member_user: Any, linker: ApiClient
) -> None:
    response = linker.post(
        "sign-in-links", {"email": member_user.email, "ttl_minutes": 5, "next": "/account/"}
    )
    assert response.status_code == 201 and response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["object"] == "sign_in_link"
    assert body["url"].startswith(f"{settings.SITE_URL}/login/magic/")
    expires = parse_datetime(body["expires_at"])
    assert expires is not None
    assert expires <= timezone.now() + timedelta(minutes=5)

    path = body["url"].removeprefix(settings.SITE_URL)
    browser = Client()
    assert browser.get(path).status_code == 200  # the confirmation page
    signed_in = browser.post(path)
    assert signed_in.status_code == 302 and signed_in["Location"] == "/account/"
    assert browser.session["_auth_user_id"] == str(member_user.pk)
    assert Client().post(path).status_code == 400  # single use

    event = AuditEvent.objects.get(action="sign_in_link.created")
    assert event.actor_type == "api_key" and event.target_id
    assert body["url"].rsplit("/", 2)[-2] not in str(event.details)


def test_the_lifetime_is_capped_whatever_is_asked(
    member_user: Any, linker: ApiClient, settings: Any
) -> None:
    settings.MAGIC_LINK_MAX_AGE = 120
    body = linker.post("sign-in-links", {"email": member_user.email, "ttl_minutes": 600}).json()
    expires = parse_datetime(body["expires_at"])
    assert expires is not None and expires <= timezone.now() + timedelta(seconds=120)


def test_only_members_and_never_platform_staff(
    org: Organization, other_org: Organization, linker: ApiClient
) -> None:
    stranger = UserFactory.create(email="stranger@example.com")
    MembershipFactory.create(org=other_org, user=stranger)
    refused = linker.post("sign-in-links", {"email": stranger.email})
    assert assert_error(refused, 400, "validation_error")["param"] == "email"
    unknown = linker.post("sign-in-links", {"email": "nobody@example.com"})
    assert_error(unknown, 400, "validation_error")
    staff = UserFactory.create(email="ops@example.com", platform_role=PlatformRole.PLATFORM_ADMIN)
    MembershipFactory.create(org=org, user=staff)
    assert_error(linker.post("sign-in-links", {"email": staff.email}), 403, "permission_denied")


def test_the_scope_is_needed(org: Organization, member_user: Any, make_api_key: KeyMaker) -> None:
    _, secret = make_api_key(org, ["members:write"])
    refused = ApiClient(secret).post("sign-in-links", {"email": member_user.email})
    error = assert_error(refused, 403, "insufficient_scope")
    assert error["required_scope"] == "sign_in_links:create"
