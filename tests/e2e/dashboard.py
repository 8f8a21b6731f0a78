"""A populated organisation for browser tests of every dashboard page (axe, phone layout,
navigation): one owner, one member, one platform owner who is also an admin of the org,
keys with usage and a rotation, audit events, an approved KYC application and a pending
one of another org. `pages(...)` lists every page a role can open.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.test import RequestFactory
from django.utils import timezone
from playwright.sync_api import BrowserContext, Page

from accounts.models import PlatformRole, User
from apikeys.models import ApiKey, KeyUsageHour
from apikeys.services import apikey_revoke, apikey_rotate
from orgs import services as org_services
from orgs.actors import Actor
from orgs.models import KycStatus, Membership, Organization, Role
from platform_admin import services as platform_services
from platform_admin.models import KycApplication
from tests.apikeys.helpers import make_key
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory

SCREENSHOTS = os.environ.get("E2E_SCREENSHOTS", "")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@dataclass
class Dashboard:
    org: Organization
    owner: User
    member: User
    staff: User
    key: ApiKey
    rotated: ApiKey
    successor: ApiKey
    member_membership: Membership
    pending_kyc: KycApplication
    approved_kyc: KycApplication
    system_key: ApiKey
    other_org: Organization
    extra: dict[str, Any] = field(default_factory=dict)


def build_dashboard() -> Dashboard:
    from tests.platform_admin.conftest import pdf_bytes, submit, upload

    # A name that ends with a full stop, as many company names do.
    org = OrganizationFactory.create(name="Demo Inc.", slug="demo", custom_monthly=100_000)
    owner = UserFactory.create(email="owner@demo.latchkey.test")
    member = UserFactory.create(email="member@demo.latchkey.test")
    staff = UserFactory.create(
        email="staff@latchkey.test", platform_role=PlatformRole.PLATFORM_OWNER
    )
    MembershipFactory.create(org=org, user=owner, role=Role.OWNER)
    member_membership = MembershipFactory.create(org=org, user=member, role=Role.MEMBER)
    MembershipFactory.create(org=org, user=staff, role=Role.ADMIN)
    key, _ = make_key(org, name="Billing sync", scopes=["members:read", "usage:read"])
    rotated, _ = make_key(org, name="Nightly export", actor=Actor.for_user(owner))
    successor, _ = apikey_rotate(key=rotated, grace=timedelta(hours=24), actor=Actor.system())
    revoked, _ = make_key(org, name="Old integration")
    apikey_revoke(key=revoked, actor=Actor.system())
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    KeyUsageHour.objects.bulk_create(
        KeyUsageHour(
            api_key=key,
            org=org,
            hour=now - timedelta(hours=h),
            count_2xx=1200 + 37 * h,
            count_4xx=h % 5,
            count_5xx=1 if h % 7 == 0 else 0,
            client_versions=["billing-sdk/2.4.0"],
            last_used_ip="203.0.113.7",
        )
        for h in range(0, 24 * 20, 3)
    )
    org_services.member_invite(
        org=org, email="new.hire@demo.latchkey.test", role=Role.ADMIN, actor=Actor.for_user(owner)
    )
    # An event from a long IPv6 address, with details: the audit table must not wrap
    # the address one character per line, nor clip the details.
    request = RequestFactory().get(
        "/",
        REMOTE_ADDR="2001:db8:85a3::8a2e:370:7334",
        HTTP_USER_AGENT="Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0",
    )
    request.user = owner
    org_services.audit_record(
        action="user.signed_in",
        org=org,
        request=request,
        details={"method": "magic_link", "second_factor": "totp", "remember_device": False},
    )
    approved_kyc = submit(org, owner, documents=[upload("incorporation.pdf", pdf_bytes())])
    platform_services.kyc_approve(application=approved_kyc, actor=Actor.for_user(staff))
    other_org = OrganizationFactory.create(name="Globex", slug="globex")
    MembershipFactory.create(org=other_org, user=UserFactory.create(), role=Role.OWNER)
    pending_kyc = submit(
        other_org, None, legal_name="Globex Inc", documents=[upload("cert.pdf", pdf_bytes())]
    )
    system_key, _ = platform_services.system_key_create(
        name="Back office", scopes=["platform_organizations:read"], actor=Actor.for_user(staff)
    )
    org.refresh_from_db()
    assert org.kyc_status == KycStatus.APPROVED
    return Dashboard(
        org=org,
        owner=owner,
        member=member,
        staff=staff,
        key=key,
        rotated=rotated,
        successor=successor,
        member_membership=member_membership,
        pending_kyc=pending_kyc,
        approved_kyc=approved_kyc,
        system_key=system_key,
        other_org=other_org,
    )


def pages(d: Dashboard, role: str) -> list[str]:
    """Every page `role` ("owner", "member", "staff", "anonymous") can open, with the
    confirm steps. (/api/docs/ is Swagger UI, a vendored third-party page: not listed.)"""
    if role == "anonymous":
        return ["/", "/login/", "/api/docs/errors/"]
    o = f"/o/{d.org.slug}"
    common = [
        "/",
        f"{o}/",
        f"{o}/api-keys/",
        f"{o}/api-keys/{d.key.public_id}/",
        f"{o}/api-keys/{d.rotated.public_id}/",
        f"{o}/usage/",
        f"{o}/members/",
        f"{o}/members/leave/",
        f"{o}/kyc/",
        "/account/security/",
        "/orgs/new/",
        "/api/docs/errors/",
    ]
    admin = [
        f"{o}/api-keys/new/",
        f"{o}/api-keys/{d.key.public_id}/revoke/",
        f"{o}/api-keys/{d.key.public_id}/delete/",
        f"{o}/api-keys/{d.key.public_id}/rotate/?grace=0",
        f"{o}/members/invite/",
        f"{o}/members/{d.member_membership.public_id}/remove/",
        f"{o}/audit/",
        f"{o}/settings/",
    ]
    if role == "member":
        return common
    if role == "owner":
        return [
            *common,
            *admin,
            f"{o}/members/{d.member_membership.public_id}/role/?role=owner",
            f"{o}/settings/transfer/?membership={d.member_membership.public_id}",
        ]
    kyc = f"/platform/kyc/{d.pending_kyc.public_id}"
    return [
        *common,
        *admin,
        "/platform/",
        "/platform/kyc/",
        f"{kyc}/",
        f"{kyc}/approve/",
        f"{kyc}/reject/",
        f"/platform/kyc/{d.approved_kyc.public_id}/",
        "/platform/organizations/",
        f"/platform/organizations/{d.org.public_id}/",
        f"/platform/organizations/{d.org.public_id}/suspend/",
        "/platform/admins/",
        "/platform/system-keys/",
        f"/platform/system-keys/{d.system_key.public_id}/revoke/",
    ]


def sign_in(context: BrowserContext, live_server: Any, user: User) -> None:
    """A browser session for `user` that passed a second factor (staff need it)."""
    from tests.conftest import verified_client

    client = verified_client(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": live_server.url}]
    )


def shoot(page: Page, name: str) -> None:
    """With E2E_SCREENSHOTS=<dir>, save a full-page screenshot for a human to look at."""
    if SCREENSHOTS:
        safe = name.strip("/").replace("/", "_").replace("?", "_").replace("=", "-") or "home"
        page.screenshot(path=f"{SCREENSHOTS}/{safe}.png", full_page=True)
