"""The platform console: who gets in, organisation management, staff roles, system keys."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from accounts.models import PlatformRole, User
from apikeys.keys import key_digest
from apikeys.models import ApiKey
from apikeys.services import apikey_create
from orgs.actors import Actor
from orgs.models import AuditEvent, Organization, OrgStatus
from platform_admin.views import PlatformMixin
from tests.conftest import signed_in_client, verified_client
from tests.factories import OrganizationFactory, UserFactory

CONSOLE_PAGES = [
    "/platform/",
    "/platform/kyc/",
    "/platform/organizations/",
]
OWNER_PAGES = ["/platform/admins/", "/platform/system-keys/"]


# --- who gets in ---------------------------------------------------------------------------


def _console_patterns() -> list[URLPattern]:
    resolver = get_resolver()
    found: list[URLPattern] = []
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver) and str(entry.pattern) == "platform/":
            found.extend(p for p in entry.url_patterns if isinstance(p, URLPattern))
    return found


def test_every_console_url_is_served_by_the_platform_base() -> None:
    patterns = _console_patterns()
    assert len(patterns) >= 10
    for pattern in patterns:
        view_class = pattern.callback.view_class  # type: ignore[attr-defined]
        assert issubclass(view_class, PlatformMixin), pattern.name


@pytest.mark.parametrize("path", CONSOLE_PAGES + OWNER_PAGES)
def test_anonymous_users_are_sent_to_sign_in(client: Client, path: str, db: None) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.parametrize("path", CONSOLE_PAGES + OWNER_PAGES)
def test_the_console_does_not_exist_for_users_who_are_not_staff(
    owner_client: Client, path: str
) -> None:
    assert owner_client.get(path).status_code == 404


@pytest.mark.parametrize("path", CONSOLE_PAGES)
def test_staff_without_a_verified_second_factor_are_sent_to_enrol(
    staff_user: User, path: str
) -> None:
    response = signed_in_client(staff_user).get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/account/security/")


def test_staff_with_a_factor_but_an_unverified_session_are_sent_to_verify(
    staff_user: User,
) -> None:
    from django_otp.plugins.otp_totp.models import TOTPDevice

    TOTPDevice.objects.create(user=staff_user, name="app", confirmed=True)
    response = signed_in_client(staff_user).get("/platform/kyc/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/2fa/")


@pytest.mark.parametrize("with_factor", [False, True])
def test_the_console_base_refuses_unverified_staff_even_without_the_middleware(
    staff_user: User, settings: Any, with_factor: bool
) -> None:
    """Defence in depth: the base view holds the line if the middleware is ever removed."""
    from django_otp.plugins.otp_totp.models import TOTPDevice

    settings.MIDDLEWARE = [
        m for m in settings.MIDDLEWARE if m != "accounts.middleware.SecondFactorMiddleware"
    ]
    if with_factor:
        TOTPDevice.objects.create(user=staff_user, name="app", confirmed=True)
    client = signed_in_client(staff_user)
    for path in ["/platform/", "/platform/kyc/", "/platform/organizations/"]:
        response = client.get(path)
        assert response.status_code == 302
        expected = "/login/2fa/" if with_factor else "/account/security/"
        assert response["Location"].startswith(expected)
    assert verified_client(staff_user).get("/platform/").status_code == 200


@pytest.mark.parametrize("path", CONSOLE_PAGES)
def test_verified_staff_reach_the_console_uncached(staff_client: Client, path: str) -> None:
    response = staff_client.get(path)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


def test_the_dashboard_shows_counts(
    staff_client: Client, org: Organization, other_org: Organization, staff_user: User
) -> None:
    from platform_admin.services import org_suspend
    from tests.platform_admin.conftest import submit

    submit(org, None)
    org_suspend(org=other_org, actor=Actor.for_user(staff_user))
    html = staff_client.get("/platform/").content.decode()
    pending = html.split('id="count-kyc-pending"')[1].split("</a>")[0]
    assert '<div class="stat">1</div>' in pending
    suspended = html.split('id="count-suspended"')[1].split("</a>")[0]
    assert '<div class="stat">1</div>' in suspended
    organizations = html.split('id="count-organizations"')[1].split("</a>")[0]
    assert '<div class="stat">2</div>' in organizations


# --- organisations -------------------------------------------------------------------------


def test_organisations_are_searchable_by_name_slug_and_public_id(
    staff_client: Client, org: Organization, other_org: Organization
) -> None:
    def names(query: str) -> str:
        return staff_client.get("/platform/organizations/", {"q": query}).content.decode()

    assert "Acme" in names("acm") and "Globex" not in names("acm")
    assert "Globex" in names("globex") and "Acme" not in names("globex")
    by_id = names(other_org.public_id)
    assert "Globex" in by_id and "Acme" not in by_id
    assert "No organisation matches" in names("zzz-nothing")


def test_organisation_list_runs_a_constant_number_of_queries(
    staff_client: Client, db: None
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    OrganizationFactory.create_batch(3)
    with CaptureQueriesContext(connection) as small:
        staff_client.get("/platform/organizations/")
    OrganizationFactory.create_batch(30)
    with CaptureQueriesContext(connection) as large:
        staff_client.get("/platform/organizations/")
    assert len(small) == len(large)


def test_organisation_detail_shows_members_and_keys_read_only(
    staff_client: Client, org: Organization, owner: User, member_user: User
) -> None:
    key, _ = apikey_create(
        actor=Actor.system(), org=org, name="Billing sync", environment="test", scopes=[]
    )
    html = staff_client.get(f"/platform/organizations/{org.public_id}/").content.decode()
    assert owner.email in html and member_user.email in html
    assert "Billing sync" in html and key.display in html
    assert "/revoke/" not in html.split("API keys")[1].split("</table>")[0]


def test_unknown_organisation_is_404(staff_client: Client, db: None) -> None:
    assert staff_client.get("/platform/organizations/org_nope/").status_code == 404


def test_staff_change_the_plan_and_it_is_audited_for_the_org(
    staff_client: Client, staff_user: User, org: Organization
) -> None:
    response = staff_client.post(
        f"/platform/organizations/{org.public_id}/plan/", {"plan": "growth"}
    )
    assert response.status_code == 302
    org.refresh_from_db()
    assert org.plan == "growth"
    assert org.limits.per_minute == 600
    event = AuditEvent.objects.get(action="org.plan_changed")
    assert event.org == org and event.actor_user == staff_user
    assert event.details == {"from": "starter", "to": "growth"}
    bad = staff_client.post(f"/platform/organizations/{org.public_id}/plan/", {"plan": "gold"})
    assert bad.status_code == 400


def test_staff_set_custom_limits(staff_client: Client, staff_user: User, org: Organization) -> None:
    url = f"/platform/organizations/{org.public_id}/limits/"
    response = staff_client.post(url, {"per_minute": "5000", "burst": "", "monthly": "0"})
    assert response.status_code == 302
    org.refresh_from_db()
    assert (org.custom_per_minute, org.custom_burst, org.custom_monthly) == (5000, None, 0)
    assert org.limits.per_minute == 5000 and org.limits.burst == 10 and org.limits.monthly == 0
    event = AuditEvent.objects.get(action="org.limits_changed")
    assert event.org == org and event.actor_user == staff_user
    assert event.details["to"] == {"per_minute": 5000, "burst": None, "monthly": 0}
    assert staff_client.post(url, {"per_minute": "-1"}).status_code == 400


def test_suspend_and_reactivate_are_audited_and_sign_nobody_out(
    staff_client: Client, staff_user: User, org: Organization, admin_client_: Client
) -> None:
    response = staff_client.post(
        f"/platform/organizations/{org.public_id}/suspend/", {"reason": "Chargebacks"}
    )
    assert response.status_code == 302
    org.refresh_from_db()
    assert org.status == OrgStatus.SUSPENDED
    event = AuditEvent.objects.get(action="org.suspended")
    assert event.org == org and event.actor_user == staff_user
    assert event.details == {"reason": "Chargebacks"}
    # The org's people stay signed in, and so does the staff member.
    assert admin_client_.get("/o/acme/kyc/").status_code == 200
    assert staff_client.get(f"/platform/organizations/{org.public_id}/").status_code == 200

    staff_client.post(f"/platform/organizations/{org.public_id}/reactivate/")
    org.refresh_from_db()
    assert org.status == OrgStatus.ACTIVE
    assert AuditEvent.objects.get(action="org.reactivated").actor_user == staff_user


def test_suspension_and_plan_changes_reach_keys_on_their_next_request(
    staff_user: User, org: Organization, django_capture_on_commit_callbacks: Any
) -> None:
    """The key was just used (its verification may be cached); the change still applies
    on the very next request."""
    from platform_admin.services import org_reactivate, org_set_plan, org_suspend

    _, secret = apikey_create(
        actor=Actor.system(), org=org, name="k", environment="test", scopes=["kyc:read"]
    )
    client = Client(headers={"Authorization": f"Bearer {secret}"})
    me = client.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["rate_limits"]["per_minute"] == 60

    with django_capture_on_commit_callbacks(execute=True):
        org_set_plan(org=org, plan="growth", actor=Actor.for_user(staff_user))
    assert client.get("/api/v1/me").json()["rate_limits"]["per_minute"] == 600

    with django_capture_on_commit_callbacks(execute=True):
        org_suspend(org=org, actor=Actor.for_user(staff_user))
    refused = client.get("/api/v1/me")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "org_suspended"

    with django_capture_on_commit_callbacks(execute=True):
        org_reactivate(org=org, actor=Actor.for_user(staff_user))
    assert client.get("/api/v1/me").status_code == 200


# --- platform roles ------------------------------------------------------------------------


@pytest.mark.parametrize("path", OWNER_PAGES)
def test_platform_admins_cannot_manage_staff_or_system_keys(
    staff_client: Client, path: str
) -> None:
    assert staff_client.get(path).status_code == 403
    assert staff_client.post(path, {"email": "x@example.com", "name": "k"}).status_code == 403


def test_platform_admin_cannot_revoke_roles(staff_client: Client, platform_owner: User) -> None:
    response = staff_client.post("/platform/admins/revoke/", {"email": platform_owner.email})
    assert response.status_code == 403
    platform_owner.refresh_from_db()
    assert platform_owner.platform_role == PlatformRole.PLATFORM_OWNER


def test_an_owner_grants_and_revokes_platform_admin(
    owner_staff_client: Client, platform_owner: User, db: None
) -> None:
    target = UserFactory.create(email="reviewer@latchkey.test")
    response = owner_staff_client.post("/platform/admins/", {"email": "Reviewer@Latchkey.test"})
    assert response.status_code == 302
    target.refresh_from_db()
    assert target.platform_role == PlatformRole.PLATFORM_ADMIN
    granted = AuditEvent.objects.get(action="platform.role_granted")
    assert granted.actor_user == platform_owner and granted.target_label == target.email
    assert target.email in owner_staff_client.get("/platform/admins/").content.decode()

    # The new admin's session survives the revocation; the console closes to them.
    target_client = verified_client(target)
    assert target_client.get("/platform/").status_code == 200
    owner_staff_client.post("/platform/admins/revoke/", {"email": target.email})
    target.refresh_from_db()
    assert target.platform_role == PlatformRole.NONE
    assert AuditEvent.objects.get(action="platform.role_revoked").actor_user == platform_owner
    assert target_client.get("/platform/").status_code == 404
    target_client.get("/")
    assert target_client.session.get("_auth_user_id") == str(target.pk)


def test_granting_needs_an_existing_account(owner_staff_client: Client, db: None) -> None:
    response = owner_staff_client.post("/platform/admins/", {"email": "ghost@example.com"})
    assert response.status_code == 400
    assert "No account uses this email" in response.content.decode()
    assert not User.objects.filter(email="ghost@example.com").exists()


def test_the_last_platform_owner_is_protected(
    owner_staff_client: Client, platform_owner: User
) -> None:
    page = owner_staff_client.get("/platform/admins/").content.decode()
    assert "Last owner" in page
    response = owner_staff_client.post(
        "/platform/admins/revoke/", {"email": platform_owner.email}, follow=True
    )
    assert "last platform owner" in response.content.decode()
    platform_owner.refresh_from_db()
    assert platform_owner.platform_role == PlatformRole.PLATFORM_OWNER
    assert not AuditEvent.objects.filter(action="platform.role_revoked").exists()


def test_an_owner_can_be_demoted_while_another_owner_remains(platform_owner: User) -> None:
    from platform_admin.services import PlatformError, platform_role_set

    second = UserFactory.create(email="cto@latchkey.test", platform_role="platform_owner")
    platform_role_set(user=second, role=PlatformRole.NONE, actor=Actor.for_user(platform_owner))
    second.refresh_from_db()
    assert second.platform_role == PlatformRole.NONE
    with pytest.raises(PlatformError) as info:
        platform_role_set(
            user=platform_owner, role=PlatformRole.PLATFORM_ADMIN, actor=Actor.system()
        )
    assert info.value.code == "last_owner"


def test_a_platform_admin_cannot_use_the_role_service(staff_user: User, db: None) -> None:
    from platform_admin.services import PlatformError, platform_role_set

    target = UserFactory.create(email="friend@example.com")
    with pytest.raises(PlatformError) as info:
        platform_role_set(
            user=target, role=PlatformRole.PLATFORM_ADMIN, actor=Actor.for_user(staff_user)
        )
    assert info.value.code == "forbidden"


# --- system keys ---------------------------------------------------------------------------


def test_an_owner_creates_a_system_key_shown_once(
    owner_staff_client: Client, platform_owner: User
) -> None:
    page = owner_staff_client.get("/platform/system-keys/").content.decode()
    for scope in (
        "platform_organizations:read",
        "platform_organizations:write",
        "platform_kyc:read",
        "platform_kyc:write",
    ):
        assert f'name="scope" value="{scope}"' in page
    assert 'value="kyc:read"' not in page  # org scopes are not offered

    response = owner_staff_client.post(
        "/platform/system-keys/",
        {"name": "Back office", "scope": ["platform_kyc:write", "platform_organizations:read"]},
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    secret = html.split('id="api-key-secret">')[1].split("<")[0]
    assert secret.startswith("lk_sys_")

    key = ApiKey.objects.get(name="Back office")
    assert key.org is None and key.environment == "sys"
    assert key.digest == key_digest(secret)
    assert sorted(key.scopes) == [
        "platform_kyc:read",
        "platform_kyc:write",
        "platform_organizations:read",
    ]
    event = AuditEvent.objects.get(action="system_key.created")
    assert event.actor_user == platform_owner and event.target_id == key.public_id
    assert secret not in str(event.details)

    listing = owner_staff_client.get("/platform/system-keys/").content.decode()
    assert secret not in listing and key.display in listing


def test_a_system_key_needs_a_scope(owner_staff_client: Client) -> None:
    response = owner_staff_client.post("/platform/system-keys/", {"name": "Nothing"})
    assert response.status_code == 400
    assert not ApiKey.objects.exists()


def test_an_owner_revokes_a_system_key(
    owner_staff_client: Client, platform_owner: User, org: Organization
) -> None:
    from platform_admin.services import system_key_create

    key, _ = system_key_create(
        name="Ops", scopes=["platform_kyc:read"], actor=Actor.for_user(platform_owner)
    )
    response = owner_staff_client.post(f"/platform/system-keys/{key.public_id}/revoke/")
    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditEvent.objects.get(action="system_key.revoked").actor_user == platform_owner

    # Organisation keys cannot be revoked through this page.
    org_key, _ = apikey_create(
        actor=Actor.system(), org=org, name="Org key", environment="test", scopes=[]
    )
    assert (
        owner_staff_client.post(f"/platform/system-keys/{org_key.public_id}/revoke/").status_code
        == 404
    )
    org_key.refresh_from_db()
    assert org_key.revoked_at is None


def test_set_org_limits_command(org: Organization, capsys: Any) -> None:
    from django.core.management import CommandError, call_command

    call_command("set_org_limits", "acme", "--per-minute", "1000", "--monthly", "0")
    org.refresh_from_db()
    assert (org.custom_per_minute, org.custom_burst, org.custom_monthly) == (1000, None, 0)
    assert "1,000 requests/minute" in capsys.readouterr().out
    call_command("set_org_limits", "acme", "--burst", "25")
    org.refresh_from_db()
    assert (org.custom_per_minute, org.custom_burst, org.custom_monthly) == (1000, 25, 0)
    call_command("set_org_limits", "acme", "--per-minute", "plan")
    org.refresh_from_db()
    assert org.custom_per_minute is None
    call_command("set_org_limits", "acme", "--reset")
    org.refresh_from_db()
    assert (org.custom_per_minute, org.custom_burst, org.custom_monthly) == (None, None, None)
    event = AuditEvent.objects.filter(action="org.limits_changed").first()
    assert event is not None and event.actor_type == "system" and event.org == org
    with pytest.raises(CommandError):
        call_command("set_org_limits", "nope", "--burst", "1")
    with pytest.raises(CommandError):
        call_command("set_org_limits", "acme")
    with pytest.raises(CommandError):
        call_command("set_org_limits", "acme", "--burst", "-3")


def test_organisation_detail_and_kyc_page_run_a_constant_number_of_queries(
    staff_client: Client, staff_user: User, org: Organization, admin_client_: Client
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from platform_admin.services import kyc_reject
    from tests.factories import MembershipFactory
    from tests.platform_admin.conftest import submit

    def grow(n: int) -> None:
        for i in range(n):
            MembershipFactory.create(org=org)
            apikey_create(
                actor=Actor.system(),
                org=org,
                name=f"key {i}",
                environment="test",
                scopes=["kyc:read"],
            )
            kyc_reject(
                application=submit(org, None), actor=Actor.for_user(staff_user), reason=f"no {i}"
            )

    def count() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as detail:
            assert staff_client.get(f"/platform/organizations/{org.public_id}/").status_code == 200
        with CaptureQueriesContext(connection) as kyc:
            assert admin_client_.get("/o/acme/kyc/").status_code == 200
        return len(detail), len(kyc)

    grow(1)
    small = count()
    grow(8)
    assert count() == small
