"""Django's admin: only a platform owner whose session passed a second factor gets in,
there is no password sign-in, and roles and account status are read-only there."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from accounts import services
from accounts.models import PlatformRole, User
from orgs.models import AuditEvent
from tests.accounts.helpers import confirmed_totp, totp_code
from tests.conftest import signed_in_client, verified_client
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(db: None) -> User:
    return User.objects.create_superuser("root@latchkey.test")


def test_admin_lists_factors_without_showing_secrets(root: User) -> None:
    user = User.objects.create_user("someone@example.com")
    device = services.totp_enrolment_start(user=user)
    codes = services.totp_enrolment_confirm(user=user, token=totp_code(device)).recovery_codes
    client = verified_client(root)
    listing = client.get("/admin/accounts/recoverycodedevice/")
    assert listing.status_code == 200
    assert "someone@example.com" in listing.content.decode()
    assert client.get("/admin/accounts/passkeydevice/").status_code == 200
    totp_page = client.get(f"/admin/otp_totp/totpdevice/{device.pk}/change/").content.decode()
    assert device.key not in totp_page
    for code in codes:
        assert code not in listing.content.decode()


def test_a_password_never_signs_anyone_in_to_the_admin(client: Client, root: User) -> None:
    # Even an account that somehow holds a password (created before this rule) gets nowhere.
    root.set_password("correct horse battery staple")
    root.save()
    page = client.get("/admin/login/?next=/admin/")
    assert page.status_code == 302
    assert page["Location"] == "/login/?next=%2Fadmin%2F"
    posted = client.post(
        "/admin/login/?next=/admin/",
        {"username": root.email, "password": "correct horse battery staple", "next": "/admin/"},
    )
    assert posted.status_code == 302
    assert posted["Location"].startswith("/login/")
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/")["Location"].startswith("/admin/login/")


def test_anonymous_visitors_are_sent_to_the_magic_link_sign_in(client: Client) -> None:
    response = client.get("/admin/accounts/user/", follow=True)
    assert response.redirect_chain[-1][0] == "/login/?next=%2Fadmin%2Faccounts%2Fuser%2F"
    assert response.status_code == 200


def test_an_owner_without_a_verified_factor_is_kept_out(root: User) -> None:
    client = signed_in_client(root)
    enrol = client.get("/admin/")
    assert enrol.status_code == 302 and enrol["Location"] == "/account/security/"

    device = confirmed_totp(root)
    verify = client.get("/admin/accounts/user/")
    assert verify.status_code == 302
    assert verify["Location"] == "/login/2fa/?next=%2Fadmin%2Faccounts%2Fuser%2F"
    done = client.post(
        "/login/2fa/", {"otp_token": totp_code(device), "next": "/admin/accounts/user/"}
    )
    assert done["Location"] == "/admin/accounts/user/"
    assert client.get("/admin/accounts/user/").status_code == 200


@pytest.mark.parametrize(
    "attributes",
    [
        {"platform_role": PlatformRole.PLATFORM_ADMIN, "is_staff": True, "is_superuser": True},
        {"platform_role": PlatformRole.NONE, "is_staff": True, "is_superuser": True},
        {"platform_role": PlatformRole.PLATFORM_OWNER, "is_staff": False, "is_superuser": True},
    ],
)
def test_only_a_staff_platform_owner_gets_in(attributes: dict[str, Any]) -> None:
    user = UserFactory.create(email="someone@latchkey.test", **attributes)
    client = verified_client(user)
    for path in ("/admin/", "/admin/accounts/user/"):
        assert client.get(path, follow=True).status_code == 404


def test_roles_and_status_are_read_only_in_the_admin(root: User) -> None:
    other = UserFactory.create(email="other@latchkey.test", platform_role=PlatformRole.NONE)
    client = verified_client(root)
    url = f"/admin/accounts/user/{root.pk}/change/"
    page = client.get(url).content.decode()
    for name in ("platform_role", "is_superuser", "is_staff", "is_active"):
        assert f'name="{name}"' not in page
    response = client.post(
        url,
        {
            "email": root.email,
            "full_name": "Root",
            "platform_role": PlatformRole.NONE,
            "is_superuser": "",
            "is_staff": "",
            "is_active": "",
        },
    )
    assert response.status_code == 302
    root.refresh_from_db()
    assert root.full_name == "Root"
    assert root.platform_role == PlatformRole.PLATFORM_OWNER
    assert root.is_superuser and root.is_staff and root.is_active

    client.post(
        f"/admin/accounts/user/{other.pk}/change/",
        {
            "email": other.email,
            "full_name": "",
            "platform_role": PlatformRole.PLATFORM_OWNER,
            "is_superuser": "on",
            "is_staff": "on",
        },
    )
    other.refresh_from_db()
    assert other.platform_role == PlatformRole.NONE
    assert not other.is_superuser and not other.is_staff
    assert not AuditEvent.objects.filter(action="user.platform_role_changed").exists()


def test_users_cannot_be_added_or_deleted_in_the_admin(root: User) -> None:
    client = verified_client(root)
    assert client.get("/admin/accounts/user/add/").status_code == 403
    assert (
        client.post(f"/admin/accounts/user/{root.pk}/delete/", {"post": "yes"}).status_code == 403
    )
    assert User.objects.filter(pk=root.pk).exists()


def test_the_admin_offers_no_password_change(root: User) -> None:
    client = verified_client(root)
    assert client.get("/admin/password_change/").status_code == 404


def test_createsuperuser_never_gives_a_password(monkeypatch: Any) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "correct horse battery staple")
    call_command("createsuperuser", "--noinput", "--email", "boot@latchkey.test", verbosity=0)
    user = User.objects.get(email="boot@latchkey.test")
    assert not user.has_usable_password()
    assert user.is_platform_owner and user.is_staff and user.is_superuser
    assert not User.objects.create_user("x@example.com", password="secret").has_usable_password()


def test_a_verified_platform_owner_reaches_the_admin_index(root: User) -> None:
    response = verified_client(root).get("/admin/")
    assert response.status_code == 200
    assert "/admin/password_change/" not in response.content.decode()
